"""Regression tests of the Slicer module's bugs that can be reached without the Qt GUI (issue 23).

Real MRML scenes from the slicer-core wheel, the shipped demo model, real child processes.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")

from AttriVAELib.data.io import Geometry, Volume  # noqa: E402
from AttriVAELib.slicer import mrml, requirements, training_process  # noqa: E402
from AttriVAELib.slicer.mrml import ROLE_ATTRIBUTE  # noqa: E402
from AttriVAELib.slicer.panel_state import PanelSync, default_input_node, path_text, select_trained_model  # noqa: E402
from AttriVAELib.slicer.session import AttriVAESession  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def small_volume(n: int = 24) -> Volume:
    geometry = Geometry(size=(n, n, n), spacing=(2.0, 2.0, 2.0), origin=(0.0, 0.0, 0.0),
                        direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    return Volume(np.random.default_rng(0).random(geometry.shape, dtype=np.float32) * 100.0, geometry)


@pytest.fixture(scope="module")
def demo_model():
    session = AttriVAESession(slicer.vtkMRMLScene())
    session.load_model("demo", "cpu")
    return session.model


@pytest.fixture()
def session(demo_model):
    s = AttriVAESession(slicer.vtkMRMLScene())
    s.model, s.model_location, s.device_request = demo_model, "demo", "cpu"
    return s


# ---------------------------------------------------------------------------------- node collections and defaults


def test_slider_decodes_leak_no_collection_and_no_removed_node(session):
    """GetNodesByClass(ByName) collections belong to the caller; a leaked one keeps removed nodes alive."""
    node = mrml.update_volume_node(session.scene, small_volume(), "input", role="input")
    session.encode(node)
    recon = session.reconstruction_node
    session.attention()
    for value in (-1.0, 0.0, 1.0, 2.0):
        session.set_latents({0: value})  # each decode looks the node up by class and name
        session.show_heatmap(session.heatmap_names[0], opacity=0.4)
    session.scene.RemoveNode(recon)
    session.reconstruction_node = None
    assert recon.GetReferenceCount() == 1, "a leaked node collection still holds the removed node"


def test_output_nodes_get_the_scene_defaults(session):
    default = slicer.vtkMRMLScalarVolumeNode()
    default.SetAttribute("site.default", "applied")
    session.scene.AddDefaultNode(default)
    node = mrml.update_volume_node(session.scene, small_volume(), "input", role="input")
    session.encode(node)
    maps = session.attention()
    difference = session.counterfactual("other_class")
    for output in [session.reconstruction_node, difference, *maps.values()]:
        assert output.GetAttribute("site.default") == "applied", output.GetName()


# ---------------------------------------------------------------------------------- panel decisions


def test_a_label_map_listed_first_does_not_stop_the_input_choice():
    scene = slicer.vtkMRMLScene()
    labels = mrml.update_volume_node(scene, small_volume(), "labels", role="x", labelmap=True)
    labels.RemoveAttribute(ROLE_ATTRIBUTE)
    output = mrml.update_volume_node(scene, small_volume(), "AttriVAE reconstruction", role="reconstruction")
    assert default_input_node(scene) is None
    image = mrml.update_volume_node(scene, small_volume(), "CT", role="x")
    image.RemoveAttribute(ROLE_ATTRIBUTE)
    assert scene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode") is labels  # what the module looked at
    assert default_input_node(scene) is image and output is not image


def test_unset_paths_show_empty_text():
    assert path_text(Path("")) == "" and path_text(None) == "" and path_text(" . ") == ""
    assert path_text(Path("/data/run")) == str(Path("/data/run"))


def test_module_entry_keeps_the_views_and_the_traversal_range(session):
    """Re-binding the widgets fires the combo boxes' signals; none of them may act."""
    node = mrml.update_volume_node(session.scene, small_volume(), "input", role="input")
    session.encode(node)
    maps = session.attention()
    sync = PanelSync()
    name = next(iter(maps))
    assert sync.should_apply("heatmap", (name, 0.5, 0.2, "Inferno"))  # the user's first choice is applied
    session.show_heatmap(name, opacity=0.5)
    assert sync.should_apply("traversal", (0, "attribute"))
    custom = (0.25, 0.75)  # the user's own traversal range, set after the defaults
    mrml.show_overlay(session.scene, background=session.reconstruction_node, opacity=0.0)  # the user's views

    # module entry: the GUI connectors clear and refill the bound combo boxes
    with sync.connecting():
        for colormap in ("", "Inferno", "Viridis", "Inferno"):
            assert not sync.should_apply("heatmap", (name, 0.5, 0.2, colormap))
        for units in ("", "latent", "attribute"):
            assert not sync.should_apply("traversal", (0, units))
    sync.remember("heatmap", (name, 0.5, 0.2, "Inferno"))
    sync.remember("traversal", (0, "attribute"))
    # late duplicates of the same values after connecting
    assert not sync.should_apply("heatmap", (name, 0.5, 0.2, "Inferno"))
    assert not sync.should_apply("traversal", (0, "attribute"))
    composites = [session.scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
                  for i in range(session.scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"))]
    for composite in composites:
        assert composite.GetBackgroundVolumeID() == session.reconstruction_node.GetID()
    assert custom == (0.25, 0.75)
    # a real change is still acted on
    assert sync.should_apply("traversal", (0, "latent"))
    assert sync.should_apply("heatmap", (name, 0.7, 0.2, "Inferno"))


# ---------------------------------------------------------------------------------- training


def test_training_that_ends_after_a_scene_close_selects_its_model(tmp_path):
    scene = slicer.vtkMRMLScene()
    mrml.save_parameters(scene, {"latent": None})  # the module's parameter node exists
    out = tmp_path / "run"
    fake = ("import pathlib, sys\nout = pathlib.Path(sys.argv[sys.argv.index('--out') + 1])\n"
            "out.mkdir()\n(out / 'model.safetensors').write_bytes(b'x')\nprint('epoch 1/1')\n")
    process = training_process.TrainingProcess([sys.executable, "-c", fake, "--out", str(out)])
    scene.Clear(0)  # the user closes the scene while training runs: the panel's settings are gone
    end = time.monotonic() + 20
    while process.running and time.monotonic() < end:
        process.poll()
        time.sleep(0.02)
    assert process.output == out and training_process.trained_model(process) == out
    select_trained_model(scene, training_process.trained_model(process))
    node = scene.GetSingletonNode("AttriVAE", "vtkMRMLScriptedModuleNode")
    assert node.GetParameter("modelPath") == str(out) and node.GetParameter("useDemoModel") == "False"
    failed = training_process.TrainingProcess([sys.executable, "-c", "raise SystemExit(3)", "--out", str(out)])
    failed.wait(20)
    failed.poll()
    assert training_process.trained_model(failed) is None


@pytest.mark.skipif(os.name != "posix", reason="builds the launcher situation with POSIX sessions")
def test_cancel_stops_the_real_python_behind_a_launcher(tmp_path):
    """PythonSlicer is a launcher: the real Python is its child, outside any group we can signal
    (here: its own session). Cancel must stop it too."""
    psutil = pytest.importorskip("psutil")
    launcher = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True)\n"
        "print(child.pid, flush=True)\n"
        "child.wait()\n"
    )
    process = training_process.TrainingProcess([sys.executable, "-c", launcher])
    end = time.monotonic() + 20
    lines: list[str] = []
    while not lines and time.monotonic() < end:
        lines = process.poll()
        time.sleep(0.02)
    child = psutil.Process(int(lines[0]))
    try:
        process.cancel(grace=2.0)
        psutil.wait_procs([child], timeout=5)
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, "the real Python still runs"
    finally:
        if child.is_running():
            child.kill()
    assert process.cancelled


# ---------------------------------------------------------------------------------- torch


def test_torch_minimum_is_what_the_code_needs(monkeypatch):
    import importlib.metadata

    import torch

    assert requirements.TORCH_REQUIREMENT == "torch>=2.3" and requirements.TORCH_MINIMUM == (2, 3)
    assert callable(torch.compiler.is_compiling)  # the newest torch API the engine calls
    real = importlib.metadata.version
    for version, missing in (("2.2.2+cu121", True), ("2.3.0", False), ("2.1.0", True), ("2.13.0", False)):
        monkeypatch.setattr(importlib.metadata, "version", lambda n, v=version: v if n == "torch" else real(n))
        assert (requirements.TORCH_REQUIREMENT in requirements.missing_requirements()) is missing, version
        message = requirements.torch_update_message()
        assert (message is not None) is missing, version
        if message:
            assert "PyTorch Utils" in message and "restart" in message and version in message and "\n" not in message


def test_module_never_upgrades_an_installed_torch_in_place():
    source = (ROOT / "AttriVAE" / "AttriVAE.py").read_text(encoding="utf-8")
    assert "torch_update_message" in source and "importlib.invalidate_caches()" in source
    assert "slicer.pydeps" not in source
