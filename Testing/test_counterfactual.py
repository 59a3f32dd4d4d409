"""Counterfactuals (exemplars, class means, attribute values, flip) and latent-path integrated gradients."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from AttriVAELib.core.errors import CheckpointError, ConfigError, InputError
from AttriVAELib.data.io import Geometry, Volume
from AttriVAELib.explain.counterfactual import (CACHE_FILE, ClassStatistics, class_statistics, counterfactual,
                                                flip_latent, select_dims)
from AttriVAELib.explain.integrated_gradients import latent_path_integrated_gradients
from AttriVAELib.inference.model import AttriVAEModel
from AttriVAELib.nn.model import AttriVAE, ModelConfig


def _random_model(seed: int = 0, size: int = 16, smooth: bool = False) -> AttriVAEModel:
    """A random tiny model with calibrated BatchNorm; ``smooth``: SiLU instead of ReLU.

    The gradient of a ReLU network is piecewise constant with very many pieces, so a
    quadrature with m points converges slowly (~1/√m) for a random one; with smooth
    activations the trapezoid rule's O(1/m²) convergence is what is tested.
    """
    torch.manual_seed(seed)
    net = AttriVAE(ModelConfig(input_size=size, latent_dim=8, num_regularized=2, width=0.5))
    if smooth:
        for module in list(net.modules()):
            for name, child in module.named_children():
                if isinstance(child, torch.nn.ReLU):
                    setattr(module, name, torch.nn.SiLU())
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
            m.reset_running_stats()
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(4, 1, size, size, size))
            net.decode(torch.randn(4, 8))
            net.classify(torch.randn(16, 8))
    meta = {"preprocess": {"size": size}, "labels": {"names": ["healthy", "lesion"]},
            "attributes": {"names": ["volume_ml", "wall_thickness_mm"], "units": ["mL", "mm"]}}
    return AttriVAEModel(net.eval(), meta, device="cpu")


def _phantom(size: int = 16) -> Volume:
    from AttriVAELib.cohorts.phantom.generator import geometry_for_size, render_factors, sample_factors

    return Volume(render_factors(sample_factors(1, seed=2), size)[0], geometry_for_size(size))


@pytest.fixture(scope="module")
def run_copy(tiny_run, tmp_path_factory):
    """A private copy of the tiny run (the class-statistics cache is written into it)."""
    dst = tmp_path_factory.mktemp("cf") / "run"
    shutil.copytree(tiny_run, dst, ignore=shutil.ignore_patterns(CACHE_FILE))
    return dst


@pytest.mark.parametrize("seed", [0, 1])
def test_latent_path_integrated_gradients_completeness(seed):
    model = _random_model(seed, smooth=True)
    rng = np.random.default_rng(seed)
    z_start, z_end = rng.normal(size=8) * 1.5, rng.normal(size=8) * 1.5
    ig = latent_path_integrated_gradients(model, z_start, z_end, steps=24, batch_size=7)
    assert ig.attributions.shape == (16, 16, 16) and ig.scores.shape == (25,)
    # The path's endpoints are decode(z_start) and decode(z_end): the scores are f of them.
    with torch.no_grad():
        x = model.network.decode(torch.as_tensor(np.stack([z_start, z_end]), dtype=torch.float32))
        f = model.network.classify(model.network.encode(x)[0])
    np.testing.assert_allclose(ig.scores[[0, -1]], f.numpy(), atol=1e-4)
    assert abs(ig.delta) > 1e-3
    assert ig.total == pytest.approx(ig.delta, rel=0.05)
    assert ig.completeness_error < 0.05
    # Reversing the path flips the sign of the attributions.
    back = latent_path_integrated_gradients(model, z_end, z_start, steps=24)
    np.testing.assert_allclose(back.attributions, -ig.attributions, atol=1e-5 * np.abs(ig.attributions).max())


def test_counterfactual_with_explicit_values_and_flip():
    model = _random_model()
    enc = model.encode(_phantom())
    cf = counterfactual(model, enc, values={"wall_thickness_mm": 1.5, 0: -1.0}, units="latent")
    assert cf.method == "values" and cf.dims == [0, 1]
    assert cf.z_cf[1] == pytest.approx(1.5) and cf.z_cf[0] == pytest.approx(-1.0)
    np.testing.assert_array_equal(cf.z_cf[2:], enc.mu[2:])
    np.testing.assert_allclose(cf.reconstruction, model.reconstruct(enc), atol=1e-6)
    np.testing.assert_allclose(cf.difference, cf.counterfactual - cf.reconstruction, atol=1e-7)
    assert np.abs(cf.difference).max() > 0
    # Data-free counterfactual: the classifier must assign it to the other class.
    target = 1 - enc.predicted_class
    flipped = counterfactual(model, enc, method="flip")
    assert flipped.method == "flip" and flipped.target_class == target
    assert flipped.probabilities_cf[target] >= 0.9 - 1e-6
    z = flip_latent(model, enc.mu, target, dims=[0, 1])
    np.testing.assert_array_equal(z[2:], enc.mu[2:])


def _without_stored_statistics(path):
    model = AttriVAEModel.load(path, device="cpu")
    model.meta.pop("class_statistics")
    return model


def test_class_statistics_cached_and_class_mean_counterfactual(run_copy, tiny_cohort, monkeypatch):
    stored = AttriVAEModel.load(run_copy, device="cpu")
    from_checkpoint = class_statistics(stored)  # stored at training time: no data needed
    assert not (run_copy / CACHE_FILE).exists()
    model = _without_stored_statistics(run_copy)
    stats = class_statistics(model)
    assert stats.means.shape == (2, 8) and stats.counts.sum() == len(json.loads(
        (tiny_cohort / "split.json").read_text())["subjects"]["train"])
    np.testing.assert_allclose(from_checkpoint.means, stats.means, atol=1e-5)
    np.testing.assert_array_equal(from_checkpoint.counts, stats.counts)
    cache = json.loads((run_copy / CACHE_FILE).read_text())
    assert cache["weights_sha256"] and "train" in cache
    # A fresh model object reads the cache instead of encoding the training split again.
    import AttriVAELib.explain.counterfactual as cfmod

    def no_compute(*_a, **_k):
        raise AssertionError("class statistics recomputed despite the cache")

    monkeypatch.setattr(cfmod, "_compute_class_statistics", no_compute)
    again = class_statistics(_without_stored_statistics(run_copy))
    np.testing.assert_allclose(again.means, stats.means)

    enc = model.encode(sorted((tiny_cohort / "images").glob("*.nii.gz"))[0])
    cf = counterfactual(model, enc, method="class_mean")
    assert cf.method == "class_mean" and cf.target_class == 1 - enc.predicted_class
    np.testing.assert_allclose(cf.z_cf[cf.dims], stats.means[cf.target_class, cf.dims], atol=1e-6)
    untouched = [d for d in range(8) if d not in cf.dims]
    np.testing.assert_array_equal(cf.z_cf[untouched], enc.mu[untouched])
    vol = model.to_input_grid(cf.difference, enc)
    assert vol.geometry == enc.mapping.source
    assert set(cf.summary(model)) >= {"method", "dims", "target_class", "moved"}


def test_training_stores_exemplars(run_copy, tiny_cohort):
    stats = class_statistics(AttriVAEModel.load(run_copy, device="cpu"))  # stored at the end of training
    split = json.loads((tiny_cohort / "split.json").read_text())["subjects"]["train"]
    assert stats.exemplars is not None and set(stats.exemplar_subjects) <= set(split)
    assert stats.exemplars.shape == (len(stats.exemplar_labels), 8) and set(stats.exemplar_labels) == {0, 1}
    assert ((stats.exemplar_readback >= 0) & (stats.exemplar_readback <= 1)).all()


def test_exemplar_counterfactual_takes_the_nearest_faithful_donor():
    """The default counterfactual: the moved dims that the target class spreads over more come from
    the nearest training code of that class (in the dims that stay) among those the model reads
    back surely as that class; the other moved dims go to the target class's mean."""
    model = _random_model()
    enc = model.encode(_phantom())
    rng = np.random.default_rng(1)
    means = np.zeros((2, 8))
    means[1, 1] = 2.0  # dim 1: the classes differ in mean
    stds = np.ones((2, 8))
    stds[1, 0] = stds[0, 2] = 3.0  # dim 0 spreads in class 1, dim 2 in class 0
    codes = rng.normal(size=(12, 8))
    labels = np.repeat([0, 1], 6)
    readback = np.stack([labels == 0, labels == 1], axis=1).astype(float)
    readback[[0, 6]] = 0.5  # two codes the model does not read back surely: never donors
    stats = ClassStatistics(["healthy", "lesion"], means, stds, np.array([6, 6])).with_exemplars(
        codes, labels, readback, [f"s{i}" for i in range(12)])
    for target, spread_dim in ((1, 0), (0, 2)):
        cf = counterfactual(model, enc, target_class=target, stats=stats)
        assert cf.method == "exemplar" and cf.dims == [0, 1, 2]
        kept = list(range(3, 8))
        pool = [i for i in range(12) if labels[i] == target and readback[i, target] == 1.0]
        donor = min(pool, key=lambda i: float(((codes[i, kept] - enc.mu[kept]) ** 2).sum()))
        assert cf.exemplar == {"subject": f"s{donor}", "readback": 1.0}
        expected = means[target, :3].copy()
        expected[spread_dim] = codes[donor, spread_dim]
        np.testing.assert_allclose(cf.z_cf[:3], expected, atol=1e-6)
        np.testing.assert_array_equal(cf.z_cf[kept], enc.mu[kept])
        assert cf.summary(model)["exemplar"] == cf.exemplar
    # Without a dim to spread over, the target's mean is the place: no donor.
    flat = ClassStatistics(stats.label_names, means, np.ones((2, 8)), stats.counts, "", stats.exemplars,
                           stats.exemplar_labels, stats.exemplar_readback, stats.exemplar_subjects)
    plain = counterfactual(model, enc, target_class=1, stats=flat)
    assert plain.method == "class_mean" and plain.exemplar is None and plain.dims == [1]
    without = ClassStatistics(stats.label_names, means, stds, stats.counts)
    with pytest.raises(ConfigError, match="no exemplars"):
        counterfactual(model, enc, target_class=1, stats=without, method="exemplar")
    assert counterfactual(model, enc, target_class=1, stats=without).method == "class_mean"


