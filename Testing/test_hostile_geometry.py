"""Grids outputs could not keep (sheared, singular, zero spacing) and bad inputs to the Python API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hostile_helpers import assert_one_line_error, float_volume, image_from, run, write_as


def _sheared_mha(tiny_cohort: Path, path: Path) -> Path:
    """A .mha whose direction rows are 1 .5 0 / 0 1 0 / 0 0 1 (not orthonormal)."""
    write_as(image_from(tiny_cohort), path, False)
    data = path.read_bytes()
    head, sep, rest = data.partition(b"TransformMatrix = ")
    line, newline, tail = rest.partition(b"\n")
    path.write_bytes(head + sep + b"1 0 0 0.5 1 0 0 0 1" + newline + tail)
    return path


def test_sheared_grid_is_refused_in_one_line(tiny_cohort: Path, tiny_run: Path, tmp_path: Path) -> None:
    import SimpleITK as sitk

    sheared = _sheared_mha(tiny_cohort, tmp_path / "sheared.mha")
    direction = np.asarray(sitk.ReadImage(str(sheared)).GetDirection()).reshape(3, 3)
    assert not np.allclose(direction.T @ direction, np.eye(3), atol=1e-3), "the test image is not sheared"
    for command, extra in (("encode", []), ("explain", ["--out", str(tmp_path / "e")])):
        result = run(command, "--model", str(tiny_run), str(sheared), *extra)
        assert_one_line_error(result, "sheared.mha", "not orthonormal")
    assert not (tmp_path / "e").exists()


def test_oblique_orthonormal_grid_keeps_its_exact_geometry(tiny_cohort: Path, tiny_run: Path, tmp_path: Path) -> None:
    import SimpleITK as sitk

    image = image_from(tiny_cohort)
    c, s = np.cos(0.4), np.sin(0.4)
    image.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    path = write_as(image, tmp_path / "oblique.mha", False)
    out = tmp_path / "e"
    result = run("explain", "--model", str(tiny_run), str(path), "--out", str(out))
    assert result.returncode == 0 and not result.stderr.strip().startswith("WARNING"), result.stderr
    for volume in out.glob("*.nii.gz"):
        written = sitk.ReadImage(str(volume))
        assert written.GetSize() == image.GetSize()
        assert np.allclose(written.GetDirection(), image.GetDirection(), atol=1e-5)
        assert np.allclose(written.GetOrigin(), image.GetOrigin(), atol=1e-4)
        assert np.allclose(written.GetSpacing(), image.GetSpacing(), atol=1e-5)


@pytest.fixture(scope="module")
def model(tiny_run: Path):
    from AttriVAELib.inference.model import AttriVAEModel

    return AttriVAEModel.load(tiny_run, device="cpu")


@pytest.mark.parametrize("bad, match", [
    (None, "must be a Volume or a path"),
    (42, "must be a Volume or a path"),
    (float_volume(spacing=(1.0, 0.0, 1.0)), "spacing"),
    (float_volume(spacing=(1.0, float("nan"), 1.0)), "spacing"),
    (float_volume(direction=(1, 0, 0, 1, 0, 0, 0, 0, 1)), "singular"),
    (float_volume(direction=(1, 0.5, 0, 0, 1, 0, 0, 0, 1)), "not orthonormal"),
])
def test_python_api_refuses_unusable_images(model, bad, match: str) -> None:
    from AttriVAELib.core.errors import InputError

    with pytest.raises(InputError, match=match) as info:
        model.encode(bad)
    assert "\n" not in str(info.value)


def test_python_api_batch_size_must_be_positive(model, tiny_cohort: Path) -> None:
    from AttriVAELib.core.errors import ConfigError

    image = tiny_cohort / "images" / "sub-0001.nii.gz"
    for size in (0, -3, 1.5, True):
        with pytest.raises(ConfigError, match="batch_size"):
            model.encode_batch([image], batch_size=size)
    assert len(model.encode_batch([image, image], batch_size=1)) == 2
