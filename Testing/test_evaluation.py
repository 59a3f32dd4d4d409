"""Evaluation: classification intervals, localization scores, traversal fidelity, the report and compare."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest

from AttriVAELib.cli import main as cli_main
from AttriVAELib.core.errors import ConfigError, InputError
from AttriVAELib.cohorts.phantom.cohort import measure_shell, segment_shell
from AttriVAELib.evaluate.evaluation import (EvaluationSettings, classification_scores, decoded_attributes,
                                             map_localization, traversal_fidelity)
from AttriVAELib.data.io import Volume
from AttriVAELib.cohorts.phantom.generator import geometry_for_size, render_factors, sample_factors

SIZE = 48


class RenderingDecoder:
    """The known-good case: latent dim k sets generating factor k of a phantom exactly.

    ``leak`` couples the thickness to the diameter dim (a known-bad, entangled decoder);
    ``nudge`` adds a small thickness change along the diameter dim to each subject's own;
    ``frozen`` ignores the latent altogether.
    """

    attribute_names = ["volume_ml", "max_axial_diameter_mm", "wall_thickness_mm"]
    fields = ["outer_volume_ml", "diameter_mm", "thickness_mm"]

    def __init__(self, leak: bool = False, frozen: bool = False, nudge: bool = False) -> None:
        self.leak, self.frozen, self.nudge = leak, frozen, nudge

    def traverse(self, factors, k, values):
        frames = []
        for v in values:
            change = {} if self.frozen else {self.fields[k]: float(v)}
            if self.leak and k == 1 and not self.frozen:
                change["thickness_mm"] = 5.0 + (float(v) - 44.0) * 0.4
            if self.nudge and k == 1:
                change["thickness_mm"] = factors.thickness_mm + (float(v) - 45.0) * 0.05
            frames.append(render_factors(dataclasses.replace(factors, **change), SIZE)[0])
        return frames

    def to_input_grid(self, array, _factors):
        return Volume(np.asarray(array, np.float32), geometry_for_size(SIZE))


def _healthy_factors():
    f = next(sample_factors(i, seed=5) for i in range(50) if sample_factors(i, seed=5).label == 0)
    return dataclasses.replace(f, outer_volume_ml=72.0, diameter_mm=50.0, thickness_mm=7.0, noise_sd=0.01)


RANGES = {0: (60.0, 84.0), 1: (45.0, 55.0), 2: (5.5, 9.5)}


def test_traversal_fidelity_known_good_case():
    spreads = {name: hi - lo for name, (lo, hi) in zip(RenderingDecoder.attribute_names, RANGES.values())}
    result = traversal_fidelity(RenderingDecoder(), [_healthy_factors()], measure_shell, RANGES, steps=5,
                                spreads=spreads)
    assert set(result) == set(RenderingDecoder.attribute_names)
    for name, row in result.items():
        assert row["rho"] >= 0.9 and row["rho_within_median"] >= 0.9, (name, row)
        assert row["subjects"] == 1
        assert row["spread"] == spreads[name] and 0.7 <= row["gain"] <= 1.3, (name, row)


def test_traversal_fidelity_catches_leakage_and_a_frozen_decoder():
    leaky = traversal_fidelity(RenderingDecoder(leak=True), [_healthy_factors()], measure_shell, {1: RANGES[1]},
                               steps=5)
    row = leaky["max_axial_diameter_mm"]
    assert row["rho"] >= 0.9
    assert row["leakage_max_attribute"] == "wall_thickness_mm" and row["leakage_max"] >= 0.9
    frozen = traversal_fidelity(RenderingDecoder(frozen=True), [_healthy_factors()], measure_shell, RANGES, steps=5,
                                spreads={name: 1.0 for name in RenderingDecoder.attribute_names})
    assert all(abs(r["rho"]) < 0.5 and abs(r["rho_within_median"]) < 0.5 for r in frozen.values())
    assert all(abs(r["gain"]) < 0.05 for r in frozen.values()), frozen
    assert row["gain"] is None  # no spreads given


def test_traversal_leakage_pools_subjects():
    """A side effect small against the subjects' spread is a small pooled leak, though |ρ| = 1 within each."""
    subjects = [dataclasses.replace(_healthy_factors(), thickness_mm=t) for t in (5.5, 6.5, 7.5, 8.5, 9.5)]
    result = traversal_fidelity(RenderingDecoder(nudge=True), subjects, measure_shell, {1: RANGES[1]}, steps=5)
    row = result["max_axial_diameter_mm"]
    assert row["subjects"] == 5 and row["rho"] >= 0.9
    assert row["leakage_within"]["wall_thickness_mm"] >= 0.9
    assert row["leakage"]["wall_thickness_mm"] < 0.3
    entangled = traversal_fidelity(RenderingDecoder(leak=True), subjects, measure_shell, {1: RANGES[1]}, steps=5)
    assert entangled["max_axial_diameter_mm"]["leakage"]["wall_thickness_mm"] >= 0.9


