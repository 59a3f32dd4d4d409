"""Latency of the web viewer's latent slider: from releasing the slider to the updated image in the browser.

Starts ``attrivae view`` on 127.0.0.1 (CPU), opens it in the system Chromium through
Playwright, encodes a phantom, then clicks one attribute slider MOVES times at different
places (press and release at once, 0.7 s apart so each move is measured alone). For each
move the page records when the pointer was released and when each of the three output views
finished loading its first new frame; the latency of a move is the slowest of the three.

Two models: the shipped 32³ demo model on a 64³ phantom, and a randomly initialised model of
the same architecture at 80³ on an 80³ phantom (latency does not depend on the weights).

    python benchmarks/web_latency.py [--moves 20] [--models demo 80]

Prints one table row per model: median and 90th percentile in ms (all views, and the axial
view alone). Needs the ``web`` extra, Playwright, the system Chromium and EGL (as the tests).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "Testing"))

import numpy as np  # noqa: E402

_INSTRUMENT = """() => {
  window.__released = [];
  window.__frames = {};
  document.addEventListener('pointerup', () => window.__released.push(performance.now()), true);
  for (const o of ['axial', 'coronal', 'sagittal']) {
    const item = [...document.querySelectorAll('#views .layout-grid-item')].find(
      e => e.innerText.includes('Output · ' + o));
    const img = item.querySelector('img');
    window.__frames[o] = [];
    img.addEventListener('load', () => window.__frames[o].push(performance.now()));
  }
}"""

#: Where the slider is clicked, in turn (neighbours differ, so every click changes the value).
POSITIONS = (0.15, 0.85, 0.3, 0.7, 0.45, 0.95, 0.05, 0.6, 0.2, 0.8)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_phantom(folder: Path, size: int) -> Path:
    from AttriVAELib.cohorts.phantom.generator import geometry_for_size, render_subject, to_stored_intensity
    from AttriVAELib.data.io import Volume, write_image

    _, image, _, _ = render_subject(3, size, seed=0)
    return write_image(Volume(to_stored_intensity(image), geometry_for_size(size)), folder / f"phantom{size}.nii.gz")


def random_model(folder: Path, size: int) -> Path:
    """A randomly initialised model with the demo model's architecture and metadata at ``size``³."""
    import copy

    from AttriVAELib.nn.checkpoint import save_checkpoint
    from AttriVAELib.nn.config import ModelConfig, config_from_dict
    from AttriVAELib.nn.model import AttriVAE
    from AttriVAELib.slicer.demo_model import find_demo_model

    meta = json.loads((find_demo_model() / "model.json").read_text())
    dropped = ("sha256", "weights_file", "format", "format_version")  # written again by save_checkpoint
    meta = {k: v for k, v in copy.deepcopy(meta).items() if k not in dropped}
    meta["model_config"]["input_size"] = size
    meta["preprocess"]["size"] = size
    if isinstance(meta.get("config"), dict) and "model" in meta["config"]:
        meta["config"]["model"]["input_size"] = size
    import torch

    torch.manual_seed(0)
    model = AttriVAE(config_from_dict(ModelConfig, meta["model_config"], "model"))
    run = folder / f"random{size}"
    run.mkdir()
    save_checkpoint(run, model.state_dict(), meta)
    return run


def measure(url: str, image: str, moves: int) -> tuple[list[float], list[float]]:
    from playwright.sync_api import sync_playwright
    from web_helpers import click_slider, close_page, decode_count, encode, launch_browser, open_page

    everything, axial = [], []
    with sync_playwright() as playwright:
        browser = launch_browser(playwright)
        page = open_page(browser, url)
        encode(page, image)
        page.wait_for_timeout(1000)
        page.evaluate(_INSTRUMENT)
        for move in range(moves + 1):  # the first move warms up and is not counted
            count = decode_count(page)
            released = len(page.evaluate("window.__released"))
            frames = {o: len(v) for o, v in page.evaluate("window.__frames").items()}
            click_slider(page, 0, POSITIONS[move % len(POSITIONS)])
            page.wait_for_function(f"Number(document.querySelector('#decode-count').textContent) > {count}",
                                   timeout=60000)
            page.wait_for_function("(n) => Object.keys(n).every(o => window.__frames[o].length > n[o])", arg=frames,
                                   timeout=60000)
            page.wait_for_timeout(700)
            release = page.evaluate("window.__released")[released]
            seen = page.evaluate("window.__frames")
            firsts = {o: next(t for t in seen[o][frames[o]:] if t >= release) for o in frames}
            if move:
                everything.append(max(firsts.values()) - release)
                axial.append(firsts["axial"] - release)
        close_page(page)
        browser.close()
    return everything, axial


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=20)
    parser.add_argument("--models", nargs="+", default=["demo", "80"], help="'demo' and/or sizes of random models")
    args = parser.parse_args()

    from web_helpers import Viewer, missing_browser_parts

    missing = missing_browser_parts()
    if missing:
        print(f"web_latency: needs {missing}", file=sys.stderr)
        return 2
    import torch

    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs), torch {torch.__version__}; {args.moves} moves each")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for which in args.models:
            if which == "demo":
                model, size, label = "demo", 64, "32³ demo model, 64³ input"
            else:
                size = int(which)
                model, label = str(random_model(folder, size)), f"{size}³ model (random weights), {size}³ input"
            data = folder / f"data{size}"
            data.mkdir(exist_ok=True)
            image = write_phantom(data, size)
            t0 = time.perf_counter()
            with Viewer([data], model=model, env={"CUDA_VISIBLE_DEVICES": ""}) as viewer:
                everything, axial = measure(viewer.url, image.name, args.moves)
            rows.append((label, everything, axial, time.perf_counter() - t0))
    print()
    print("| model | median (3 views) | 90th pct (3 views) | median (axial) | 90th pct (axial) |")
    print("|---|---|---|---|---|")
    for label, everything, axial, _ in rows:
        print(f"| {label} | {np.median(everything):.0f} ms | {np.percentile(everything, 90):.0f} ms | "
              f"{np.median(axial):.0f} ms | {np.percentile(axial, 90):.0f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
