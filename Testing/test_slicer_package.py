"""The layout of AttriVAELib.slicer: one job per module, a lazy facade, and no heavy imports.

3D Slicer imports the module (and with it ``AttriVAELib.slicer``) before torch is installed,
so the package and its modules must import with torch, slicer, vtk and qt all missing. These
checks need neither Slicer nor torch.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "AttriVAELib" / "slicer"
#: Every module of the Slicer layer stays small (one concern each).
MAX_MODULE_LINES = 420
#: The public names of the former single-file ``AttriVAELib/slicer/mrml.py``.
MRML_NAMES = [
    "ROLE_ATTRIBUTE", "SOURCE_REFERENCE_ROLE", "PARAMETER_SINGLETON_TAG", "PARAMETER_PREFIX", "BUILTIN_COLORMAPS",
    "RAS_FROM_LPS", "ijk_to_ras_from_geometry", "geometry_from_ijk_to_ras", "geometry_from_node", "volume_from_node",
    "update_volume_node", "segmentation_or_labelmap_mask", "ensure_colormap", "set_heatmap_display",
    "set_signed_heatmap_display", "show_overlay", "traversal_sequence", "set_traversal_item", "save_parameters",
    "load_parameters", "save_volume_node", "load_volume_node",
]


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_is_small_and_says_what_it_does():
    assert len(modules()) >= 15
    for path in modules():
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        assert lines <= MAX_MODULE_LINES, f"{path.relative_to(ROOT)} has {lines} lines; split it by concern"
        docstring = ast.get_docstring(ast.parse(text))
        assert docstring and len(docstring) > 60, f"{path.relative_to(ROOT)} needs a docstring saying what it does"


def test_package_imports_without_torch_slicer_vtk_or_qt():
    """Importing the package and resolving every public name (lazily) needs none of them."""
    code = (
        "import sys\n"
        "for name in ('torch', 'slicer', 'vtk', 'qt', 'ctk'):\n"
        "    sys.modules[name] = None\n"
        "import AttriVAELib.slicer as s\n"
        "from AttriVAELib.slicer import mrml, AttriVAESession, TrainingProcess, find_demo_model\n"
        "assert set(s.__all__) <= set(dir(s))\n"
        "values = [getattr(s, name) for name in s.__all__]\n"
        "import AttriVAELib.slicer.mrml.geometry, AttriVAELib.slicer.panel, AttriVAELib.slicer.explanations\n"
        "heavy = ('torch', 'slicer', 'vtk', 'qt')\n"
        "print(len(values), sorted(m for m, mod in sys.modules.items() if m.split('.')[0] in heavy and mod))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, encoding="utf-8",
                            errors="replace", timeout=120)
    assert result.returncode == 0, result.stderr
    count, loaded = result.stdout.split(" ", 1)
    assert int(count) >= 15 and loaded.strip() == "[]"


def test_lazy_facade_names_and_unknown_names():
    import AttriVAELib.slicer as package
    from AttriVAELib.slicer import demo_model, requirements, session, training_process

    assert package.AttriVAESession is session.AttriVAESession
    assert package.find_demo_model is demo_model.find_demo_model
    assert package.missing_requirements is requirements.missing_requirements
    assert package.TrainingProcess is training_process.TrainingProcess
    assert package.__all__ == sorted(package.__all__)
    with pytest.raises(AttributeError):
        package.no_such_name  # noqa: B018


def test_mrml_subpackage_re_exports_the_former_module():
    from AttriVAELib.slicer import mrml

    assert mrml.__all__ == MRML_NAMES
    for name in MRML_NAMES:
        value = getattr(mrml, name)
        if callable(value):  # defined in one of the concern modules, not in __init__
            assert value.__module__.startswith("AttriVAELib.slicer.mrml."), name
    assert mrml.update_volume_node.__module__ == "AttriVAELib.slicer.mrml.volumes"
    assert mrml.ijk_to_ras_from_geometry.__module__ == "AttriVAELib.slicer.mrml.geometry"


def test_paths_from_the_module_files_point_at_the_repository(monkeypatch):
    """The demo model folder and the training process's PYTHONPATH: the folder that holds AttriVAELib."""
    from AttriVAELib.slicer.demo_model import DEMO_MODEL_ENV, demo_model_dir
    from AttriVAELib.slicer.training_process import training_environment

    monkeypatch.delenv(DEMO_MODEL_ENV, raising=False)
    assert demo_model_dir() == [ROOT / "Resources" / "DemoModel", ROOT / "AttriVAE" / "Resources" / "DemoModel"]
    monkeypatch.setenv(DEMO_MODEL_ENV, "/elsewhere")
    assert demo_model_dir()[0] == Path("/elsewhere")
    env = training_environment({"PYTHONPATH": os.pathsep.join(["/x", str(ROOT)])})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ROOT), "/x"]
    assert (Path(env["PYTHONPATH"].split(os.pathsep)[0]) / "AttriVAELib" / "__init__.py").is_file()
