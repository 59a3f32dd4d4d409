"""The package's structure: layers without upward imports, a lazy public API, one CLI table,
small modules, and artefacts written before the restructure still load."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "AttriVAELib"
DEMO_MODEL = ROOT / "AttriVAE" / "Resources" / "DemoModel"
MAX_MODULE_LINES = 500
LONG_MODULE_REASON = "Why one long module"


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8", errors="replace",
                          cwd=ROOT, timeout=300)


def _lint_imports() -> subprocess.CompletedProcess:
    lint = Path(sys.executable).with_name("lint-imports")
    command = [str(lint)] if lint.exists() else [sys.executable, "-m", "importlinter.cli"]
    return subprocess.run([*command, "--no-cache"], capture_output=True, encoding="utf-8", errors="replace",
                          cwd=ROOT, timeout=300)


def test_import_contracts_hold():
    """import-linter's layer and forbidden contracts (pyproject.toml) pass on the tree."""
    result = _lint_imports()
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_contracts_catch_an_upward_import():
    """The layer contract is not vacuous: a data module importing the CLI breaks it."""
    probe = LIB / "data" / "_upward_probe.py"
    probe.write_text("def f():\n    from AttriVAELib.cli import main\n    return main\n")
    try:
        result = _lint_imports()
    finally:
        probe.unlink()
    assert result.returncode != 0
    assert "AttriVAELib.data._upward_probe -> AttriVAELib.cli" in result.stdout


def test_public_api_imports_without_torch():
    """``import AttriVAELib`` and its subpackages' names resolve lazily: no torch, Slicer or Qt."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'slicer', 'qt', 'vtk', 'ctk'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import AttriVAELib, AttriVAELib.data, AttriVAELib.nn, AttriVAELib.explain, AttriVAELib.cli\n"
        "import AttriVAELib.slicer\n"
        "assert 'AttriVAEModel' in dir(AttriVAELib) and 'AttributeGradCAM' in AttriVAELib.__all__\n"
        "from AttriVAELib import load_manifest, read_image\n"
        "print('ok', 'torch' in sys.modules)\n"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok False"


def test_every_public_name_resolves():
    """Every name a package exports exists where its lazy table says."""
    import importlib

    import AttriVAELib

    packages = ["AttriVAELib", *(f"AttriVAELib.{p.name}" for p in sorted(LIB.iterdir())
                                 if (p / "__init__.py").exists())]
    for name in packages:
        package = importlib.import_module(name)
        for public in getattr(package, "__all__", []):
            assert getattr(package, public) is not None, f"{name}.{public}"
    assert AttriVAELib.AttriVAEModel.__module__ == "AttriVAELib.inference.model"
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        AttriVAELib.nothing_here  # noqa: B018


def test_explanations_share_one_verb(tiny_run: Path, tiny_cohort: Path):
    """Grad-CAM, counterfactual and integrated gradients are classes with ``attribute``."""
    import torch

    from AttriVAELib import (AttributeGradCAM, AttriVAEModel, ClassifierGradCAM, LatentCounterfactual,
                             LatentPathIntegratedGradients)

    model = AttriVAEModel.load(tiny_run, device="cpu")
    image = sorted((tiny_cohort / "images").glob("*.nii.gz"))[0]
    enc = model.encode(image)
    maps = AttributeGradCAM(model, "conv2").attribute(enc)
    assert maps.shape == (1, model.num_regularized, *enc.image.shape)
    assert torch.equal(maps, AttributeGradCAM(model, "conv2").attribute(enc.image[None]))
    assert ClassifierGradCAM(model, "conv2").attribute([enc, enc]).shape[0] == 2
    cf = LatentCounterfactual(model, method="flip").attribute(enc, target=1 - int(enc.predicted_class))
    assert cf.target_class == 1 - int(enc.predicted_class) and cf.difference.shape == enc.image.shape
    ig = LatentPathIntegratedGradients(model, steps=4).attribute(cf.z_cf, cf.z)
    assert ig.attributions.shape == enc.image.shape and ig.steps == 4


def test_cli_registers_every_command_once():
    from AttriVAELib.cli.main import COMMANDS, build_parser

    names = [c.name for c in COMMANDS]
    assert len(names) == len(set(names))
    assert set(names) == {"synth", "synth-brain", "synth-acdc", "cohort", "info", "train", "encode", "traverse",
                          "explain", "evaluate", "compare", "export", "view", "demo"}
    helps = [c.help for c in COMMANDS]
    assert all(h and "\n" not in h for h in helps)
    text = build_parser().format_help()
    for command in COMMANDS:
        assert command.name in text


@pytest.mark.parametrize("module", ["AttriVAELib", "AttriVAELib.cli"])
def test_python_dash_m_entry_points(module: str):
    result = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, encoding="utf-8",
                            errors="replace", cwd=ROOT, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("attrivae ")


def _module_docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""


def test_modules_are_small_or_say_why():
    long = []
    for path in sorted(LIB.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").count("\n")
        if lines > MAX_MODULE_LINES and LONG_MODULE_REASON not in _module_docstring(path):
            long.append(f"{path.relative_to(ROOT)} ({lines} lines)")
    assert not long, f"split these modules or state '{LONG_MODULE_REASON}: …' in their docstring: {long}"


def test_every_module_has_a_docstring():
    missing = [str(p.relative_to(ROOT)) for p in sorted(LIB.rglob("*.py"))
               if p.name != "__main__.py" and not _module_docstring(p)]
    assert not missing


def test_trainer_and_evaluation_name_no_cohort():
    """Cohort-specific code comes through the registry: the trainer and the evaluation name none."""
    for path in [*(LIB / "train").glob("*.py"), *(LIB / "evaluate").glob("*.py")]:
        text = path.read_text(encoding="utf-8")
        for word in ("brain", "AttriVAELib.synth", "phantom"):
            code = "\n".join(line for line in text.splitlines()
                             if not line.lstrip().startswith("#") and '"""' not in line)
            assert f"cohorts.{word}" not in code and f'"{word}"' not in code, f"{path.name} names {word}"