def test_class_statistics_exemplars_round_trip_and_selection():
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(10, 4))
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, -1])
    own = np.array([0.5, 0.995, 0.2, 0.999, 0.3, 0.1, 0.995, 0.4, 0.2, 0.9])
    readback = np.stack([np.where(labels == 0, own, 1 - own), np.where(labels == 0, 1 - own, own)], axis=1)
    stats = ClassStatistics.from_latents(mu, labels, ["a", "b"])
    stats = stats.with_exemplars(mu, labels, readback, [f"s{i}" for i in range(10)], per_class=3)
    np.testing.assert_allclose(stats.exemplar_readback, own[[0, 1, 3, 4, 6, 7]])
    assert stats.exemplar_subjects == ["s0", "s1", "s3", "s4", "s6", "s7"]  # the 3 surest per class; no −1
    again = ClassStatistics.from_dict(json.loads(json.dumps(stats.to_dict())))
    np.testing.assert_allclose(again.exemplars, stats.exemplars, atol=1e-4)
    assert again.exemplar_subjects == stats.exemplar_subjects
    np.testing.assert_array_equal(again.exemplar_labels, stats.exemplar_labels)
    # Only the sure exemplars of class 1 (s6) compete, however far; class 0 has two sure ones.
    assert stats.exemplar_subjects[stats.nearest_exemplar(mu[4], 1, moved=[0])] == "s6"
    near = stats.nearest_exemplar(mu[3] + 0.01, 0, moved=[0])
    assert stats.exemplar_subjects[near] == "s3"
    # No sure exemplar at all: the nearest of the class.
    assert stats.exemplar_subjects[stats.nearest_exemplar(mu[7], 1, moved=[], min_readback=1.0)] == "s7"
    assert ClassStatistics.from_latents(mu, labels, ["a", "b"]).nearest_exemplar(mu[0], 1, moved=[]) is None


