"""AttriVAELib.slicer (the Slicer module's GUI-free logic) against a real MRML scene.

Uses the slicer-core wheel's ``vtkMRMLScene`` (no mocks of MRML) and the ``tiny_run``
checkpoint (16³, latent 8, K = 4, binary classifier).
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")
vtk = pytest.importorskip("vtk")
from mrml_helpers import ijk_to_ras, raw_node  # noqa: E402

from AttriVAELib.core.errors import AttriVAEError, CheckpointError, ConfigError, InputError  # noqa: E402
from AttriVAELib.data.io import Geometry, Volume  # noqa: E402
from AttriVAELib.slicer import demo_model, mrml, panel, requirements, training_process  # noqa: E402
from AttriVAELib.slicer.outputs import NODE_NAMES  # noqa: E402
from AttriVAELib.slicer.session import AttriVAESession  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------- helpers


def _rotation(axis: str, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def oblique_phantom(size=(22, 20, 14)) -> Volume:
    """A phantom (hollow shell) on an oblique grid with anisotropic spacing (LPS)."""
    from AttriVAELib.cohorts.phantom.generator import render_subject

    _, image, _, _ = render_subject(5, 24, seed=2)
    i, j, k = size
    array = np.ascontiguousarray(image[5:5 + k, 2:2 + j, 1:1 + i]).astype(np.float32) * 1000.0
    direction = _rotation("z", 25.0) @ _rotation("x", -15.0)
    geometry = Geometry(size=size, spacing=(3.1, 3.4, 4.9), origin=(-31.0, 22.5, 14.0),
                        direction=tuple(float(v) for v in direction.ravel()))
    return Volume(array, geometry)




def assert_same_grid(node, reference) -> None:
    np.testing.assert_allclose(ijk_to_ras(node), ijk_to_ras(reference), atol=1e-9, rtol=0)
    assert node.GetImageData().GetDimensions() == reference.GetImageData().GetDimensions()
    assert node.GetTransformNodeID() == reference.GetTransformNodeID()


def array_of(node) -> np.ndarray:
    return slicer.util.arrayFromVolume(node).copy()




def one_line(excinfo, *words: str) -> None:
    message = str(excinfo.value)
    assert message and "\n" not in message, message
    for word in words:
        assert word in message, message


@pytest.fixture()
def scene():
    return slicer.vtkMRMLScene()


@pytest.fixture()
def input_node(scene):
    """The oblique phantom under a linear transform, so outputs must follow both."""
    node = mrml.update_volume_node(scene, oblique_phantom(), "phantom", role="input")
    transform = slicer.vtkMRMLLinearTransformNode()
    scene.AddNode(transform)
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 12.0)
    transform.SetMatrixTransformToParent(matrix)
    node.SetAndObserveTransformNodeID(transform.GetID())
    return node


@pytest.fixture(scope="module")
def loaded_model(tiny_run):
    """One model load shared by the tests (sessions get it assigned)."""
    session = AttriVAESession(slicer.vtkMRMLScene())
    session.load_model(tiny_run, "cpu")
    return session.model, str(tiny_run)


@pytest.fixture()
def session(scene, loaded_model):
    s = AttriVAESession(scene)
    s.model, s.model_location = loaded_model
    s.device_request = "cpu"
    return s


# ---------------------------------------------------------------------------------- encode / decode


def test_encode_summary_and_reconstruction_on_input_grid(session, input_node, scene):
    summary = session.encode(input_node)
    model = session.model
    assert set(summary["probabilities"]) == set(model.label_names)
    assert abs(sum(summary["probabilities"].values()) - 1) < 1e-5
    assert [a["name"] for a in summary["attributes"]] == model.attribute_names
    for item in summary["attributes"]:
        assert item["unit"] in model.attribute_units and np.isfinite(item["estimate"])
    dims = summary["dims"]
    assert len(dims) == model.latent_size
    assert [d["regularized"] for d in dims] == [d < model.num_regularized for d in range(model.latent_size)]
    for d in dims:
        assert d["min"] <= d["mu"] <= d["max"] and d["min"] < d["max"] and d["step"] > 0
        assert d["value"] == pytest.approx(d["mu"])
    first = dims[0]
    assert first["label"].startswith(f"{first['name']} ({first['unit']}): ")
    assert dims[-1]["label"].startswith(f"dim {model.latent_size - 1} (latent): ")

    recon = session.update_reconstruction()
    assert recon.GetName() == NODE_NAMES["reconstruction"]
    assert_same_grid(recon, input_node)
    values = array_of(recon)
    assert np.isfinite(values).all() and values.std() > 0


def test_slider_moves_reuse_one_node_and_change_values(session, input_node, scene):
    session.encode(input_node)
    recon = session.update_reconstruction()
    before = array_of(recon)
    count = scene.GetNumberOfNodes()
    lo, hi = session.slider_ranges()[0]
    node_a = session.set_latent(0, lo)
    a = array_of(node_a)
    node_b = session.set_latent(0, hi)
    b = array_of(node_b)
    node_c = session.set_latent(session.model.attribute_names[1], session.summary()["attributes"][1]["range"][1],
                                units="attribute")
    assert node_a.GetID() == node_b.GetID() == node_c.GetID() == recon.GetID()
    assert scene.GetNumberOfNodes() == count
    assert np.abs(a - b).max() > 1e-3
    assert session.latent[0] == pytest.approx(hi)
    assert_same_grid(node_b, input_node)
    reset = session.reset()
    assert reset.GetID() == recon.GetID()
    np.testing.assert_allclose(array_of(reset), before, atol=0.05 * (np.ptp(before) + 1e-6))
    np.testing.assert_allclose(session.latent, session.encoding.mu)


def test_attention_heatmaps_one_node_each_with_inferno_display(session, input_node, scene):
    session.encode(input_node)
    maps = session.attention(threshold=0.3, opacity=0.6)
    assert set(maps) == {*session.model.attribute_names, "classifier"}
    assert session.heatmap_names == list(maps) and not session.heatmap_signed
    for name, node in maps.items():
        assert node.GetName() == f"{NODE_NAMES['heatmap']}: {name}"
        assert_same_grid(node, input_node)
        values = array_of(node)
        assert np.isfinite(values).all() and values.min() >= -1e-6 and values.max() <= 1 + 1e-6
        display = node.GetDisplayNode()
        assert display.GetColorNode().GetName() == "Inferno"
        assert not display.GetAutoWindowLevel()
        assert display.GetWindowLevelMin() == pytest.approx(0.0) and display.GetWindowLevelMax() == pytest.approx(1.0)
        assert display.GetApplyThreshold() and display.GetLowerThreshold() == pytest.approx(0.3)
        assert display.GetOpacity() == pytest.approx(0.6)
    count = scene.GetNumberOfNodes()
    again = session.attention()
    assert {n: m.GetID() for n, m in again.items()} == {n: m.GetID() for n, m in maps.items()}
    assert scene.GetNumberOfNodes() == count
    # restyling without recomputing
    node = session.show_heatmap("classifier", threshold=0.5, opacity=0.4)
    assert node.GetDisplayNode().GetLowerThreshold() == pytest.approx(0.5)
    with pytest.raises(ConfigError) as exc:
        session.show_heatmap("nope")
    one_line(exc, "nope")

    signed = session.attention(relu=False)
    assert session.heatmap_signed
    values = array_of(signed[session.model.attribute_names[0]])
    assert values.min() >= -1 - 1e-6 and values.max() <= 1 + 1e-6

    assert signed["classifier"].GetDisplayNode().GetColorNode().GetName() == "ColdToHotRainbow"


def test_an_empty_attention_map_is_said_in_one_line(session, input_node):
    import torch

    session.encode(input_node)
    name = session.model.attribute_names[0]
    fc_mu = next(m for n, m in session.model.network.named_modules() if n.endswith("fc_mu"))
    saved = fc_mu.weight.detach().clone(), fc_mu.bias.detach().clone()
    try:
        with torch.no_grad():  # μ of the first dim no longer depends on the image: its map is zero everywhere
            fc_mu.weight[0].zero_()
            fc_mu.bias[0].zero_()
        session.pop_messages()
        maps = session.attention(layer="conv2")
        said = session.pop_messages()
        assert not array_of(maps[name]).any()
        # One line for each map that is zero everywhere (the tiny model may have others), none for the rest.
        expected = [f"the Grad-CAM map of {'the classifier' if n == 'classifier' else n} at layer conv2 is empty: "
                    "every feature there lowers it; the signed map shows where"
                    for n, node in maps.items() if not array_of(node).any()]
        assert name in expected[0] and [m for m in said if "Grad-CAM" in m] == expected
        session.attention(layer="conv2", relu=False)  # a signed map is never called empty
        assert not [m for m in session.pop_messages() if "Grad-CAM" in m]
    finally:
        with torch.no_grad():
            fc_mu.weight.copy_(saved[0])
            fc_mu.bias.copy_(saved[1])


def test_counterfactual_difference_is_signed_and_on_input_grid(session, input_node):
    session.encode(input_node)
    assert session.counterfactual_lines() == []
    node = session.counterfactual("other_class")
    assert node.GetName() == NODE_NAMES["difference"]
    assert_same_grid(node, input_node)
    values = array_of(node)
    assert np.isfinite(values).all()
    display = node.GetDisplayNode()
    assert display.GetColorNode().GetName() == "ColdToHotRainbow"
    assert display.GetWindowLevelMin() == pytest.approx(-display.GetWindowLevelMax())
    summary = session.last_counterfactual
    assert summary["dims"] and len(summary["probabilities_counterfactual"]) == 2
    lines = session.counterfactual_lines()
    assert summary["method"] in ("exemplar", "class_mean")  # the tiny run stores exemplars
    donor = 1 if summary.get("exemplar") else 0  # a line naming the donor, when one was taken
    assert lines[0] == panel.moved_line(summary["moved"])
    assert lines[donor + 2].startswith("Its decoded image, read back")
    assert not donor or lines[1].startswith(f"Taken from training subject {summary['exemplar']['subject']} ")
    assert len(lines) == 3 + donor + len(summary["read_back"]["warnings"])
    assert lines[donor + 1] == "Class probabilities after: " + ", ".join(
        f"{p:.3f}" for p in summary["probabilities_counterfactual"])

    name = session.model.attribute_names[2]
    again = session.counterfactual(("attribute", name, session.summary()["attributes"][2]["range"][1]))
    assert again.GetID() == node.GetID()
    assert session.last_counterfactual["method"] == "values" and session.last_counterfactual["dims"] == [2]
    with pytest.raises(ConfigError) as exc:
        session.counterfactual("sideways")
    one_line(exc, "other_class")


def test_traversal_sequence_has_steps_items_on_input_grid(session, input_node, scene):
    session.encode(input_node)
    sequence = session.traversal(1, -2.0, 2.0, 4)
    assert sequence.GetNumberOfDataNodes() == 4 and session.traversal_browser is not None
    assert session.traversal_browser.GetProxyNode(sequence) is not None
    assert sequence.GetIndexName() == session.model.attribute_names[1]
    assert [float(sequence.GetNthIndexValue(i)) for i in range(4)] == pytest.approx(np.linspace(-2, 2, 4))
    items = [sequence.GetNthDataNode(i) for i in range(4)]
    for item in items:
        np.testing.assert_allclose(ijk_to_ras(item), ijk_to_ras(input_node), atol=1e-9)
    assert np.abs(array_of(items[0]) - array_of(items[-1])).max() > 0
    count = scene.GetNumberOfNodes()
    sequence2 = session.traversal(1, -1.0, 1.0, 3)
    assert sequence2.GetID() == sequence.GetID() and sequence2.GetNumberOfDataNodes() == 3
    assert scene.GetNumberOfNodes() == count
    with pytest.raises(ConfigError):
        session.traversal(1, 0.0, 0.0, 3)
    with pytest.raises(ConfigError):
        session.traversal(1, -1.0, 1.0, 0)


def test_parameters_persist_in_the_scene_xml(session, input_node, scene, tiny_run):
    session.encode(input_node)
    session.set_latent(0, 1.25)
    session.save_state({"threshold": 0.3})
    saved = mrml.load_parameters(scene)
    assert saved["model"] == str(tiny_run) and saved["latent"][0] == pytest.approx(1.25)

    scene.SetSaveToXMLString(1)
    scene.Commit()
    xml = scene.GetSceneXMLString()
    restored_scene = slicer.vtkMRMLScene()
    restored_scene.SetLoadFromXMLString(1)
    restored_scene.SetSceneXMLString(xml)
    restored_scene.Import()
    assert mrml.load_parameters(restored_scene)["latent"] == pytest.approx(saved["latent"])

    # a new session on the same scene restores model, encoding and latent vector
    fresh = AttriVAESession(scene)
    state = fresh.restore_state()
    assert state["threshold"] == 0.3
    assert fresh.input_node.GetID() == input_node.GetID()
    np.testing.assert_allclose(fresh.latent, session.latent, atol=1e-6)


# ---------------------------------------------------------------------------------- bad inputs


def test_bad_volumes_give_one_line_errors(session, scene, input_node):
    with pytest.raises(InputError) as exc:
        session.encode(None)
    one_line(exc, "no volume")
    flat = raw_node(scene, np.zeros((1, 12, 12), dtype=np.float32))
    with pytest.raises(InputError) as exc:
        session.encode(flat)
    one_line(exc, "2D")
    vector = raw_node(scene, np.zeros((6, 6, 6, 3), dtype=np.float32), slicer.vtkMRMLVectorVolumeNode, 3)
    with pytest.raises(InputError) as exc:
        session.encode(vector)
    one_line(exc, "4D")
    sequence = slicer.vtkMRMLSequenceNode()
    scene.AddNode(sequence)
    with pytest.raises(InputError) as exc:
        session.encode(sequence)
    one_line(exc, "4D")

    # a labelmap far away from the volume
    label = np.zeros((8, 8, 8), dtype=np.uint8)
    label[2:6, 2:6, 2:6] = 1
    far = Volume(label, Geometry(size=(8, 8, 8), spacing=(1.0, 1.0, 1.0), origin=(900.0, 900.0, 900.0),
                                 direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)))
    mask = mrml.update_volume_node(scene, far, "far mask", labelmap=True)
    with pytest.raises(InputError) as exc:
        session.encode(input_node, mask)
    one_line(exc, "does not overlap")
    assert session.encoding is None  # nothing half-done


def test_mask_on_the_volume_is_accepted(session, scene, input_node):
    volume = mrml.volume_from_node(input_node)
    label = (volume.array > np.percentile(volume.array, 70)).astype(np.uint8)
    mask = mrml.update_volume_node(scene, Volume(label, volume.geometry), "mask", labelmap=True)
    mask.SetAndObserveTransformNodeID(input_node.GetTransformNodeID())
    summary = session.encode(input_node, mask)
    assert summary["probabilities"] is not None and session.mask_node is mask


def test_nothing_loaded_or_encoded(scene, input_node, loaded_model):
    empty = AttriVAESession(scene)
    with pytest.raises(ConfigError) as exc:
        empty.encode(input_node)
    one_line(exc, "no model loaded")
    empty.model = loaded_model[0]
    for call in (lambda: empty.set_latent(0, 1.0), empty.reset, empty.attention, lambda: empty.traversal(0, 0, 1, 2)):
        with pytest.raises(ConfigError) as exc:
            call()
        one_line(exc, "Encode")
    with pytest.raises(InputError):
        AttriVAESession(None)


# ---------------------------------------------------------------------------------- what the panel reads


def test_read_only_state_before_and_after_encoding(scene, input_node, loaded_model, tiny_run):
    fresh = AttriVAESession(scene)
    assert fresh.scene is scene and not fresh.has_model and not fresh.has_encoding
    assert fresh.latent_size == 0 and fresh.model_description == "" and fresh.heatmap_names == []
    assert fresh.input_node is None and fresh.mask_node is None and fresh.traversal_browser is None
    assert not fresh.is_loaded(tiny_run, "cpu") and fresh.pop_messages() == []
    fresh.model, fresh.model_location = loaded_model
    fresh.device_request = "cpu"
    assert fresh.has_model and not fresh.has_encoding
    assert fresh.is_loaded(tiny_run, "cpu") and fresh.is_loaded(f" {tiny_run} ", "CPU")
    assert not fresh.is_loaded(tiny_run, "auto") and not fresh.is_loaded("demo", "cpu")
    assert fresh.latent_size == fresh.model.latent_size == 8
    assert fresh.model_description == fresh.model.describe() and "16³" in fresh.model_description
    with pytest.raises(ConfigError):
        fresh.slider_specs()
    fresh.encode(input_node)
    assert fresh.has_encoding and fresh.input_node is input_node and fresh.mask_node is None
    for name in ("scene", "input_node", "mask_node", "traversal_browser", "heatmap_signed", "has_model",
                 "has_encoding", "latent_size", "model_description", "heatmap_names"):
        with pytest.raises(AttributeError):
            setattr(fresh, name, None)  # read-only properties
    fresh.set_cpu_fallback(1)
    assert fresh.fallback_to_cpu is True


def test_slider_specs_follow_the_latent_vector(session, input_node):
    session.encode(input_node)
    model = session.model
    specs = session.slider_specs()
    assert [s.dim for s in specs] == list(range(model.latent_size))
    assert [s.regularized for s in specs] == [d < model.num_regularized for d in range(model.latent_size)]
    for spec, (lo, hi) in zip(specs, session.slider_ranges()):
        assert (spec.minimum, spec.maximum) == (lo, hi) and spec.minimum <= spec.value <= spec.maximum
        assert spec.value == pytest.approx(spec.mu) and spec.step == pytest.approx((hi - lo) / 200)
        assert spec.label == session.dim_label(spec.dim, spec.value)
    assert (specs[0].name, specs[0].unit) == (model.attribute_names[0], model.attribute_units[0])
    assert (specs[-1].name, specs[-1].unit) == (f"dim {model.latent_size - 1}", "")
    free = model.latent_size - 1
    session.set_latents({1: specs[1].maximum, free: specs[free].minimum})
    moved = session.slider_specs()
    assert moved[1].value == pytest.approx(specs[1].maximum, abs=1e-5) and moved[1].mu == specs[1].mu
    assert moved[free].label == session.dim_label(free, moved[free].value) != specs[free].label
    assert [s.value for s in moved[2:free]] == pytest.approx([s.value for s in specs[2:free]])
    session.reset()
    assert session.slider_specs() == specs


def test_summary_lines_show_the_class_and_the_attributes(session, input_node):
    session.encode(input_node)
    summary = session.summary()
    lines = session.summary_lines()
    probabilities = ", ".join(f"{name}: {p:.3f}" for name, p in summary["probabilities"].items())
    assert lines[0] == f"Predicted class: {summary['predicted_label']} ({probabilities})"
    assert len(lines) == 1 + len(session.model.attribute_names)
    for line, item in zip(lines[1:], summary["attributes"]):
        assert line == f"{item['name']}: {item['estimate']:.4g} {item['unit']}"  # unchanged: no arrow
    # (the tiny model's calibration is flat; the arrow after a slider move is checked on the demo model)


def test_choices_and_defaults_for_the_traversal_and_counterfactual_boxes(session, input_node):
    session.encode(input_node)
    model = session.model
    names, units, size = model.attribute_names, model.attribute_units, model.latent_size
    choices = session.dimension_choices()
    assert [dim for _, dim in choices] == list(range(size))
    assert choices[0][0] == f"{names[0]} ({units[0]})" and choices[-1][0] == f"dim {size - 1}"
    assert session.dimension_choices(attributes_only=True) == [(f"{n} ({u})", k) for k, (n, u) in
                                                                enumerate(zip(names, units))]
    ranges = session.slider_ranges()
    assert session.traversal_range(1) == pytest.approx(ranges[1])
    assert session.traversal_range(1, "attribute") == pytest.approx(model.calibration.value_range(1))
    assert session.traversal_range(size - 1, "attribute") == pytest.approx(ranges[size - 1])  # a free dim
    assert session.attribute_estimate(2) == pytest.approx(float(session.encoding.attributes[2]))
    assert session.attribute_estimate(size - 1) is None


def test_close_scene_forgets_the_input_and_keeps_the_model(session, input_node, scene):
    session.encode(input_node)
    recon = session.ensure_reconstruction()
    assert recon.GetID() == session.reconstruction_node.GetID()
    assert session.ensure_reconstruction().GetID() == recon.GetID()  # reused, not decoded again
    scene.RemoveNode(recon)
    again = session.ensure_reconstruction()  # gone from the scene: decoded into a new node
    assert recon.GetScene() is None and again.GetScene() is not None
    assert_same_grid(again, input_node)
    session.traversal(0, -1.0, 1.0, 2)
    session.close_scene()
    assert session.has_model and not session.has_encoding and session.input_node is None
    assert session.heatmap_names == [] and session.traversal_browser is None
    assert session.counterfactual_lines() == [] and session.reconstruction_node is None
    with pytest.raises(ConfigError):
        session.ensure_reconstruction()


def test_checkpoint_problems(scene, tiny_run, tmp_path):
    session = AttriVAESession(scene)
    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_run, tampered, ignore=shutil.ignore_patterns("tensorboard", "last.*"))
    weights = tampered / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as exc:
        session.load_model(tampered, "cpu")
    one_line(exc, "checksum")

    with pytest.raises(CheckpointError) as exc:
        session.load_model(tiny_run, "cpu", expected_input_size=32)
    one_line(exc, "16", "32")
    with pytest.raises(CheckpointError) as exc:
        session.load_model(tmp_path / "nowhere", "cpu")
    one_line(exc, "not found")
    with pytest.raises(CheckpointError):
        session.load_model("", "cpu")
    assert session.model is None


def test_demo_model_missing_and_found(scene, tiny_run, tmp_path, monkeypatch):
    monkeypatch.delenv(demo_model.DEMO_MODEL_ENV, raising=False)
    empty = tmp_path / "DemoModel"
    empty.mkdir()
    with pytest.raises(CheckpointError) as exc:
        AttriVAESession(scene, demo_dir=empty).load_model("demo", "cpu")
    one_line(exc, "demo model is not installed", str(empty))
    assert isinstance(exc.value, AttriVAEError)

    for name in ("model.safetensors", "model.json"):
        shutil.copy(tiny_run / name, empty / name)
    monkeypatch.setenv(demo_model.DEMO_MODEL_ENV, str(empty))
    assert demo_model.find_demo_model() == empty
    session = AttriVAESession(scene)
    description = session.load_model("demo", "cpu")
    assert "16³" in description and session.model_location == "demo"
    assert session.is_loaded("demo", "cpu") and session.is_loaded(" Demo ", "CPU")
    assert not session.is_loaded("demo", "auto") and not session.is_loaded(tiny_run, "cpu")


def test_device_choice_and_cpu_fallback(scene, tiny_run, input_node, loaded_model, monkeypatch):
    import torch

    session = AttriVAESession(scene)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError) as exc:
            session.load_model(tiny_run, "cuda")
        one_line(exc, "no CUDA GPU")
    with pytest.raises(ConfigError):
        session.load_model(tiny_run, "tpu")

    # Out of GPU memory while decoding: a clear error, or a reload on the CPU when allowed.
    session.model, session.model_location = loaded_model
    session.encode(input_node)
    model = session.model

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(model, "decode", oom)
    with pytest.raises(ConfigError) as exc:
        session.set_latent(0, 0.5)
    one_line(exc, "out of GPU memory", "cpu")
    session.set_cpu_fallback(True)
    monkeypatch.setattr(model, "device", torch.device("cuda"), raising=False)
    node = session.set_latent(0, 0.5)
    assert session.model is not model and session.model.device.type == "cpu"
    messages = session.pop_messages()
    assert "CPU" in messages[-1] and np.isfinite(array_of(node)).all()
    assert session.pop_messages() == []


# ---------------------------------------------------------------------------------- training process


def test_training_command_checks_inputs(tiny_cohort, tmp_path):
    out = tmp_path / "run"
    command = training_process.training_command(tiny_cohort, out, preset="fast_cpu", epochs=3, device="cpu",
                                                python="py")
    assert command[:4] == ["py", "-m", "AttriVAELib.cli", "train"]
    assert command[command.index("--epochs") + 1] == "3" and "--quiet" in command
    assert "--config" not in command  # a phantom cohort brings no train.yaml
    cohort = tmp_path / "own"  # a cohort from `attrivae cohort` does: its settings are used
    cohort.mkdir()
    (cohort / "manifest.csv").write_text("subject,image\n")
    (cohort / "train.yaml").write_text("train: {epochs: 5}\n")
    command = training_process.training_command(cohort / "manifest.csv", out, device="cpu")
    assert command[command.index("--config") + 1] == str(cohort / "train.yaml")
    with pytest.raises(ConfigError) as exc:
        training_process.training_command("", out)
    one_line(exc, "manifest")
    with pytest.raises(ConfigError):
        training_process.training_command(tmp_path / "missing", out)
    (out / "x").parent.mkdir()
    (out / "x").write_text("")
    with pytest.raises(ConfigError) as exc:
        training_process.training_command(tiny_cohort, out)
    one_line(exc, "not empty")
    with pytest.raises(ConfigError):
        training_process.training_command(tiny_cohort, tmp_path / "new", preset="nope")
    with pytest.raises(ConfigError):
        training_process.training_command(tiny_cohort, tmp_path / "new", epochs=0)
    env = training_process.training_environment({"PYTHONPATH": "/x"})
    assert env["PYTHONPATH"].split(":")[0] == str(ROOT) and env["PYTHONUNBUFFERED"] == "1"


def test_parse_training_progress():
    assert training_process.parse_training_progress("epoch 3/60  train 12.0  total 4.000  1.2s") == (3, 60)
    assert training_process.parse_training_progress("resuming /r after epoch 7 of 20") == (7, 20)
    assert training_process.parse_training_progress("device: CPU") is None


def _wait(process, seconds: float = 20.0) -> list[str]:
    lines: list[str] = []
    end = time.monotonic() + seconds
    while process.running and time.monotonic() < end:
        lines += process.poll()
        time.sleep(0.02)
    return lines + process.poll()


def test_training_process_streams_output_and_progress():
    script = "import sys\nfor e in range(1, 4):\n    print(f'epoch {e}/3  train 1.0', file=sys.stderr)\nprint('done')"
    process = training_process.TrainingProcess([sys.executable, "-c", script])
    lines = _wait(process)
    assert lines == ["epoch 1/3  train 1.0", "epoch 2/3  train 1.0", "epoch 3/3  train 1.0", "done"]
    assert process.progress == (3, 3) and process.returncode == 0 and not process.cancelled


def test_training_process_cancel_stops_it_quickly():
    sleeper = "import time\nprint('started', flush=True)\ntime.sleep(60)"
    process = training_process.TrainingProcess([sys.executable, "-c", sleeper])
    end = time.monotonic() + 10
    while not process.poll() and time.monotonic() < end:
        time.sleep(0.02)
    start = time.monotonic()
    process.cancel()
    _wait(process, 5)
    assert time.monotonic() - start < 5
    assert process.cancelled and process.returncode not in (None, 0) and not process.running
    with pytest.raises(ConfigError):
        training_process.TrainingProcess(["/nonexistent/python-for-attrivae"])


def test_requirements_list_matches_the_package():
    text = (ROOT / "pyproject.toml").read_text()
    for requirement, _module in requirements.SLICER_REQUIREMENTS:
        assert f'"{requirement}"' in text, requirement
    assert requirements.missing_requirements() == []


def test_old_torch_counts_as_missing(monkeypatch):
    import importlib.metadata

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "2.0.1+cu118" if name == "torch" else real(name))
    assert requirements.missing_requirements() == [requirements.TORCH_REQUIREMENT]
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "2.10.0" if name == "torch" else real(name))
    assert requirements.missing_requirements() == []


def test_shipped_demo_model_works_offline(scene, monkeypatch):
    """The extension's built-in model: found in the source tree, needs no training data."""
    from AttriVAELib.cohorts.phantom.generator import (geometry_for_size, render_factors, sample_factors,
                                                       to_stored_intensity)

    monkeypatch.delenv(demo_model.DEMO_MODEL_ENV, raising=False)
    folder = demo_model.find_demo_model()
    assert folder == ROOT / "AttriVAE" / "Resources" / "DemoModel"
    session = AttriVAESession(scene)
    session.load_model("demo", "cpu")
    model = session.model
    assert "manifest" not in model.meta["data"] and model.meta.get("class_statistics")
    assert model.attribute_names == ["volume_ml", "max_axial_diameter_mm", "wall_thickness_mm", "lesion_volume_ml"]
    # A phantom with a large lesion, as the cohort stores it (int16 × 1000) on its 64³ grid.
    f = next(sample_factors(i, seed=11) for i in range(100) if sample_factors(i, seed=11).label == 1)
    f = dataclasses.replace(f, lesion_radius_mm=13.0)
    image = Volume(to_stored_intensity(render_factors(f, 64)[0]).astype(np.float32), geometry_for_size(64))
    node = mrml.update_volume_node(scene, image, "phantom", role="input")
    summary = session.encode(node)
    probabilities = list(summary["probabilities"].values()) if isinstance(summary.get("probabilities"), dict) \
        else list(session.encoding.probabilities)
    assert probabilities[1] > 0.5
    lines = session.summary_lines()
    assert len(lines) == 5 and not any("→" in line for line in lines)
    session.set_latent("volume_ml", model.calibration.value_range(0)[1], units="attribute")
    moved = session.summary_lines()[1]
    assert moved.startswith(lines[1] + " → ") and moved.endswith(" mL")
    session.pop_messages()
    difference = session.counterfactual("other_class")
    assert session.last_counterfactual["method"] == "class_mean"  # towards class 0: no lesion, its mean
    # What the decoded counterfactual shows, read back by the model; any disagreement is told in one line.
    checked = session.last_counterfactual["read_back"]
    assert len(checked["probabilities_image"]) == 2 and len(checked["probabilities_code"]) == 2
    # The shipped model draws what its code says: the decoded image without the lesion reads back as class 0.
    assert checked["probabilities_image"][0] >= 0.9
    messages = session.pop_messages()
    assert all(w in messages and "\n" not in w for w in checked["warnings"])
    lines = session.counterfactual_lines()  # the panel shows the read-back beside the code's probabilities
    assert any(line.startswith("Its decoded image, read back: ") for line in lines)
    assert lines[-len(checked["warnings"]):] == checked["warnings"] or not checked["warnings"]
    assert_same_grid(difference, node)
    assert np.abs(mrml.volume_from_node(difference).array).max() > 0
    # Towards class 1 the lesion is taken from a donor, a training subject the panel names.
    healthy = next(sample_factors(i, seed=11) for i in range(100) if sample_factors(i, seed=11).label == 0)
    image = Volume(to_stored_intensity(render_factors(healthy, 64)[0]).astype(np.float32), geometry_for_size(64))
    session.encode(mrml.update_volume_node(scene, image, "healthy phantom", role="input"))
    session.counterfactual("other_class")
    donor = session.last_counterfactual["exemplar"]
    assert session.last_counterfactual["method"] == "exemplar" and donor["readback"] >= 0.99
    assert session.last_counterfactual["read_back"]["probabilities_image"][1] >= 0.9  # the drawn lesion reads as class 1
    assert f"Taken from training subject {donor['subject']} " in "\n".join(session.counterfactual_lines())
