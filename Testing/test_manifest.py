"""Manifest parsing, the saved stratified split and train-only attribute scaling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from AttriVAELib.core.errors import ManifestError
from AttriVAELib.data.io import Geometry, Volume, write_image
from AttriVAELib.data.manifest import (AttributeScaler, attribute_label, attribute_unit, fit_scaler, load_manifest,
                                       load_split)


def write_cohort(folder: Path, n: int = 40, with_label: bool = True, extra_rows: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images").mkdir(exist_ok=True)
    img = Volume(np.zeros((4, 4, 4), np.float32), Geometry((4, 4, 4), (1, 1, 1), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1)))
    write_image(img, folder / "images" / "a.nii.gz")
    rng = np.random.default_rng(0)
    lines = ["subject,image,label,volume_ml,wall_thickness_mm,meta_note,factor_k" if with_label
             else "subject,image,volume_ml,wall_thickness_mm,meta_note,factor_k"]
    for i in range(n):
        label = f",{i % 2}" if with_label else ""
        lines.append(f"s{i:03d},images/a.nii.gz{label},{rng.uniform(50, 150):.3f},{rng.uniform(5, 12):.3f},x,{i}")
    path = folder / "manifest.csv"
    path.write_text("\n".join(lines) + "\n" + extra_rows)
    return path


def test_load_manifest_columns_and_paths(tmp_path: Path) -> None:
    path = write_cohort(tmp_path / "d")
    m = load_manifest(tmp_path / "d")  # a folder works too
    assert m.path == path
    assert m.attribute_names == ["volume_ml", "wall_thickness_mm"]
    assert m.attribute_units == ["mL", "mm"]
    assert m.label_names == ["0", "1"]
    assert m.records[0].image == tmp_path / "d" / "images" / "a.nii.gz"
    assert m.records[0].row == 2
    assert m.records[0].metadata == {"meta_note": "x", "factor_k": "0"}
    assert m.attribute_matrix().shape == (40, 2)
    assert list(m.labels()[:4]) == [0, 1, 0, 1]


def test_units_and_labels() -> None:
    assert attribute_unit("lesion_volume_ml") == "mL"
    assert attribute_unit("surface_area_mm2") == "mm²"
    assert [attribute_unit(n) for n in ("height_cm", "weight_kg", "bsa_m2", "heart_rate_bpm")] == ["cm", "kg", "m²", "bpm"]
    assert attribute_unit("sphericity") == ""
    assert attribute_label("wall_thickness_mm") == "wall thickness (mm)"


def test_attribute_subset_order(tmp_path: Path) -> None:
    write_cohort(tmp_path)
    m = load_manifest(tmp_path, attributes=["wall_thickness_mm", "volume_ml"])
    assert m.attribute_names == ["wall_thickness_mm", "volume_ml"]


def test_split_is_stratified_seeded_and_saved(tmp_path: Path) -> None:
    write_cohort(tmp_path, n=60)
    m = load_manifest(tmp_path)
    split = load_split(m, seed=3)
    saved = json.loads((tmp_path / "split.json").read_text())
    assert saved["subjects"] == split
    assert [len(split[s]) for s in ("train", "val", "test")] == [42, 9, 9]
    assert sorted(sum(split.values(), [])) == sorted(m.subjects)
    for name in ("train", "test"):
        labels = m.labels(m.subset(split[name]))
        assert abs(labels.mean() - 0.5) < 0.12  # stratified
    # later calls reuse the saved split even with another seed
    assert load_split(m, seed=99) == split
    # same seed, fresh folder → same split; other seed → different
    (tmp_path / "split.json").unlink()
    assert load_split(m, seed=3) == split
    (tmp_path / "split.json").unlink()
    assert load_split(m, seed=4) != split


def test_split_mismatch_is_an_error(tmp_path: Path) -> None:
    write_cohort(tmp_path, n=20)
    load_split(load_manifest(tmp_path))
    write_cohort(tmp_path, n=25)
    with pytest.raises(ManifestError, match="does not match"):
        load_split(load_manifest(tmp_path))


def test_split_without_labels(tmp_path: Path) -> None:
    write_cohort(tmp_path, n=20, with_label=False)
    m = load_manifest(tmp_path)
    assert m.label_names == []
    split = load_split(m)
    assert sum(len(v) for v in split.values()) == 20


def test_scaler_fitted_on_train_only(tmp_path: Path) -> None:
    write_cohort(tmp_path, n=50)
    m = load_manifest(tmp_path)
    split = load_split(m)
    scaler = fit_scaler(m, split)
    train = m.attribute_matrix(m.subset(split["train"]))
    np.testing.assert_allclose(scaler.transform(train).min(0), 0)
    np.testing.assert_allclose(scaler.transform(train).max(0), 1)
    np.testing.assert_allclose(scaler.inverse_transform(scaler.transform(m.attribute_matrix())), m.attribute_matrix())
    loaded = AttributeScaler.load(tmp_path / "attribute_scaling.json")
    np.testing.assert_allclose(loaded.minimum, train.min(0))
    assert json.loads((tmp_path / "attribute_scaling.json").read_text())["units"] == ["mL", "mm"]


# -- errors -------------------------------------------------------------------------------------

def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="manifest not found"):
        load_manifest(tmp_path)


def test_missing_image_column(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text("subject,volume_ml\na,1\n")
    with pytest.raises(ManifestError, match="missing required column 'image'") as e:
        load_manifest(tmp_path)
    one_line(e)


def test_non_numeric_attribute_names_row(tmp_path: Path) -> None:
    write_cohort(tmp_path, n=4, extra_rows="s999,images/a.nii.gz,1,big,7,x,1\n")
    with pytest.raises(ManifestError, match=r"row 6: attribute 'volume_ml' is not numeric \('big'\)") as e:
        load_manifest(tmp_path)
    one_line(e)


def test_nan_attribute(tmp_path: Path) -> None:
    write_cohort(tmp_path, n=2, extra_rows="s999,images/a.nii.gz,1,nan,7,x,1\n")
    with pytest.raises(ManifestError, match="row 4: attribute 'volume_ml' is not finite"):
        load_manifest(tmp_path)


def test_unknown_path(tmp_path: Path) -> None:
    write_cohort(tmp_path, n=2, extra_rows="s999,images/missing.nii.gz,1,3,7,x,1\n")
    with pytest.raises(ManifestError, match="row 4: image file 'images/missing.nii.gz' not found"):
        load_manifest(tmp_path)


def test_duplicate_subject(tmp_path: Path) -> None:
    write_cohort(tmp_path, n=2, extra_rows="s000,images/a.nii.gz,1,3,7,x,1\n")
    with pytest.raises(ManifestError, match="already used on row 2"):
        load_manifest(tmp_path)


def test_unknown_attribute_requested(tmp_path: Path) -> None:
    write_cohort(tmp_path, n=2)
    with pytest.raises(ManifestError, match=r"attribute columns \['ef_pct'\] not found"):
        load_manifest(tmp_path, attributes=["ef_pct"])


def test_empty_manifest(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text("")
    with pytest.raises(ManifestError, match="empty"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.csv").write_text("image,label\n")
    with pytest.raises(ManifestError, match="no rows"):
        load_manifest(tmp_path)


def test_too_few_subjects_for_split(tmp_path: Path) -> None:
    write_cohort(tmp_path, n=2)
    with pytest.raises(ManifestError, match="too few"):
        load_split(load_manifest(tmp_path), fractions=(0.1, 0.45, 0.45))