@pytest.mark.parametrize("broken", [{"mu": [[0.0, 1.0]], "labels": [0], "readback": [1.0]},
                                    {"mu": [[0.0] * 8], "labels": [5], "readback": [1.0]},
                                    {"mu": [[float("nan")] * 8], "labels": [0], "readback": [1.0]},
                                    {"mu": [[0.0] * 8], "labels": [0]}])
def test_malformed_stored_exemplars_are_one_checkpoint_error(broken):
    stats = ClassStatistics(["a", "b"], np.zeros((2, 8)), np.ones((2, 8)), np.array([3, 3])).to_dict()
    with pytest.raises(CheckpointError, match="exemplars are malformed"):
        ClassStatistics.from_dict({**stats, "exemplars": broken})


def test_stored_statistics_prefer_exemplars_and_never_compute(run_copy, monkeypatch):
    """What Slicer reads without the training data: the checkpoint's, else the cache's, those with
    exemplars first; malformed statistics count as none there."""
    import AttriVAELib.explain.counterfactual as cfmod
    from AttriVAELib.slicer.latent_space import stored_class_statistics as slicer_lookup

    def no_compute(*_a, **_k):
        raise AssertionError("stored statistics computed from the training data")

    class_statistics(_without_stored_statistics(run_copy))  # writes the cache, with exemplars
    monkeypatch.setattr(cfmod, "_compute_class_statistics", no_compute)
    older = AttriVAEModel.load(run_copy, device="cpu")
    older.meta["class_statistics"].pop("exemplars")  # a checkpoint from an older version
    assert cfmod.stored_class_statistics(older).exemplars is not None  # completed from the cache
    (run_copy / CACHE_FILE).unlink()
    plain = cfmod.stored_class_statistics(older)
    assert plain is not None and plain.exemplars is None  # the checkpoint's, as they are
    assert cfmod.stored_class_statistics(_without_stored_statistics(run_copy)) is None
    older.meta["class_statistics"]["exemplars"] = {"mu": [[0.0]], "labels": [0], "readback": [1.0]}
    with pytest.raises(CheckpointError):
        cfmod.stored_class_statistics(older)
    assert slicer_lookup(older) is None


