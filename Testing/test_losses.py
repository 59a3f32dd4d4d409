"""Loss terms against hand-computed values, the combined objective, and the presets."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from AttriVAELib.core.errors import ConfigError
from AttriVAELib.nn.losses import (AttriVAELoss, LossConfig, attribute_regularization, classification_loss,
                                   kl_divergence, l1_penalty, linear_attribute_loss, reconstruction_loss)
from AttriVAELib.nn.model import AttriVAE, ModelConfig
from AttriVAELib.train.presets import DEFAULT_PRESET, PRESETS, get_preset, preset_configs

# float(t) on a tensor that requires grad is fine in assertions
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


def _sign(v: float) -> float:
    return (v > 0) - (v < 0)


def _ar_reference(z: torch.Tensor, a: torch.Tensor, delta: float) -> torch.Tensor:
    """Plain Python loops over attributes and pairs (AR-VAE's definition)."""
    b, k = z.shape
    out = []
    for kk in range(k):
        total = 0.0
        for i in range(b):
            for j in range(b):
                total += abs(math.tanh(delta * float(z[i, kk] - z[j, kk])) - _sign(float(a[i, kk] - a[j, kk])))
        out.append(total / (b * b))
    return torch.tensor(out)


# --------------------------------------------------------------------------- KL
def test_kl_hand_computed():
    mu = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    logvar = torch.tensor([[0.0, 0.0], [math.log(2.0), 0.0]])
    # sample 0: 0; sample 1: -0.5·[(1 + ln2 − 1 − 2) + (1 + 0 − 4 − 1)] = 3 − ln2/2
    expected = (0.0 + 3.0 - math.log(2.0) / 2) / 2
    assert float(kl_divergence(mu, logvar)) == pytest.approx(expected, rel=1e-6)


def test_kl_matches_torch_distributions():
    torch.manual_seed(0)
    mu, logvar = torch.randn(5, 7), torch.randn(5, 7)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    ref = torch.distributions.kl_divergence(q, p).sum(1).mean()
    torch.testing.assert_close(kl_divergence(mu, logvar), ref)


def test_free_bits_charge_each_dim_at_least_lambda():
    # dim 0 carries 2 nats in each sample, dim 1 nothing: with λ = 0.5 the charge is 2 + 0.5.
    mu = torch.tensor([[2.0, 0.0], [-2.0, 0.0]], requires_grad=True)
    logvar = torch.zeros(2, 2)
    assert float(kl_divergence(mu, logvar)) == pytest.approx(2.0)
    charged = kl_divergence(mu, logvar, free_bits=0.5)
    assert float(charged) == pytest.approx(2.5)
    charged.backward()
    # A dim under λ gets no gradient from the KL term; one above it gets the plain KL's.
    assert mu.grad[:, 1].abs().max() == 0 and torch.allclose(mu.grad[:, 0], torch.tensor([1.0, -1.0]))


def test_free_bits_in_the_objective():
    out = _outputs()
    x = torch.rand(4, 1, 4, 4, 4)
    plain = AttriVAELoss(LossConfig(beta=1.0, gamma=0, alpha=0))(out, x)
    free = AttriVAELoss(LossConfig(beta=1.0, free_bits=100.0, gamma=0, alpha=0))(out, x)
    latent = out["mu"].shape[1]
    assert float(free["kl"]) == pytest.approx(100.0 * latent)  # every dim is under λ
    assert float(free["kl_raw"]) == pytest.approx(float(plain["kl_raw"]))  # the logged KL stays the plain one
    with pytest.raises(ConfigError, match="free_bits"):
        LossConfig(free_bits=-1.0).validate()


# --------------------------------------------------------------------------- reconstruction
def test_sse_hand_computed():
    x = torch.tensor([[1.0, 0.0], [0.5, 0.5]]).view(2, 1, 2, 1, 1)
    recon = torch.tensor([[0.5, 0.0], [0.5, 1.5]]).view(2, 1, 2, 1, 1)
    # per-sample SSE 0.25 and 1.0, mean 0.625
    assert float(reconstruction_loss(recon, x, "sse")) == pytest.approx(0.625)


def test_bce_hand_computed_and_logits_path():
    x = torch.tensor([1.0, 0.0, 1.0, 0.25]).view(2, 1, 2, 1, 1)
    p = torch.tensor([0.8, 0.1, 0.5, 0.5]).view(2, 1, 2, 1, 1)
    s0 = -math.log(0.8) - math.log(0.9)
    s1 = -math.log(0.5) - (0.25 * math.log(0.5) + 0.75 * math.log(0.5))
    assert float(reconstruction_loss(p, x, "bce")) == pytest.approx((s0 + s1) / 2, rel=1e-5)
    logits = torch.logit(p)
    assert float(reconstruction_loss(p, x, "bce", logits=logits)) == pytest.approx((s0 + s1) / 2, rel=1e-5)


def test_reconstruction_bad_kind_and_shape():
    x = torch.rand(2, 1, 2, 2, 2)
    with pytest.raises(ConfigError):
        reconstruction_loss(x, x, "mse")
    with pytest.raises(ValueError):
        reconstruction_loss(x[:1], x, "sse")


# --------------------------------------------------------------------------- attribute regularization
def test_ar_hand_computed_b3_k2():
    delta = 10.0
    z = torch.tensor([[0.0, 0.3], [0.1, 0.0], [-0.2, 0.3]])
    a = torch.tensor([[1.0, 5.0], [2.0, 5.0], [0.0, 1.0]])
    t = math.tanh
    # attribute 0: a = 1, 2, 0 → signs of (a_i − a_j); z = 0, .1, −.2
    pairs0 = [
        abs(t(10 * (0.0 - 0.1)) - (-1)), abs(t(10 * (0.0 + 0.2)) - 1),   # (0,1), (0,2)
        abs(t(10 * (0.1 - 0.0)) - 1), abs(t(10 * (0.1 + 0.2)) - 1),      # (1,0), (1,2)
        abs(t(10 * (-0.2 - 0.0)) - (-1)), abs(t(10 * (-0.2 - 0.1)) - (-1)),  # (2,0), (2,1)
    ]  # diagonal pairs contribute |tanh 0 − sign 0| = 0
    # attribute 1: a = 5, 5, 1 (a tie); z = .3, 0, .3
    pairs1 = [
        abs(t(10 * 0.3) - 0), abs(t(0.0) - 1),        # (0,1) tie → sign 0, (0,2)
        abs(t(-10 * 0.3) - 0), abs(t(-10 * 0.3) - 1),  # (1,0), (1,2)
        abs(t(0.0) - (-1)), abs(t(10 * 0.3) - (-1)),   # (2,0), (2,1)
    ]
    expected = torch.tensor([sum(pairs0) / 9, sum(pairs1) / 9])
    got = attribute_regularization(z, a, delta)
    assert got.shape == (2,)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_ar_vectorized_equals_loop_reference():
    torch.manual_seed(0)
    z = torch.randn(7, 3) * 0.3
    a = torch.randint(0, 4, (7, 3)).float()  # with ties
    torch.testing.assert_close(attribute_regularization(z, a, 5.0), _ar_reference(z, a, 5.0), rtol=1e-5, atol=1e-6)


def test_ar_perfect_ordering_is_near_zero_and_gradients_flow():
    a = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    z = (a * 1.0).requires_grad_()
    assert float(attribute_regularization(z, a, delta=100.0).detach()) < 1e-6
    z2 = torch.tensor([[0.3], [0.2], [0.1], [0.0]], requires_grad=True)  # reversed
    loss = attribute_regularization(z2, a, delta=1.0).sum()
    loss.backward()
    assert z2.grad is not None and float(z2.grad.abs().sum()) > 0


def test_ar_missing_attributes_drop_their_pairs():
    torch.manual_seed(1)
    z = torch.randn(5, 2)
    a = torch.rand(5, 2)
    a[1, 0] = float("nan")
    got = attribute_regularization(z, a, 10.0)
    keep = [0, 2, 3, 4]
    ref0 = _ar_reference(z[keep, :1], a[keep, :1], 10.0)
    ref1 = _ar_reference(z[:, 1:], a[:, 1:], 10.0)
    torch.testing.assert_close(got, torch.cat([ref0, ref1]), rtol=1e-5, atol=1e-6)


def test_linear_loss_is_one_minus_pearson_and_zero_on_any_line():
    torch.manual_seed(2)
    mu, a = torch.randn(9, 2), torch.rand(9, 2)
    expected = [1.0 - float(torch.corrcoef(torch.stack([mu[:, k], a[:, k]]))[0, 1]) for k in range(2)]
    torch.testing.assert_close(linear_attribute_loss(mu, a), torch.tensor(expected), rtol=1e-4, atol=1e-5)
    # Any increasing straight line scores 0, a reversed one 2, an increasing curve in between.
    line = torch.linspace(0.0, 1.0, 8)[:, None]
    assert float(linear_attribute_loss(3.0 * line - 1.0, line)) == pytest.approx(0.0, abs=1e-5)
    assert float(linear_attribute_loss(-line, line)) == pytest.approx(2.0, abs=1e-5)
    curve = float(linear_attribute_loss(torch.exp(6.0 * line), line))
    assert 0.05 < curve < 1.0
    # The sign loss cannot tell that curve from the line: both are in order.
    ar_line, ar_curve = (float(attribute_regularization(v, line, 1e4)) for v in (line, torch.exp(6.0 * line)))
    assert ar_line == pytest.approx(ar_curve, abs=1e-4)


def test_linear_loss_drops_missing_and_constant_attributes_and_gradients_flow():
    torch.manual_seed(3)
    mu = torch.randn(6, 3, requires_grad=True)
    a = torch.rand(6, 3)
    a[2, 0] = float("nan")
    a[:, 2] = 0.5  # constant in this batch: nothing to fit
    got = linear_attribute_loss(mu, a)
    keep = [0, 1, 3, 4, 5]
    torch.testing.assert_close(got[0], linear_attribute_loss(mu[keep, :1], a[keep, :1])[0])
    assert float(got[2]) == 0.0
    got.sum().backward()
    assert float(mu.grad[:, :2].abs().sum()) > 0 and float(mu.grad[2, 0]) == 0.0
    with pytest.raises(ValueError):
        linear_attribute_loss(torch.zeros(4, 2), torch.zeros(4, 3))


def test_linear_term_is_weighted_and_summed_into_the_total():
    out = _outputs()
    x = torch.rand(4, 1, 4, 4, 4)
    attrs = torch.rand(4, 3)
    terms = AttriVAELoss(LossConfig(gamma=7.0, alpha=0.0, linear_gamma=5.0))(out, x, attrs)
    torch.testing.assert_close(terms["linear"], 5.0 * linear_attribute_loss(out["mu"][:, :3], attrs).sum())
    torch.testing.assert_close(terms["total"], terms["reconstruction"] + terms["kl"] + terms["ar"] + terms["linear"])


# --------------------------------------------------------------------------- classification
def test_binary_classification_weights_and_ignore():
    logits = torch.tensor([0.5, -1.0, 2.0, 0.3])
    labels = torch.tensor([1, 0, -1, 1])
    w = [1.0, 3.0]

    def bce(l, y):
        p = 1 / (1 + math.exp(-l))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    terms = [(w[1], bce(0.5, 1)), (w[0], bce(-1.0, 0)), (w[1], bce(0.3, 1))]
    expected = sum(wi * li for wi, li in terms) / sum(wi for wi, _ in terms)
    assert float(classification_loss(logits, labels, w)) == pytest.approx(expected, rel=1e-5)
    plain = (bce(0.5, 1) + bce(-1.0, 0) + bce(0.3, 1)) / 3
    assert float(classification_loss(logits.view(4, 1), labels.float())) == pytest.approx(plain, rel=1e-5)


def test_multiclass_matches_torch_convention():
    torch.manual_seed(0)
    logits = torch.randn(6, 3)
    labels = torch.tensor([0, 2, -1, 1, 2, -1])
    w = torch.tensor([1.0, 2.0, 0.5])
    ref = F.cross_entropy(logits, labels, weight=w, ignore_index=-1)
    torch.testing.assert_close(classification_loss(logits, labels, w.tolist()), ref)
    torch.testing.assert_close(classification_loss(logits, labels), F.cross_entropy(logits, labels, ignore_index=-1))


def test_classification_all_ignored_is_zero_with_graph():
    logits = torch.randn(3, requires_grad=True)
    loss = classification_loss(logits, torch.tensor([-1, -1, -1]))
    assert float(loss) == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros(3))


