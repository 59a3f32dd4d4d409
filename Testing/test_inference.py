"""The inference object: loading, encoding any geometry, decoding, traversals, errors."""

from __future__ import annotations

import copy
import functools
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from AttriVAELib.core.errors import CheckpointError, ConfigError, InputError
from AttriVAELib.data.io import Geometry, Volume, read_image, write_image
from AttriVAELib.inference.model import AttriVAEModel, Encoding


def oblique_volume() -> Volume:
    """A phantom on an oblique (rotated direction), anisotropic, non-cubic grid."""
    array, _ = _render_array()
    a, t = np.deg2rad(25.0), np.deg2rad(10.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]) @ \
        np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    crop = np.ascontiguousarray(array[4:26, 2:30, :])  # (z, y, x) = (22, 28, 32)
    geo = Geometry(size=(32, 28, 22), spacing=(2.1, 2.6, 4.3), origin=(-30.0, 12.5, 40.0),
                   direction=tuple(rot.ravel()))
    return Volume(crop, geo)


def oblique_image(path: Path) -> Path:
    """:func:`oblique_volume` written to ``path``."""
    write_image(oblique_volume(), path)
    return path


def _render_array(size: int = 32) -> tuple[np.ndarray, object]:
    from AttriVAELib.cohorts.phantom.generator import geometry_for_size, render_factors, sample_factors

    image, _, _ = render_factors(sample_factors(3, seed=5), size)
    return np.asarray(image, dtype=np.float32), geometry_for_size(size)


@pytest.fixture(scope="module")
def model(tiny_run) -> AttriVAEModel:
    return AttriVAEModel.load(tiny_run, device="cpu")


@pytest.fixture(scope="module")
def oblique(tmp_path_factory) -> Path:
    return oblique_image(tmp_path_factory.mktemp("oblique") / "oblique.nii.gz")


def _calibrate_batchnorm(net: torch.nn.Module, size: int) -> None:
    """BatchNorm running statistics averaged over a few random batches, so that a random
    network's eval-mode activations are normalized (its outputs then vary with z)."""
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
            m.reset_running_stats()
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(4, 1, size, size, size))
            net.decode(torch.randn(4, net.config.latent_dim))
    net.eval()


@functools.lru_cache(maxsize=None)
def _random_network(seed: int, size: int):
    from AttriVAELib.nn.model import AttriVAE, ModelConfig

    torch.manual_seed(seed)
    net = AttriVAE(ModelConfig(input_size=size, latent_dim=8, num_regularized=2, width=0.5))
    _calibrate_batchnorm(net, size)
    return net


#: How far a float32 decode may be from another float32 decode of the same code (or from the float64
#: decode): each path (plain, BatchNorm-folded, oneDNN-fused; batch 1 or B) is within ~1e-6 of the float64
#: decode of these random networks with AVX-512, AVX2 and default ATen kernels, and two of them round
#: independently. 1e-5 is ~84 float32 ulps of 1.0; folding the BatchNorms without their eps moves the
#: output by 4e-4, a wrong latent dim by ~1e-3 per 1e-3 moved.
FP32_DECODE_ATOL = 1e-5
#: bf16 decodes: 8 significant bits through seven convolutions (max error 0.012–0.018 measured, mean ≪ 0.01).
BF16_DECODE_ATOL = 0.05


def _float64_decode(m: AttriVAEModel, z: np.ndarray) -> np.ndarray:
    """The exact reference: the network's plain decode in float64 (B, N, N, N)."""
    with torch.no_grad():
        net = copy.deepcopy(m.network).double()
        return net.decode(torch.as_tensor(np.asarray(z), dtype=torch.float64))[:, 0].numpy()


def random_model(seed: int = 0, size: int = 32, calibrated: bool = True) -> AttriVAEModel:
    """An AttriVAEModel around a random network (non-trivial outputs), no checkpoint needed."""
    from AttriVAELib.nn.calibration import AttributeCalibration

    net = _random_network(seed, size)
    names = ["volume_ml", "wall_thickness_mm"]
    meta = {"preprocess": {"size": size}, "labels": {"names": ["healthy", "lesion"]},
            "attributes": {"names": names, "units": ["mL", "mm"], "regularized": names}}
    if calibrated:
        rng = np.random.default_rng(seed)
        z = rng.normal(size=(50, 2))
        values = np.stack([50 + 10 * z[:, 0], 7 - z[:, 1]], 1)
        meta["calibration"] = AttributeCalibration.fit(z, values, names).to_dict()
    return AttriVAEModel(net, meta, device="cpu")


