"""Do decoded images carry what the latent says? Read-back, the judge, drawn-lesion measures and the
image-latent consistency losses that train a decoder to draw what its code says."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from AttriVAELib.cohorts.phantom.generator import geometry_for_size, render_factors, sample_factors
from AttriVAELib.data.io import Volume
from AttriVAELib.inference.model import AttriVAEModel
from AttriVAELib.nn.model import AttriVAE, ModelConfig

SIZE = 16


def _model(window: tuple[float, float] | None = None, seed: int = 0) -> AttriVAEModel:
    torch.manual_seed(seed)
    net = AttriVAE(ModelConfig(input_size=SIZE, latent_dim=8, num_regularized=2, width=0.5))
    preprocess = {"size": SIZE, **({"intensity_window": list(window)} if window else {})}
    return AttriVAEModel(net.eval(), {"preprocess": preprocess, "labels": {"names": ["healthy", "lesion"]}},
                         device="cpu")


def _phantom(seed: int = 2, scale: float = 1.0, offset: float = 0.0) -> Volume:
    array = render_factors(sample_factors(1, seed=seed), SIZE)[0] * 1000.0 * scale + offset  # stored units
    return Volume(array.astype(np.float32), geometry_for_size(SIZE))


# --------------------------------------------------------------------------- read-back
def test_an_image_read_back_against_its_own_code_agrees():
    model = _model()
    enc = model.encode(_phantom())
    checked = model.read_back(enc.image, enc.mu)
    # encode(image) is μ itself: the class and every attribute agree by construction.
    np.testing.assert_allclose(checked.probabilities, checked.probabilities_code, atol=1e-6)
    assert checked.warnings == []


def test_an_image_read_back_against_another_class_code_warns_in_one_line():
    model = _model()
    enc = model.encode(_phantom())
    z = np.array(enc.mu, dtype=np.float32)
    said = int(np.argmax(enc.probabilities))
    # Walk z until the classifier says the other class; the image still shows its own.
    from AttriVAELib.explain.counterfactual import flip_latent

    z_other = flip_latent(model, z, 1 - said, list(range(model.latent_size)), p_target=0.95)
    assert int(np.argmax(model.class_probabilities(z_other[None])[0])) == 1 - said
    checked = model.read_back(enc.image, z_other, "decoded counterfactual")
    assert len(checked.warnings) == 1 and "\n" not in checked.warnings[0]
    assert checked.warnings[0].startswith(f"the decoded counterfactual shows class {model.label_names[said]}")
    assert "does not render" in checked.warnings[0]
    summary = checked.to_dict(model)
    assert len(summary["probabilities_image"]) == 2 and summary["warnings"] == checked.warnings


@pytest.mark.parametrize("scale, offset, side", [(1.0, 0.0, None), (1e-3, 0.0, "below"), (1.0, 3000.0, "above")])
def test_an_input_far_outside_the_training_window_gets_a_note(scale, offset, side):
    model = _model(window=(0.0, 1000.0))
    enc = model.encode(_phantom(scale=scale, offset=offset))
    if side is None:
        assert enc.notes == []
    else:
        assert len(enc.notes) == 1 and f"almost all {side} the window" in enc.notes[0]
        assert enc.to_dict()["notes"] == enc.notes
    # Per-image percentiles adapt to any range: no note whatever the scale.
    assert _model().encode(_phantom(scale=scale, offset=offset)).notes == []


# --------------------------------------------------------------------------- drawn lesion
def test_drawn_lesion_reads_added_intensity_in_the_scale_of_real_lesions():
    from AttriVAELib.evaluate.faithfulness import EXCESS_FLOOR, drawn_lesion, lesion_scale

    model = _model()
    enc = model.encode(_phantom())
    voxel_ml = float(np.prod(enc.mapping.model.spacing)) / 1000.0
    base = np.zeros((SIZE,) * 3, np.float32)
    blob = base.copy()
    blob[6:9, 6:9, 6:9] = 0.5  # 27 voxels, 0.5 brighter
    assert drawn_lesion(base, base, enc, 1.0) == 0.0
    assert drawn_lesion(blob, base, enc, 2.0) == pytest.approx(27 * (0.5 - EXCESS_FLOOR) * voxel_ml / 2.0, rel=1e-5)
    # A faint brightening spread over the whole image is no lesion.
    assert drawn_lesion(base + 0.05, base, enc, 1.0) == 0.0
    # The scale is what a real lesion of known volume brings, measured the same way.
    mask = blob > 0
    encodings = []
    for _ in range(3):
        e = model.encode(_phantom())
        e.image = blob.copy()
        encodings.append(e)
    true_ml = 27 * voxel_ml
    scale = lesion_scale(encodings, [mask] * 3, [true_ml] * 3)
    assert scale == pytest.approx(0.5 - EXCESS_FLOOR, rel=1e-5)
    assert drawn_lesion(blob, base, enc, scale) == pytest.approx(true_ml, rel=1e-5)


def test_a_drawn_lesion_is_read_near_its_peak_only():
    from AttriVAELib.evaluate.faithfulness import EXCESS_FLOOR, drawn_lesion, lesion_radius

    enc = _model().encode(_phantom())
    spacing = float(enc.mapping.model.spacing[0])
    base = np.zeros((SIZE,) * 3, np.float32)
    blob = base.copy()
    blob[6:9, 6:9, 6:9] = 0.5
    radius = 2.5 * spacing  # the 3³ blob lies within 1.8 voxels of its centre
    assert drawn_lesion(blob, base, enc, 1.0, radius) == pytest.approx(drawn_lesion(blob, base, enc, 1.0), rel=1e-6)
    # A brightening of the whole image counts everywhere without the radius, only in a small ball with it.
    whole = base + 0.5
    ball = drawn_lesion(whole, base, enc, 1.0, radius)
    assert ball < 0.02 * drawn_lesion(whole, base, enc, 1.0)
    full_ball = (0.5 - EXCESS_FLOOR) * float(np.prod(enc.mapping.model.spacing)) / 1000.0 * _ball_voxels(radius / spacing)
    assert 0 < ball <= full_ball * (1 + 1e-5)  # a flat map's peak may lie at the border
    # Twice the radius of a sphere of the median lesion volume; none without lesions.
    assert lesion_radius([0.0, 0.001, 4.0 * np.pi / 3.0 / 1000.0, 1.0]) == pytest.approx(2.0)
    assert lesion_radius([0.0, 0.0]) is None


def _ball_voxels(radius: float) -> int:
    """Voxels of a grid ball of ``radius`` voxels around a voxel far from the border."""
    r = int(np.ceil(radius))
    offsets = np.indices((2 * r + 1,) * 3) - r
    return int(((offsets ** 2).sum(0) <= radius ** 2).sum())


# --------------------------------------------------------------------------- the judge
def test_the_judge_learns_a_separable_task_is_deterministic_and_averages_its_members():
    from AttriVAELib.evaluate.judge import train_judge

    rng = np.random.default_rng(0)
    images = rng.random((48, 1, SIZE, SIZE, SIZE), dtype=np.float32) * 0.2
    labels = np.arange(48) % 2
    images[labels == 1, :, 5:11, 5:11, 5:11] += 0.8  # class 1: a bright cube, wherever flips put it
    x = torch.as_tensor(images)
    judge = train_judge(x, labels, 2, epochs=15, members=2, batch_size=8, seed=1)
    probs = judge.probabilities(images[:, 0])
    assert probs.shape == (48, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert (probs.argmax(1) == labels).mean() >= 0.9
    members = judge.member_probabilities(images[:, 0])
    assert members.shape == (2, 48, 2)
    np.testing.assert_allclose(members.mean(0), probs, atol=1e-6)  # the verdict is the members' mean
    assert not np.allclose(members[0], members[1], atol=1e-4)  # two seeds, two networks
    again = train_judge(x, labels, 2, epochs=15, members=1, batch_size=8, seed=1)  # member 1 is seed 1's network
    np.testing.assert_allclose(again.probabilities(images[:, 0]), members[0], atol=1e-5)
    with pytest.raises(ValueError, match="at least one member"):
        train_judge(x, labels, 2, members=0)


def test_per_class_recall_counts_each_class_against_its_own_subjects():
    from AttriVAELib.evaluate.faithfulness import _recall

    labels = np.array([0, 0, 0, 0, 1, 1, -1])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8], [0.7, 0.3], [0.0, 1.0]])
    # Class 0: 3 of its 4 subjects; class 1: 1 of 2; the unlabelled subject counts for neither.
    assert _recall(labels, probs, ["healthy", "lesion"]) == {"healthy": 0.75, "lesion": 0.5}
    assert _recall(np.array([1, 1]), probs[4:6], ["a", "b"]) == {"b": 0.5}  # absent classes are left out


# --------------------------------------------------------------------------- consistency losses
def test_consistency_terms_train_the_decoder_only():
    from AttriVAELib.nn.consistency import reencoded_class_loss, swap_consistency

    torch.manual_seed(0)
    net = AttriVAE(ModelConfig(input_size=SIZE, latent_dim=8, num_regularized=2, width=0.5)).train()
    x = torch.rand(4, 1, SIZE, SIZE, SIZE)
    z = net(x)["z"].detach()  # in training the code also learns through z; here only the reading is checked
    attributes = torch.randn(4, 2)
    labels = torch.tensor([0, 1, 0, 1])
    term = reencoded_class_loss(net, net.encode_mu_frozen(net.decode(z)), labels) + swap_consistency(
        net, z, attributes, alpha=1.0, gamma=1.0, delta=10.0)
    assert term.ndim == 0 and float(term.detach()) > 0
    term.backward()
    decoder_grads = [p.grad for p in net.decoder.parameters()]
    assert any(g is not None and float(g.abs().sum()) > 0 for g in decoder_grads)
    for part in (net.encoder, net.encoder_fc, net.fc_mu, net.classifier):
        assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in part.parameters())
    assert float(swap_consistency(net, z, attributes, alpha=0.0, gamma=0.0, delta=10.0)) == 0.0


def test_hard_voxel_loss_sums_the_worst_voxels():
    from AttriVAELib.nn.losses import LossConfig, hard_voxel_loss

    x = torch.zeros(2, 1, 8, 8, 8)
    recon = x.clone()
    recon[0, 0, 0, 0, :5] = torch.tensor([1.0, 2.0, 3.0, 0.5, 0.1])
    # fraction 3/512: the three worst squared errors of sample 0 (1 + 4 + 9), none in sample 1.
    assert float(hard_voxel_loss(recon, x, 3 / 512)) == pytest.approx((1 + 4 + 9) / 2)
    with pytest.raises(Exception, match="hard_voxel_fraction"):
        LossConfig(hard_voxel_fraction=0.0).validate()


def test_lesion_weighted_loss_counts_the_lesion_voxels_only():
    from AttriVAELib.core.errors import ConfigError
    from AttriVAELib.nn.losses import AttriVAELoss, LossConfig, lesion_weighted_loss

    x = torch.zeros(2, 1, 8, 8, 8)
    recon = torch.full_like(x, 0.5)
    lesion = torch.zeros_like(x)
    lesion[0, 0, 2:4, 2:4, 2] = 1.0  # 4 voxels in sample 0, none in sample 1
    lesion[0, 0, 5, 5, 5] = 0.5  # a half-covered voxel counts half
    assert float(lesion_weighted_loss(recon, x, lesion)) == pytest.approx(4.5 * 0.25 / 2)
    outputs = {"recon": recon, "mu": torch.zeros(2, 4), "logvar": torch.zeros(2, 4), "z": torch.zeros(2, 4)}
    plain = float(AttriVAELoss(LossConfig())(outputs, x)["reconstruction"])
    weighted = AttriVAELoss(LossConfig(lesion_weight=10.0))
    assert float(weighted(outputs, x, lesion=lesion)["reconstruction"]) == pytest.approx(plain + 10 * 4.5 * 0.25 / 2)
    with pytest.raises(ConfigError, match="lesion masks"):
        weighted(outputs, x)
    with pytest.raises(ConfigError, match="lesion_weight"):
        LossConfig(lesion_weight=-1.0).validate()


def test_lesion_weight_needs_a_cohort_with_lesion_masks(tiny_cohort, tmp_path):
    import shutil

    from conftest import TINY_TRAIN

    from AttriVAELib.core.errors import ConfigError
    from AttriVAELib.train.config import resolve_config
    from AttriVAELib.train.trainer import train

    config = resolve_config("attri_vae", {**TINY_TRAIN, "train": {**TINY_TRAIN["train"], "epochs": 1},
                                          "loss": {"lesion_weight": 10.0}})
    train(tiny_cohort, tmp_path / "run", config=config, progress=False)  # the phantoms have lesion masks
    assert AttriVAEModel.load(tmp_path / "run").meta["loss_config"]["lesion_weight"] == 10.0
    cohort = shutil.copytree(tiny_cohort, tmp_path / "cohort")
    lines = (cohort / "manifest.csv").read_text().splitlines()
    column = lines[0].split(",").index("lesion")
    (cohort / "manifest.csv").write_text("\n".join(
        ",".join(v for j, v in enumerate(line.split(",")) if j != column) for line in lines) + "\n")
    with pytest.raises(ConfigError, match="lesion_weight needs lesion masks"):
        train(cohort, tmp_path / "run2", config=config, progress=False)


def test_training_with_the_consistency_terms_logs_them(tiny_cohort, tmp_path):
    from conftest import TINY_TRAIN

    from AttriVAELib.train.config import resolve_config
    from AttriVAELib.train.trainer import train

    config = resolve_config("attri_vae", {**TINY_TRAIN, "train": {**TINY_TRAIN["train"], "epochs": 1},
                                          "loss": {"reencoded_alpha": 1.0, "swap_alpha": 1.0, "swap_gamma": 1.0,
                                                   "hard_voxel_weight": 5.0}})
    summary = train(tiny_cohort, tmp_path / "run", config=config, progress=False)
    import csv

    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert float(rows[-1]["train_consistency"]) > 0 and float(rows[-1]["val_consistency"]) > 0
    assert summary["run_dir"]
    model = AttriVAEModel.load(tmp_path / "run")
    assert model.meta["loss_config"]["swap_gamma"] == 1.0