def test_classification_bad_labels_and_weights():
    with pytest.raises(ValueError):
        classification_loss(torch.randn(3), torch.tensor([0, 2, 1]))
    with pytest.raises(ConfigError):
        classification_loss(torch.randn(3, 4), torch.tensor([0, 2, 1]), [1.0, 2.0])


# --------------------------------------------------------------------------- combined loss
def _outputs(b=4, latent=6, classes=2, requires_grad=False):
    torch.manual_seed(0)
    out = {
        "mu": torch.randn(b, latent) * 0.5,
        "logvar": torch.randn(b, latent) * 0.1,
        "recon": torch.rand(b, 1, 4, 4, 4),
        "logits": torch.randn(b) if classes == 2 else torch.randn(b, classes),
    }
    out["z"] = out["mu"] + 0.1
    if requires_grad:
        for v in out.values():
            v.requires_grad_()
    return out


def test_total_is_sum_of_named_terms_and_weights_apply():
    out = _outputs()
    x = torch.rand(4, 1, 4, 4, 4)
    attrs, labels = torch.rand(4, 3), torch.tensor([0, 1, 1, 0])
    model = nn.Linear(3, 2)
    cfg = LossConfig(beta=2.0, gamma=7.0, delta=3.0, alpha=0.5, l1=0.01)
    terms = AttriVAELoss(cfg)(out, x, attrs, labels, model)
    named = ("reconstruction", "kl", "ar", "linear", "reencoded_ar", "classification", "l1")
    torch.testing.assert_close(terms["total"], sum(terms[k] for k in named))
    assert float(terms["reencoded_ar"]) == 0.0 and float(terms["linear"]) == 0.0  # off by default
    torch.testing.assert_close(terms["reconstruction"], reconstruction_loss(out["recon"], x, "sse"))
    torch.testing.assert_close(terms["kl"], 2.0 * kl_divergence(out["mu"], out["logvar"]).abs())
    per = attribute_regularization(out["z"][:, :3], attrs, 3.0)
    torch.testing.assert_close(terms["ar_per_attribute"], per)
    torch.testing.assert_close(terms["ar"], 7.0 * per.sum())
    torch.testing.assert_close(terms["classification"], 0.5 * classification_loss(out["logits"], labels))
    l1_manual = 0.01 * sum(float(p.abs().sum()) for p in model.parameters())
    assert float(terms["l1"]) == pytest.approx(l1_manual, rel=1e-6)
    assert float(l1_penalty(model)) == pytest.approx(l1_manual / 0.01, rel=1e-6)


