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
    factors = [line.split()[0] for line in lines[5:-1]]
    assert {"diameter_mm", "k", "intensity_background", "rotation_deg"} <= set(factors)
    assert all(np.isfinite(float(line.split()[1])) for line in lines[5:-1])
    place = re.fullmatch(r"lesion's direction from the centre \((\d+) held-out subjects with a lesion\): R² (\S+), "
                         r"median angle (\d+)° \((\S+) mm on the outer wall\)", lines[-1])
    assert place, lines[-1]
    assert 0 <= int(place.group(3)) <= 180 and float(place.group(4)) >= 0


def test_lesion_direction_points_from_the_centre_to_the_lesion(tmp_path, monkeypatch):
    import SimpleITK as sitk

    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    from phantom_code_content import lesion_direction

    from AttriVAELib.data.manifest import Record

    wall = np.zeros((20, 20, 20), np.uint8)
    wall[5:15, 5:15, 5:15] = 1
    wall[7:13, 7:13, 7:13] = 0  # a hollow cube centred on voxel (9.5, 9.5, 9.5)
    lesion = np.zeros_like(wall)
    lesion[9:11, 9:11, 13:15] = 1  # on its +x face (array axes are z, y, x)
    paths = []
    for name, array in (("wall", wall), ("lesion", lesion)):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((2.0, 2.0, 2.0))
        image.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1))  # i runs along −x
        paths.append(tmp_path / f"{name}.nii.gz")
        sitk.WriteImage(image, str(paths[-1]))
    record = Record("s", paths[0], mask=paths[0], lesion=paths[1], label=None, attributes={}, row=2)
    direction = lesion_direction(record)
    assert direction is not None and np.allclose(np.linalg.norm(direction), 1.0)
    assert direction[0] < -0.99  # +i is −x in physical space
    assert lesion_direction(Record("s", paths[0], mask=paths[0], lesion=None, label=None, attributes={}, row=2)) is None
