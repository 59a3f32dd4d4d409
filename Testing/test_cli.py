"""The command line: one-line errors with exit code 2, atomic cohort output, ``info``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from AttriVAELib.cli import main
from AttriVAELib.data.io import Geometry, Volume, write_image


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "AttriVAELib.cli", *args], capture_output=True, encoding="utf-8", errors="replace",
                          timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_version_and_help(capsys) -> None:
    assert main([]) == 2
    assert "synth" in capsys.readouterr().out


def test_info_summarizes_cohort(cohort_copy: Path, capsys) -> None:
    assert main(["info", "--data", str(cohort_copy)]) == 0
    out = capsys.readouterr().out
    assert "subjects: 40" in out and "train=28" in out and "wall_thickness_mm" in out
    assert (cohort_copy / "split.json").exists()


def test_info_bad_manifest_row(cohort_copy: Path) -> None:
    manifest = cohort_copy / "manifest.csv"
    lines = manifest.read_text().splitlines()
    header = lines[0].split(",")
    row = lines[3].split(",")
    row[header.index("wall_thickness_mm")] = "thick"
    lines[3] = ",".join(row)
    manifest.write_text("\n".join(lines) + "\n")
    assert_one_line_error(run("info", "--data", str(cohort_copy)), "row 4", "wall_thickness_mm", "not numeric")


def test_info_missing_image(cohort_copy: Path) -> None:
    os.remove(cohort_copy / "images" / "sub-0002.nii.gz")
    assert_one_line_error(run("info", "--data", str(cohort_copy)), "row 4", "sub-0002.nii.gz", "not found")


def test_debug_shows_traceback(tmp_path: Path) -> None:
    result = run("info", "--data", str(tmp_path), "--debug")
    assert result.returncode == 2 and "Traceback" in result.stderr


def test_corrupt_4d_nan_and_empty_mask_images_through_cli(cohort_copy: Path) -> None:
    """Bad image files referenced by a manifest stop training with one line naming the file."""
    geometry = Geometry((8, 8, 8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    cases = {
        "corrupt": lambda p: p.write_bytes(b"garbage" * 100),
        "nan": lambda p: write_image(Volume(np.full((8, 8, 8), np.nan, np.float32), geometry), p),
        "4d": lambda p: __import__("SimpleITK").WriteImage(__import__("SimpleITK").Image([8, 8, 8, 2],
                                                                                      __import__("SimpleITK").sitkFloat32),
                                                           str(p)),
    }
    expected = {"corrupt": "cannot read image", "nan": "NaN or infinite", "4d": "4D"}
    config = cohort_copy / "tiny.yaml"
    config.write_text("model: {input_size: 16, latent_dim: 8, width: 0.5}\noptim: {batch_size: 8}\n"
                      "train: {epochs: 1, precision: fp32}\n")
    for name, make in cases.items():
        target = cohort_copy / "images" / "sub-0000.nii.gz"
        target.unlink()
        make(target)
        result = run("train", "--data", str(cohort_copy), "--out", str(cohort_copy / f"run-{name}"), "--config",
                     str(config), "--quiet")
        assert result.returncode == 2, result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert "sub-0000.nii.gz" in last and expected[name] in last, last
        assert "Traceback" not in result.stderr


def test_empty_mask_through_cli(cohort_copy: Path) -> None:
    mask = cohort_copy / "masks" / "sub-0001.nii.gz"
    from AttriVAELib.data.io import read_image

    vol = read_image(mask)
    write_image(Volume(np.zeros_like(vol.array, dtype=np.uint8), vol.geometry), mask)
    config = cohort_copy / "tiny.yaml"
    config.write_text("model: {input_size: 16, latent_dim: 8, width: 0.5}\noptim: {batch_size: 8}\n"
                      "train: {epochs: 1, precision: fp32}\ndata: {preprocess: {crop_to_mask: true}}\n")
    result = run("train", "--data", str(cohort_copy), "--out", str(cohort_copy / "run"), "--config", str(config),
                 "--quiet")
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert "sub-0001.nii.gz" in last and "empty" in last, last


def test_synth_refuses_existing_folder(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    assert_one_line_error(run("synth", "--out", str(tmp_path / "c"), "--n", "2", "--size", "32"), "already exists")


def test_synth_bad_options(tmp_path: Path) -> None:
    result = run("synth", "--out", str(tmp_path / "c"), "--n", "0")
    assert result.returncode == 2 and "must be positive" in result.stderr
    assert not (tmp_path / "c").exists()


def test_killed_synth_leaves_no_cohort(tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    proc = subprocess.Popen([sys.executable, "-m", "AttriVAELib.cli", "synth", "--out", str(out), "--n", "400",
                             "--size", "64", "--workers", "1", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.name.startswith(".tmp-cohort") for p in tmp_path.iterdir()):
        time.sleep(0.02)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "synth finished before it could be killed"
    assert not out.exists()
    result = run("info", "--data", str(out))
    assert result.returncode == 2 and "manifest not found" in result.stderr
