"""``attrivae export --format monai-bundle``: the bundle's layout and metadata, MONAI loading it
back offline with the same encodings as the engine, and the command's errors.

The model is the shipped demo model (32³, latent 32, K = 4, binary classifier) and, for a model
without a classifier that crops to a mask, a real untrained 16³ network saved as a checkpoint.
The images are phantoms of the shared tiny cohort.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = ROOT / "AttriVAE" / "Resources" / "DemoModel"
TOL = 1e-5
METADATA_KEYS = ("version", "changelog", "monai_version", "pytorch_version", "numpy_version",
                 "required_packages_version", "task", "description", "authors", "copyright", "network_data_format")
TENSOR_KEYS = ("type", "format", "modality", "num_channels", "spatial_shape", "dtype", "value_range",
               "is_patch_data", "channel_def")


# --------------------------------------------------------------------------- fixtures
@pytest.fixture()
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach the network fails loudly (MONAI downloads what it cannot find)."""
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(scope="module")
def demo_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from AttriVAELib import export_monai_bundle

    out = tmp_path_factory.mktemp("bundles") / "attrivae_demo"
    assert export_monai_bundle(DEMO_MODEL, out, authors="Test authors", copyright="Copyright (c) tests",
                               license="Apache-2.0", modality="MR") == out
    return out


@pytest.fixture(scope="module")
def engine():
    from AttriVAELib import AttriVAEModel

    return AttriVAEModel.load(DEMO_MODEL, device="cpu")


@pytest.fixture()
def phantoms(tiny_cohort: Path) -> list[Path]:
    return sorted((tiny_cohort / "images").glob("*.nii.gz"))[:3]


def _parser(bundle: Path, **overrides):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    parser["bundle_root"] = str(bundle)
    parser["device"] = "$torch.device('cpu')"
    for key, value in overrides.items():
        parser[key] = value
    return parser


def _batch(parser, images: list[Path], masks: list[Path] | None = None):
    import torch

    prepare = parser.get_parsed_content("preprocessing")
    items = [{"image": str(p)} if masks is None else {"image": str(p), "mask": str(m)}
             for p, m in zip(images, masks or images)]
    return torch.stack([prepare(item)["image"] for item in items])


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    from AttriVAELib.cli.main import main

    try:
        code = main(argv)
    except SystemExit as exc:  # argparse rejects the options
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --------------------------------------------------------------------------- layout and metadata
def test_bundle_layout_and_required_metadata(demo_bundle: Path, engine):
    import monai
    import torch

    for rel in ("configs/metadata.json", "configs/inference.json", "models/model.pt", "models/model.safetensors",
                "models/model.json", "docs/README.md", "docs/license.txt"):
        assert (demo_bundle / rel).is_file(), rel
    meta = json.loads((demo_bundle / "configs" / "metadata.json").read_text())
    assert [k for k in METADATA_KEYS if k not in meta] == []
    assert meta["monai_version"] == monai.__version__ and meta["pytorch_version"] == torch.__version__.split("+")[0]
    assert meta["authors"] == "Test authors" and meta["name"] == "attrivae_demo"
    assert meta["version"] in meta["changelog"] and "attrivae" in meta["required_packages_version"]
    image = meta["network_data_format"]["inputs"]["image"]
    outputs = meta["network_data_format"]["outputs"]
    for spec in (image, *outputs.values()):
        assert [k for k in TENSOR_KEYS if k not in spec] == []
    assert (image["num_channels"], image["spatial_shape"], image["dtype"]) == (1, [32, 32, 32], "float32")
    assert image["value_range"] == [0, 1] and image["modality"] == "MR" and image["is_patch_data"] is False
    assert set(outputs) == {"latent", "logvar", "probabilities"}
    latent = outputs["latent"]
    assert latent["format"] == "latent" and latent["num_channels"] == engine.latent_size == 32
    for k, (name, unit) in enumerate(zip(engine.attribute_names, engine.attribute_units)):
        assert latent["channel_def"][str(k)].startswith(f"{name} ({unit})")
    assert latent["channel_def"]["15"].startswith("free")
    assert outputs["probabilities"]["num_channels"] == 2 and outputs["probabilities"]["value_range"] == [0, 1]
    assert meta["attrivae"]["attributes"] == [{"dim": k, "name": n, "unit": u} for k, (n, u) in
                                              enumerate(zip(engine.attribute_names, engine.attribute_units))]
    assert meta["attrivae"]["preprocess"] == engine.spec.to_dict()

    readme = (demo_bundle / "docs" / "README.md").read_text()
    for name, unit in zip(engine.attribute_names, engine.attribute_units):
        assert f"| {name} | {unit} |" in readme
    assert "## Licence" in readme and "Apache-2.0" in readme and "`probabilities` | (B, 2)" in readme
    assert "Apache-2.0" in (demo_bundle / "docs" / "license.txt").read_text()