def test_older_cache_without_exemplars_is_recomputed(run_copy):
    model = _without_stored_statistics(run_copy)
    stats = class_statistics(model)
    assert stats.exemplars is not None
    cache = json.loads((run_copy / CACHE_FILE).read_text())
    del cache["train"]["exemplars"]
    (run_copy / CACHE_FILE).write_text(json.dumps(cache))
    again = class_statistics(_without_stored_statistics(run_copy))
    assert again.exemplars is not None
    assert "exemplars" in json.loads((run_copy / CACHE_FILE).read_text())["train"]


def test_select_dims():
    model = _random_model()
    stats = ClassStatistics(["a", "b"], np.array([[0.0] * 8, [2.0, 0.1] + [0.0] * 6]), np.ones((2, 8)),
                            np.array([10, 10]))
    assert select_dims(model, "relevant", stats, 0, 1) == [0]
    assert select_dims(model, "relevant", stats, 0, 1, min_effect=0.05) == [0, 1]
    # Equal means, but spread in one class only (a lesion's position): relevant too.
    stats.stds[1, 5] = 3.0
    assert select_dims(model, "relevant", stats, 0, 1) == [0, 5]
    assert select_dims(model, "relevant", stats, 0, 1, min_spread=4.0) == [0]
    assert select_dims(model, "regularized") == [0, 1]
    assert select_dims(model, "all") == list(range(8))
    assert select_dims(model, ["wall_thickness_mm", 5]) == [1, 5]
    with pytest.raises(ConfigError):
        select_dims(model, ["nope"])


def test_missing_training_data(run_copy, tmp_path):
    model = _without_stored_statistics(run_copy)
    model.meta["data"] = {"manifest": str(tmp_path / "gone" / "manifest.csv")}
    model._cache.clear()
    (run_copy / CACHE_FILE).unlink(missing_ok=True)
    enc = model.encode(_phantom())
    with pytest.raises(InputError, match="training manifest not found"):
        counterfactual(model, enc, method="class_mean")
    fallback = counterfactual(model, enc)  # auto: falls back to the data-free flip
    assert fallback.method == "flip"
    no_head = AttriVAEModel(AttriVAE(ModelConfig(input_size=16, latent_dim=4, num_regularized=1, num_classes=0)),
                            {"preprocess": {"size": 16}}, device="cpu")
    identity = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    image = Volume(np.random.rand(16, 16, 16).astype(np.float32),
                   Geometry((16, 16, 16), (1.0,) * 3, (0.0,) * 3, identity))
    with pytest.raises(ConfigError, match="no classifier"):
        counterfactual(no_head, no_head.encode(image))
