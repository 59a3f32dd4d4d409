"""The synthetic phantom cohort: independence of the factors, fidelity of the measured
attributes, the lesion, determinism and the atomic writer."""

from __future__ import annotations

import csv
import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi
from scipy.stats import spearmanr

from AttriVAELib.cohorts.phantom import generator as synth
from AttriVAELib.core.errors import ConfigError, InputError
from AttriVAELib.data.attributes import shape_attributes
from AttriVAELib.data.io import read_image, read_mask

ATTRIBUTES = ["volume_ml", "max_axial_diameter_mm", "wall_thickness_mm"]
FACTORS = ["factor_outer_volume_ml", "factor_diameter_mm", "factor_thickness_mm"]


def _row(index: int, size: int = 32, seed: int = 0) -> dict:
    return synth.render_subject(index, size, seed)[0]


def _rows(n: int, size: int = 32, seed: int = 0) -> list[dict]:
    with ProcessPoolExecutor(2) as pool:
        return list(pool.map(_row, range(n), [size] * n, [seed] * n, chunksize=16))


def _off_diagonal(matrix: np.ndarray) -> np.ndarray:
    return matrix[~np.eye(len(matrix), dtype=bool)]


@pytest.fixture(scope="module")
def rows_1000() -> list[dict]:
    """Rows (measured attributes and factors) of 1,000 subjects rendered at 32³."""
    return _rows(1000)


def test_geometry_is_fixed_in_physical_space():
    g64, g32 = synth.geometry_for_size(64), synth.geometry_for_size(32)
    assert g64.spacing == pytest.approx((1.5, 1.5, 1.8))
    assert g32.spacing == pytest.approx((3.0, 3.0, 3.6))
    for g in (g64, g32):
        far_corner = g.index_to_physical(np.array(g.size) - 1)
        centre = (np.array(g.origin) + far_corner) / 2
        assert centre == pytest.approx(synth.CENTRE_MM)
        assert np.array(g.size) * np.array(g.spacing) == pytest.approx(synth.FOV_MM)
    assert all(abs(o) > 1 for o in g64.origin)


def test_factors_are_pure_and_within_ranges():
    assert synth.sample_factors(7, 3) == synth.sample_factors(7, 3)
    assert synth.sample_factors(7, 3) != synth.sample_factors(7, 4)
    half_fov = np.array(synth.FOV_MM) / 2
    for index in range(500):
        f = synth.sample_factors(index, 0)
        for name in ("outer_volume_ml", "diameter_mm", "thickness_mm", "k", "rotation_deg", "noise_sd"):
            low, high = synth.RANGES[name]
            assert low <= getattr(f, name) <= high
        a, b, c = f.semi_axes
        assert a == pytest.approx(f.diameter_mm / 2) and b <= a
        assert 4 / 3 * np.pi * a * b * c / 1000 == pytest.approx(f.outer_volume_ml)
        assert min(a, b, c) - f.thickness_mm > 5  # a real lumen in every direction
        extent = np.array([a, a, c]) + np.abs(f.translation_mm)
        assert np.all(extent < half_fov - 3)  # fits the field of view with a margin


def test_factors_are_independent_over_1000_subjects():
    factors = [synth.sample_factors(i, 0) for i in range(1000)]
    table = np.array([[f.outer_volume_ml, f.diameter_mm, f.thickness_mm, f.k] for f in factors])
    rho = spearmanr(table).statistic
    assert np.all(np.abs(_off_diagonal(rho)) < 0.1), np.round(rho, 3)
    labels = np.array([f.label for f in factors])
    assert 430 < labels.sum() < 570
    assert all(abs(spearmanr(labels, table[:, j]).statistic) < 0.1 for j in range(3))


def test_render_subject_is_pure():
    row_a, *arrays_a = synth.render_subject(3, 32, 5)
    row_b, *arrays_b = synth.render_subject(3, 32, 5)
    assert row_a == row_b
    for a, b in zip(arrays_a, arrays_b):
        np.testing.assert_array_equal(a, b)
    image, wall, lesion = arrays_a
    assert image.shape == wall.shape == lesion.shape == (32, 32, 32)
    assert image.dtype == np.float32 and wall.dtype == np.uint8 and lesion.dtype == np.uint8
    assert set(np.unique(wall)) == {0, 1} and not np.any(lesion & ~wall)
    assert list(row_a) == [c for c in synth.MANIFEST_COLUMNS if c not in ("image", "mask", "lesion")]


