"""Hostile image files: truncated NIfTI/NRRD/MHA, a gzip bomb header, a FIFO, the voxel limit.

Every case goes through the real CLI on real files written with SimpleITK/nibabel and cut
with Python, and must end in one line (exit code 2), never in a silently wrong number.
"""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path

import numpy as np
import pytest
from hostile_helpers import TINY_CONFIG, assert_one_line_error, cut, image_from, run, write_as

# (suffix written, compressed?) — every format we read, raw and compressed where it has both.
FORMATS = [(".nii", False), (".nii.gz", True), (".nrrd", False), (".nrrd", True), (".mha", False), (".mha", True)]


@pytest.mark.parametrize("suffix, compress", FORMATS, ids=[f"{s}{'-gz' if c else ''}" for s, c in FORMATS])
def test_truncated_image_is_refused_by_encode(tiny_cohort: Path, tiny_run: Path, tmp_path: Path, suffix: str,
                                              compress: bool) -> None:
    intact = write_as(image_from(tiny_cohort), tmp_path / f"intact{suffix}", compress)
    assert run("encode", "--model", str(tiny_run), str(intact)).returncode == 0
    short = cut(intact, 0.5, tmp_path / f"short{suffix}")
    assert_one_line_error(run("encode", "--model", str(tiny_run), str(short)), str(short), "file is truncated")


def test_truncated_mhd_raw_pair_is_refused(tiny_cohort: Path, tiny_run: Path, tmp_path: Path) -> None:
    header = write_as(image_from(tiny_cohort), tmp_path / "pair.mhd", False)
    cut(tmp_path / "pair.raw", 0.9)
    assert_one_line_error(run("encode", "--model", str(tiny_run), str(header)), "pair.mhd", "file is truncated")


@pytest.mark.parametrize("command", ["explain", "traverse"])
def test_truncated_nifti_is_refused_by_explain_and_traverse(tiny_cohort: Path, tiny_run: Path, tmp_path: Path,
                                                            command: str) -> None:
    short = cut(tiny_cohort / "images" / "sub-0002.nii.gz", 0.6, tmp_path / "short.nii.gz")
    extra = ["--dim", "0", "--range", "-1", "1", "--steps", "3"] if command == "traverse" else []
    result = run(command, "--model", str(tiny_run), str(short), "--out", str(tmp_path / "out"), *extra)
    assert_one_line_error(result, "short.nii.gz", "file is truncated")
    assert not (tmp_path / "out").exists()


def test_truncated_nifti_in_a_manifest_stops_info_and_train(cohort_copy: Path, tmp_path: Path) -> None:
    cut(cohort_copy / "images" / "sub-0003.nii.gz", 0.5)
    assert_one_line_error(run("info", "--data", str(cohort_copy)), "row 5", "sub-0003.nii.gz", "file is truncated")
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    result = run("train", "--data", str(cohort_copy), "--out", str(tmp_path / "run"), "--config", str(config),
                 "--quiet")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "sub-0003.nii.gz" in last and "truncated" in last, last
    assert not (tmp_path / "run" / "model.safetensors").exists()


def _bomb(path: Path, side: int = 1024) -> Path:
    """A 1 MB .nii.gz whose header promises side³ float32 voxels (a gzip bomb's header)."""
    import nibabel

    header = nibabel.Nifti1Header()
    header.set_data_shape((side, side, side))
    header.set_data_dtype(np.float32)
    with gzip.open(path, "wb", compresslevel=9) as fh:
        fh.write(header.binaryblock + b"\0" * 4)
        block = b"\0" * (1 << 24)
        for _ in range(64):
            fh.write(block)
    return path


def test_oversized_header_is_refused_in_under_a_second(tiny_run: Path, tmp_path: Path) -> None:
    from AttriVAELib.core.errors import InputError
    from AttriVAELib.data.io import check_image_file, read_image

    bomb = _bomb(tmp_path / "bomb.nii.gz")
    assert bomb.stat().st_size < 2 << 20
    started = time.perf_counter()
    with pytest.raises(InputError, match="larger than the limit"):
        read_image(bomb)
    assert time.perf_counter() - started < 1.0
    started = time.perf_counter()
    with pytest.raises(InputError, match="--max-voxels"):
        check_image_file(bomb)
    assert time.perf_counter() - started < 1.0
    assert_one_line_error(run("encode", "--model", str(tiny_run), str(bomb), timeout=60), "bomb.nii.gz",
                          "1,073,741,824 voxels", "limit")


def test_voxel_limit_has_an_option_and_an_environment_variable(tiny_cohort: Path, tiny_run: Path) -> None:
    image = str(tiny_cohort / "images" / "sub-0001.nii.gz")
    assert_one_line_error(run("encode", "--max-voxels", "1000", "--model", str(tiny_run), image), "32,768 voxels",
                          "limit of 1,000")
    assert_one_line_error(run("--max-voxels", "1000", "encode", "--model", str(tiny_run), image), "limit of 1,000")
    assert_one_line_error(run("encode", "--model", str(tiny_run), image, env={"ATTRIVAE_MAX_VOXELS": "1000"}),
                          "limit of 1,000")
    assert run("encode", "--max-voxels", "40000", "--model", str(tiny_run), image).returncode == 0


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_as_image_is_refused_without_hanging(tiny_run: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "image.nii.gz"
    os.mkfifo(fifo)
    assert_one_line_error(run("encode", "--model", str(tiny_run), str(fifo), timeout=60), "image.nii.gz", "FIFO")


def test_truncated_mask_is_refused(tiny_cohort: Path, tiny_run: Path, tmp_path: Path) -> None:
    import SimpleITK as sitk

    write_as(sitk.ReadImage(str(tiny_cohort / "masks" / "sub-0001.nii.gz")), tmp_path / "mask.nii", False)
    cut(tmp_path / "mask.nii", 0.5)
    result = run("encode", "--model", str(tiny_run), str(tiny_cohort / "images" / "sub-0001.nii.gz"), "--mask",
                 str(tmp_path / "mask.nii"))
    assert_one_line_error(result, "mask.nii", "file is truncated")
