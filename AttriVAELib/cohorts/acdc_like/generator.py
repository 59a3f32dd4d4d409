"""An ACDC-like cohort of short-axis cine frames with known analytic geometry (``attrivae synth-acdc``).

It writes raw data as a user would receive it, not a manifest: one folder per patient, laid
out like the ACDC challenge's training set::

    patient001/patient001_frame01.nii.gz      end-diastole (ED) image
    patient001/patient001_frame01_gt.nii.gz   its segmentation: 3 LV cavity, 2 myocardium, 1 outer shell
    patient001/patient001_frame11.nii.gz      end-systole (ES) image (frame 8-14)
    patient001/patient001_frame11_gt.nii.gz
    patient001/Info.cfg                       ED, ES, Group, Height, Weight, NbFrame
    clinical.csv                              Patient, Group, Height (cm), Weight (kg), Age (years)
    truth.csv                                 each frame's shape factors and analytic attributes
    acdc_like.json                            how it was made

Geometry (:mod:`.geometry`): the LV cavity is a prolate spheroid along z (the slice axis), the
myocardium the shell of thickness ``t`` around it (outer surface parallel to the cavity's), and
label 1 a second parallel shell of thickness ``t2`` standing in for the tissue around the
ventricle: it keeps ACDC's label numbers (1 RV, 2 MYO, 3 LV) but not the RV's shape. Per patient,
drawn independently: the ED cavity volume, its aspect ratio (long/short semi-axis), the ED wall
thickness and ``t2``. The group (class) follows the shape, so a classifier has something to learn:
``DCM`` when the ED cavity exceeds :data:`DCM_ED_VOLUME_ML`, else ``HCM`` when the ED wall is
thicker than :data:`HCM_ED_THICKNESS_MM`, else ``NOR``. The ejection fraction depends on the group;
the ES cavity keeps the aspect ratio, and the ES wall thickens so that the myocardial volume is
conserved. Height, weight and age are drawn independently of the heart.

Images are cine-SSFP-like: bright blood, dark myocardium, a brighter outer shell, a body ellipse
and air, with partial volume (each boundary blurred over about half the voxel size across it),
a smooth bias field and noise, stored as int16 (×1000). A voxel's label is the region holding
its centre. The physical field of view (:data:`FOV_MM`) does not depend on the spacing. Everything
about patient ``i`` comes from ``numpy.random.default_rng([seed, i])``.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import os
import sys
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy.optimize import brentq
from scipy.special import ndtr

from AttriVAELib import __version__
from AttriVAELib.cohorts.acdc_like.geometry import NestedShells, body_volume_mm3
from AttriVAELib.core.atomic import atomic_dir, write_json, write_text
from AttriVAELib.core.errors import ConfigError
from AttriVAELib.data.cohort_files import _die_with_parent
from AttriVAELib.data.io import Geometry, Volume, write_image

__all__ = ["FOV_MM", "GROUPS", "LABELS", "Patient", "generate_acdc_like", "parse_spacing", "sample_patient",
           "summarize_acdc_like"]

FOV_MM = (160.0, 160.0, 160.0)  # (x, y, z)
CENTRE_MM = (-12.0, 20.0, 35.0)  # physical centre of the field of view, so the origin is not 0
#: Label values, as in ACDC (1 RV, 2 myocardium, 3 LV cavity); label 1 is an outer shell here.
LABELS = {"lv_cavity": 3, "myocardium": 2, "outer": 1}
GROUPS = ("NOR", "HCM", "DCM")
DCM_ED_VOLUME_ML = 190.0
HCM_ED_THICKNESS_MM = 12.0
RANGES: dict[str, tuple[float, float]] = {
    "ed_cavity_volume_ml": (90.0, 250.0),
    "aspect": (1.4, 2.0),  # long / short semi-axis of the cavity
    "ed_thickness_mm": (7.0, 15.0),
    "outer_thickness_mm": (7.0, 10.0),
    "translation_xy_mm": (-8.0, 8.0),
    "translation_z_mm": (-2.0, 2.0),
    "height_cm": (150.0, 195.0),
    "weight_kg": (50.0, 110.0),
    "age_years": (20.0, 80.0),
    "noise_sd": (0.01, 0.03),
    "bias_strength": (0.0, 0.15),
}
EJECTION_FRACTION_PCT = {"NOR": (55.0, 70.0), "HCM": (60.0, 75.0), "DCM": (15.0, 40.0)}
INTENSITIES = {"air": (0.0, 0.03), "body": (0.1, 0.2), "outer": (0.5, 0.6), "myocardium": (0.25, 0.35),
               "blood": (0.8, 0.95)}
BODY_SEMI_AXES_MM = (75.0, 62.0)
MIN_SPACING_MM, MAX_SPACING_MM = 0.3, 10.0
NB_FRAMES = 30
TRUTH_MEASURES = ("volume_ml", "diameter_mm", "surface_mm2", "sphericity", "thickness_mm", "cavity_volume_ml")


def parse_spacing(text: str | Sequence[float]) -> tuple[float, float, float]:
    """``"0.7,0.7,5"`` (x, y, z in mm) or one number for all axes.

    Raises:
        ConfigError: not one or three numbers in [0.3, 10] mm.
    """
    try:
        values = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except ValueError:
        raise ConfigError(f"spacing '{text}': expected x,y,z in mm, e.g. 0.7,0.7,5") from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or not all(MIN_SPACING_MM <= v <= MAX_SPACING_MM for v in values):
        raise ConfigError(f"spacing '{text}': expected one or three numbers from {MIN_SPACING_MM:g} to "
                          f"{MAX_SPACING_MM:g} mm (x,y,z)")
    return values[0], values[1], values[2]


def geometry_for(spacing: Sequence[float]) -> Geometry:
    """The image grid: :data:`FOV_MM` at ``spacing`` (x, y, z), centred on :data:`CENTRE_MM`."""
    size = tuple(int(round(f / s)) for f, s in zip(FOV_MM, spacing))
    origin = tuple(c - (n - 1) * s / 2 for c, n, s in zip(CENTRE_MM, size, spacing))
    return Geometry(size, tuple(float(s) for s in spacing), origin, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))


def _semi_axes(volume_ml: float, aspect: float) -> tuple[float, float]:
    a = (3 * volume_ml * 1000 / (4 * math.pi * aspect)) ** (1 / 3)
    return a, aspect * a


class Patient:
    """Everything that determines one patient (lengths in mm)."""

    def __init__(self, index: int, seed: int) -> None:
        rng = np.random.default_rng([seed, index])
        u = {name: float(rng.uniform(*bounds)) for name, bounds in RANGES.items()}
        self.index = index
        self.id = f"patient{index + 1:03d}"
        ed_volume, aspect, ed_t = u["ed_cavity_volume_ml"], u["aspect"], u["ed_thickness_mm"]
        self.group = "DCM" if ed_volume > DCM_ED_VOLUME_ML else "HCM" if ed_t > HCM_ED_THICKNESS_MM else "NOR"
        self.ejection_fraction = float(rng.uniform(*EJECTION_FRACTION_PCT[self.group]))
        self.es_frame = int(rng.integers(8, 15))
        a, c = _semi_axes(ed_volume, aspect)
        t2 = u["outer_thickness_mm"]
        ed = NestedShells(a, c, ed_t, t2)
        myocardium = body_volume_mm3(a, c, ed_t) - body_volume_mm3(a, c)
        a_es, c_es = _semi_axes(ed_volume * (1 - self.ejection_fraction / 100), aspect)
        t_es = brentq(lambda t: body_volume_mm3(a_es, c_es, t) - body_volume_mm3(a_es, c_es) - myocardium,
                      0.1, 80.0, xtol=1e-9)
        self.frames = {1: ed, self.es_frame: NestedShells(a_es, c_es, float(t_es), t2)}
        self.translation = (u["translation_xy_mm"], float(rng.uniform(*RANGES["translation_xy_mm"])),
                            u["translation_z_mm"])
        self.clinical = {"height_cm": round(u["height_cm"], 1), "weight_kg": round(u["weight_kg"], 1),
                         "age_years": int(u["age_years"])}
        self.levels = {name: float(rng.uniform(*bounds)) for name, bounds in INTENSITIES.items()}
        self.noise_sd, self.bias_strength = u["noise_sd"], u["bias_strength"]
        self.bias = rng.uniform(-1, 1, 6)
        self.noise_seed = int(rng.integers(2**31))


def sample_patient(index: int, seed: int) -> Patient:
    return Patient(index, seed)


def _render(patient: Patient, shells: NestedShells, geometry: Geometry, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """(image float32, label map uint8), (z, y, x) arrays of one frame."""
    spacing = np.asarray(geometry.spacing)
    centre = np.asarray(CENTRE_MM) + np.asarray(patient.translation)
    axes = [np.asarray(geometry.origin)[d] + np.arange(geometry.size[d]) * spacing[d] - centre[d] for d in range(3)]
    x, y, z = axes[0][None, None, :], axes[1][None, :, None], axes[2][:, None, None]
    labels, distance = shells.fields(x, y, z, margin=4 * float(spacing.max()))
    # Partial volume: each boundary blurred over ~half the voxel size along its normal (the cavity's gradient).
    nx, ny, nz = x / shells.a**2, y / shells.a**2, z / shells.c**2
    norm = np.sqrt(nx**2 + ny**2 + nz**2) + 1e-12
    sigma = 0.4 * np.sqrt((nx * spacing[0]) ** 2 + (ny * spacing[1]) ** 2 + (nz * spacing[2]) ** 2) / norm
    lv = patient.levels
    r_body = np.hypot((x + patient.translation[0]) / BODY_SEMI_AXES_MM[0],
                      (y + patient.translation[1]) / BODY_SEMI_AXES_MM[1])
    body_sigma = 0.4 * float(spacing[:2].mean())
    image = lv["air"] + (lv["body"] - lv["air"]) * ndtr((1 - r_body) * BODY_SEMI_AXES_MM[1] / body_sigma)
    reach = shells.t + shells.t2
    for boundary, inner, outer in ((reach, lv["outer"], lv["body"]), (shells.t, lv["myocardium"], lv["outer"]),
                                   (0.0, lv["blood"], lv["myocardium"])):
        image = image + (inner - outer) * ndtr((boundary - distance) / sigma)
    u, v, w = (ax / (f / 2) for ax, f in zip((x, y, z), FOV_MM))
    b = patient.bias
    image = image * (1 + patient.bias_strength * (b[0] * u + b[1] * v + b[2] * w + b[3] * u * u + b[4] * v * v
                                                  + b[5] * u * v))
    rng = np.random.default_rng([patient.noise_seed, frame])
    image = image + patient.noise_sd * rng.standard_normal(image.shape)
    return image.astype(np.float32), labels


def truth_row(patient: Patient, frame: int) -> dict[str, Any]:
    """A frame's factors and the analytic value of every attribute the cohort builder measures."""
    shells = patient.frames[frame]
    row: dict[str, Any] = {"subject": f"{patient.id}_frame{frame:02d}", "patient": patient.id, "frame": frame,
                           "phase": "ED" if frame == 1 else "ES", "group": patient.group,
                           "a_mm": shells.a, "c_mm": shells.c, "t_mm": shells.t, "t2_mm": shells.t2}
    for label, values in shells.analytic().items():
        row.update({f"{label}_{key}": value for key, value in values.items()})
    return row