def test_lesion_changes_intensity_only():
    index = next(i for i in range(50) if synth.sample_factors(i, 0).label == 1)
    with_lesion = synth.sample_factors(index, 0)
    without = replace(with_lesion, label=0)
    size = 48
    image_1, wall_1, lesion_1 = synth.render_factors(with_lesion, size)
    image_0, wall_0, lesion_0 = synth.render_factors(without, size)
    np.testing.assert_array_equal(wall_1, wall_0)
    assert lesion_1.sum() > 0 and lesion_0.sum() == 0
    spacing = synth.geometry_for_size(size).spacing
    assert shape_attributes(wall_1, spacing) == shape_attributes(wall_0, spacing)
    changed = image_1 != image_0
    assert changed.any()
    assert not np.any(changed & ~ndi.binary_dilation(lesion_1, iterations=2))  # partial volume: a voxel around
    assert image_1[lesion_1 > 0].mean() > image_0[lesion_1 > 0].mean() + 0.3  # bright scar


def test_lesions_vary_in_size(rows_1000):
    lesion = np.array([r["lesion_volume_ml"] for r in rows_1000 if r["label"] == 1])
    assert len(lesion) > 400 and lesion.min() > 0
    assert lesion.max() > 5 * lesion.min()
    assert all(r["lesion_volume_ml"] == 0 and r["factor_lesion_radius_mm"] == 0 for r in rows_1000 if r["label"] == 0)


def test_measured_attributes_track_factors_and_add_no_correlation(rows_1000):
    measured = np.array([[r[a] for a in ATTRIBUTES] for r in rows_1000])
    factors = np.array([[r[f] for f in FACTORS] for r in rows_1000])
    for j, name in enumerate(ATTRIBUTES):
        assert spearmanr(measured[:, j], factors[:, j]).statistic > 0.95, name
    # Measurement must not couple the attributes: same correlations as the factors themselves.
    rho_measured = spearmanr(measured).statistic
    rho_factors = spearmanr(factors).statistic
    assert np.all(np.abs(_off_diagonal(rho_measured - rho_factors)) < 0.05)
    assert np.all(np.abs(_off_diagonal(rho_measured)) < 0.15)
    assert np.abs(measured[:, 0] / factors[:, 0] - 1).max() < 0.03  # volume within 3 % even at 3 mm


def test_measured_attributes_are_independent_over_1000_subjects(rows_1000):
    measured = np.array([[r[a] for a in ATTRIBUTES] for r in rows_1000])
    rho = spearmanr(measured).statistic
    assert np.all(np.abs(_off_diagonal(rho)) < 0.1), np.round(rho, 3)


