"""Tests of the invertible preprocessing into the model cube (AttriVAELib.data.preprocessing)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from AttriVAELib.core.errors import ConfigError, InputError
from AttriVAELib.data.io import Geometry, Volume, write_image
from AttriVAELib.data.preprocessing import (GridMapping, PreprocessSpec, preprocess, preprocess_file, to_model_grid,
                                            to_source_grid)

IDENTITY = tuple(np.eye(3).ravel())
OBLIQUE = tuple(Rotation.from_euler("xyz", [20.0, 30.0, 10.0], degrees=True).as_matrix().ravel())


def physical_grid(geometry: Geometry) -> np.ndarray:
    """Physical coordinates (z, y, x, 3) of every voxel centre."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in geometry.shape), indexing="ij")
    return geometry.index_to_physical(np.stack([i, j, k], axis=-1))


def blob(geometry: Geometry, centre: np.ndarray, sigma_mm: float) -> Volume:
    d2 = ((physical_grid(geometry) - centre) ** 2).sum(-1)
    return Volume(np.exp(-d2 / (2 * sigma_mm**2)).astype(np.float32), geometry)


def sphere(geometry: Geometry, centre: np.ndarray, radius_mm: float) -> Volume:
    d2 = ((physical_grid(geometry) - centre) ** 2).sum(-1)
    return Volume((d2 <= radius_mm**2).astype(np.float32), geometry)


def argmax_index(array: np.ndarray) -> np.ndarray:
    """(i, j, k) index of the maximum of a (z, y, x) array."""
    return np.array(np.unravel_index(int(np.argmax(array)), array.shape))[::-1]


def centroid_index(array: np.ndarray) -> np.ndarray:
    """(i, j, k) intensity-weighted centroid of a (z, y, x) array."""
    grids = np.meshgrid(*(np.arange(n) for n in array.shape), indexing="ij")
    w = array.astype(np.float64)
    return np.array([(g * w).sum() / w.sum() for g in grids])[::-1]


# -- spec ---------------------------------------------------------------------------------


def test_spec_round_trip_through_json() -> None:
    spec = PreprocessSpec(
        size=32, crop_to_mask=True, margin_mm=5, fov_mm=120.0, apply_mask=True, percentiles=(1, 99), gamma=0.8
    )
    d = json.loads(json.dumps(spec.to_dict()))
    assert PreprocessSpec.from_dict(d) == spec
    assert PreprocessSpec.from_dict({}) == PreprocessSpec()


@pytest.mark.parametrize("size", [0, -16, 50, 8, 81, 32.5, True, "80"])
def test_bad_size_is_config_error(size) -> None:
    with pytest.raises(ConfigError, match="multiple of 16") as info:
        PreprocessSpec(size=size)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "options",
    [
        {"sizee": 80},
        {"percentiles": [99, 1]},
        {"percentiles": [0, 101]},
        {"gamma": 0},
        {"fov_mm": -1},
        {"margin_mm": -2},
        {"crop_to_mask": "yes"},
    ],
)
def test_bad_spec_options_are_config_errors(options) -> None:
    with pytest.raises(ConfigError):
        PreprocessSpec.from_dict(options)


def test_mapping_round_trip_through_json() -> None:
    g = Geometry((20, 16, 12), (1.0, 1.5, 2.5), (3.0, -4.0, 5.0), OBLIQUE)
    pre = preprocess(blob(g, g.index_to_physical([10, 8, 6]), 6.0), PreprocessSpec(size=16, gamma=0.7))
    again = GridMapping.from_dict(json.loads(json.dumps(pre.mapping.to_dict())))
    assert again == pre.mapping


# -- geometry -----------------------------------------------------------------------------


def test_model_grid_is_isotropic_cube_with_source_direction() -> None:
    g = Geometry((40, 30, 20), (1.0, 1.5, 2.5), (10.0, -20.0, 5.0), OBLIQUE)
    pre = preprocess(Volume(np.random.default_rng(0).random(g.shape, dtype=np.float32), g), PreprocessSpec(size=32))
    model = pre.mapping.model
    assert model.size == (32, 32, 32)
    assert pre.image.shape == (32, 32, 32) and pre.image.dtype == np.float32
    assert 0.0 <= pre.image.min() and pre.image.max() <= 1.0
    assert np.allclose(model.spacing, 50.0 / 32)  # largest extent: 20 voxels × 2.5 mm
    assert model.direction == g.direction
    # Same centre as the image.
    centre = model.index_to_physical(np.full(3, 15.5))
    assert np.allclose(centre, g.index_to_physical((np.array(g.size) - 1) / 2.0))