def _write_patient(folder: str, indices: Sequence[int], spacing: Sequence[float], seed: int) -> list[tuple]:
    """Worker task: write patients ``indices`` into ``folder``; return (clinical row, truth rows) of each."""
    geometry = geometry_for(spacing)
    out = []
    for index in indices:
        patient = Patient(index, seed)
        home = Path(folder) / patient.id
        home.mkdir(parents=True, exist_ok=True)
        for frame, shells in patient.frames.items():
            image, labels = _render(patient, shells, geometry, frame)
            stored = np.clip(np.rint(image * 1000), -32768, 32767).astype(np.int16)
            name = f"{patient.id}_frame{frame:02d}"
            write_image(Volume(stored, geometry), home / f"{name}.nii.gz")
            write_image(Volume(labels, geometry), home / f"{name}_gt.nii.gz")
        info = {"ED": 1, "ES": patient.es_frame, "Group": patient.group, "Height": patient.clinical["height_cm"],
                "NbFrame": NB_FRAMES, "Weight": patient.clinical["weight_kg"]}
        write_text(home / "Info.cfg", "".join(f"{k}: {v}\n" for k, v in info.items()))
        clinical = {"Patient": patient.id, "Group": patient.group, "Height (cm)": patient.clinical["height_cm"],
                    "Weight (kg)": patient.clinical["weight_kg"], "Age (years)": patient.clinical["age_years"]}
        out.append((clinical, [truth_row(patient, f) for f in patient.frames]))
    return out


