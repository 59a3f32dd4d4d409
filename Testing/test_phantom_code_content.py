"""scripts/phantom_code_content.py: the diameter's k-blind ceiling and what a model's code carries."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from AttriVAELib.data.manifest import load_manifest

ROOT = Path(__file__).resolve().parent.parent


def test_code_content_reports_the_ceiling_each_split_and_each_factor(tiny_cohort, tiny_run):
    script = ROOT / "scripts" / "phantom_code_content.py"
    result = subprocess.run([sys.executable, str(script), "--model", str(tiny_run), "--cohort", str(tiny_cohort)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    # The ceiling is r² of the mean in-plane diameter a·(1 + k) with the measured maximum diameter.
    manifest = load_manifest(tiny_cohort, attributes=["max_axial_diameter_mm"])
    a, k = (np.array([float(r.metadata[f"factor_{name}"]) for r in manifest.records]) for name in ("diameter_mm", "k"))
    expected = np.corrcoef(a * (1 + k) / 2, manifest.attribute_matrix()[:, 0])[0, 1] ** 2
    ceiling = re.fullmatch(r"ceiling of a k-blind reader \(all 40 subjects\): R² (\S+)", lines[0])
    assert ceiling and float(ceiling.group(1)) == round(expected, 3)
    assert [line.split(" ")[0] for line in lines[1:4]] == ["train", "val", "test"]
    assert lines[4].startswith("held-out R² of a linear map from μ")
    factors = [line.split()[0] for line in lines[5:]]
    assert {"diameter_mm", "k", "intensity_background", "rotation_deg"} <= set(factors)
    assert all(np.isfinite(float(line.split()[1])) for line in lines[5:])