# --------------------------------------------------------------------------- loading
def test_load_properties(model, tiny_run):
    assert model.input_size == 16 and model.latent_size == 8 and model.num_regularized == 4
    assert model.attribute_names == ["volume_ml", "max_axial_diameter_mm", "wall_thickness_mm", "lesion_volume_ml"]
    assert model.attribute_units == ["mL", "mm", "mm", "mL"]
    assert model.regularized_dims == [0, 1, 2, 3]
    assert model.label_names == ["0", "1"] and model.num_classes == 2 and model.has_classifier
    assert model.calibration is not None
    assert not model.network.training
    same = AttriVAEModel.load(Path(tiny_run) / "model.safetensors", device="cpu")
    assert same.source == model.source
    assert "latent 8" in model.describe()


def test_missing_and_tampered_checkpoints(tiny_run, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        AttriVAEModel.load(tmp_path / "nothing")
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="not found"):
        AttriVAEModel.load(empty)
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    weights = run / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        AttriVAEModel.load(run)
    with pytest.raises(ConfigError):
        AttriVAEModel.load(tiny_run, device="cuda:7")


# --------------------------------------------------------------------------- encoding
def test_encode_oblique_anisotropic_image(model, oblique):
    source = read_image(oblique).geometry
    assert not np.allclose(source.direction_matrix, np.eye(3)) and len(set(source.spacing)) == 3
    enc = model.encode(oblique)
    assert isinstance(enc, Encoding)
    assert enc.mu.shape == (8,) and enc.logvar.shape == (8,)
    assert enc.probabilities.shape == (2,) and enc.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert enc.attributes.shape == (4,)
    assert enc.mapping.source.allclose(source, atol=1e-9)
    assert enc.image.shape == (16, 16, 16)
    # Every model-grid array comes back on the input's exact geometry.
    recon = model.to_input_grid(model.reconstruct(enc), enc, rescale=True)
    assert recon.geometry == enc.mapping.source and recon.array.shape == source.shape
    d = enc.to_dict()
    assert [r["name"] for r in d["regularized"]] == model.attribute_names
    assert set(d["probabilities"]) == {"0", "1"}


