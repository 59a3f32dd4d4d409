"""Attribute-wise and classifier Grad-CAM: oracles (captum, MONAI), batching, sanity checks."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from AttriVAELib.core.errors import ConfigError
from AttriVAELib.explain.gradcam import (AttributeGradCAM, ClassifierGradCAM, default_layer, gradcam_maps,
                                         resolve_layer, upsample_maps)
from AttriVAELib.nn.model import AttriVAE, ModelConfig

N = 32
K = 4


def _random_network(seed: int = 0, dtype: torch.dtype = torch.float64, num_classes: int = 2) -> AttriVAE:
    """A random tiny network whose BatchNorm statistics are not the identity."""
    torch.manual_seed(seed)
    net = AttriVAE(ModelConfig(input_size=N, latent_dim=8, num_regularized=K, width=0.5, num_classes=num_classes))
    net = net.to(dtype)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # running statistics = the average over the calibration batches
            m.reset_running_stats()
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(4, 1, N, N, N, dtype=dtype))
    return net.eval()


@pytest.fixture(scope="module")
def net64() -> AttriVAE:
    return _random_network()


@pytest.fixture(scope="module")
def x64() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(3, 1, N, N, N, dtype=torch.float64)


class _MuModule(torch.nn.Module):
    """μ as the 'logits' of a module, for MONAI's GradCAM (which needs named target layers)."""

    def __init__(self, vae: AttriVAE) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(x)[0]


@pytest.mark.parametrize("layer", ["conv3", "conv4", "conv5"])
def test_raw_maps_match_captum_and_monai(net64, x64, layer):
    from captum.attr import LayerGradCam
    from monai.visualize import GradCAM

    maps = AttributeGradCAM(net64, layer).attribute(x64, upsample=False)  # (B, K, d, h, w)
    assert maps.shape[:2] == (3, K) and maps.dtype == torch.float64
    # Each oracle on its own copy: MONAI leaves hooks on the modules it wraps.
    cap_net = copy.deepcopy(net64)
    captum = LayerGradCam(lambda inp: cap_net.encode(inp)[0], getattr(cap_net.encoder, layer))
    monai = GradCAM(nn_module=_MuModule(copy.deepcopy(net64)), target_layers=f"vae.encoder.{layer}",
                    postprocessing=lambda v: v)
    nonzero = 0
    for d in range(K):
        ref_c = captum.attribute(x64, target=d, relu_attributions=True)
        ref_m = monai.compute_map(x64, class_idx=d)  # one target for the whole batch
        assert torch.allclose(maps[:, d:d + 1], ref_c, atol=1e-6, rtol=0)
        assert torch.allclose(maps[:, d:d + 1], ref_m, atol=1e-6, rtol=0)
        nonzero += int(ref_c.abs().max() > 0)
    assert nonzero >= 1  # the comparison is not between empty maps


def test_signed_maps_match_captum(net64, x64):
    from captum.attr import LayerGradCam

    maps = AttributeGradCAM(net64, "conv4").attribute(x64, targets=[1, 3], relu=False, upsample=False)
    captum = LayerGradCam(lambda inp: net64.encode(inp)[0], net64.encoder.conv4)
    for j, d in enumerate([1, 3]):
        ref = captum.attribute(x64, target=d, relu_attributions=False)
        assert torch.allclose(maps[:, j:j + 1], ref, atol=1e-6, rtol=0)
    assert (maps < 0).any()  # really signed
    relu = AttributeGradCAM(net64, "conv4").attribute(x64, targets=[1, 3], upsample=False)
    assert torch.allclose(relu, F.relu(maps))


def test_classifier_map_matches_captum(net64, x64):
    from captum.attr import LayerGradCam

    maps = ClassifierGradCAM(net64, "conv3").attribute(x64, upsample=False)
    assert maps.shape[:2] == (3, 1)
    captum = LayerGradCam(lambda inp: net64.classify(net64.encode(inp)[0])[:, None], net64.encoder.conv3)
    assert torch.allclose(maps, captum.attribute(x64, target=0, relu_attributions=True), atol=1e-6, rtol=0)


def test_multiclass_classifier_targets():
    net = _random_network(num_classes=3)
    x = torch.rand(2, 1, N, N, N, dtype=torch.float64)
    maps = ClassifierGradCAM(net, "conv3").attribute(x, relu=False, upsample=False)
    assert maps.shape[:2] == (2, 3)
    from captum.attr import LayerGradCam

    captum = LayerGradCam(lambda inp: net.classify(net.encode(inp)[0]), net.encoder.conv3)
    assert torch.allclose(maps[:, 2:3], captum.attribute(x, target=2), atol=1e-6, rtol=0)