def test_reencoded_ar_scores_the_reconstructions_codes():
    out = _outputs()
    x = torch.rand(4, 1, 4, 4, 4)
    attrs = torch.rand(4, 3)
    out["recon_mu"] = torch.randn(4, 5)
    cfg = LossConfig(gamma=7.0, delta=3.0, alpha=0.0, reencoded_gamma=11.0)
    terms = AttriVAELoss(cfg)(out, x, attrs)
    expected = 11.0 * attribute_regularization(out["recon_mu"][:, :3], attrs, 3.0).sum()
    torch.testing.assert_close(terms["reencoded_ar"], expected)
    torch.testing.assert_close(terms["total"], terms["reconstruction"] + terms["kl"] + terms["ar"] + expected)
    # Codes already in the attributes' order score (almost) nothing.
    ranks = torch.tensor([[0.0, 1.0, 2.0], [1.0, 2.0, 0.0], [2.0, 0.0, 1.0], [3.0, 3.0, 3.0]])
    out["recon_mu"] = torch.cat([ranks * 10, torch.zeros(4, 2)], 1)
    assert float(AttriVAELoss(cfg)(out, x, ranks)["reencoded_ar"]) < 1e-3
    # Without recon_mu (the model was not asked to re-encode) the term is 0.
    del out["recon_mu"]
    assert float(AttriVAELoss(cfg)(out, x, attrs)["reencoded_ar"]) == 0.0


