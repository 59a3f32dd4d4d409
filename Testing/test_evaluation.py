"""Evaluation: classification intervals, localization scores, traversal fidelity, the report and compare."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest

from AttriVAELib.cli import main as cli_main
from AttriVAELib.cohorts.phantom.cohort import measure_shell, segment_shell
from AttriVAELib.cohorts.phantom.generator import geometry_for_size, render_factors, sample_factors
from AttriVAELib.core.errors import ConfigError, InputError
from AttriVAELib.data.io import Volume
from AttriVAELib.evaluate.evaluation import (EvaluationSettings, classification_scores, decoded_attributes,
                                             map_localization, traversal_fidelity)

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
    with pytest.raises(ConfigError, match="counterfactual_method"):
        EvaluationSettings(counterfactual_method="nearest")
    with pytest.raises(ConfigError, match="judge_members"):
        EvaluationSettings(judge_members=0)


def test_evaluate_writes_metrics_and_a_self_contained_report(tiny_run, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = cli_main(["evaluate", "--model", str(tiny_run), "--out", str(out), "--split", "train",
                   "--traversal-subjects", "1", "--localization-subjects", "2", "--bootstrap", "50",
                   "--device", "cpu", "--counterfactual-method", "class_mean"])
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "train" and metrics["cohort_kind"] == "phantom"
    assert metrics["settings"]["counterfactual_method"] == "class_mean"
    assert metrics["gradcam_layer"].startswith("encoder.conv")  # "auto", resolved for this input size
    for key in ("interpretability", "mig", "sap", "scc", "modularity", "auc", "ssim", "dice"):
        assert key in metrics["headline"], key
        assert np.isfinite(metrics["headline"][key])
    assert set(metrics["localization"]) >= {"lesion_attribute_gradcam", "classifier_gradcam",
                                            "counterfactual_difference", "integrated_gradients"}
    # A two-epoch classifier's AUC is whatever the kernels make of near-constant probabilities, and a
    # percentile interval need not contain its point estimate: only that it is an interval of AUCs.
    auc = metrics["classification"]["auc"]
    assert 0 <= auc["ci95"][0] <= auc["ci95"][1] <= 1 and 0 <= auc["value"] <= 1
    faith = metrics["faithfulness"]
    rc = faith["reconstruction_class"]
    assert rc["subjects"] == metrics["n"] and 0 <= rc["agreement"] <= 1 and rc["judge_auc_input"] is not None
    for key in ("judge_recall_input", "judge_recall_reconstruction"):
        assert set(rc[key]) == {"0", "1"} and all(0 <= v <= 1 for v in rc[key].values())
    assert set(faith["counterfactual"]) <= {"0→1", "1→0"} and faith["counterfactual"]
    for name, direction in faith["counterfactual"].items():
        assert direction["judge_recall_reconstruction_target"] == rc["judge_recall_reconstruction"][name[-1]]
        assert direction["method"] == "class_mean"
        assert 0 <= direction["valid_judge"] <= 1 and 0 <= direction["valid_encoder"] <= 1
        shares = {i / direction["subjects"] for i in range(direction["subjects"] + 1)}
        assert len(direction["valid_judge_members"]) == 3 and set(direction["valid_judge_members"]) <= shares
        assert direction["proximity_l1_median"] >= 0
        assert 0 <= direction.get("drawn_compactness_median", 0) <= 1 + 1e-9
    assert faith["lesion_scale"] > 0
    for key in ("lesion_traversal", "lesion_traversal_with_lesion"):  # both groups, compactness and the judge
        sweep = faith[key]
        assert sweep["subjects"] >= 1 and 0 <= sweep["compactness_median"] <= 1 + 1e-9
        assert sweep["valid_judge"] in {i / sweep["subjects"] for i in range(sweep["subjects"] + 1)}
    assert "lesion_traversal_judge" in metrics["headline"]
    assert "auc_reencoded" in metrics["headline"]
    decoded = metrics["decoded_attributes"]
    assert set(decoded) <= set(metrics["attributes"]) and "wall_thickness_mm" in decoded
    row = decoded["wall_thickness_mm"]  # one epoch: the inputs are measurable, the reconstructions maybe not
    assert row["subjects_input"] >= 3 and -1 <= row["rho_input"] <= 1
    assert row["subjects_reconstruction"] <= row["subjects"]
    page = (out / "report.html").read_text()
    assert "re-measured on the input and on its reconstruction" in page
    assert "judge on reconstructions of the target class" in page and "judged as their class: inputs" in page
    assert "members, each alone" in page  # the range of the judge members' verdicts
    assert "Decoded counterfactuals" in page and "Class of the reconstructions" in page
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


def _region_attention_module():
    """The module that holds :func:`region_attention` and its helpers (wherever the package keeps it)."""
    import sys

    from AttriVAELib.evaluate import region_attention

    return sys.modules[region_attention.__module__]


def _sign_constructed_model(size: int = 16):
    """An untrained AttriVAEModel whose Grad-CAM signs hold by construction, on any CPU.

    Every weight on the path from the image to μ is made ≥ 0, except conv2's, which are made
    ≤ 0 with a conv2 bias larger than any |conv2(conv1 output)| can be (a bound from the weights,
    for an image in [0, 1]). BatchNorm keeps its initial eval statistics (a positive scale). On an
    image ≥ 0 every activation is then ≥ 0, every ReLU after conv2 is open everywhere, and:

    * ∂μ_t/∂(conv2 output) > 0 for every attribute t, so conv2's Grad-CAM weights are > 0 and
      its map Σ_c w_c·F_c is > 0 wherever a feature is: the ReLU map equals the |signed| map
      and is not empty;
    * ∂μ_t/∂(conv1 output) < 0 (one negative layer on the way), so conv1's signed map is ≤ 0:
      its ReLU map is empty and its |signed| map is not.

    Only products and sums of same-signed numbers are involved: no cancellation, whatever the
    kernels' rounding or summation order.
    """
    import torch

    from AttriVAELib.inference.model import AttriVAEModel
    from AttriVAELib.nn.model import AttriVAE, ModelConfig

    torch.manual_seed(0)
    net = AttriVAE(ModelConfig(input_size=size, latent_dim=8, num_regularized=3, width=0.5, num_classes=2))
    with torch.no_grad():
        for module in (net.encoder, net.encoder_fc, net.fc_mu):
            for p in module.parameters():
                p.abs_()
        w1 = net.encoder.conv1.conv.weight
        w2 = net.encoder.conv2.conv.weight
        w2.neg_()
        # conv1 outputs are ≤ max_o Σ|w1[o]| on [0, 1] images (zero bias, BN scale ≤ 1).
        bound = float(w2.abs().sum(dim=(1, 2, 3, 4)).max()) * float(w1.abs().sum(dim=(1, 2, 3, 4)).max())
        net.encoder.conv2.conv.bias.fill_(1.0 + 2.0 * bound)
    meta = {"preprocess": {"size": size}, "labels": {"names": ["0", "1"]},
            "attributes": {"names": RenderingDecoder.attribute_names, "units": ["mL", "mm", "mm"],
                           "regularized": RenderingDecoder.attribute_names}}
    return AttriVAEModel(net.eval(), meta, device="cpu")


def test_region_attention_scores_each_attribute_map():
    from AttriVAELib.evaluate import attribute_map_variants, region_attention
    from AttriVAELib.evaluate.report import _detail_tables

    region_ratios = _region_attention_module()._region_ratios
    model = _sign_constructed_model()
    encodings = [model.encode(Volume(render_factors(sample_factors(i, seed=2), 16)[0], geometry_for_size(16)))
                 for i in range(2)]
    n = model.input_size
    assert model.attribute_names == ["volume_ml", "max_axial_diameter_mm", "wall_thickness_mm"]
    foreground = np.ones((n, n, n), bool)
    corner = np.zeros_like(foreground)
    corner[2:6, 2:6, 2:6] = True
    # max_axial_diameter_mm has an empty region in both subjects: it is left out.
    regions = [{"volume_ml": foreground, "wall_thickness_mm": corner, "max_axial_diameter_mm": ~foreground,
                "not_a_model_attribute": corner}] * 2

    result = region_attention(model, encodings, regions, [foreground] * 2)  # auto: conv2 at 16³
    assert set(result) == {"volume_ml", "wall_thickness_mm"}
    for name, variants in result.items():
        assert set(variants) == {"gradcam", "abs_signed_gradcam"}
        # conv2's maps are positive by construction: the ReLU map is the |signed| map, never empty.
        assert variants["gradcam"] == variants["abs_signed_gradcam"], name
        assert variants["gradcam"]["empty_maps"] == 0 and variants["gradcam"]["subjects"] == 2
    whole = result["volume_ml"]["gradcam"]  # a region that is the whole cube holds all of any map's mass
    assert whole["ratio_vs_uniform_median"] == pytest.approx(1.0)
    assert whole["ratio_vs_uniform_in_foreground_median"] == pytest.approx(1.0)
    assert whole["mass_share_median"] == pytest.approx(1.0) and whole["region_share_median"] == pytest.approx(1.0)
    fine = region_attention(model, encodings, regions, [foreground] * 2, layer="conv1")
    fine_maps = [attribute_map_variants(model, enc, "conv1") for enc in encodings]
    # Each number is the median over the subjects of what the subject's own map scores.
    for layer, scores in (("auto", result), ("conv1", fine)):
        maps = fine_maps if layer == "conv1" else [attribute_map_variants(model, enc, layer) for enc in encodings]
        for name, variants in scores.items():
            for variant, v in variants.items():
                rows = np.array([region_ratios(m[variant][name], regions[0][name], foreground) for m in maps])
                assert v["ratio_vs_uniform_median"] == pytest.approx(np.median(rows[:, 0]), rel=1e-12)
                assert v["ratio_vs_uniform_in_foreground_median"] == pytest.approx(np.median(rows[:, 1]), rel=1e-12)
                assert v["mass_share_median"] == pytest.approx(np.median(rows[:, 2]), rel=1e-12)
                assert v["share_above_uniform"] == pytest.approx(np.mean(rows[:, 0] > 1))
                assert v["region_share_median"] == pytest.approx(1.0 if name == "volume_ml" else corner.mean())
    assert "Attribute attention" in _detail_tables({"attribute_attention": result})
    # Another layer gives other maps: at conv1 every ReLU map is empty (and scores 0), the |signed| maps are not.
    assert set(fine) == set(result)
    for name, variants in fine.items():
        assert all(not np.any(m["gradcam"][name]) and np.any(m["abs_signed_gradcam"][name] > 0) for m in fine_maps)
        assert variants["gradcam"]["empty_maps"] == 2 and variants["gradcam"]["subjects"] == 2
        assert variants["gradcam"]["ratio_vs_uniform_median"] == 0.0 and variants["gradcam"]["mass_share_median"] == 0.0
        assert variants["abs_signed_gradcam"]["empty_maps"] == 0
        assert variants["gradcam"] != result[name]["gradcam"]
    assert fine["volume_ml"]["abs_signed_gradcam"]["ratio_vs_uniform_median"] == pytest.approx(1.0)
    assert "Grad-CAM layer conv1" in _detail_tables({"attribute_attention": fine, "gradcam_layer": "encoder.conv1"})


def test_region_attention_follows_the_maps_it_is_given(monkeypatch):
    """Given maps (not a model's): inside the region scores > 1, uniform 1, outside 0; medians over
    subjects, the share above uniform and the empty maps follow from them exactly."""
    from AttriVAELib.evaluate import region_attention

    n = 10
    foreground = np.zeros((n, n, n), bool)
    foreground[:5] = True  # half of the cube
    region = np.zeros_like(foreground)
    region[:1] = True  # a tenth of the cube, a fifth of the foreground
    inside, uniform, outside, empty = (np.zeros((n, n, n)), np.ones((n, n, n)), np.zeros((n, n, n)),
                                       np.zeros((n, n, n)))
    inside[:1] = 1.0  # all of the mass in the region: 10× uniform, 5× uniform within the foreground
    outside[1:5, :, :5] = 1.0  # in the foreground, outside the region: 0
    half = np.where(region, 1.0, 0.0) + np.where(foreground & ~region, 0.25, 0.0)  # half in the region: 5×, 2.5×
    given = {  # subject → variant → attribute → map
        0: {"gradcam": {"a": inside, "b": inside}, "abs_signed_gradcam": {"a": empty, "b": uniform}},
        1: {"gradcam": {"a": uniform, "b": outside}, "abs_signed_gradcam": {"a": inside, "b": uniform}},
        2: {"gradcam": {"a": outside, "b": half}, "abs_signed_gradcam": {"a": inside, "b": uniform}},
    }
    calls = []

    def fake_variants(model, encoding, layer="auto"):
        calls.append((encoding, layer))
        return given[encoding]

    monkeypatch.setattr(_region_attention_module(), "attribute_map_variants", fake_variants)
    nowhere = np.zeros_like(region)
    regions = [{"a": region, "b": region}, {"a": region, "b": nowhere}, {"a": region, "b": region}]
    result = region_attention(object(), [0, 1, 2], regions, [foreground] * 3, layer="conv3")
    assert calls == [(0, "conv3"), (1, "conv3"), (2, "conv3")]  # the layer reaches the maps

    a = result["a"]["gradcam"]  # ratios 10, 1, 0; within the foreground 5, 1, 0
    assert a == pytest.approx({"ratio_vs_uniform_median": 1.0, "ratio_vs_uniform_in_foreground_median": 1.0,
                               "share_above_uniform": 1 / 3, "mass_share_median": 0.1, "region_share_median": 0.1,
                               "empty_maps": 0, "subjects": 3})
    signed = result["a"]["abs_signed_gradcam"]  # an empty map scores 0 and is counted
    assert signed == pytest.approx({"ratio_vs_uniform_median": 10.0, "ratio_vs_uniform_in_foreground_median": 5.0,
                                    "share_above_uniform": 2 / 3, "mass_share_median": 1.0,
                                    "region_share_median": 0.1, "empty_maps": 1, "subjects": 3})
    # Subject 1 has no "b" region: it is left out of b's scores.
    b = result["b"]["gradcam"]  # subjects 0 and 2: ratios 10 and 5, within the foreground 5 and 2.5
    assert b == pytest.approx({"ratio_vs_uniform_median": 7.5, "ratio_vs_uniform_in_foreground_median": 3.75,
                               "share_above_uniform": 1.0, "mass_share_median": 0.75, "region_share_median": 0.1,
                               "empty_maps": 0, "subjects": 2})
    assert result["b"]["abs_signed_gradcam"]["ratio_vs_uniform_median"] == pytest.approx(1.0)


def test_region_ratios_against_a_uniform_map():
    _region_ratios = _region_attention_module()._region_ratios

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