def _read_manifest(folder: Path) -> tuple[list[str], list[dict]]:
    with open(folder / "manifest.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames), list(reader)


def test_generate_cohort_writes_a_complete_cohort(tmp_path, capsys):
    out = tmp_path / "cohort"
    summary = synth.generate_cohort(out, n=6, size=32, seed=1, workers=2, progress=True)
    assert "phantoms" in capsys.readouterr().err  # the tqdm bar
    header, rows = _read_manifest(out)
    assert header == list(synth.MANIFEST_COLUMNS)
    assert header[:9] == ["subject", "image", "mask", "lesion", "label", "volume_ml", "max_axial_diameter_mm",
                          "wall_thickness_mm", "lesion_volume_ml"]
    groups = [0 if c.startswith("meta_") else 1 if c.startswith("factor_") else -1 for c in header[9:]]
    assert groups == sorted(groups) and groups[0] == 0 and groups[-1] == 1
    assert {"meta_surface_area_mm2", "meta_sphericity", "meta_wall_volume_ml", "factor_outer_volume_ml",
            "factor_diameter_mm", "factor_thickness_mm", "factor_k", "factor_rotation_deg",
            "factor_lesion_radius_mm"} <= set(header)
    assert [r["subject"] for r in rows] == [f"sub-{i:04d}" for i in range(6)]
    geometry = synth.geometry_for_size(32)
    for row in rows:
        assert row["image"] == f"images/{row['subject']}.nii.gz"
        image = read_image(out / row["image"])
        mask = read_mask(out / row["mask"])
        lesion_path = out / row["lesion"]
        assert image.geometry.allclose(geometry) and mask.geometry.allclose(geometry)
        assert sitk.ReadImage(str(out / row["image"])).GetPixelID() == sitk.sitkInt16
        assert 0 < image.array.max() < 2000  # intensities stored ×1000
        assert sitk.ReadImage(str(out / row["mask"])).GetPixelID() == sitk.sitkUInt8
        lesion = sitk.ReadImage(str(lesion_path))
        assert lesion.GetPixelID() == sitk.sitkUInt8
        lesion_array = sitk.GetArrayFromImage(lesion)
        voxel_ml = np.prod(geometry.spacing) / 1000
        assert float(row["lesion_volume_ml"]) == pytest.approx(lesion_array.sum() * voxel_ml, rel=1e-5)
        assert (lesion_array.sum() > 0) == (row["label"] == "1")
        measured = shape_attributes(mask.array, mask.geometry.spacing)
        assert float(row["volume_ml"]) == pytest.approx(measured["volume_ml"], rel=1e-5)
        assert float(row["wall_thickness_mm"]) == pytest.approx(measured["wall_thickness_mm"], rel=1e-5)
    info = json.loads((out / "cohort.json").read_text())
    assert info["seed"] == 1 and info["n"] == 6 and info["size"] == 32
    assert info["spacing"] == pytest.approx([3.0, 3.0, 3.6])
    assert info["attributes"]["wall_thickness_mm"]["unit"] == "mm"
    assert summary["n"] == 6 and summary["size"] == 32
    assert sum(summary["labels"].values()) == 6
    assert set(summary["attributes"]) == {"volume_ml", "max_axial_diameter_mm", "wall_thickness_mm",
                                          "lesion_volume_ml"}
    stats = summary["attributes"]["volume_ml"]
    assert stats["min"] <= stats["mean"] <= stats["max"]
    text = synth.summarize_cohort(out)
    assert "6 subjects" in text and "wall_thickness_mm" in text and "3 × 3 × 3.6 mm" in text
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def _arrays(folder: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(folder)): read_image(p).array for p in sorted(folder.glob("*/*.nii.gz"))}


def test_same_seed_same_cohort_regardless_of_workers(tmp_path):
    a = tmp_path / "a"
    b = tmp_path / "b"
    c = tmp_path / "c"
    synth.generate_cohort(a, n=4, size=24, seed=3, workers=1, progress=False)
    synth.generate_cohort(b, n=4, size=24, seed=3, workers=2, progress=False)
    synth.generate_cohort(c, n=4, size=24, seed=4, workers=1, progress=False)
    assert (a / "manifest.csv").read_text() == (b / "manifest.csv").read_text()
    assert (a / "cohort.json").read_text() == (b / "cohort.json").read_text()
    arrays_a, arrays_b, arrays_c = _arrays(a), _arrays(b), _arrays(c)
    assert arrays_a.keys() == arrays_b.keys() and len(arrays_a) == 12
    for key in arrays_a:
        np.testing.assert_array_equal(arrays_a[key], arrays_b[key])
    assert (a / "manifest.csv").read_text() != (c / "manifest.csv").read_text()
    assert not np.array_equal(arrays_a["images/sub-0000.nii.gz"], arrays_c["images/sub-0000.nii.gz"])


def test_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "cohort"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="already exists; pass --overwrite"):
        synth.generate_cohort(out, n=2, size=24, progress=False)
    assert (out / "keep.txt").exists()
    synth.generate_cohort(out, n=2, size=24, progress=False, overwrite=True, workers=1)
    assert not (out / "keep.txt").exists() and (out / "manifest.csv").exists()


def test_failed_run_leaves_no_cohort(tmp_path, monkeypatch):
    real = synth.render_subject

    def failing(index, size, seed):
        if index == 2:
            raise RuntimeError("boom")
        return real(index, size, seed)

    monkeypatch.setattr(synth, "render_subject", failing)
    with pytest.raises(RuntimeError, match="boom"):
        synth.generate_cohort(tmp_path / "cohort", n=4, size=24, workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs", [{"n": 0}, {"n": 2, "size": 16}])
def test_invalid_arguments(tmp_path, kwargs):
    with pytest.raises(ConfigError):
        synth.generate_cohort(tmp_path / "cohort", progress=False, **kwargs)
    assert not (tmp_path / "cohort").exists()


def test_summarize_needs_a_cohort(tmp_path):
    with pytest.raises(InputError, match="manifest.csv"):
        synth.summarize_cohort(tmp_path)
