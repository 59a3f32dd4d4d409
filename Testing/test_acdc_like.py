"""The ACDC-like generator: analytic geometry, folder layout, the group rule, the command."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from AttriVAELib.cli.main import main
from AttriVAELib.cohorts.acdc_like.generator import (DCM_ED_VOLUME_ML, HCM_ED_THICKNESS_MM, LABELS, Patient,
                                                     generate_acdc_like, parse_spacing)
from AttriVAELib.cohorts.acdc_like.geometry import NestedShells, body_area_mm2, body_volume_mm3, distance_outside
from AttriVAELib.core.errors import ConfigError


def test_parallel_bodies_of_a_sphere_are_spheres():
    """The parallel body at distance d of a ball of radius r is the ball of radius r + d."""
    for r, d in ((10.0, 0.0), (10.0, 5.0), (23.0, 9.5)):
        assert body_volume_mm3(r, r, d) == pytest.approx(4 / 3 * math.pi * (r + d) ** 3, rel=1e-9)
        assert body_area_mm2(r, r, d) == pytest.approx(4 * math.pi * (r + d) ** 2, rel=1e-9)


def test_spheroid_volume_and_steiner_formula():
    """V(K_d) = V + A·d + M·d² + 4/3·π·d³: the second difference in d is 2M + 8πd, so V is a cubic in d."""
    a, c = 20.0, 38.0
    assert body_volume_mm3(a, c) == pytest.approx(4 / 3 * math.pi * a * a * c, rel=1e-9)
    e = math.sqrt(1 - a * a / (c * c))  # prolate spheroid area, closed form
    assert body_area_mm2(a, c) == pytest.approx(2 * math.pi * a * a * (1 + c / (a * e) * math.asin(e)), rel=1e-9)
    volumes = [body_volume_mm3(a, c, d) for d in (0.0, 2.0, 4.0, 6.0, 8.0)]
    third = np.diff(volumes, 3)
    assert third == pytest.approx([6 * 4 / 3 * math.pi * 8.0] * 2, rel=1e-6)  # d³ term only
    # dV/dd = A(d): the area is the derivative of the volume.
    h = 1e-4
    assert (body_volume_mm3(a, c, 5 + h) - body_volume_mm3(a, c, 5 - h)) / (2 * h) == pytest.approx(
        body_area_mm2(a, c, 5.0), rel=1e-6)


def test_distance_to_the_ellipse_matches_brute_force():
    rng = np.random.default_rng(0)
    a, c = 18.0, 35.0
    theta = np.linspace(0, math.pi, 200_001)
    curve = np.stack([a * np.sin(theta), c * np.cos(theta)], axis=1)
    points = rng.uniform([0, -60], [60, 60], (40, 2))
    exact = distance_outside(points[:, 0], points[:, 1], a, c)
    brute = np.array([np.min(np.hypot(*(curve - p).T)) for p in points])
    inside = (points[:, 0] / a) ** 2 + (points[:, 1] / c) ** 2 <= 1
    assert np.all(exact[inside] == 0)
    assert exact[~inside] == pytest.approx(brute[~inside], abs=1e-3)


def test_every_outer_point_is_t_from_the_cavity():
    """The shells are parallel: points at distance t (t + t2) from the cavity are on the label boundaries."""
    shells = NestedShells(20.0, 34.0, 9.0, 7.0)
    theta = np.linspace(0.05, math.pi - 0.05, 50)
    speed = np.hypot(20 * np.cos(theta), 34 * np.sin(theta))
    normal = np.stack([34 * np.sin(theta), 20 * np.cos(theta)], axis=1) / speed[:, None]
    surface = np.stack([20 * np.sin(theta), 34 * np.cos(theta)], axis=1)
    for d, inside, outside in ((9.0, 2, 1), (16.0, 1, 0)):
        for offset, label in ((-0.01, inside), (0.01, outside)):
            p = surface + (d + offset) * normal
            assert np.all(shells.labels(p[:, 0], np.zeros(len(p)), p[:, 1]) == label)


def test_group_follows_the_shape_and_myocardium_is_conserved():
    for index in range(30):
        p = Patient(index, seed=11)
        ed, es = p.frames[1], p.frames[p.es_frame]
        ed_cavity = body_volume_mm3(ed.a, ed.c) / 1000
        expected = "DCM" if ed_cavity > DCM_ED_VOLUME_ML else "HCM" if ed.t > HCM_ED_THICKNESS_MM else "NOR"
        assert p.group == expected
        myo = [body_volume_mm3(f.a, f.c, f.t) - body_volume_mm3(f.a, f.c) for f in (ed, es)]
        assert myo[1] == pytest.approx(myo[0], rel=1e-6)
        es_cavity = body_volume_mm3(es.a, es.c) / 1000
        assert 1 - es_cavity / ed_cavity == pytest.approx(p.ejection_fraction / 100, rel=1e-9)
        assert es.t > ed.t and ed.c / ed.a == pytest.approx(es.c / es.a)


def test_parse_spacing():
    assert parse_spacing("0.7,0.7,5") == (0.7, 0.7, 5.0)
    assert parse_spacing("1") == (1.0, 1.0, 1.0)
    for bad in ("0,1,1", "1,1", "a,b,c", "20"):
        with pytest.raises(ConfigError, match="spacing"):
            parse_spacing(bad)


def test_folder_layout_like_acdc(tmp_path: Path):
    out = tmp_path / "acdc"
    info = generate_acdc_like(out, n=2, spacing=(1.4, 1.4, 5.0), seed=4, workers=1, progress=False)
    assert info["labels"] == LABELS and sum(info["groups"].values()) == 2
    rows = list(csv.DictReader(open(out / "clinical.csv", encoding="utf-8")))
    assert [r["Patient"] for r in rows] == ["patient001", "patient002"]
    assert set(rows[0]) == {"Patient", "Group", "Height (cm)", "Weight (kg)", "Age (years)"}
    for row in rows:
        home = out / row["Patient"]
        cfg = dict(line.split(": ") for line in (home / "Info.cfg").read_text().splitlines())
        assert cfg["ED"] == "1" and cfg["Group"] == row["Group"] and float(cfg["Height"]) == float(row["Height (cm)"])
        frames = sorted(p.name for p in home.glob("*.nii.gz"))
        es = f"{int(cfg['ES']):02d}"
        assert frames == [f"{row['Patient']}_frame01.nii.gz", f"{row['Patient']}_frame01_gt.nii.gz",
                          f"{row['Patient']}_frame{es}.nii.gz", f"{row['Patient']}_frame{es}_gt.nii.gz"]
        image = sitk.ReadImage(str(home / frames[0]))
        seg = sitk.ReadImage(str(home / frames[1]))
        assert image.GetSpacing() == pytest.approx((1.4, 1.4, 5.0)) and image.GetSize() == seg.GetSize()
        assert image.GetOrigin() == pytest.approx(seg.GetOrigin())
        labels = sitk.GetArrayFromImage(seg)
        pixels = sitk.GetArrayFromImage(image)
        assert set(np.unique(labels)) == {0, 1, 2, 3}
        # cine-like contrast: blood brighter than the outer shell, brighter than the myocardium
        means = [pixels[labels == k].mean() for k in (3, 1, 2)]
        assert means[0] > means[1] > means[2]
    truth = list(csv.DictReader(open(out / "truth.csv", encoding="utf-8")))
    assert len(truth) == 4 and {"myocardium_thickness_mm", "lv_cavity_volume_ml"} <= set(truth[0])
    again = tmp_path / "again"
    generate_acdc_like(again, n=2, spacing=(1.4, 1.4, 5.0), seed=4, workers=2, progress=False)
    assert (again / "truth.csv").read_text() == (out / "truth.csv").read_text()


def test_synth_acdc_command(tmp_path: Path, capsys):
    out = tmp_path / "cmd"
    assert main(["synth-acdc", "--out", str(out), "--n", "1", "--spacing", "2,2,5", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "1 patients × 2 frames" in text and "attrivae cohort --images" in text
    assert main(["synth-acdc", "--out", str(out), "--n", "1", "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["synth-acdc", "--out", str(tmp_path / "x"), "--spacing", "0,1,1"])
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "spacing" in err