def test_encode_is_deterministic_and_batch_equals_single(model, oblique, tiny_cohort):
    other = sorted((tiny_cohort / "images").glob("*.nii.gz"))[0]
    a = model.encode(oblique)
    b = model.encode(oblique)
    np.testing.assert_array_equal(a.mu, b.mu)
    batch = model.encode_batch([oblique, other, Volume(*_volume_args(other))], batch_size=2)
    # Batches of 2 and 1 may run other kernel blockings: float32 rounding, relative to μ's size.
    np.testing.assert_allclose(batch[0].mu, a.mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(batch[1].mu, batch[2].mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.predict_attributes(batch[1].mu), batch[1].attributes)


def _volume_args(path: Path) -> tuple[np.ndarray, Geometry]:
    vol = read_image(path)
    return vol.array, vol.geometry


def test_mask_with_model_that_does_not_use_it(model, tiny_cohort):
    image = sorted((tiny_cohort / "images").glob("*.nii.gz"))[1]
    mask = tiny_cohort / "masks" / image.name
    with_mask = model.encode(image, mask)
    without = model.encode(image)
    np.testing.assert_array_equal(with_mask.mu, without.mu)
    assert with_mask.mask is not None and with_mask.mask.shape == (16, 16, 16)


def test_bad_images(model, tmp_path):
    with pytest.raises(InputError, match="not found"):
        model.encode(tmp_path / "missing.nii.gz")
    four_d = sitk.Image([6, 6, 6, 3], sitk.sitkFloat32)
    sitk.WriteImage(four_d, str(tmp_path / "4d.nii.gz"))
    with pytest.raises(InputError, match="4D"):
        model.encode(tmp_path / "4d.nii.gz")
    (tmp_path / "junk.nii.gz").write_bytes(b"not an image")
    with pytest.raises(InputError):
        model.encode(tmp_path / "junk.nii.gz")
    array, geo = _render_array()
    array[3, 3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        model.encode(Volume(array, geo))


# --------------------------------------------------------------------------- decoding and traversals
def test_decode_types_and_fast_path_exactness():
    m = random_model()
    z = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    out = m.decode(z)
    assert isinstance(out, np.ndarray) and out.shape == (3, 32, 32, 32) and out.dtype == np.float32
    t = m.decode(torch.as_tensor(z))
    assert isinstance(t, torch.Tensor) and t.shape == (3, 32, 32, 32)
    with torch.no_grad():
        ref = m.network.decode(torch.as_tensor(z))[:, 0].numpy()
    exact = _float64_decode(m, z)
    np.testing.assert_allclose(ref, exact, atol=FP32_DECODE_ATOL)  # the yardstick: plain float32
    np.testing.assert_allclose(out, exact, atol=FP32_DECODE_ATOL)
    np.testing.assert_allclose(out, ref, atol=FP32_DECODE_ATOL)
    assert m.decode(z[0]).shape == (1, 32, 32, 32)
    with pytest.raises(InputError, match="latent codes"):
        m.decode(np.zeros((2, 5)))
    from AttriVAELib.inference import model as inference

    assert isinstance(m._decoder_module(), inference._OneDNNDecoder) or not torch.backends.mkldnn.is_available()
    slow = AttriVAEModel(m.network, m.meta, device="cpu", fast_decode=False)
    np.testing.assert_allclose(slow.decode(z), ref, atol=FP32_DECODE_ATOL)  # the same modules as ref
    bf16 = AttriVAEModel(m.network, m.meta, device="cpu", bf16=True)
    np.testing.assert_allclose(bf16.decode(z), exact, atol=BF16_DECODE_ATOL)
    np.testing.assert_allclose(m.decode(z, preview=True), exact, atol=BF16_DECODE_ATOL)


def test_decode_without_onednn_kernels(monkeypatch):
    from AttriVAELib.inference import model as inference

    monkeypatch.setattr(inference._OneDNNDecoder, "build", classmethod(lambda cls, folded: None))
    m = random_model()
    assert isinstance(m._decoder_module(), torch.nn.Sequential)
    z = np.random.default_rng(1).normal(size=(2, 8)).astype(np.float32)
    exact = _float64_decode(m, z)
    np.testing.assert_allclose(m.decode(z), exact, atol=FP32_DECODE_ATOL)
    np.testing.assert_allclose(m.decode(z, preview=True), exact, atol=BF16_DECODE_ATOL)


def test_decode_on_a_cpu_without_native_bf16(monkeypatch):
    """What an AVX2-only CPU (no AVX-512-bf16, no AMX) does, on any CPU: previews stay float32, and a
    forced bf16 decode runs the folded decoder under autocast instead of oneDNN's bf16 kernels."""
    from AttriVAELib.inference import model as inference
    from AttriVAELib.nn import fastpath

    monkeypatch.setattr(fastpath, "cpu_bf16_flags", lambda: ())
    monkeypatch.setattr(inference._OneDNNDecoder, "bf16_capable", staticmethod(lambda: False))
    assert not fastpath.bf16_supported(torch.device("cpu"))
    m = random_model()
    z = np.random.default_rng(2).normal(size=(2, 8)).astype(np.float32)
    exact = _float64_decode(m, z)
    fp32 = m.decode(z)
    np.testing.assert_allclose(fp32, exact, atol=FP32_DECODE_ATOL)
    np.testing.assert_array_equal(m.decode(z, preview=True), fp32)  # the same float32 computation
    bf16 = AttriVAEModel(m.network, m.meta, device="cpu", bf16=True)
    bf16._decoder_module()
    dtypes = []
    handle = bf16._folded.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    try:
        out = bf16.decode(z)
    finally:
        handle.remove()
    assert dtypes == [torch.bfloat16]  # the folded decoder ran, in bf16
    assert out.dtype == np.float32 and out.shape == (2, 32, 32, 32)
    np.testing.assert_allclose(out, exact, atol=BF16_DECODE_ATOL)


def test_traverse_decodes_in_one_batch_and_matches_single_decodes():
    m = random_model()
    array, geo = _render_array()
    enc = m.encode(Volume(array, geo))
    calls = []
    handle = m._decoder_module().register_forward_hook(lambda _m, inp, _o: calls.append(inp[0].shape[0]))
    try:
        frames = m.traverse(enc, "wall_thickness_mm", np.linspace(-2, 2, 5))
    finally:
        handle.remove()
    assert calls == [5] and frames.shape == (5, 32, 32, 32)
    z = enc.mu.copy()
    z[1] = 2.0
    np.testing.assert_allclose(frames[-1], m.decode(z[None])[0], atol=FP32_DECODE_ATOL)  # batch 5 vs batch 1
    # Moving a dim changes the decoded volume, more so further away.
    change = [float(np.abs(f - frames[2]).mean()) for f in frames]
    assert change[0] > change[1] > 0 and change[4] > change[3] > 0


def test_traverse_grid_and_attribute_units():
    m = random_model()
    array, geo = _render_array()
    enc = m.encode(Volume(array, geo))
    grid = m.traverse_grid(enc, 0, [-1.0, 0.0, 1.0], 1, [-0.5, 0.5])
    assert grid.shape == (3, 2, 32, 32, 32)
    z = enc.mu.copy()
    z[0], z[1] = 1.0, -0.5
    np.testing.assert_allclose(grid[2, 0], m.decode(z[None])[0], atol=FP32_DECODE_ATOL)  # batch 6 vs batch 1
    # Attribute units go through the calibration's inverse.
    values = [45.0, 50.0, 60.0]
    lat = m.latent_values("volume_ml", values, units="attribute")
    np.testing.assert_allclose(lat, [m.calibration.latent_for(0, v) for v in values])
    np.testing.assert_allclose(m.traverse(enc, "volume_ml", values, units="attribute"), m.traverse(enc, 0, lat),
                               atol=FP32_DECODE_ATOL)
    z_set = m.set_attribute(enc, "wall_thickness_mm", 8.0)
    assert z_set[1] == pytest.approx(m.calibration.latent_for(1, 8.0), abs=1e-6)
    np.testing.assert_array_equal(np.delete(z_set, 1), np.delete(enc.mu, 1))
    est = m.predict_attributes(z_set[None])[0, 1]
    assert est == pytest.approx(8.0, abs=0.3)
    assert m.set_attribute(enc, 1, 0.25, units="latent")[1] == pytest.approx(0.25)


def test_traversal_errors():
    m = random_model(calibrated=False)
    array, geo = _render_array()
    enc = m.encode(Volume(array, geo))
    with pytest.raises(ConfigError, match="unknown attribute"):
        m.traverse(enc, "no_such_attribute", [0.0])
    with pytest.raises(ConfigError, match="out of range"):
        m.traverse(enc, 8, [0.0])
    with pytest.raises(ConfigError, match="no attribute calibration"):
        m.traverse(enc, "volume_ml", [50.0], units="attribute")
    with pytest.raises(ConfigError, match="units"):
        m.traverse(enc, 0, [0.0], units="mm")
    with pytest.raises(ConfigError, match="non-empty"):
        m.traverse(enc, 0, [])
    with pytest.raises(ConfigError, match="two different"):
        m.traverse_grid(enc, 0, [0.0], "volume_ml", [1.0])
    assert m.predict_attributes(enc.mu) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_matches_cpu():
    from AttriVAELib.explain.gradcam import gradcam_maps

    cpu = random_model()
    # A copy: the CPU model's network is cached and must stay on the CPU.
    gpu = AttriVAEModel(copy.deepcopy(cpu.network), cpu.meta, device="cuda")
    array, geo = _render_array()
    enc_c, enc_g = cpu.encode(Volume(array, geo)), gpu.encode(Volume(array, geo))
    np.testing.assert_allclose(enc_g.mu, enc_c.mu, atol=1e-3)
    np.testing.assert_allclose(gpu.decode(enc_c.mu[None]), cpu.decode(enc_c.mu[None]), atol=1e-3)
    maps_c = gradcam_maps(cpu, [enc_c], layer="conv3")
    maps_g = gradcam_maps(gpu, [enc_c], layer="conv3")
    torch.testing.assert_close(maps_g, maps_c, atol=1e-3 * float(maps_c.abs().max()) + 1e-6, rtol=1e-3)
