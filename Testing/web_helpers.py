"""Helpers for driving ``attrivae view`` in a real Chromium (the end-to-end tests and the latency benchmark).

* :func:`missing_browser_parts`: what is missing for the browser tests (the system Chromium,
  EGL/Mesa, Playwright, trame-slicer), as one line, or "".
* :class:`Viewer`: the server as a subprocess on 127.0.0.1 and a free port; bounded start,
  always stopped.
* page helpers: choose from a select box, wait for the server to be idle, read a view's
  rendered pixels (the JPEG frame the page shows, drawn into a canvas: no overlay widgets).
"""

from __future__ import annotations

import base64
import ctypes.util
import importlib.util
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: Where a real Chromium lives on Debian/Ubuntu (never downloaded by the tests).
CHROMIUM_NAMES = ("chromium", "chromium-browser")
START_TIMEOUT = 120.0


def chromium_path() -> str | None:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def missing_browser_parts() -> str:
    """One line naming what the browser tests lack, or ``""`` when everything is there."""
    missing = []
    if chromium_path() is None:
        missing.append("the system Chromium (apt-get install chromium)")
    if ctypes.util.find_library("EGL") is None:
        missing.append("EGL/Mesa (apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri)")
    for module, package in (("playwright", "playwright"), ("trame_slicer", "attrivae[web]")):
        if importlib.util.find_spec(module) is None:
            missing.append(f"{module} (pip install '{package}')")
    return "; ".join(missing)


class Viewer:
    """``attrivae view`` in a subprocess; :attr:`url` once it listens. Use as a context manager."""

    def __init__(self, paths: Sequence[str | os.PathLike] = (), *, model: str = "demo",
                 extra: Sequence[str] = (), env: dict | None = None) -> None:
        self.command = [sys.executable, "-m", "AttriVAELib", "view", "--port", "0", "--model", str(model),
                        *map(str, extra), *map(str, paths)]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process: subprocess.Popen | None = None
        self.url: str | None = None
        self.output: list[str] = []

    def __enter__(self) -> "Viewer":
        self.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()

    def start(self, timeout: float = START_TIMEOUT) -> str:
        self.process = subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace",
                                        start_new_session=True)
        found = threading.Event()

        def read() -> None:
            for line in self.process.stdout:
                self.output.append(line)
                match = re.search(r"AttriVAE viewer: (http://\S+)", line)
                if match and not found.is_set():
                    self.url = match.group(1)
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        end = time.monotonic() + timeout
        while not found.wait(0.2):
            if self.process.poll() is not None or time.monotonic() > end:
                self.stop()
                raise RuntimeError("attrivae view did not start:\n" + "".join(self.output)[-3000:])
        return self.url

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(15)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(15)


def launch_browser(playwright):
    """The system Chromium through Playwright (headless; GPU off, rendering is the server's)."""
    return playwright.chromium.launch(executable_path=chromium_path(), headless=True,
                                      args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])


def open_page(browser, url: str, *, owner: bool = True, timeout: float = 60.0):
    """A new tab on the viewer; with ``owner``, wait until it drives the viewer (its tools show)."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(url, timeout=timeout * 1000)
    page.wait_for_selector("#tools" if owner else "#single-user", timeout=timeout * 1000)
    return page


def close_page(page) -> None:
    """Close a tab as a user does (the page says goodbye to the server first)."""
    page.close(run_before_unload=True)


def choose(page, select_id: str, text: str, timeout: float = 30.0) -> None:
    """Pick the entry ``text`` in the Vuetify select box whose input has ``select_id``."""
    page.locator(f"#{select_id}").click(force=True)
    page.locator(".v-overlay--active .v-list-item", has_text=text).first.click(timeout=timeout * 1000)
    page.wait_for_timeout(200)


def wait_idle(page, timeout: float = 180.0) -> None:
    """Wait until the server's progress bar is gone (no long task runs)."""
    page.wait_for_timeout(300)
    page.wait_for_selector("#progress", state="detached", timeout=timeout * 1000)


def wait_model(page, timeout: float = 120.0) -> None:
    page.wait_for_function("document.querySelector('#model-info') && "
                           "document.querySelector('#model-info').innerText.length > 0", timeout=timeout * 1000)


def decode_count(page) -> int:
    return int(page.evaluate("document.querySelector('#decode-count').textContent") or 0)


def messages(page) -> str:
    return page.inner_text("#messages")


_PIXELS_JS = """async (caption) => {
  const items = [...document.querySelectorAll('#views .layout-grid-item')];
  const item = items.find(e => e.innerText.includes(caption));
  if (!item) return null;
  for (let attempt = 0; attempt < 40; attempt++) {
    const img = item.querySelector('img');
    try {
      if (!img || !img.src) throw new Error('no frame yet');
      await img.decode();  // fails when a newer frame replaced (and revoked) this one: try again
      const canvas = document.createElement('canvas');
      canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
      canvas.getContext('2d').drawImage(img, 0, 0);
      return canvas.toDataURL('image/png');
    } catch (error) {
      await new Promise(resolve => setTimeout(resolve, 50));
    }
  }
  return null;
}"""


def view_pixels(page, row: str, orientation: str = "axial") -> np.ndarray:
    """(H, W, 3) int array of the frame a slice view shows (``row``: ``"Input"`` or ``"Output"``)."""
    from PIL import Image

    data = page.evaluate(_PIXELS_JS, f"{row} · {orientation}")
    if data is None:
        raise AssertionError(f"the view {row} · {orientation} shows no frame")
    image = Image.open(io.BytesIO(base64.b64decode(data.split(",", 1)[1]))).convert("RGB")
    return np.asarray(image).astype(np.int32)


def settled_pixels(page, row: str, orientation: str = "axial", timeout: float = 15.0) -> np.ndarray:
    """The view's frame once two reads 0.4 s apart agree (the stream has caught up)."""
    end = time.monotonic() + timeout
    previous = view_pixels(page, row, orientation)
    while True:
        page.wait_for_timeout(400)
        current = view_pixels(page, row, orientation)
        if current.shape == previous.shape and np.abs(current - previous).max() <= 2:
            return current
        if time.monotonic() > end:
            return current
        previous = current


def click_slider(page, dim: int, fraction: float) -> None:
    """Click latent slider ``dim`` at ``fraction`` of its track (press and release there)."""
    track = page.locator(f".latent-slider[data-dim='{dim}'] .v-slider-track")
    box = track.bounding_box()
    page.mouse.click(box["x"] + box["width"] * fraction, box["y"] + box["height"] / 2)


def encode(page, image: str, timeout: float = 180.0) -> None:
    """Choose ``image`` in the volume list, press Encode and wait for the encoding to show."""
    wait_model(page, timeout)
    choose(page, "image-select", image)
    page.click("#encode-btn")
    page.wait_for_selector("#summary", timeout=timeout * 1000)
    wait_idle(page, timeout)