def test_batch_maps_equal_single_maps(net64, x64):
    cam = AttributeGradCAM(net64, "conv3")
    batch = cam.attribute(x64)
    for b in range(x64.shape[0]):
        alone = cam.attribute(x64[b:b + 1])
        assert torch.allclose(batch[b:b + 1], alone, atol=1e-10, rtol=0)
    single_target = cam.attribute(x64, targets=[2])
    assert torch.allclose(batch[:, 2:3], single_target, atol=1e-10, rtol=0)


def test_one_forward_for_all_samples_and_targets(net64, x64):
    calls = []
    handle = net64.encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        AttributeGradCAM(net64, "conv4").attribute(x64)
    finally:
        handle.remove()
    assert len(calls) == 1


def test_float32_batch_invariance_and_training_mode_restored():
    net = _random_network(dtype=torch.float32).train()
    x = torch.rand(4, 1, N, N, N)
    maps = AttributeGradCAM(net, "conv3").attribute(x)
    alone = AttributeGradCAM(net, "conv3").attribute(x[2:3])
    assert net.training  # restored
    assert torch.allclose(maps[2:3], alone, atol=1e-5 * float(alone.abs().max()) + 1e-12)


def test_randomized_weights_change_the_maps(net64, x64):
    cam_trained = AttributeGradCAM(net64, "conv3").attribute(x64)
    other = _random_network(seed=123)
    cam_random = AttributeGradCAM(other, "conv3").attribute(x64)
    a, b = cam_trained.flatten(), cam_random.flatten()
    assert not torch.allclose(a, b)
    assert float(torch.corrcoef(torch.stack([a, b]))[0, 1]) < 0.9
    # Cascading randomization of only the layers above the Grad-CAM layer also changes them.
    partial = copy.deepcopy(net64)
    torch.manual_seed(7)
    for module in (partial.encoder.conv5, partial.encoder_fc, partial.fc_mu):
        for p in module.parameters():
            torch.nn.init.normal_(p, std=0.2)
    assert not torch.allclose(AttributeGradCAM(partial, "conv3").attribute(x64), cam_trained)


def test_trilinear_upsampling_equals_interpolate(net64, x64):
    cam = AttributeGradCAM(net64, "conv4")
    raw = cam.attribute(x64, upsample=False)
    up = cam.attribute(x64, upsample="trilinear")
    ref = F.interpolate(raw, size=(N, N, N), mode="trilinear", align_corners=False)
    assert up.shape == (3, K, N, N, N)
    assert torch.allclose(up, ref, atol=1e-12)


def test_aligned_upsampling_puts_features_at_their_receptive_field_centre():
    # The gradient of one conv3 feature voxel with respect to the input is centred at 8·i.
    torch.manual_seed(0)
    net = AttriVAE(ModelConfig(input_size=64, latent_dim=8, width=0.5)).double().eval()
    with torch.no_grad():
        for p in net.encoder.parameters():
            p.abs_()  # no cancellations: the receptive field's weight is centred
    x = torch.rand(1, 1, 64, 64, 64, dtype=torch.float64, requires_grad=True)
    h = net.encoder.conv3(net.encoder.conv2(net.encoder.conv1(x)))
    (g,) = torch.autograd.grad(h[0, :, 3, 3, 3].sum(), x)
    w = g[0, 0].abs().sum(dim=(1, 2))
    centre = float((w * torch.arange(64)).sum() / w.sum())
    assert abs(centre - 24.0) < 0.5
    delta = torch.zeros(1, 1, 8, 8, 8, dtype=torch.float64)
    delta[0, 0, 3, 3, 3] = 1.0
    up = upsample_maps(delta, (64, 64, 64), "aligned")
    assert np.unravel_index(int(up.argmax()), up.shape[2:]) == (24, 24, 24)
    assert float(up.max()) == pytest.approx(1.0)


def test_layer_resolution_and_errors(net64):
    assert default_layer(80) == "conv4" and default_layer(64) == "conv4"
    assert default_layer(32) == "conv3" and default_layer(16) == "conv2"
    assert resolve_layer(net64, "auto")[0] == "encoder.conv3"
    assert resolve_layer(net64, net64.encoder.conv2.conv)[0] == "encoder.conv2.conv"
    with pytest.raises(ConfigError, match="unknown Grad-CAM layer"):
        resolve_layer(net64, "conv9")
    with pytest.raises(ConfigError, match="out of range"):
        AttributeGradCAM(net64).attribute(torch.rand(1, 1, N, N, N, dtype=torch.float64), targets=[99])
    no_head = AttriVAE(ModelConfig(input_size=16, latent_dim=4, num_classes=0))
    with pytest.raises(ConfigError, match="no classifier"):
        ClassifierGradCAM(no_head)


def test_sub_module_layer_and_inference_mode_input(net64, x64):
    with torch.inference_mode():
        x = x64[:1].clone()
    maps = AttributeGradCAM(net64, "encoder.conv3.conv").attribute(x, upsample=False)
    assert maps.shape == (1, K, 4, 4, 4)


