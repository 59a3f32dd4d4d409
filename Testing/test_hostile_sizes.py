"""Bounds on sizes and counts, and memory for a big but legitimate image."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hostile_helpers import assert_one_line_error, run


def test_synth_refuses_absurd_sizes_and_counts_at_once(tmp_path: Path) -> None:
    started = time.perf_counter()
    assert_one_line_error(run("synth", "--out", str(tmp_path / "a"), "--size", "100000"), "--size", "24..256")
    assert_one_line_error(run("synth", "--out", str(tmp_path / "b"), "--n", str(10**12)), "more than the limit")
    assert time.perf_counter() - started < 60
    assert not any(tmp_path.iterdir())


def test_synth_refuses_a_cohort_larger_than_the_free_disk(tmp_path: Path) -> None:
    result = run("synth", "--out", str(tmp_path / "c"), "--n", "900000", "--size", "256",
                 env={"ATTRIVAE_MAX_SUBJECTS": str(10**9)})
    assert_one_line_error(result, "GiB are free")
    assert not any(tmp_path.iterdir())


def test_traverse_and_ig_steps_are_bounded(tiny_cohort: Path, tiny_run: Path, tmp_path: Path) -> None:
    image = str(tiny_cohort / "images" / "sub-0001.nii.gz")
    result = run("traverse", "--model", str(tiny_run), image, "--dim", "0", "--range", "-1", "1", "--steps", "100000",
                 "--out", str(tmp_path / "t"))
    assert_one_line_error(result, "--steps must be between 1 and 1000")
    result = run("explain", "--model", str(tiny_run), image, "--ig-steps", "1000000", "--out", str(tmp_path / "e"))
    assert_one_line_error(result, "--ig-steps must be between 1 and 4096")
    assert not any(tmp_path.iterdir())


def test_long_traversal_keeps_memory_flat(tiny_cohort: Path, tiny_run: Path, tmp_path: Path) -> None:
    """200 steps decode and write chunk by chunk; the strip shows at most 16 of them."""
    image = str(tiny_cohort / "images" / "sub-0001.nii.gz")
    out = tmp_path / "t"
    result = run("traverse", "--model", str(tiny_run), image, "--dim", "0", "--range", "-2", "2", "--steps", "200",
                 "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert len(list(out.glob("step_*.nii.gz"))) == 200
    assert len(json.loads((out / "traversal.json").read_text())["steps"]) == 200
    assert (out / "strip.png").stat().st_size > 0


_PEAK = r"""
import json, resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, capture_output=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"""


def _peak(*command: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PEAK, *command], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss is in KiB on Linux")
def test_encoding_a_large_image_costs_a_few_times_its_size(tiny_run: Path, tmp_path: Path) -> None:
    """A 256 × 256 × 200 float32 CT-like image (50 MiB): encoding it adds less than 3× its size
    to the peak memory of encoding a 32³ image (the interpreter, torch and the model)."""
    import SimpleITK as sitk

    shape = (200, 256, 256)
    array = np.random.default_rng(0).normal(0, 100, shape).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.7, 1.25))
    big, small = tmp_path / "big.nii", tmp_path / "small.nii"
    sitk.WriteImage(image, str(big))
    sitk.WriteImage(sitk.GetImageFromArray(array[:32, :32, :32].copy()), str(small))
    del array, image
    cli = [sys.executable, "-m", "AttriVAELib.cli", "encode", "--model", str(tiny_run), "--device", "cpu"]
    base = _peak(*cli, str(small))
    peak = _peak(*cli, str(big))
    size = int(np.prod(shape)) * 4
    assert peak - base < 3 * size, f"encode added {(peak - base) / size:.2f}× the image's size"