def test_exporter_checks_metadata_it_would_miss(demo_bundle: Path):
    from AttriVAELib.inference.monai_bundle import check_bundle_metadata

    meta = json.loads((demo_bundle / "configs" / "metadata.json").read_text())
    assert check_bundle_metadata(meta) == []
    del meta["authors"]
    del meta["network_data_format"]["outputs"]["latent"]["channel_def"]
    meta["network_data_format"]["inputs"]["image"]["num_channels"] = "1"
    problems = check_bundle_metadata(meta)
    assert "missing authors" in problems
    assert "network_data_format.outputs.latent has no channel_def" in problems
    assert any("inputs.image.num_channels must be a positive integer" in p for p in problems)
    meta["network_data_format"]["outputs"] = {}
    assert "network_data_format has no outputs" in check_bundle_metadata(meta)


def test_weights_are_plain_tensors_and_an_engine_checkpoint(demo_bundle: Path, engine):
    import torch

    from AttriVAELib import AttriVAEModel
    from AttriVAELib.inference.bundle_components import AttriVAEBundleNet, load_weights

    state = torch.load(demo_bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
    expected = engine.network.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    again = AttriVAEModel.load(demo_bundle / "models", device="cpu")  # checksum verified
    assert again.attribute_names == engine.attribute_names and again.calibration is not None
    sidecar = json.loads((demo_bundle / "models" / "model.json").read_text())
    assert "manifest" not in sidecar["data"]  # no paths of the training machine
    config = engine.config.to_dict()
    from_safetensors = load_weights(AttriVAEBundleNet(config), demo_bundle / "models" / "model.safetensors")
    assert not from_safetensors.training
    assert all(torch.equal(from_safetensors.state_dict()[k], expected[k]) for k in expected)


class _RunsCodeWhenUnpickled:
    """A pickle payload that would create a file if unpickling ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_loading_weights_never_runs_code(tmp_path: Path, engine):
    import torch

    from AttriVAELib.core.errors import InputError
    from AttriVAELib.inference.bundle_components import AttriVAEBundleNet, load_weights

    marker = tmp_path / "code_ran"
    hostile = tmp_path / "model.pt"
    torch.save({"encoder.conv1.conv.weight": _RunsCodeWhenUnpickled(marker)}, hostile)
    with pytest.raises(InputError, match="not a weights-only state dict"):
        load_weights(AttriVAEBundleNet(engine.config.to_dict()), hostile)
    assert not marker.exists()

    torch.save({"encoder.conv1.conv.weight": 1}, hostile)
    with pytest.raises(InputError, match="not a state dict of tensors"):
        load_weights(AttriVAEBundleNet(engine.config.to_dict()), hostile)
    torch.save({"unexpected": torch.zeros(1)}, hostile)
    with pytest.raises(InputError, match="weights do not fit the network"):
        load_weights(AttriVAEBundleNet(engine.config.to_dict()), hostile)


# --------------------------------------------------------------------------- MONAI loads it back
def test_config_parser_encodes_like_the_engine(demo_bundle: Path, engine, phantoms: list[Path], offline):
    import torch

    expected = [engine.encode(p) for p in phantoms]
    parser = _parser(demo_bundle)
    network = parser.get_parsed_content("network")
    assert not network.training
    x = _batch(parser, phantoms)
    assert tuple(x.shape) == (3, 1, 32, 32, 32) and x.dtype == torch.float32
    with torch.no_grad():
        mu = network(x).numpy()
    assert np.abs(mu - np.stack([e.mu for e in expected])).max() <= TOL

    for output, field in (("probabilities", "probabilities"), ("logvar", "logvar")):
        other = _parser(demo_bundle, **{"network_def::output": output}).get_parsed_content("network")
        with torch.no_grad():
            got = other(x).numpy()
        assert np.abs(got - np.stack([getattr(e, field) for e in expected])).max() <= TOL


@pytest.mark.filterwarnings("ignore:parsing config_file")  # MONAI's reminder that configs name code to run
def test_monai_bundle_load_builds_the_network_offline(demo_bundle: Path, engine, phantoms: list[Path], offline):
    import torch
    from monai.bundle import load

    network = load(name=demo_bundle.name, bundle_dir=str(demo_bundle.parent), workflow_type="inference",
                   device="cpu").eval()
    x = _batch(_parser(demo_bundle), phantoms)
    with torch.no_grad():
        mu = network(x).numpy()
    assert np.abs(mu - np.stack([engine.encode(p).mu for p in phantoms])).max() <= TOL


def test_monai_workflow_writes_the_latents_offline(demo_bundle: Path, engine, phantoms: list[Path], tmp_path: Path,
                                                   offline):
    from monai.bundle import ConfigWorkflow, verify_net_in_out

    images = tmp_path / "images"
    images.mkdir()
    for p in phantoms:
        shutil.copy(p, images / p.name)
    out = tmp_path / "eval"
    workflow = ConfigWorkflow(config_file=str(demo_bundle / "configs" / "inference.json"), logging_file=False,
                              meta_file=str(demo_bundle / "configs" / "metadata.json"), workflow_type="inference",
                              bundle_root=str(demo_bundle), dataset_dir=str(images), output_dir=str(out),
                              device="$torch.device('cpu')")
    workflow.initialize()
    assert workflow.check_properties() == []
    workflow.run()
    workflow.finalize()
    result = json.loads((out / "latents.json").read_text())
    assert [Path(s["image"]).name for s in result["subjects"]] == [p.name for p in phantoms]
    expected = [engine.encode(p) for p in phantoms]
    assert np.abs(np.array([s["latent"] for s in result["subjects"]]) - [e.mu for e in expected]).max() <= TOL
    assert np.abs(np.array([s["probabilities"] for s in result["subjects"]])
                  - [e.probabilities for e in expected]).max() <= TOL
    assert [a["name"] for a in result["attributes"]] == engine.attribute_names

    # MONAI's own shape/dtype check of the network against the metadata (it reads the output "pred").
    meta = json.loads((demo_bundle / "configs" / "metadata.json").read_text())
    verify_net_in_out(net_id="network_def", meta_file=str(demo_bundle / "configs" / "metadata.json"),
                      config_file=str(demo_bundle / "configs" / "inference.json"), device="cpu",
                      **{"_meta_::network_data_format::outputs::pred": meta["network_data_format"]["outputs"]["latent"],
                         "bundle_root": str(demo_bundle)})


def test_model_without_classifier_that_crops_to_a_mask(tmp_path: Path, tiny_cohort: Path, offline):
    """A real (untrained) network: no probabilities output; masks are paired by file name."""
    import torch
    from monai.bundle import ConfigWorkflow

    from AttriVAELib import AttriVAEModel, export_monai_bundle
    from AttriVAELib.core.errors import ConfigError, InputError
    from AttriVAELib.nn.checkpoint import save_checkpoint
    from AttriVAELib.nn.model import AttriVAE, ModelConfig

    torch.manual_seed(0)
    config = ModelConfig(input_size=16, latent_dim=6, num_regularized=2, num_classes=0, width=0.5, dropout=0.0,
                         bottleneck_channels=4)
    network = AttriVAE(config)
    meta = {"kind": "model", "model_config": config.to_dict(),
            "preprocess": {"size": 16, "crop_to_mask": True, "margin_mm": 5.0, "intensity_window": [0.0, 1000.0]},
            "attributes": {"names": ["volume_ml", "wall_thickness_mm"], "units": ["mL", "mm"],
                           "regularized": ["volume_ml", "wall_thickness_mm"]},
            "labels": {"names": []}}
    run = tmp_path / "run"
    save_checkpoint(run, {f"model.{k}": v for k, v in network.state_dict().items()}, meta)
    bundle = export_monai_bundle(run, tmp_path / "no_head")
    bundle_meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert set(bundle_meta["network_data_format"]["outputs"]) == {"latent", "logvar"}
    assert bundle_meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == [16, 16, 16]
    assert "masks/" in (bundle / "docs" / "README.md").read_text()
    with pytest.raises(RuntimeError, match="AttriVAEBundleNet") as raised:  # MONAI wraps the component's error
        _parser(bundle, **{"network_def::output": "probabilities"}).get_parsed_content("network")
    assert isinstance(raised.value.__cause__, ConfigError) and "needs a classifier" in str(raised.value.__cause__)

    engine = AttriVAEModel.load(run, device="cpu")
    images = sorted((tiny_cohort / "images").glob("*.nii.gz"))[:2]
    masks = [tiny_cohort / "masks" / p.name for p in images]
    expected = np.stack([engine.encode(p, m).mu for p, m in zip(images, masks)])
    parser = _parser(bundle)
    with torch.no_grad():
        mu = parser.get_parsed_content("network")(_batch(parser, images, masks)).numpy()
    assert np.abs(mu - expected).max() <= TOL

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for p, m in zip(images, masks):
        shutil.copy(p, data / "images" / p.name)
        shutil.copy(m, data / "masks" / p.name)
    workflow = ConfigWorkflow(config_file=str(bundle / "configs" / "inference.json"), logging_file=False,
                              meta_file=str(bundle / "configs" / "metadata.json"), workflow_type="inference",
                              bundle_root=str(bundle), dataset_dir=str(data / "images"),
                              mask_dir=str(data / "masks"), output_dir=str(tmp_path / "eval"),
                              device="$torch.device('cpu')")
    workflow.initialize()
    workflow.run()
    result = json.loads((tmp_path / "eval" / "latents.json").read_text())
    assert all("probabilities" not in s for s in result["subjects"])
    assert np.abs(np.array([s["latent"] for s in result["subjects"]]) - expected).max() <= TOL

    prepare = parser.get_parsed_content("preprocessing")
    with pytest.raises(RuntimeError) as raised:  # MONAI's Compose wraps the transform's error
        prepare({"image": str(images[0])})
    assert isinstance(raised.value.__cause__, InputError)
    assert str(raised.value.__cause__) == (f"{images[0]}: this model's preprocessing (crop_to_mask) needs a mask "
                                           "(give it under the key 'mask')")


# --------------------------------------------------------------------------- the command
def test_cli_exports_the_demo_model_and_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "bundle"
    code, stdout, _ = _run(["export", "--model", "demo", "--format", "monai-bundle", "--out", str(out)], capsys)
    assert code == 0 and "MONAI bundle written" in stdout
    meta = json.loads((out / "configs" / "metadata.json").read_text())
    assert meta["authors"] == "AttriVAE developers" and meta["license"] == "Apache-2.0"
    before = (out / "configs" / "metadata.json").read_bytes()

    code, _, err = _run(["export", "--model", "demo", "--out", str(out), "--bundle-version", "0.2.0"], capsys)
    assert code == 2 and err.strip().splitlines() == [
        f"attrivae export: error: {out}: already exists; pass --overwrite to replace it"]
    assert (out / "configs" / "metadata.json").read_bytes() == before

    code, _, _ = _run(["export", "--model", "demo", "--out", str(out), "--bundle-version", "0.2.0", "--overwrite",
                       "--authors", "Someone"], capsys)
    assert code == 0
    meta = json.loads((out / "configs" / "metadata.json").read_text())
    assert meta["version"] == "0.2.0" and meta["authors"] == "Someone"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no temporaries left


def test_cli_overwrite_replaces_only_its_own_bundles(tmp_path: Path, capsys: pytest.CaptureFixture):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("keep me")
    code, _, err = _run(["export", "--model", "demo", "--out", str(plain), "--overwrite"], capsys)
    assert code == 2 and "not an output folder of attrivae export" in err and len(err.strip().splitlines()) == 1

    other = tmp_path / "other_bundle"
    (other / "configs").mkdir(parents=True)
    (other / "configs" / "metadata.json").write_text(json.dumps({"version": "1.0.0"}))
    code, _, err = _run(["export", "--model", "demo", "--out", str(other), "--overwrite"], capsys)
    assert code == 2 and "not a MONAI bundle written by attrivae export" in err
    assert (plain / "notes.txt").read_text() == "keep me"
    assert json.loads((other / "configs" / "metadata.json").read_text()) == {"version": "1.0.0"}


def test_cli_bad_model_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "bundle"
    code, _, err = _run(["export", "--model", str(tmp_path / "nope"), "--out", str(out)], capsys)
    assert code == 2 and err.strip().splitlines() == [
        f"attrivae export: error: {tmp_path / 'nope'}: model not found (give a run folder or a model.safetensors "
        "file)"]

    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "model.safetensors").write_text("not a checkpoint")
    (fake / "model.json").write_text("{}")
    code, _, err = _run(["export", "--model", str(fake), "--out", str(out)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "model.safetensors: not a valid safetensors file" in err and "Traceback" not in err

    code, _, err = _run(["export", "--model", "demo", "--format", "onnx", "--out", str(out)], capsys)
    assert code == 2 and "invalid choice: 'onnx'" in err
    assert not out.exists()


def test_cli_never_writes_over_the_model(tmp_path: Path, capsys: pytest.CaptureFixture):
    run = tmp_path / "run"
    shutil.copytree(DEMO_MODEL, run)
    code, _, err = _run(["export", "--model", str(run), "--out", str(run), "--overwrite"], capsys)
    assert code == 2 and "--out is the input" in err
    assert (run / "model.safetensors").is_file() and (run / "model.json").is_file()