@pytest.mark.parametrize(
    "options", [{}, {"crop_to_mask": True, "margin_mm": 3.0}, {"fov_mm": 30.0, "crop_to_mask": True}, {"size": 64}]
)
def test_marker_in_oblique_anisotropic_image_keeps_its_physical_position(options) -> None:
    g = Geometry((40, 30, 20), (1.0, 1.5, 2.5), (10.0, -20.0, 5.0), OBLIQUE)
    marker = np.array([25, 10, 7])
    array = np.zeros(g.shape, np.float32)
    array[marker[2], marker[1], marker[0]] = 100.0
    mask = np.zeros(g.shape, np.uint8)
    mask[5:12, 6:15, 20:31] = 1  # off-centre box around the marker: the source is cropped
    spec = PreprocessSpec(**{"size": 32, "percentiles": (0, 100), **options})
    pre = preprocess(Volume(array, g), spec, Volume(mask, g))
    model = pre.mapping.model
    point = g.index_to_physical(marker)
    found = model.index_to_physical(argmax_index(pre.image))
    assert np.linalg.norm(found - point) <= model.spacing[0]  # within one model voxel
    assert np.abs(model.physical_to_index(point) - argmax_index(pre.image)).max() <= 1.0

    back = to_source_grid(pre.image, pre.mapping)
    assert back.geometry == g
    assert np.array_equal(argmax_index(back.array), marker)


