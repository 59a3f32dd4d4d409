"""AttriVAE network, its configuration and the fast-path helpers."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from AttriVAELib.core.errors import ConfigError, InputError
from AttriVAELib.nn.fastpath import (autocast_context, bf16_supported, channels_last_input, select_device,
                                     to_channels_last)
from AttriVAELib.nn.model import (ENCODER_LAYER_NAMES, AttriVAE, BatchNorm3d, ModelConfig, count_parameters,
                                  to_fast_layout)

CL = torch.channels_last_3d
# float(t) on a tensor that requires grad is fine in assertions
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


def _small(**kw) -> AttriVAE:
    cfg = dict(input_size=16, latent_dim=8, num_classes=2)
    cfg.update(kw)
    return AttriVAE(ModelConfig(**cfg))


def test_published_parameter_count():
    model = AttriVAE(ModelConfig(input_size=80, latent_dim=64, width=1.0, num_classes=2))
    assert count_parameters(model) == 340_674
    assert count_parameters(model, trainable_only=True) == 340_674


def test_published_layer_names():
    model = AttriVAE(ModelConfig(input_size=80))
    assert list(model.encoder_layers) == list(ENCODER_LAYER_NAMES)
    conv5 = model.encoder.conv5
    assert isinstance(conv5.conv, nn.Conv3d) and conv5.conv.out_channels == 2
    assert isinstance(conv5.bn, nn.BatchNorm3d) and isinstance(conv5.act, nn.ReLU)
    assert model.encoder_fc.fc1.in_features == 250
    strides = [model.encoder_layers[n].conv.stride[0] for n in ENCODER_LAYER_NAMES]
    assert strides == [2, 2, 2, 2, 1]
    assert [m.out_channels for m in model.decoder if hasattr(m, "out_channels")] == [1]
    assert model.decoder.out.out_channels == 1
    assert model.classifier.out.out_features == 1


@pytest.mark.parametrize(
    "size,width,num_classes,latent",
    [(32, 1.0, 2, 16), (48, 0.5, 3, 8), (32, 2.0, 0, 8), (16, 1.0, 5, 4)],
)
def test_forward_shapes(size, width, num_classes, latent):
    torch.manual_seed(0)
    model = AttriVAE(ModelConfig(input_size=size, width=width, num_classes=num_classes, latent_dim=latent))
    x = torch.rand(2, 1, size, size, size)
    with torch.no_grad():
        out = model(x)
    assert out["mu"].shape == out["logvar"].shape == out["z"].shape == (2, latent)
    assert out["recon"].shape == x.shape == out["recon_logits"].shape
    assert float(out["recon"].min()) >= 0.0 and float(out["recon"].max()) <= 1.0
    if num_classes == 0:
        assert "logits" not in out and model.classify(out["z"]) is None and not model.has_classifier
    elif num_classes == 2:
        assert out["logits"].shape == (2,)
    else:
        assert out["logits"].shape == (2, num_classes)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (2, latent)
    assert model.decode(mu).shape == x.shape


def test_width_scales_channels():
    assert ModelConfig(width=0.5).channels == (4, 8, 16, 32)
    assert ModelConfig(width=2).channels == (16, 32, 64, 128)
    small = count_parameters(_small(width=0.5))
    assert small < count_parameters(_small()) < count_parameters(_small(width=2))


def test_multichannel_input():
    model = _small(in_channels=2)
    x = torch.rand(2, 2, 16, 16, 16)
    assert model(x)["recon"].shape == x.shape


def test_eval_is_deterministic_and_z_is_mu():
    torch.manual_seed(0)
    model = _small().eval()
    x = torch.rand(3, 1, 16, 16, 16)
    a, b = model(x), model(x)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert torch.equal(a["z"], a["mu"])


def test_training_samples_z_with_half_logvar():
    model = _small().train()
    mu, logvar = torch.zeros(4, 8), torch.full((4, 8), math.log(4.0))  # σ = 2
    torch.manual_seed(1)
    z = model.reparameterize(mu, logvar)
    torch.manual_seed(1)
    eps = torch.randn(4, 8)
    torch.testing.assert_close(z, 2.0 * eps)
    assert torch.equal(model.reparameterize(mu, logvar, sample=False), mu)


def test_xavier_init_and_zero_biases():
    model = AttriVAE(ModelConfig(input_size=32))
    for m in model.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d, nn.Linear)):
            assert torch.count_nonzero(m.bias) == 0
            fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(m.weight)
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            w = m.weight.detach()
            assert float(w.abs().max()) <= bound + 1e-6
            if m.weight.numel() >= 2000:
                assert float(w.std()) == pytest.approx(bound / math.sqrt(3.0), rel=0.15)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = _small(num_classes=3)
    out = model(torch.rand(4, 1, 16, 16, 16))
    loss = out["recon"].sum() + out["mu"].sum() + out["logvar"].sum() + out["logits"].sum()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


@pytest.mark.parametrize(
    "kw",
    [
        {"input_size": 40},
        {"input_size": 0},
        {"latent_dim": 0},
        {"num_regularized": 9, "latent_dim": 8},
        {"num_regularized": -1},
        {"width": 0},
        {"width": -1.0},
        {"num_classes": 1},
        {"num_classes": -2},
        {"dropout": 1.0},
        {"in_channels": 0},
    ],
)
def test_bad_config_raises(kw):
    with pytest.raises(ConfigError):
        AttriVAE(ModelConfig(**kw))
    with pytest.raises(ConfigError):
        ModelConfig.from_dict(kw)


@pytest.mark.parametrize(
    "data",
    [{"latent_size": 3}, {"input_size": "eighty"}, {"input_size": True}, {"width": [1]}, {"width": float("nan")}],
)
def test_from_dict_rejects_unknown_keys_and_bad_types(data):
    with pytest.raises(ConfigError) as err:
        ModelConfig.from_dict(data)
    assert "\n" not in str(err.value)


def test_config_round_trip_and_coercion():
    cfg = ModelConfig(input_size=32, width=0.5, latent_dim=12, num_regularized=3, num_classes=4)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    coerced = ModelConfig.from_dict({"input_size": 32.0, "width": "0.5", "latent_dim": "12"})
    assert (coerced.input_size, coerced.width, coerced.latent_dim) == (32, 0.5, 12)
    assert ModelConfig.from_dict(None) == ModelConfig()


def test_wrong_input_shape_is_input_error():
    model = _small()
    with pytest.raises(InputError):
        model(torch.rand(2, 1, 32, 32, 32))
    with pytest.raises(InputError):
        model.encode(torch.rand(1, 16, 16, 16))


def test_channels_last_matches_default_layout():
    torch.manual_seed(0)
    model = _small(input_size=32).eval()
    x = torch.rand(2, 1, 32, 32, 32)
    ref = model(x)
    fast, x_cl = to_fast_layout(model, x)
    assert x_cl.is_contiguous(memory_format=CL)
    out = fast(x_cl)
    for key in ("mu", "recon", "logits"):
        torch.testing.assert_close(out[key], ref[key], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_channels_last_batchnorm_matches_native(dtype):
    """The CPU channels-last training path agrees with nn.BatchNorm3d (bf16: judged against a
    float64 reference, since both round differently)."""
    torch.manual_seed(0)
    x = (torch.randn(2, 8, 64, 64, 64) * 2 + 1).to(dtype).contiguous(memory_format=CL)  # 4.2 M elements
    grad = torch.randn_like(x)
    ours, native, exact = BatchNorm3d(8), nn.BatchNorm3d(8), nn.BatchNorm3d(8).double()
    with torch.no_grad():
        for bn in (ours, native, exact):
            bn.weight.copy_(torch.linspace(0.5, 1.5, 8))
            bn.bias.copy_(torch.linspace(-1, 1, 8))
    results = []
    for bn in (ours, native, exact):
        dt = torch.float64 if bn is exact else dtype
        inp = x.to(dt).detach().requires_grad_()
        y = bn(inp)
        y.backward(grad.to(dt))
        results.append([t.detach().double() for t in (y, inp.grad, bn.weight.grad, bn.bias.grad, bn.running_mean,
                                              bn.running_var)])
        if bn is ours:
            assert "ChannelsLastBatchNorm" in type(y.grad_fn).__name__  # the fast path ran
            assert y.is_contiguous(memory_format=CL) and inp.grad.is_contiguous(memory_format=CL)
    if dtype == torch.float32:
        for a, b in zip(results[0], results[1]):  # sums over 2^20 voxels: the order depends on the thread count
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    else:
        for a, b, ref in zip(*results):
            err_ours, err_native = float((a - ref).abs().max()), float((b - ref).abs().max())
            assert err_ours <= 2 * err_native + 1e-3, (err_ours, err_native)
    assert int(ours.num_batches_tracked) == int(native.num_batches_tracked) == 1


def test_channels_last_batchnorm_falls_back_when_small_or_eval():
    bn = BatchNorm3d(4)
    x = torch.randn(2, 4, 8, 8, 8).contiguous(memory_format=CL).requires_grad_()
    assert "ChannelsLast" not in type(bn(x).grad_fn).__name__
    bn.eval()
    torch.testing.assert_close(bn(x), F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias))


def test_select_device_and_autocast():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ConfigError):
        select_device("banana")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError):
            select_device("cuda")
    cpu = torch.device("cpu")
    lin = nn.Linear(4, 4)
    with autocast_context(cpu, enabled=False):
        assert lin(torch.rand(2, 4)).dtype == torch.float32
    with autocast_context(cpu, enabled=True):
        assert lin(torch.rand(2, 4)).dtype == torch.bfloat16
    with autocast_context(cpu):
        dtype = lin(torch.rand(2, 4)).dtype
    assert dtype == (torch.bfloat16 if bf16_supported(cpu) else torch.float32)


def test_no_bf16_autocast_without_native_bf16(monkeypatch):
    """What an AVX2-only CPU (no AVX-512-bf16, no AMX) gets, on any CPU: the default autocast is off
    (float32), the device line says so, and bf16 can still be forced (emulated)."""
    from AttriVAELib.nn import fastpath

    monkeypatch.setattr(fastpath, "cpu_bf16_flags", lambda: ())
    cpu = torch.device("cpu")
    assert not fastpath.bf16_supported(cpu)
    assert "no native bf16: fp32" in fastpath.describe_device(cpu)
    lin = nn.Linear(4, 4)
    with fastpath.autocast_context(cpu):
        assert lin(torch.rand(2, 4)).dtype == torch.float32
    with fastpath.autocast_context(cpu, enabled=True):
        assert lin(torch.rand(2, 4)).dtype == torch.bfloat16


def test_channels_last_helpers():
    model = to_channels_last(_small())
    assert model.encoder.conv1.conv.weight.is_contiguous(memory_format=CL)
    assert channels_last_input(torch.rand(1, 1, 4, 4, 4)).is_contiguous(memory_format=CL)
    flat = torch.rand(3, 4)
    assert channels_last_input(flat) is flat


def test_encoder_layers_accept_gradcam_hooks():
    """Forward and full backward hooks on conv1..conv5 (and their ReLUs) see activations and
    gradients of a latent dimension; nothing in the encoder is in-place."""
    torch.manual_seed(0)
    model = _small().eval()
    acts, grads = {}, {}
    handles = []
    for name, layer in model.encoder_layers.items():
        handles.append(layer.register_forward_hook(lambda m, i, o, n=name: acts.__setitem__(n, o.detach())))
        handles.append(layer.register_full_backward_hook(lambda m, gi, go, n=name: grads.__setitem__(n, go[0])))
        handles.append(layer.act.register_full_backward_hook(lambda m, gi, go: None))
    x = torch.rand(3, 1, 16, 16, 16, requires_grad=True)
    mu, _ = model.encode(x)
    mu[:, 1].sum().backward()
    for h in handles:
        h.remove()
    assert set(acts) == set(grads) == set(ENCODER_LAYER_NAMES)
    assert acts["conv5"].shape == grads["conv5"].shape == (3, 2, 1, 1, 1)


def _conv_inputs(model: AttriVAE, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input of every Conv3d / ConvTranspose3d of ``model`` on ``x`` (eval forward)."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: seen.__setitem__(name, inp[0].detach()))
             for name, m in model.named_modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("layout", ["ncdhw", "channels_last"])
def test_bf16_weight_gradients_of_every_conv_match_float64(layout):
    # oneDNN's bf16 weight-gradient kernels returned garbage for 1–2-voxel maps on a Zen 5 CPU
    # (the 2³ bottleneck of a 32³ model): those convolutions must run in float32 under autocast.
    torch.manual_seed(0)
    model = AttriVAE(ModelConfig(input_size=32, latent_dim=16, bottleneck_channels=16, num_classes=2))
    inputs = _conv_inputs(model, torch.rand(8, 1, 32, 32, 32))
    assert min(inputs["encoder.conv5.conv"].shape[2:]) == 2  # the case that failed
    modules = dict(model.named_modules())
    for name, x in inputs.items():
        conv = modules[name]
        ref = copy.deepcopy(conv).double()
        x_ref = x.double().requires_grad_(True)
        upstream = torch.randn(ref(x_ref).shape, dtype=torch.float64)
        (ref(x_ref) * upstream).sum().backward()
        fast = conv.to(memory_format=CL) if layout == "channels_last" else conv
        x_fast = (x.contiguous(memory_format=CL) if layout == "channels_last" else x).requires_grad_(True)
        fast.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = fast(x_fast)
        (y.double() * upstream).sum().backward()
        for what, got, want in (("weight", fast.weight.grad, ref.weight.grad), ("input", x_fast.grad, x_ref.grad)):
            err = float((got.double() - want).norm() / want.norm())
            assert err < 0.02, f"{name}: bf16 {what} gradient off by {err:.3g} (relative) for input {tuple(x.shape)}"



def test_frozen_reencoding_reaches_the_input_only():
    net = _small(num_regularized=2).train()
    x = torch.rand(3, 1, 16, 16, 16, requires_grad=True)
    before = {n: b.clone() for n, b in net.named_buffers()}
    net.encode_mu_frozen(x).sum().backward()
    assert all(p.grad is None for p in net.parameters())  # no encoder weight learns from it
    assert float(x.grad.abs().sum()) > 0
    assert all(torch.equal(before[n], b) for n, b in net.named_buffers())  # BatchNorm statistics untouched
    net.eval()
    torch.testing.assert_close(net.encode_mu_frozen(x.detach()), net.encode(x.detach())[0])
    out = net(x.detach(), reencode=True)
    torch.testing.assert_close(out["recon_mu"], net.encode(out["recon"])[0])
    assert "recon_mu" not in net(x.detach())
    assert set(net.state_dict()) == set(_small(num_regularized=2).state_dict())  # checkpoints unchanged
