"""scripts/export_demo_model.py: the exported model names its own cohort and loads offline."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _export_module():
    spec = importlib.util.spec_from_file_location("export_demo_model", ROOT / "scripts" / "export_demo_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_describes_the_training_cohort(tiny_cohort, tiny_run, tmp_path):
    from AttriVAELib.inference.model import AttriVAEModel

    out = _export_module().export(tiny_run, tmp_path / "DemoModel")
    meta = json.loads((out / "model.json").read_text())
    # The tiny cohort: 40 subjects at 32³, seed 1; no path of the training machine is kept.
    assert meta["data"] == {"description": "built-in synthetic phantom cohort (attrivae demo: 40 subjects at 32³, seed 1)"}
    text = (out / "model.json").read_text()
    assert str(tiny_cohort) not in text and str(tiny_run) not in text
    held = json.loads((tiny_run / "heldout.json").read_text())
    assert meta["heldout"] == held and f"Held-out test split (n = {held['n']})" in (out / "README.md").read_text()
    # The README names the command that trains the same recipe with the same training seed.
    seed = meta["config"]["train"]["seed"]
    command = "bash scripts/demo.sh" + (f" --train-seed {seed}" if seed else "")
    assert f"Re-create it with `{command}` then" in (out / "README.md").read_text()
    model = AttriVAEModel.load(out, device="cpu")
    assert model.attribute_names == ["volume_ml", "max_axial_diameter_mm", "wall_thickness_mm", "lesion_volume_ml"]