@pytest.mark.parametrize("legacy, name", [("AttriVAELib.synth", "phantom"), ("AttriVAELib.brain", "brain"),
                                          ("phantom", "phantom"), ("brain", "brain"), ("my-own", "generic")])
def test_cohort_generators_old_and_new(legacy: str, name: str):
    from AttriVAELib.cohorts import get_cohort

    assert get_cohort(legacy).name == name


def test_cohort_written_before_the_restructure_is_still_a_phantom_cohort(cohort_copy: Path):
    """A cohort.json naming ``AttriVAELib.synth`` gets the phantom measure and the demo recipe."""
    from AttriVAELib.cohorts import cohort_for, cohort_kind
    from AttriVAELib.data.manifest import load_manifest

    info_path = cohort_copy / "cohort.json"
    info = json.loads(info_path.read_text())
    assert info["generator"] == "phantom"
    info["generator"] = "AttriVAELib.synth"
    info_path.write_text(json.dumps(info))
    manifest = load_manifest(cohort_copy)
    kind = cohort_kind(manifest)
    assert kind.name == "phantom" and kind.measure is not None
    assert "augmentation" in cohort_for(manifest).training_overrides["data"]
    result = subprocess.run([sys.executable, "-m", "AttriVAELib", "info", "--data", str(cohort_copy)],
                            capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "subjects: 40" in result.stdout


def test_shipped_demo_model_loads_and_encodes_through_the_cli(tmp_path: Path, tiny_cohort: Path):
    """The demo model exported before the restructure loads, and ``attrivae encode`` uses it."""
    from AttriVAELib import AttriVAEModel

    model = AttriVAEModel.load(DEMO_MODEL, device="cpu")
    assert model.num_regularized == 4 and model.calibration is not None
    image = sorted((tiny_cohort / "images").glob("*.nii.gz"))[0]
    out = tmp_path / "enc.json"
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    result = subprocess.run([sys.executable, "-m", "AttriVAELib", "encode", "--model", str(DEMO_MODEL), str(image),
                             "--json", str(out)], capture_output=True, encoding="utf-8", errors="replace",
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(out.read_text())
    assert len(summary["regularized"]) == 4
    assert np.isfinite([item["mu"] for item in summary["regularized"]]).all()


def test_cmake_lists_every_engine_file_with_its_folder():
    """The extension installs the subpackages with their folders (data/io.py → AttriVAELib/data/io.py)."""
    text = (ROOT / "AttriVAE" / "CMakeLists.txt").read_text(encoding="utf-8")
    files = sorted(str(p.relative_to(LIB)) for p in LIB.rglob("*.py") if "__pycache__" not in p.parts)
    assert any("/" in f for f in files)
    for f in files:
        assert f"\n  {f}\n" in text, f"{f} missing from ATTRIVAE_LIB_SCRIPTS"