@pytest.mark.parametrize("options", [{}, {"crop_to_mask": True, "margin_mm": 2.0}, {"fov_mm": 40.0}])
def test_matches_full_image_resampling(options) -> None:
    """Without anti-aliasing, the result equals resampling the whole image onto the model grid."""
    g = Geometry((40, 30, 20), (1.0, 1.5, 2.5), (10.0, -20.0, 5.0), OBLIQUE)
    volume = Volume(np.random.default_rng(3).random(g.shape, dtype=np.float32), g)
    mask = np.zeros(g.shape, np.uint8)
    mask[3:9, 4:12, 22:35] = 1
    pre = preprocess(volume, PreprocessSpec(size=16, antialias=False, **options), Volume(mask, g))
    lo, hi = pre.mapping.intensity_range
    reference = sitk.Resample(
        volume.to_sitk(), pre.mapping.model.reference_image(), sitk.Transform(), sitk.sitkLinear, lo, sitk.sitkFloat32
    )
    expected = np.clip((sitk.GetArrayFromImage(reference) - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(pre.image, expected, atol=1e-5)


def test_forward_then_inverse_recovers_smooth_image() -> None:
    g = Geometry((48, 40, 32), (1.2, 1.0, 1.5), (-30.0, 12.0, 40.0), OBLIQUE)
    centre = g.index_to_physical([26, 18, 15])
    volume = blob(g, centre, sigma_mm=8.0)
    errors = {}
    for size in (32, 64):  # downsampling (1.8 mm) and upsampling (0.9 mm)
        pre = preprocess(volume, PreprocessSpec(size=size, percentiles=(0, 100)))
        back = to_source_grid(pre.image, pre.mapping, rescale=True)
        assert back.geometry == g
        assert back.array.dtype == np.float32
        errors[size] = float(np.abs(back.array - volume.array).max())
    # The blob (peak 1) is sampled at 4-9 voxels per sigma: small interpolation error
    # (measured max |error|: 0.011 at 64³, 0.023 at 32³; mean ~5e-4 / 1e-3).
    assert errors[64] < 0.02, errors
    assert errors[32] < 0.04, errors


def test_to_source_grid_nearest_keeps_labels_and_geometry() -> None:
    g = Geometry((30, 20, 10), (1.0, 1.0, 3.0), (0.0, 0.0, 0.0), OBLIQUE)
    mask = sphere(g, g.index_to_physical([15, 10, 5]), 7.0)
    pre = preprocess(mask, PreprocessSpec(size=32), mask=Volume(mask.array.astype(np.uint8), g))
    assert pre.mask is not None and pre.mask.dtype == np.uint8
    back = to_source_grid(pre.mask, pre.mapping, "nearest")
    assert back.geometry == g and back.array.dtype == np.uint8
    dice = 2 * (back.array * mask.array).sum() / (back.array.sum() + mask.array.sum())
    assert dice > 0.95
    with pytest.raises(InputError, match="model grid"):
        to_source_grid(np.zeros((16, 16, 16)), pre.mapping)
    with pytest.raises(ConfigError):
        to_source_grid(pre.mask, pre.mapping, "cubic")


def test_aspect_ratio_is_kept() -> None:
    # 60 × 40 × 40 mm, non-cubic in voxels and in mm; a stretch to a cube would make an ellipsoid.
    g = Geometry((60, 40, 20), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), IDENTITY)
    volume = sphere(g, g.index_to_physical([30, 20, 10]), 12.0)
    pre = preprocess(volume, PreprocessSpec(size=32, percentiles=(0, 100)))
    inside = pre.image > 0.5
    extents = [np.flatnonzero(inside.any(axis=axes)).size for axes in ((1, 2), (0, 2), (0, 1))]
    assert max(extents) - min(extents) <= 1, extents
    # The sphere's diameter in mm is kept: 24 mm / (60 mm / 32).
    assert abs(np.mean(extents) - 24.0 / (60.0 / 32)) <= 1.0


def test_crop_to_mask_centres_the_mask() -> None:
    g = Geometry((64, 48, 40), (1.0, 1.0, 1.5), (5.0, 5.0, 5.0), OBLIQUE)
    image = blob(g, g.index_to_physical([20, 30, 10]), 5.0)
    mask = np.zeros(g.shape, np.uint8)
    mask[5:16, 24:37, 12:29] = 1  # box: i 12..28, j 24..36, k 5..15
    spec = PreprocessSpec(size=32, crop_to_mask=True, margin_mm=4.0)
    pre = preprocess(image, spec, Volume(mask, g))
    n = spec.size
    assert np.allclose(centroid_index(pre.mask), (n - 1) / 2.0, atol=0.5)
    # Side = largest extent of the box plus margins: 17 voxels × 1 mm + 8 mm... vs 11 × 1.5 + 8.
    assert np.isclose(pre.mapping.spacing_mm, max(17 * 1.0, 13 * 1.0, 11 * 1.5) / n + 8.0 / n)
    assert int(pre.mask.sum()) == pytest.approx(mask.sum() * np.prod(g.spacing) / pre.mapping.spacing_mm**3, rel=0.15)


def test_apply_mask_zeroes_outside() -> None:
    g = Geometry((32, 32, 32), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), IDENTITY)
    image = Volume(np.random.default_rng(1).random(g.shape, dtype=np.float32) + 1.0, g)
    mask = sphere(g, g.index_to_physical([16, 16, 16]), 10.0)
    pre = preprocess(image, PreprocessSpec(size=32, apply_mask=True), Volume(mask.array.astype(np.uint8), g))
    assert np.all(pre.image[pre.mask == 0] == 0)
    assert pre.image[pre.mask == 1].max() > 0.9


def test_fov_gives_same_spacing_for_different_subjects() -> None:
    a = Geometry((40, 40, 30), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), IDENTITY)
    b = Geometry((90, 70, 50), (0.7, 0.7, 1.2), (10.0, 5.0, -3.0), OBLIQUE)
    spec = PreprocessSpec(size=16, fov_mm=64.0)
    spacings = []
    for g in (a, b):
        pre = preprocess(blob(g, g.index_to_physical(np.array(g.size) / 2), 6.0), spec)
        spacings.append(pre.mapping.spacing_mm)
    assert spacings == [4.0, 4.0]


def test_to_model_grid_maps_a_lesion_like_the_image() -> None:
    g = Geometry((40, 30, 20), (1.0, 1.5, 2.5), (10.0, -20.0, 5.0), OBLIQUE)
    centre = g.index_to_physical([18, 14, 9])
    pre = preprocess(sphere(g, centre, 8.0), PreprocessSpec(size=32, percentiles=(0, 100)))
    lesion = to_model_grid(Volume(sphere(g, centre, 8.0).array.astype(np.uint8), g), pre.mapping, "nearest")
    assert lesion.shape == (32, 32, 32) and lesion.dtype == np.uint8
    assert np.allclose(centroid_index(lesion), centroid_index(pre.image), atol=0.5)


