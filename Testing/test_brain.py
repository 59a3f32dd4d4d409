"""The synthetic brain cohort built from the MNI152 template: each factor moves its measured
attribute, the files, the lesions, determinism and the error without nilearn."""

from __future__ import annotations

import argparse
import importlib.util
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

from AttriVAELib.cli.data import add_synth_brain_arguments, run_synth_brain
from AttriVAELib.cohorts.brain import generator as brain
from AttriVAELib.core.errors import ConfigError, InputError
from AttriVAELib.data.manifest import attribute_unit, load_manifest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("nilearn") is None, reason="needs nilearn's MNI152 template")

SIZE = 32
N = 6
SEED = 1


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("brain") / "serial"
    assert brain.generate_brain_cohort(out, n=N, size=SIZE, seed=SEED, workers=1, progress=False) == out
    return out


@pytest.fixture(scope="module")
def parallel_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("brain") / "parallel"
    brain.generate_brain_cohort(out, n=N, size=SIZE, seed=SEED, workers=2, progress=False)
    return out


@pytest.fixture(scope="module")
def base() -> brain.BrainFactors:
    """A lesion-free subject whose nuisances stay fixed while one factor is swept."""
    return replace(brain.sample_factors(2, SEED), label=0)


def _read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_manifest_has_the_four_attributes(cohort: Path):
    manifest = load_manifest(cohort)
    assert manifest.attribute_names == ["brain_volume_ml", "ventricle_volume_ml", "cortical_thickness_mm",
                                        "lesion_load_ml"]
    assert [attribute_unit(name) for name in manifest.attribute_names] == ["mL", "mL", "mm", "mL"]
    assert manifest.label_names == ["0", "1"]
    assert len(manifest.records) == N
    record = manifest.records[0]
    assert {"factor_scale", "factor_ventricle_expansion_mm", "factor_thinning_mm", "meta_gm_volume_ml"} <= set(
        record.metadata)
    assert "brain cohort" in brain.summarize_brain_cohort(cohort)


def test_written_geometry(cohort: Path):
    expected = brain.geometry_for_size(SIZE)
    assert expected.spacing == pytest.approx(tuple(fov / SIZE for fov in brain.FOV_MM))
    for record in load_manifest(cohort).records[:2]:
        for path in (record.image, record.mask, record.lesion):
            image = sitk.ReadImage(str(path))
            assert image.GetSize() == (SIZE,) * 3
            assert image.GetSpacing() == pytest.approx(expected.spacing, abs=1e-5)
            assert image.GetOrigin() == pytest.approx(expected.origin, abs=1e-4)
            assert image.GetDirection() == pytest.approx(np.eye(3).ravel())
        assert sitk.ReadImage(str(record.image)).GetPixelID() == sitk.sitkInt16


def test_images_are_skull_stripped_brains_inside_the_field_of_view(cohort: Path):
    for record in load_manifest(cohort).records:
        image, mask = _read(record.image), _read(record.mask).astype(bool)
        assert not image[~ndi.binary_dilation(mask, iterations=2)].any()
        assert image[mask].mean() > 300  # stored as 1000 × (white matter ≈ 1)
        borders = [mask[0], mask[-1], mask[:, 0], mask[:, -1], mask[:, :, 0], mask[:, :, -1]]
        assert not any(b.any() for b in borders)


def test_lesion_masks_follow_the_label(cohort: Path):
    manifest = load_manifest(cohort)
    labels = {record.label for record in manifest.records}
    assert labels == {"0", "1"}
    for record in manifest.records:
        lesion, mask = _read(record.lesion).astype(bool), _read(record.mask).astype(bool)
        load = record.attributes["lesion_load_ml"]
        if record.label == "0":
            assert not lesion.any() and load == 0
        else:
            assert lesion.any() and load > 0
            assert not (lesion & ~mask).any()


def test_same_seed_same_files_whatever_the_workers(cohort: Path, parallel_cohort: Path):
    assert (cohort / "manifest.csv").read_text() == (parallel_cohort / "manifest.csv").read_text()
    assert (cohort / "cohort.json").read_text() == (parallel_cohort / "cohort.json").read_text()
    for sub in ("images", "masks", "lesions", "tissues"):
        for path in sorted((cohort / sub).iterdir()):
            np.testing.assert_array_equal(_read(path), _read(parallel_cohort / sub / path.name))


def test_render_subject_is_pure():
    first, second = brain.render_subject(3, 16, SEED), brain.render_subject(3, 16, SEED)
    assert first[0] == second[0]
    for a, b in zip(first[1:4], second[1:4]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first[4]["tissues"], second[4]["tissues"])
    assert brain.sample_factors(3, SEED) != brain.sample_factors(3, SEED + 1)