def _positive_model(size: int = 16):
    """An untrained AttriVAEModel whose attribute and classifier Grad-CAM maps are > 0 by construction.

    Every weight from the image to μ and to the logit is made ≥ 0 and BatchNorm keeps its initial
    eval statistics (a positive scale): on an image ≥ 0 every activation and every gradient is ≥ 0,
    so each map Σ_c w_c·F_c is ≥ 0 and is > 0 where the features are. No sum cancels, so this holds
    whatever the kernels' rounding (a barely trained model's maps can be all zero on one CPU and not
    on another).
    """
    from AttriVAELib.inference.model import AttriVAEModel

    torch.manual_seed(0)
    net = AttriVAE(ModelConfig(input_size=size, latent_dim=8, num_regularized=K, width=0.5, num_classes=2))
    with torch.no_grad():
        for module in (net.encoder, net.encoder_fc, net.fc_mu, net.classifier):
            for p in module.parameters():
                p.abs_()
    return AttriVAEModel(net.eval(), {"preprocess": {"size": size}}, device="cpu")


def test_gradcam_maps_from_encodings_on_the_input_grid(tmp_path):
    from AttriVAELib.cohorts.phantom.generator import render_factors, sample_factors
    from AttriVAELib.data.io import Geometry, Volume

    model = _positive_model()
    array = render_factors(sample_factors(2, seed=4), 32)[0][3:27]  # (24, 32, 32)
    c, s = np.cos(0.4), np.sin(0.4)
    source = Geometry(size=(32, 32, 24), spacing=(2.0, 2.5, 4.0), origin=(5.0, -3.0, 7.0),
                      direction=(c, 0.0, s, 0.0, 1.0, 0.0, -s, 0.0, c))
    image = Volume(np.ascontiguousarray(array), source)
    encs = model.encode_batch([image, image])
    maps = gradcam_maps(model, encs, layer="conv1")
    assert maps.shape == (2, model.num_regularized, model.input_size, model.input_size, model.input_size)
    assert maps.dtype == torch.float32 and bool((maps >= 0).all())
    assert bool((maps.amax(dim=(2, 3, 4)) > 0).all())  # every map of every sample: not an empty comparison
    # The same image twice in a batch: the same maps (float32, two batch positions).
    torch.testing.assert_close(maps[0], maps[1], rtol=0, atol=1e-5 * float(maps.abs().max()))
    vol = model.to_input_grid(maps[0, 0], encs[0])
    assert vol.geometry.allclose(source, atol=1e-6) and vol.array.shape == source.shape
    assert vol.array.max() > 0  # the map lands on the input grid
    cls = gradcam_maps(model, encs[:1], kind="classifier", layer="conv1")
    assert cls.shape == (1, 1, model.input_size, model.input_size, model.input_size)
    assert float(cls.max()) > 0


@pytest.mark.parametrize("predicted", [0, 1])
def test_classifier_map_of_either_class_is_rectified_then_upsampled_like_captum(predicted):
    """The predicted class's map: captum's rectified layer map (the class-0 logit of a binary
    head is −s), upsampled after; rectifying after upsampling would give another map."""
    import dataclasses

    from captum.attr import LayerGradCam

    from AttriVAELib.data.io import Geometry, Volume
    from AttriVAELib.explain.explain import explain_encoding
    from AttriVAELib.explain.gradcam import normalize_maps, upsample_maps
    from AttriVAELib.inference.model import AttriVAEModel

    net = _random_network(dtype=torch.float32)
    model = AttriVAEModel(net, {"preprocess": {"size": N}}, device="cpu")
    rng = np.random.default_rng(3)
    image = Volume(rng.random((N, N, N), dtype=np.float32), Geometry(size=(N, N, N), spacing=(1.0, 1.0, 1.0),
                                                                origin=(0.0, 0.0, 0.0), direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)))
    enc = model.encode(image)
    probabilities = np.array([0.9, 0.1]) if predicted == 0 else np.array([0.1, 0.9])
    enc = dataclasses.replace(enc, probabilities=probabilities)
    ours = explain_encoding(model, enc, layer="conv3", counterfactual=False).classifier_map

    def both_logits(inp: torch.Tensor) -> torch.Tensor:
        s = net.classify(net.encode(inp)[0])
        return torch.stack([-s, s], dim=1)

    x = torch.as_tensor(enc.image)[None, None]
    coarse = LayerGradCam(both_logits, net.encoder.conv3).attribute(x, target=predicted, relu_attributions=True)
    expected = normalize_maps(upsample_maps(coarse.detach(), (N, N, N)))[0, 0].numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    signed = LayerGradCam(both_logits, net.encoder.conv3).attribute(x, target=predicted, relu_attributions=False)
    other_order = normalize_maps(torch.relu(upsample_maps(signed.detach(), (N, N, N))))[0, 0].numpy()
    assert np.abs(other_order - expected).max() > 1e-3  # the order matters on this map: the test can fail