def test_capacity_and_warmup():
    out = _outputs()
    x = torch.rand(4, 1, 4, 4, 4)
    kl = float(kl_divergence(out["mu"], out["logvar"]))
    capacity = kl + 5.0
    loss = AttriVAELoss(LossConfig(beta=2.0, capacity=capacity, kl_warmup_steps=10, gamma=0, alpha=0))
    assert loss.config.beta_at(0) == 0.0 and loss.config.beta_at(5) == 1.0
    assert loss.config.beta_at(10) == 2.0 and loss.config.beta_at(1000) == 2.0
    assert float(loss(out, x, step=0)["kl"]) == 0.0
    assert float(loss(out, x, step=5)["kl"]) == pytest.approx(1.0 * 5.0, rel=1e-5)  # |KL − C| = 5
    terms = loss(out, x, step=20)
    assert float(terms["kl"]) == pytest.approx(2.0 * 5.0, rel=1e-5)
    assert float(terms["kl_raw"]) == pytest.approx(kl, rel=1e-6)
    assert float(terms["beta"]) == 2.0


def test_terms_that_are_off_are_zero():
    out = _outputs()
    del out["logits"]
    x = torch.rand(4, 1, 4, 4, 4)
    terms = AttriVAELoss(LossConfig(gamma=0.0, alpha=1.0))(out, x, torch.rand(4, 2), torch.tensor([0, 1, 0, 1]))
    assert float(terms["ar"]) == 0.0 and terms["ar_per_attribute"].shape == (2,)  # still logged
    assert float(terms["classification"]) == 0.0 and float(terms["l1"]) == 0.0
    none = AttriVAELoss()(out, x, None, None)
    assert none["ar_per_attribute"].shape == (0,)
    with pytest.raises(ConfigError):
        AttriVAELoss(LossConfig(l1=1e-3))(out, x)
    with pytest.raises(ConfigError):
        AttriVAELoss()(out, x, torch.rand(4, 9))  # more attributes than latent dims


