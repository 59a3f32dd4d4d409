"""``attrivae encode / traverse / explain``: outputs on the input's geometry, one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from AttriVAELib.data.io import Geometry, Volume, read_image, write_image


def _main(argv: list[str]) -> int:
    """``attrivae ARGV`` in this process (the commands are wired into AttriVAELib.cli)."""
    from AttriVAELib.cli import main

    return main(argv)


@pytest.fixture(scope="module")
def oblique(tmp_path_factory) -> Path:
    """A phantom on an oblique (rotated), anisotropic, non-cubic grid, as NIfTI."""
    from AttriVAELib.cohorts.phantom.generator import render_factors, sample_factors

    array = render_factors(sample_factors(7, seed=3), 32)[0][5:27, 1:31, :]  # (22, 30, 32)
    a = np.deg2rad(30.0)
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]]) @ \
        np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    geo = Geometry(size=(32, 30, 22), spacing=(2.2, 2.7, 4.1), origin=(12.0, -40.0, 3.0), direction=tuple(rot.ravel()))
    path = tmp_path_factory.mktemp("cli") / "oblique.nii.gz"
    write_image(Volume(np.ascontiguousarray(array), geo), path)
    return path


def _assert_same_grid(path: Path, reference: Geometry) -> None:
    got = read_image(path).geometry
    assert got.allclose(reference, atol=1e-5), (path.name, got, reference)


def _one_error_line(capsys, rc: int) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    return err


def test_encode_prints_and_writes_json(tiny_run, oblique, tmp_path, capsys):
    out = tmp_path / "enc.json"
    rc = _main(["encode", "--model", str(tiny_run), str(oblique), "--json", str(out), "--device", "cpu"])
    assert rc == 0
    text = capsys.readouterr().out
    for name in ("volume_ml", "wall_thickness_mm", "class probabilities", " mL", " mm"):
        assert name in text
    data = json.loads(out.read_text())
    assert [r["name"] for r in data["regularized"]][0] == "volume_ml"
    assert all(r["estimate"] is not None and r["unit"] for r in data["regularized"])
    assert sum(data["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_traverse_writes_volumes_on_the_input_grid(tiny_run, oblique, tmp_path, capsys):
    out = tmp_path / "trav"
    rc = _main(["traverse", "--model", str(tiny_run), str(oblique), "--dim", "wall_thickness_mm",
                "--range", "5", "9", "--steps", "3", "--units", "attribute", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    reference = read_image(oblique).geometry
    files = sorted(out.glob("step_*.nii.gz"))
    assert len(files) == 3
    for f in files:
        _assert_same_grid(f, reference)
    assert (out / "strip.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta = json.loads((out / "traversal.json").read_text())
    assert meta["name"] == "wall_thickness_mm" and [s["requested"] for s in meta["steps"]] == [5.0, 7.0, 9.0]
    # Each frame read back: what it shows beside what its code says; a disagreement is a note.
    for step in meta["steps"]:
        assert set(step["read_back"]["attributes_image"]) >= {"wall_thickness_mm"}
    warned = sum(bool(step["read_back"]["warnings"]) for step in meta["steps"])
    assert (warned > 0) == any("frames do not show" in n for n in meta["notes"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    capsys.readouterr()  # the first run's notes (whether a frame disagrees depends on the CPU's arithmetic)
    # An existing folder is kept unless --overwrite.
    rc = _main(["traverse", "--model", str(tiny_run), str(oblique), "--dim", "0", "--range", "-1", "1",
                "--steps", "2", "--out", str(out)])
    assert "--overwrite" in _one_error_line(capsys, rc)
    rc = _main(["traverse", "--model", str(tiny_run), str(oblique), "--dim", "0", "--range", "-1", "1",
                "--steps", "2", "--out", str(out), "--overwrite"])
    assert rc == 0 and len(list(out.glob("step_*.nii.gz"))) == 2


def test_explain_writes_every_map_on_the_input_grid(tiny_run, oblique, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    out = tmp_path / "explain"
    rc = _main(["explain", "--model", str(run), str(oblique), "--out", str(out), "--ig-steps", "4",
                "--layer", "conv1"])
    assert rc == 0, capsys.readouterr().err
    reference = read_image(oblique).geometry
    names = ["volume_ml", "max_axial_diameter_mm", "wall_thickness_mm", "lesion_volume_ml"]
    expected = [f"gradcam_{n}.nii.gz" for n in names] + [
        "gradcam_classifier.nii.gz", "counterfactual_difference.nii.gz", "counterfactual.nii.gz",
        "reconstruction.nii.gz", "integrated_gradients.nii.gz"]
    for fname in expected:
        _assert_same_grid(out / fname, reference)
    heat = read_image(out / "gradcam_volume_ml.nii.gz").array
    assert heat.min() >= -1e-6 and heat.max() <= 1 + 1e-6
    for png in ("montage_attributes.png", "montage_classifier.png", "montage_counterfactual.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "explain.json").read_text())
    assert summary["layer"] == "conv1" and set(names) <= set(summary["peaks"])
    # Exemplars are stored in the checkpoint; a donor is named when one was taken.
    assert summary["counterfactual"]["method"] in ("exemplar", "class_mean")
    donor = summary["counterfactual"].get("exemplar")
    assert (donor is not None) == (summary["counterfactual"]["method"] == "exemplar")
    assert (donor is not None) == ("from training subject" in capsys.readouterr().out)
    assert "completeness_error" in summary["integrated_gradients"]
    assert set(summary["read_back"]) == {"reconstruction", "counterfactual"}
    warnings = [w for checked in summary["read_back"].values() for w in checked["warnings"]]
    assert all(w in summary["notes"] for w in warnings)


@pytest.mark.parametrize("case", ["missing_image", "4d_image", "tampered", "unknown_dim", "zero_steps",
                                  "negative_steps", "missing_model"])
def test_bad_inputs_exit_2_with_one_line(case, tiny_run, oblique, tmp_path, capsys):
    model, image = str(tiny_run), str(oblique)
    if case == "missing_image":
        image = str(tmp_path / "nope.nii.gz")
    elif case == "4d_image":
        image = str(tmp_path / "4d.nii.gz")
        sitk.WriteImage(sitk.Image([5, 5, 5, 2], sitk.sitkFloat32), image)
    elif case == "tampered":
        run = tmp_path / "run"
        shutil.copytree(tiny_run, run)
        weights = run / "model.safetensors"
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0x55
        weights.write_bytes(bytes(data))
        model = str(run)
    elif case == "missing_model":
        model = str(tmp_path / "no_run")
    dim = "not_an_attribute" if case == "unknown_dim" else "volume_ml"
    steps = {"zero_steps": "0", "negative_steps": "-3"}.get(case, "2")
    if case in ("missing_image", "4d_image", "tampered", "missing_model"):
        for command in (["encode", "--model", model, image],
                        ["explain", "--model", model, image, "--out", str(tmp_path / "ex")]):
            err = _one_error_line(capsys, _main(command))
            assert err.startswith(f"attrivae {command[0]}: error:")
            assert {"missing_image": "not found", "4d_image": "4D", "tampered": "checksum",
                    "missing_model": "not found"}[case] in err
    rc = _main(["traverse", "--model", model, image, "--dim", dim, "--range", "0", "1", "--steps", steps,
                "--out", str(tmp_path / "trav")])
    err = _one_error_line(capsys, rc)
    if case == "unknown_dim":
        assert "unknown attribute 'not_an_attribute'" in err
    if case in ("zero_steps", "negative_steps"):
        assert "--steps" in err
    assert not (tmp_path / "trav").exists() and not (tmp_path / "ex").exists()


def test_classifier_map_is_for_the_predicted_class():
    import torch

    from AttriVAELib.cohorts.phantom.generator import geometry_for_size, render_factors, sample_factors
    from AttriVAELib.explain.explain import explain_encoding
    from AttriVAELib.explain.gradcam import ClassifierGradCAM, normalize_maps, upsample_maps
    from AttriVAELib.inference.model import AttriVAEModel
    from AttriVAELib.nn.model import AttriVAE, ModelConfig

    torch.manual_seed(0)
    net = AttriVAE(ModelConfig(input_size=16, latent_dim=8, num_regularized=2, width=0.5))
    model = AttriVAEModel(net, {"preprocess": {"size": 16}, "labels": {"names": ["a", "b"]}}, device="cpu")
    enc = model.encode(Volume(render_factors(sample_factors(1, seed=2), 16)[0], geometry_for_size(16)))
    coarse = ClassifierGradCAM(model, "conv2").attribute(torch.as_tensor(enc.image[None]), relu=False,
                                                        upsample=False)[0, 0]
    for predicted in (0, 1):
        enc.probabilities = np.array([0.7, 0.3]) if predicted == 0 else np.array([0.3, 0.7])
        ex = explain_encoding(model, enc, layer="conv2", counterfactual=False)
        # Rectified at the layer's resolution, then upsampled (the order of captum and MONAI).
        rectified = torch.relu(-coarse if predicted == 0 else coarse)
        expected = normalize_maps(upsample_maps(rectified[None, None], enc.image.shape)[0, 0]).numpy()
        np.testing.assert_allclose(ex.classifier_map, expected, atol=1e-6)
        assert set(ex.attribute_maps) == {"dim_0", "dim_1"}