class ReconstructingDecoder(RenderingDecoder):
    """Reconstructs a subject exactly, or (``frozen``) always as the same first subject."""

    def __init__(self, frozen_image: np.ndarray | None = None) -> None:
        super().__init__()
        self.frozen_image = frozen_image

    def reconstruct(self, subject):
        return subject.image if self.frozen_image is None else self.frozen_image


def test_decoded_attributes_separate_a_faithful_decoder_from_a_frozen_one():
    thicknesses = (5.5, 6.5, 7.5, 8.5, 9.5)
    subjects = [dataclasses.make_dataclass("Subject", ["image"])(
        render_factors(dataclasses.replace(_healthy_factors(), thickness_mm=t), SIZE)[0]) for t in thicknesses]
    truth = {"wall_thickness_mm": list(thicknesses), "not_measured": [0.0] * 5}
    faithful = decoded_attributes(ReconstructingDecoder(), subjects, measure_shell, truth)
    assert set(faithful) == {"wall_thickness_mm"}
    row = faithful["wall_thickness_mm"]
    assert row["rho_input"] >= 0.9 and row["rho_reconstruction"] >= 0.9
    assert row["subjects"] == row["subjects_input"] == row["subjects_reconstruction"] == 5
    frozen = decoded_attributes(ReconstructingDecoder(subjects[0].image), subjects, measure_shell, truth)
    assert frozen["wall_thickness_mm"]["rho_input"] >= 0.9
    assert frozen["wall_thickness_mm"]["rho_reconstruction"] == 0.0  # a constant measurement has no ρ


def test_shell_segmentation_measures_the_phantom():
    f = _healthy_factors()
    image, wall, _ = render_factors(f, SIZE)
    seg = segment_shell(image)
    dice = 2 * (seg & (wall > 0)).sum() / (seg.sum() + (wall > 0).sum())
    assert dice > 0.8
    measured = measure_shell(Volume(image, geometry_for_size(SIZE)))
    assert measured["volume_ml"] == pytest.approx(72.0, rel=0.08)
    assert measured["wall_thickness_mm"] == pytest.approx(7.0, rel=0.2)
    assert measure_shell(Volume(np.zeros((SIZE,) * 3, np.float32), geometry_for_size(SIZE))) is None


def test_classification_scores_and_intervals():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    perfect = np.stack([1 - y, y], 1).astype(float)
    s = classification_scores(y, perfect, n_boot=200)
    assert s["auc"]["value"] == 1.0 and s["accuracy"]["value"] == 1.0 and s["auc"]["ci95"] == [1.0, 1.0]
    p = rng.random(200)
    noise = classification_scores(y, np.stack([1 - p, p], 1), n_boot=200)
    lo, hi = noise["auc"]["ci95"]
    assert lo < noise["auc"]["value"] < hi and lo < 0.5 < hi and hi - lo < 0.3
    assert classification_scores(np.r_[y, -1], np.r_[perfect, [[0.5, 0.5]]], n_boot=10)["n"]["value"] == 200
    with pytest.raises(InputError):
        classification_scores(np.full(3, -1), np.full((3, 2), 0.5))


def test_map_localization():
    region = np.zeros((10, 10, 10), bool)
    region[2:4, 2:4, 2:4] = True
    inside = region.astype(float)
    good = map_localization(inside, region)
    assert good["mass_ratio"] == pytest.approx(1 / region.mean()) and good["pointing"] == 1.0
    assert good["ncc"] == pytest.approx(1.0)
    flat = map_localization(np.ones_like(inside), region)
    assert flat["mass_ratio"] == pytest.approx(1.0) and flat["ncc"] == pytest.approx(0.0)
    away = np.zeros_like(inside)
    away[7:, 7:, 7:] = 1
    far = map_localization(away, region)
    assert far["mass_ratio"] == 0.0 and far["pointing"] == 0.0 and far["ncc"] < 0
    assert map_localization(np.zeros_like(inside), region) is None


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="traversal_steps"):
        EvaluationSettings(traversal_steps=1)
    with pytest.raises(ConfigError, match="bootstrap"):
        EvaluationSettings(bootstrap=-1)