def test_loss_is_float32_under_bf16_autocast_and_gradients_flow():
    torch.manual_seed(0)
    model = AttriVAE(ModelConfig(input_size=16, latent_dim=6, num_regularized=2, num_classes=2))
    x = torch.rand(4, 1, 16, 16, 16)
    attrs, labels = torch.rand(4, 2), torch.tensor([0, 1, -1, 1])
    loss = AttriVAELoss(LossConfig(l1=5e-5, reconstruction="bce"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        terms = loss(out, x, attrs, labels, model, step=3)
    assert out["recon"].dtype == torch.bfloat16
    for key, value in terms.items():
        assert value.dtype == torch.float32, key
        assert torch.isfinite(value).all(), key
    terms["total"].backward()
    assert all(p.grad is not None for p in model.parameters())
    # the AR term alone reaches the encoder through z
    model.zero_grad()
    out = model(x)
    loss(out, x, attrs, None, model)["ar"].backward()
    assert float(model.fc_mu.weight.grad[:2].abs().sum()) > 0
    assert float(model.fc_mu.weight.grad[2:].abs().sum()) == 0.0


# --------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "data",
    [
        {"reconstruction": "mse"},
        {"beta": -1},
        {"delta": 0},
        {"gamma": float("inf")},
        {"kl_warmup_steps": -5},
        {"class_weights": [1.0]},
        {"class_weights": [1.0, -2.0]},
        {"class_weights": "1,2"},
        {"betta": 2.0},
        {"alpha": "lots"},
        {"l1": -1e-5},
        {"reencoded_gamma": -1.0},
        {"linear_gamma": float("nan")},
    ],
)
def test_bad_loss_config(data):
    with pytest.raises(ConfigError) as err:
        LossConfig.from_dict(data)
    assert "\n" not in str(err.value)


def test_loss_config_round_trip():
    cfg = LossConfig(reconstruction="bce", beta=4.0, class_weights=[1.0, 2.5], l1=5e-5)
    assert LossConfig.from_dict(cfg.to_dict()) == cfg
    assert LossConfig.from_dict({"l1": "5e-5", "kl_warmup_steps": 100.0}).l1 == 5e-5  # YAML reads 5e-5 as str


# --------------------------------------------------------------------------- presets
def test_every_preset_validates():
    assert set(PRESETS) >= {"vae", "beta_vae", "ar_vae", "vae_mlp", "attri_vae", "published", "fast_cpu"}
    assert DEFAULT_PRESET == "attri_vae"
    for name in PRESETS:
        preset = get_preset(name)
        assert set(preset) == {"model", "loss", "optim"}
        assert "num_regularized" not in preset["model"]  # set by the trainer from the data
        ModelConfig.from_dict(preset["model"])
        LossConfig.from_dict(preset["loss"])
        assert preset["optim"]["lr"] > 0 and preset["optim"]["batch_size"] >= 2
        model_cfg, loss_cfg, optim = preset_configs(name, num_regularized=3, num_classes=2)
        assert model_cfg.num_regularized == 3


def test_baselines_differ_as_described():
    def loss(name):
        return LossConfig.from_dict(get_preset(name)["loss"])

    def classes(name):
        return preset_configs(name, num_classes=2)[0].num_classes

    paper = loss("attri_vae")
    assert (paper.gamma, paper.delta, paper.beta, paper.alpha) == (200.0, 10.0, 2.0, 1.0)
    assert get_preset("attri_vae")["optim"] == {"lr": 1e-4, "batch_size": 16}
    assert classes("attri_vae") == 2
    vae = loss("vae")
    assert (vae.beta, vae.gamma, vae.alpha) == (1.0, 0.0, 0.0) and classes("vae") == 0
    bvae = loss("beta_vae")
    assert bvae.beta > 1.0 and bvae.gamma == 0.0 and classes("beta_vae") == 0
    ar = loss("ar_vae")
    assert ar.gamma > 0 and ar.alpha == 0.0 and classes("ar_vae") == 0
    mlp = loss("vae_mlp")
    assert (mlp.beta, mlp.gamma, mlp.alpha) == (1.0, 0.0, 1.0) and classes("vae_mlp") == 2
    pub = loss("published")
    assert (pub.gamma, pub.delta, pub.l1) == (10.0, 100.0, 5e-5)
    fast = ModelConfig.from_dict(get_preset("fast_cpu")["model"])
    assert fast.input_size <= 32 and fast.latent_dim <= 16


def test_get_preset_unknown_and_copy():
    with pytest.raises(ConfigError, match="unknown preset 'nope'; choose from"):
        get_preset("nope")
    p = get_preset("vae")
    p["loss"]["beta"] = 99.0
    assert get_preset("vae")["loss"]["beta"] == 1.0


@pytest.mark.parametrize("name,size", [("brain_cpu", 64), ("brain_gpu", 128)])
def test_brain_presets_build_models_at_their_size(name, size):
    import torch

    from AttriVAELib.nn.model import AttriVAE

    config = preset_configs(name, num_regularized=4, num_classes=2)[0]
    assert config.input_size == size and config.latent_dim >= 32
    model = AttriVAE(config).eval()
    with torch.no_grad():
        mu, logvar = model.encode(torch.rand(1, 1, size, size, size))
        assert mu.shape == (1, config.latent_dim)
        assert model.decode(mu).shape == (1, 1, size, size, size)
