"""The synthetic brain cohort: independence and fidelity of the measured attributes, speed.

Measures ``--n`` subjects (the attributes do not depend on the output size: they are
measured on a fixed 2 mm grid) and prints

* the |Spearman| matrix of the four attributes over all subjects and over the subjects
  with lesions (where ``lesion_load_ml`` is not a constant 0);
* how well each attribute follows the factor it should follow (Spearman and the largest
  deviation from the target);
* monotonicity: one subject with one factor swept, the others fixed;
* the time to render and write one subject at each ``--sizes`` on one core, and the
  one-off template preparation and calibration time.

    PYTHONPATH=. python benchmarks/brain_attributes.py [--n 500] [--workers 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from AttriVAELib.cohorts.brain import generator as brain  # noqa: E402
from AttriVAELib.core.atomic import write_json  # noqa: E402

ATTRIBUTES = list(brain.ATTRIBUTES)
# factor swept → (measured attribute, applied change reported beside it)
SWEEPS = {
    "target_ventricle_volume_ml": ("ventricle_volume_ml", "ventricle_expansion_mm"),
    "target_cortical_thickness_mm": ("cortical_thickness_mm", "thinning_mm"),
    "scale": ("brain_volume_ml", None),
    "target_lesion_load_ml": ("lesion_load_ml", None),
}


def measure_row(index: int, seed: int) -> dict:
    f = brain.sample_factors(index, seed)
    return {"label": f.label, "scale": f.scale, "target_ventricle_volume_ml": f.target_ventricle_volume_ml,
            "target_cortical_thickness_mm": f.target_cortical_thickness_mm,
            "target_lesion_load_ml": f.target_lesion_load_ml, "lesions": f.lesions,
            **brain.measure_factors(f), **brain.applied_changes(f)}


def spearman_matrix(rows: list[dict]) -> np.ndarray:
    values = np.array([[row[name] for name in ATTRIBUTES] for row in rows])
    rho = spearmanr(values).statistic
    return np.abs(np.nan_to_num(np.asarray(rho, dtype=float)))


def print_matrix(title: str, matrix: np.ndarray) -> None:
    print(title)
    print(" " * 24 + "".join(f"{name[:12]:>13}" for name in ATTRIBUTES))
    for name, line in zip(ATTRIBUTES, matrix):
        print(f"{name:<24}" + "".join(f"{v:13.3f}" for v in line))


def fidelity(rows: list[dict]) -> dict:
    lesions = [row for row in rows if row["label"] == 1]

    def pair(measured: str, truth: list[float], subset: list[dict] = rows) -> dict:
        values = np.array([row[measured] for row in subset])
        truth = np.asarray(truth)
        return {"spearman": float(spearmanr(values, truth).statistic),
                "max_abs_error": float(np.abs(values - truth).max()),
                "mean_abs_error": float(np.abs(values - truth).mean())}

    template_ml = brain.load_template().maps["mask"].sum(dtype=np.float64) / 1000.0
    return {
        "ventricle_volume_ml vs target": pair("ventricle_volume_ml", [r["target_ventricle_volume_ml"] for r in rows]),
        "cortical_thickness_mm vs target": pair("cortical_thickness_mm",
                                                [r["target_cortical_thickness_mm"] for r in rows]),
        "brain_volume_ml vs scale³·template": pair("brain_volume_ml", [template_ml * r["scale"] ** 3 for r in rows]),
        "lesion_load_ml vs target (label 1)": pair("lesion_load_ml", [r["target_lesion_load_ml"] for r in lesions],
                                                   lesions),
    }


def sweep(name: str, steps: int = 7, index: int = 1, seed: int = 0) -> dict:
    """Measured attribute (and applied change) as one factor goes over its range."""
    attribute, applied_name = SWEEPS[name]
    base = replace(brain.sample_factors(index, seed), label=int(attribute == "lesion_load_ml"))
    values = np.linspace(*brain.RANGES[name], steps)
    measured, applied = [], []
    for value in values:
        f = replace(base, **{name: float(value)})
        measured.append(brain.measure_factors(f)[attribute])
        applied.append(brain.applied_changes(f)[applied_name] if applied_name else float(value))
    differences = np.diff(measured)
    return {"factor": name, "values": values.tolist(), "attribute": attribute, "measured": measured,
            "applied": applied_name or name, "applied_values": applied,
            "monotonic": bool(np.all(differences > 0))}


def timing(sizes: list[int], subjects: int) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            brain.smoothed_maps(brain._blur_sigma(brain.geometry_for_size(size)))  # per-process, once
            start = time.perf_counter()
            brain.generate_brain_cohort(Path(tmp) / str(size), n=subjects, size=size, workers=1, progress=False)
            out[size] = (time.perf_counter() - start) / subjects
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--sizes", type=int, nargs="*", default=[32, 64, 128])
    parser.add_argument("--timing-subjects", type=int, default=6)
    parser.add_argument("--json", type=Path, help="write the results to this file")
    args = parser.parse_args()

    start = time.perf_counter()
    brain.load_template()
    prepared = time.perf_counter() - start
    brain._calibration()
    calibrated = time.perf_counter() - start - prepared
    print(f"template preparation {prepared:.2f} s, calibration {calibrated:.2f} s (once per process)")

    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(measure_row, range(args.n), [args.seed] * args.n, chunksize=8))
    measured = time.perf_counter() - start
    print(f"measured {args.n} subjects in {measured:.1f} s with {args.workers} workers")

    everyone = spearman_matrix(rows)
    with_lesions = spearman_matrix([row for row in rows if row["label"] == 1])
    print_matrix(f"\n|Spearman| over all {len(rows)} subjects", everyone)
    print_matrix(f"\n|Spearman| over the {sum(r['label'] for r in rows)} subjects with lesions", with_lesions)
    off = ~np.eye(len(ATTRIBUTES), dtype=bool)
    worst = float(max(everyone[off].max(), with_lesions[off].max()))
    print(f"largest off-diagonal |Spearman|: {worst:.3f} ({'PASS' if worst < 0.1 else 'FAIL'} < 0.1)")

    fit = fidelity(rows)
    print("\nattributes against what generated them")
    for name, stats in fit.items():
        print(f"  {name:<38} Spearman {stats['spearman']:.4f}  mean |error| {stats['mean_abs_error']:.3f}"
              f"  max |error| {stats['max_abs_error']:.3f}")

    print("\nmonotonicity (one factor swept, the others fixed)")
    sweeps = [sweep(name) for name in SWEEPS]
    for s in sweeps:
        print(f"  {s['factor']} → {s['attribute']}: {'monotonic' if s['monotonic'] else 'NOT MONOTONIC'}")
        print("    factor   " + " ".join(f"{v:8.3f}" for v in s["values"]))
        if s["applied"] != s["factor"]:
            print(f"    {s['applied'][:8]:<8} " + " ".join(f"{v:8.3f}" for v in s["applied_values"]))
        print("    measured " + " ".join(f"{v:8.3f}" for v in s["measured"]))

    times = timing(args.sizes, args.timing_subjects) if args.sizes else {}
    print("\nrender + measure + write, one core, per subject")
    for size, seconds in times.items():
        print(f"  {size:>4}³  {seconds:.3f} s")

    if args.json:
        write_json(args.json, {
            "n": args.n, "seed": args.seed, "attributes": ATTRIBUTES,
            "abs_spearman_all": everyone.tolist(), "abs_spearman_lesions": with_lesions.tolist(),
            "max_abs_spearman": worst, "fidelity": fit, "sweeps": sweeps,
            "seconds_per_subject": {str(k): v for k, v in times.items()},
            "template_preparation_s": prepared, "calibration_s": calibrated,
        })
    return 0 if worst < 0.1 and all(s["monotonic"] for s in sweeps) else 1


if __name__ == "__main__":
    sys.exit(main())