def _csv(rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
    return buffer.getvalue()


def generate_acdc_like(out: str | os.PathLike, n: int, spacing: Sequence[float] = (0.7, 0.7, 5.0), seed: int = 0,
                       workers: int | None = None, progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Write ``n`` ACDC-like patients at ``spacing`` (x, y, z mm) into ``out`` (atomically); return the info.

    Raises:
        ConfigError: ``n`` < 1, a bad spacing or seed, or ``out`` exists without ``overwrite``.
    """
    from tqdm import tqdm

    out = Path(out)
    spacing = parse_spacing(spacing)
    if n < 1:
        raise ConfigError(f"n = {n}: the cohort needs at least one patient")
    if n > 999:
        raise ConfigError(f"n = {n}: ACDC-style ids (patient001 …) allow at most 999 patients")
    if not 0 <= seed < 2**32:
        raise ConfigError(f"seed = {seed}: must be a whole number from 0 to {2**32 - 1}")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out}: already exists; pass --overwrite (overwrite=True) to replace it")
    workers = max(1, min(int(workers or os.cpu_count() or 1), n))
    geometry = geometry_for(spacing)
    batches = iter([list(range(i, min(n, i + 4))) for i in range(0, n, 4)])
    results: list[tuple] = []
    try:
        with atomic_dir(out, overwrite=overwrite) as tmp, \
                tqdm(total=n, desc="patients", unit="patient", file=sys.stderr, disable=not progress) as bar:
            task = partial(_write_patient, str(tmp), spacing=spacing, seed=seed)
            if workers == 1:
                for batch in batches:
                    results.extend(task(batch))
                    bar.update(len(batch))
            else:
                with ProcessPoolExecutor(workers, initializer=_die_with_parent, initargs=(os.getpid(),)) as pool:
                    pending = deque(pool.submit(task, b) for b in itertools.islice(batches, 2 * workers))
                    while pending:
                        done = pending.popleft().result()
                        results.extend(done)
                        bar.update(len(done))
                        pending.extend(pool.submit(task, b) for b in itertools.islice(batches, 1))
            write_text(tmp / "clinical.csv", _csv([c for c, _ in results]))
            write_text(tmp / "truth.csv", _csv([t for _, rows in results for t in rows]))
            counts = {g: sum(c["Group"] == g for c, _ in results) for g in GROUPS}
            info = {"generator": "acdc_like", "version": __version__, "seed": seed, "n": n,
                    "spacing": list(spacing), "geometry": geometry.to_dict(), "fov_mm": list(FOV_MM),
                    "labels": LABELS, "groups": counts, "ranges": {k: list(v) for k, v in RANGES.items()},
                    "ejection_fraction_pct": {k: list(v) for k, v in EJECTION_FRACTION_PCT.items()},
                    "group_rule": {"DCM": f"ED cavity > {DCM_ED_VOLUME_ML:g} mL",
                                   "HCM": f"else ED myocardium > {HCM_ED_THICKNESS_MM:g} mm", "NOR": "else"}}
            write_json(tmp / "acdc_like.json", info)
    except FileExistsError:
        raise ConfigError(f"{out}: already exists; pass --overwrite (overwrite=True) to replace it") from None
    return info


def summarize_acdc_like(folder: str | os.PathLike) -> str:
    """A few lines about a generated ACDC-like folder: patients, groups, grid, next step."""
    import json

    folder = Path(folder)
    info = json.loads((folder / "acdc_like.json").read_text(encoding="utf-8"))
    size = "×".join(map(str, info["geometry"]["size"]))
    labels = " ".join(f"--label {name}={value}" for name, value in info["labels"].items())
    return "\n".join([
        f"ACDC-like cohort {folder}: {info['n']} patients × 2 frames (ED, ES), {size} voxels of "
        f"{' × '.join(f'{s:g}' for s in info['spacing'])} mm, seed {info['seed']}",
        "  groups: " + ", ".join(f"{g} {c}" for g, c in info["groups"].items()),
        f"  next: attrivae cohort --images {folder} --labels {folder} {labels} --clinical {folder / 'clinical.csv'} "
        "--class-column Group --out COHORT",
    ])
