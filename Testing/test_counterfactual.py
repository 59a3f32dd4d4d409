"""Counterfactuals (class means, attribute values, flip) and latent-path integrated gradients."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from AttriVAELib.core.errors import ConfigError, InputError
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
    cf = counterfactual(model, enc)
    assert cf.method == "class_mean" and cf.target_class == 1 - enc.predicted_class
    np.testing.assert_allclose(cf.z_cf[cf.dims], stats.means[cf.target_class, cf.dims], atol=1e-6)
    untouched = [d for d in range(8) if d not in cf.dims]
    np.testing.assert_array_equal(cf.z_cf[untouched], enc.mu[untouched])
    vol = model.to_input_grid(cf.difference, enc)
    assert vol.geometry == enc.mapping.source
    assert set(cf.summary(model)) >= {"method", "dims", "target_class", "moved"}


def test_select_dims():
    model = _random_model()
    stats = ClassStatistics(["a", "b"], np.array([[0.0] * 8, [2.0, 0.1] + [0.0] * 6]), np.ones((2, 8)),
                            np.array([10, 10]))
    assert select_dims(model, "relevant", stats, 0, 1) == [0]
    assert select_dims(model, "relevant", stats, 0, 1, min_effect=0.05) == [0, 1]
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
