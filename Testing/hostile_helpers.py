"""Helpers of the hostile-input tests (``test_hostile_*.py``): the CLI in a subprocess, one-line
errors, real files cut short, and small file systems where the machine allows mounting them."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

TINY_CONFIG = ("model: {input_size: 16, latent_dim: 8, width: 0.5}\noptim: {batch_size: 8}\n"
               "train: {epochs: 1, precision: fp32}\n")


def run(*args: str, timeout: float = 300, env: dict | None = None, cwd: Path | None = None,
        preexec_fn=None) -> subprocess.CompletedProcess:
    """``python -m AttriVAELib.cli ARGS`` with the text of stdout and stderr."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "AttriVAELib.cli", *args], capture_output=True, encoding="utf-8",
                          errors="replace", timeout=timeout, env=full_env, cwd=cwd, preexec_fn=preexec_fn)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit code 2, exactly one line on stderr, no traceback, every fragment in that line."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, f"exit code {result.returncode}; stderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def cut(path: Path, fraction: float = 0.5, out: Path | None = None) -> Path:
    """Keep the first ``fraction`` of a file's bytes (a truncated copy or download)."""
    data = path.read_bytes()
    target = out or path
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def image_from(cohort: Path, subject: str = "sub-0001"):
    import SimpleITK as sitk

    return sitk.ReadImage(str(cohort / "images" / f"{subject}.nii.gz"))


def write_as(image, path: Path, compress: bool) -> Path:
    import SimpleITK as sitk

    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        sitk.WriteImage(image, str(path), compress)
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)
    return path


def _mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True)


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, text=True)


@contextlib.contextmanager
def read_only_copy(source: Path, where: Path) -> Iterator[Path]:
    """``source`` seen through a read-only bind mount (skips the test where mounting is not allowed)."""
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root and mount(8)")
    target = where / f"ro-{uuid.uuid4().hex[:6]}"
    target.mkdir()
    bound = _mount("--bind", str(source), str(target))
    if bound.returncode != 0:
        target.rmdir()
        pytest.skip(f"bind mounts are not allowed here ({bound.stderr.strip()[:80]})")
    try:
        ro = _mount("-o", "remount,bind,ro", str(target))
        probe = target / f".probe-{uuid.uuid4().hex[:6]}"
        if ro.returncode != 0:
            pytest.skip(f"read-only remounts are not allowed here ({ro.stderr.strip()[:80]})")
        try:
            probe.write_text("x")
            probe.unlink()
            pytest.skip("the read-only bind mount is writable for this user")
        except OSError:
            pass
        yield target
    finally:
        _umount(target)
        with contextlib.suppress(OSError):
            target.rmdir()


@contextlib.contextmanager
def small_filesystem(where: Path, size: str = "600k") -> Iterator[Path]:
    """A tiny tmpfs (skips the test where mounting one is not allowed)."""
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("a small tmpfs needs root and mount(8)")
    target = where / f"tmpfs-{uuid.uuid4().hex[:6]}"
    target.mkdir()
    mounted = _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target))
    if mounted.returncode != 0:
        target.rmdir()
        pytest.skip(f"mounting a tmpfs is not allowed here ({mounted.stderr.strip()[:80]})")
    try:
        yield target
    finally:
        _umount(target)
        with contextlib.suppress(OSError):
            target.rmdir()


def fill(folder: Path) -> None:
    """Fill the file system of ``folder`` to the last byte."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 16, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


def leftovers(folder: Path) -> list[str]:
    """Hidden temporaries (``.tmp-*``, ``.old-*``) anywhere under ``folder``."""
    return [str(p) for p in folder.rglob("*") if p.name.startswith((".tmp-", ".old-"))]


def float_volume(shape=(24, 20, 16), spacing=(1.0, 1.0, 1.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), seed=0):
    from AttriVAELib.data.io import Geometry, Volume

    array = np.random.default_rng(seed).random(shape, dtype=np.float32)
    return Volume(array, Geometry(tuple(shape[::-1]), tuple(spacing), (0.0, 0.0, 0.0), tuple(direction)))