def test_empty_or_missing_mask_is_input_error(tmp_path) -> None:
    g = Geometry((16, 16, 16), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), IDENTITY)
    image = Volume(np.ones(g.shape, np.float32), g)
    with pytest.raises(InputError, match="empty"):
        preprocess(image, PreprocessSpec(size=16, crop_to_mask=True), Volume(np.zeros(g.shape, np.uint8), g))
    with pytest.raises(InputError, match="needs a mask"):
        preprocess(image, PreprocessSpec(size=16, crop_to_mask=True))
    far = Geometry((16, 16, 16), (1.0, 1.0, 1.0), (500.0, 0.0, 0.0), IDENTITY)
    with pytest.raises(InputError, match="overlap"):
        preprocess(image, PreprocessSpec(size=16, crop_to_mask=True), Volume(np.ones(far.shape, np.uint8), far))
    # From files, the error names the file.
    write_image(image, tmp_path / "img.nii.gz")
    with pytest.raises(InputError, match="img.nii.gz"):
        preprocess_file(tmp_path / "img.nii.gz", PreprocessSpec(size=16, apply_mask=True))


def test_preprocess_file_matches_in_memory(tmp_path) -> None:
    g = Geometry((24, 20, 16), (1.0, 1.2, 2.0), (1.0, 2.0, 3.0), OBLIQUE)
    image = blob(g, g.index_to_physical([12, 10, 8]), 5.0)
    mask = sphere(g, g.index_to_physical([12, 10, 8]), 6.0)
    write_image(image, tmp_path / "img.nii.gz")
    write_image(Volume(mask.array.astype(np.uint8), g), tmp_path / "mask.nii.gz")
    spec = PreprocessSpec(size=16, crop_to_mask=True, margin_mm=3.0)
    from_file = preprocess_file(tmp_path / "img.nii.gz", spec, tmp_path / "mask.nii.gz")
    in_memory = preprocess(image, spec, Volume(mask.array.astype(np.uint8), g))
    assert from_file.mapping.model.allclose(in_memory.mapping.model)
    np.testing.assert_allclose(from_file.image, in_memory.image, atol=1e-5)


def test_deterministic_and_fast() -> None:
    g = Geometry((64, 64, 64), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), IDENTITY)
    volume = Volume(np.random.default_rng(2).random(g.shape, dtype=np.float32), g)
    for size in (32, 80):
        spec = PreprocessSpec(size=size)
        first = preprocess(volume, spec)
        start = time.perf_counter()
        second = preprocess(volume, spec)
        elapsed = time.perf_counter() - start
        assert np.array_equal(first.image, second.image)
        assert elapsed < 1.0  # typically 10-20 ms; loose bound for loaded CI machines


def test_fixed_intensity_window_is_not_shifted_by_a_bright_spot() -> None:
    """Percentile scaling darkens the rest of an image when a bright lesion appears; a fixed window does not."""
    geometry = Geometry((32, 32, 32), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    base = np.full((32, 32, 32), 200.0, np.float32)
    base[8:24, 8:24, 8:24] = 500.0
    lesion = base.copy()
    lesion[14:17, 14:17, 14:17] = 900.0
    window = PreprocessSpec(size=32, intensity_window=(0, 1000), antialias=False)
    spec = PreprocessSpec.from_dict(json.loads(json.dumps(window.to_dict())))
    assert spec.intensity_window == (0.0, 1000.0)
    a = preprocess(Volume(base, geometry), spec).image
    b = preprocess(Volume(lesion, geometry), spec).image
    assert abs(float(a[10, 10, 10]) - 0.5) < 1e-3 and abs(float(b[10, 10, 10]) - 0.5) < 1e-3
    assert float(b[15, 15, 15]) > 0.85
    by_percentile = PreprocessSpec(size=32, antialias=False)
    pa = preprocess(Volume(base, geometry), by_percentile).image
    pb = preprocess(Volume(lesion, geometry), by_percentile).image
    assert float(pb[10, 10, 10]) < float(pa[10, 10, 10]) - 0.2  # the global shift the window avoids
    with pytest.raises(ConfigError, match="intensity_window"):
        PreprocessSpec(intensity_window=(5, 5))