def _sweep(base: brain.BrainFactors, name: str, values: list[float], attribute: str,
           applied: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    measured, changes = [], []
    for value in values:
        f = replace(base, **{name: value})
        measured.append(brain.measure_factors(f)[attribute])
        changes.append(brain.applied_changes(f)[applied] if applied else value)
    return np.asarray(measured), np.asarray(changes)


def test_ventricle_volume_grows_with_the_expansion(base: brain.BrainFactors):
    targets = [12.0, 20.0, 30.0]
    measured, expansion = _sweep(base, "target_ventricle_volume_ml", targets, "ventricle_volume_ml",
                                 "ventricle_expansion_mm")
    assert np.all(np.diff(expansion) > 0)
    assert np.all(np.diff(measured) > 0)
    assert measured == pytest.approx(targets, abs=1.0)


def test_cortical_thickness_falls_with_the_thinning(base: brain.BrainFactors):
    targets = [4.6, 4.2, 3.8]
    measured, thinning = _sweep(base, "target_cortical_thickness_mm", targets, "cortical_thickness_mm",
                                "thinning_mm")
    assert np.all(np.diff(thinning) > 0)
    assert np.all(np.diff(measured) < 0)
    assert measured == pytest.approx(targets, abs=0.1)


def test_brain_volume_grows_with_the_head_size(base: brain.BrainFactors):
    scales = [0.86, 0.95, 1.04]
    measured, _ = _sweep(base, "scale", scales, "brain_volume_ml")
    assert np.all(np.diff(measured) > 0)
    assert measured / measured[0] == pytest.approx((np.asarray(scales) / scales[0]) ** 3, rel=0.02)


def test_ventricles_and_thinning_leave_the_brain_volume_alone(base: brain.BrainFactors):
    small = brain.measure_factors(replace(base, target_ventricle_volume_ml=12.0, target_cortical_thickness_mm=4.6))
    large = brain.measure_factors(replace(base, target_ventricle_volume_ml=30.0, target_cortical_thickness_mm=3.8))
    assert large["brain_volume_ml"] == pytest.approx(small["brain_volume_ml"], rel=0.002)


def test_lesion_load_grows_with_the_target(base: brain.BrainFactors):
    measured, _ = _sweep(replace(base, label=1), "target_lesion_load_ml", [0.8, 2.5, 5.0], "lesion_load_ml")
    assert np.all(np.diff(measured) > 0) and measured[0] > 0


def test_invalid_requests_are_config_errors(cohort: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match="already exists"):
        brain.generate_brain_cohort(cohort, n=1, size=SIZE, progress=False)
    with pytest.raises(ConfigError, match="size"):
        brain.generate_brain_cohort(tmp_path / "x", n=1, size=8, progress=False)
    with pytest.raises(ConfigError, match="at least one"):
        brain.generate_brain_cohort(tmp_path / "x", n=0, progress=False)
    assert not (tmp_path / "x").exists()


def test_missing_nilearn_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nilearn" else real(name, *a))
    with pytest.raises(InputError, match="pip install nilearn") as info:
        brain.generate_brain_cohort(tmp_path / "out", n=2, size=SIZE, progress=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_missing_template_file_is_an_input_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(brain.TEMPLATE_FILES, "t1", "no_such_template.nii.gz")
    with pytest.raises(InputError, match="no_such_template"):
        brain.template_paths()


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture):
    parser = argparse.ArgumentParser()
    add_synth_brain_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", str(tmp_path / "c"), "--size", "8"])
    args = parser.parse_args(["--out", str(tmp_path / "c"), "--n", "2", "--size", "16", "--workers", "1", "--quiet"])
    assert run_synth_brain(args) == 0
    assert "2 subjects, 16³ voxels" in capsys.readouterr().out
    assert len(load_manifest(tmp_path / "c").records) == 2


def test_tissue_maps_hold_the_ventricles_and_the_lesions(cohort: Path):
    import json

    info = json.loads((cohort / "cohort.json").read_text())
    labels = info["tissues"]["labels"]
    assert info["attribute_regions"]["ventricle_volume_ml"] == {"folder": "tissues", "labels": [labels["ventricles"]]}
    for record in load_manifest(cohort).records:
        tissues = _read(cohort / "tissues" / f"{record.subject}.nii.gz")
        mask, lesion = _read(record.mask).astype(bool), _read(record.lesion).astype(bool)
        np.testing.assert_array_equal(tissues > 0, mask)
        np.testing.assert_array_equal(tissues == labels["lesion"], lesion)
        ventricle_ml = float((tissues == labels["ventricles"]).sum()) * np.prod(info["spacing"]) / 1000
        assert ventricle_ml == pytest.approx(record.attributes["ventricle_volume_ml"], rel=0.35)


MEASURE_SIZE = 64


@pytest.fixture(scope="module")
def atlas(base: brain.BrainFactors):
    from AttriVAELib.cohorts.brain.measure import VentricleAtlas

    pairs = []
    for index in range(6):
        _, _, _, tissues = brain._render(brain.sample_factors(index, SEED),
                                         brain._Warp(brain._anatomy(brain.sample_factors(index, SEED)),
                                                     brain.load_template()), MEASURE_SIZE)
        pairs.append((tissues > 0, tissues == brain.TISSUE_LABELS["ventricles"]))
    return VentricleAtlas.from_label_maps(pairs)


def _measure_sweep(base: brain.BrainFactors, name: str, values: list[float], atlas) -> list[dict]:
    from AttriVAELib.cohorts.brain.measure import measure_brain
    from AttriVAELib.data.io import Volume

    levels = (brain.load_template().csf_intensity, brain.load_template().gm_intensity)
    geometry = brain.geometry_for_size(MEASURE_SIZE)
    return [measure_brain(Volume(brain.render_factors(replace(base, **{name: v}), MEASURE_SIZE)[0], geometry),
                          levels, atlas) for v in values]


def test_image_measure_follows_the_ventricles_alone(base: brain.BrainFactors, atlas):
    rows = _measure_sweep(base, "target_ventricle_volume_ml", [11.0, 17.0, 23.0, 29.0], atlas)
    ventricles = [r["ventricle_volume_ml"] for r in rows]
    assert np.all(np.diff(ventricles) > 0)
    brain_volumes = [r["brain_volume_ml"] for r in rows]
    assert max(brain_volumes) - min(brain_volumes) < 0.02 * np.mean(brain_volumes)


def test_image_measure_follows_the_cortical_thickness(base: brain.BrainFactors, atlas):
    rows = _measure_sweep(base, "target_cortical_thickness_mm", [3.8, 4.1, 4.4, 4.7], atlas)
    assert np.all(np.diff([r["cortical_thickness_mm"] for r in rows]) > 0)


def test_image_measure_without_an_atlas_or_a_brain(base: brain.BrainFactors):
    from AttriVAELib.cohorts.brain.measure import measure_brain
    from AttriVAELib.data.io import Volume

    geometry = brain.geometry_for_size(SIZE)
    assert measure_brain(Volume(np.zeros((SIZE,) * 3, np.float32), geometry)) is None
    row = measure_brain(Volume(brain.render_factors(base, SIZE)[0], geometry))
    assert set(row) == {"brain_volume_ml", "cortical_thickness_mm"}


def test_evaluation_knows_the_brain_cohort(cohort: Path):
    from AttriVAELib.cohorts.brain.measure import BrainMeasure
    from AttriVAELib.cohorts.registry import cohort_kind

    kind = cohort_kind(load_manifest(cohort))
    assert kind.name == "brain" and isinstance(kind.measure, BrainMeasure)
    assert kind.measure.atlas is not None and kind.measure.atlas.probability.max() > 0.5
    assert kind.regions["ventricle_volume_ml"].labels == (brain.TISSUE_LABELS["ventricles"],)


def test_walkthrough_script_runs_end_to_end_and_reuses_its_steps(tmp_path: Path):
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "N": "12", "SIZE": "32", "PRESET": "brain_cpu", "EPOCHS": "1", "WORKERS": "1",
           "ATTRIVAE": f"{sys.executable} -m AttriVAELib.cli"}
    script = Path(__file__).resolve().parents[1] / "scripts" / "brain_walkthrough.sh"
    done = subprocess.run(["bash", str(script), str(tmp_path / "b")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "evaluation report:" in done.stdout
    metrics = json.loads((tmp_path / "b" / "report" / "metrics.json").read_text())
    assert metrics["cohort_kind"] == "brain" and "attribute_attention" in metrics
    again = subprocess.run(["bash", str(script), str(tmp_path / "b")], env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "training already finished" in again.stdout

    # The optional fine-tuning stage starts from the trained run, and its model is the one evaluated.
    shutil.rmtree(tmp_path / "b" / "report")
    tuned = subprocess.run(["bash", str(script), str(tmp_path / "b")], capture_output=True, text=True,
                           env={**env, "FINETUNE_EPOCHS": "1", "LAYER": "conv3"})
    assert tuned.returncode == 0, tuned.stderr[-2000:]
    metrics = json.loads((tmp_path / "b" / "report" / "metrics.json").read_text())
    assert metrics["run"] == str((tmp_path / "b" / "run_ft").resolve()) and metrics["gradcam_layer"] == "encoder.conv3"
    assert "reencoded_gamma: 200" in (tmp_path / "b" / "run_ft" / "config.yaml").read_text()

    # A tissue map that went missing is one line naming it, and no report is half-written.
    test = json.loads((tmp_path / "b" / "cohort" / "split.json").read_text())["subjects"]["test"][0]
    (tmp_path / "b" / "cohort" / "tissues" / f"{test}.nii.gz").unlink()
    broken = subprocess.run([sys.executable, "-m", "AttriVAELib.cli", "evaluate", "--model", str(tmp_path / "b" / "run"),
                             "--out", str(tmp_path / "broken"), "--no-figures"], capture_output=True, text=True)
    assert broken.returncode == 2
    assert f"{test}.nii.gz" in broken.stderr and "Traceback" not in broken.stderr
    assert len(broken.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "broken").exists()