def test_evaluate_writes_metrics_and_a_self_contained_report(tiny_run, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = cli_main(["evaluate", "--model", str(tiny_run), "--out", str(out), "--split", "train",
                   "--traversal-subjects", "1", "--localization-subjects", "2", "--bootstrap", "50",
                   "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "train" and metrics["cohort_kind"] == "phantom"
    assert metrics["gradcam_layer"].startswith("encoder.conv")  # "auto", resolved for this input size
    for key in ("interpretability", "mig", "sap", "scc", "modularity", "auc", "ssim", "dice"):
        assert key in metrics["headline"], key
        assert np.isfinite(metrics["headline"][key])
    assert set(metrics["localization"]) >= {"lesion_attribute_gradcam", "classifier_gradcam",
                                            "counterfactual_difference", "integrated_gradients"}
    assert metrics["classification"]["auc"]["ci95"][0] <= metrics["classification"]["auc"]["value"]
    decoded = metrics["decoded_attributes"]
    assert set(decoded) <= set(metrics["attributes"]) and "wall_thickness_mm" in decoded
    row = decoded["wall_thickness_mm"]  # one epoch: the inputs are measurable, the reconstructions maybe not
    assert row["subjects_input"] >= 3 and -1 <= row["rho_input"] <= 1
    assert row["subjects_reconstruction"] <= row["subjects"]
    page = (out / "report.html").read_text()
    assert "re-measured on the input and on its reconstruction" in page
    sources = re.findall(r"src='([^']*)'", page)
    assert len(sources) >= 5 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http://" not in page and "https://" not in page
    for section in ("Latent space", "Traversals", "Grad-CAM", "Reconstructions", "Training curves"):
        assert f"<h2>{section}</h2>" in page
    assert "report.html" in capsys.readouterr().out


def test_evaluate_bad_input_is_one_line(tiny_run, tmp_path, capsys):
    rc = cli_main(["evaluate", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "model not found" in err[0]
    bad = tmp_path / "other.csv"
    bad.write_text("subject,image\n")
    rc = cli_main(["evaluate", "--model", str(tiny_run), "--data", str(bad), "--out", str(tmp_path / "e")])
    assert rc == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    rc = cli_main(["evaluate", "--model", str(tiny_run), "--layer", "conv9", "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "unknown Grad-CAM layer 'conv9'" in err[0]
    assert not (tmp_path / "e").exists()


def test_compare_trains_each_method_and_writes_the_table(tiny_cohort, tmp_path, capsys):
    config = tmp_path / "budget.yaml"
    config.write_text("model: {input_size: 16, latent_dim: 8, width: 0.5}\noptim: {batch_size: 8}\n"
                      "train: {precision: fp32}\n")
    out = tmp_path / "cmp"
    args = ["compare", "--data", str(tiny_cohort), "--out", str(out), "--seeds", "2", "--methods",
            "beta_vae,attri_vae", "--epochs", "1", "--config", str(config), "--split", "train",
            "--traversal-subjects", "0", "--localization-subjects", "1", "--bootstrap", "20"]
    assert cli_main(args) == 0, capsys.readouterr().err
    table = json.loads((out / "comparison.json").read_text())
    assert set(table["runs"]) == {"beta_vae-seed0", "beta_vae-seed1", "attri_vae-seed0", "attri_vae-seed1"}
    assert "auc" not in table["table"]["beta_vae"] and "auc" in table["table"]["attri_vae"]
    mean, sd = table["table"]["attri_vae"]["interpretability"]
    assert 0 <= mean <= 1 and sd >= 0
    md = (out / "comparison.md").read_text()
    assert "| β-VAE |" in md and "| Attri-VAE |" in md and " ± " in md
    assert (out / "comparison.html").read_text().startswith("<!DOCTYPE html>")
    # A rerun reuses the finished runs (no training): same table.
    before = (out / "runs" / "attri_vae-seed0" / "model.safetensors").stat().st_mtime_ns
    assert cli_main(args) == 0
    assert (out / "runs" / "attri_vae-seed0" / "model.safetensors").stat().st_mtime_ns == before
    assert json.loads((out / "comparison.json").read_text())["table"] == table["table"]
    # The table describes the budget the reused runs were trained with, not the rerun's options.
    assert cli_main(args[:args.index("--epochs")] + ["--epochs", "7"] + args[args.index("--epochs") + 2:]) == 0
    header = json.loads((out / "comparison.json").read_text())["header"]
    assert ", 1 epochs," in header and "lr 0.001 (cosine to 1e-05)" in header


def test_comparison_table_has_no_sd_for_one_seed():
    from AttriVAELib.evaluate.compare import _cell, comparison_table

    table = comparison_table({"attri_vae": [{"interpretability": 0.8}], "vae": [{"sap": 0.1}, {"sap": 0.3}]})
    assert table["attri_vae"]["interpretability"] == [0.8, None] and _cell(table["attri_vae"]["interpretability"]) == "0.80"
    assert _cell(table["vae"]["sap"]) == "0.20 ± 0.14"


@pytest.mark.parametrize("text, seeds", [("3", [0, 1, 2]), ("4,7", [4, 7]), ("2,", [2])])
def test_compare_seeds_option(text, seeds):
    from AttriVAELib.cli.evaluate import _seeds

    assert _seeds(text) == seeds


def test_compare_seeds_zero_says_how_to_pick_seed_zero(tiny_cohort, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["compare", "--data", str(tiny_cohort), "--out", str(tmp_path / "c"), "--seeds", "0"])
    assert exit_info.value.code == 2
    assert "--seeds 0," in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_region_attention_scores_each_attribute_map(tiny_run):
    from AttriVAELib.evaluate.evaluation import region_attention
    from AttriVAELib.inference.model import AttriVAEModel
    from AttriVAELib.data.manifest import load_manifest
    from AttriVAELib.evaluate.report import _detail_tables

    model = AttriVAEModel.load(tiny_run, device="cpu")
    records = load_manifest(model.meta["data"]["manifest"]).records[:2]
    encodings = [model.encode(r.image) for r in records]
    n = model.input_size
    foreground = np.ones((n, n, n), bool)
    corner = np.zeros_like(foreground)
    corner[2:6, 2:6, 2:6] = True
    regions = [{"volume_ml": foreground, "wall_thickness_mm": corner}] * 2
    result = region_attention(model, encodings, regions, [foreground] * 2)
    assert set(result) == {"volume_ml", "wall_thickness_mm"}
    whole = result["volume_ml"]["abs_signed_gradcam"]
    assert whole["subjects"] == 2
    assert whole["region_share_median"] == pytest.approx(1.0)
    for variants in result.values():
        assert set(variants) == {"gradcam", "abs_signed_gradcam"}
        for v in variants.values():
            assert v["ratio_vs_uniform_median"] >= 0 and 0 <= v["empty_maps"] <= 2
    assert "Attribute attention" in _detail_tables({"attribute_attention": result})
    # Another layer gives other maps; the report names the layer.
    fine = region_attention(model, encodings, regions, [foreground] * 2, layer="conv1")
    assert fine["wall_thickness_mm"]["gradcam"] != result["wall_thickness_mm"]["gradcam"]
    assert "Grad-CAM layer conv1" in _detail_tables({"attribute_attention": fine, "gradcam_layer": "encoder.conv1"})


def test_region_ratios_against_a_uniform_map():
    from AttriVAELib.evaluate.evaluation import _region_ratios

    foreground = np.zeros((10, 10, 10), bool)
    foreground[:5] = True
    region = np.zeros_like(foreground)
    region[:1] = True
    heat = np.zeros((10, 10, 10))
    heat[:1] = 1.0  # all the mass in the region: 10× a uniform map, 5× one within the foreground
    ratio, ratio_fg, share, volume_share = _region_ratios(heat, region, foreground)
    assert (ratio, ratio_fg, share, volume_share) == pytest.approx((10.0, 5.0, 1.0, 0.1))
    assert _region_ratios(np.ones_like(heat), region, foreground)[:2] == pytest.approx((1.0, 1.0))
    assert _region_ratios(np.zeros_like(heat), region, foreground)[0] == 0.0
