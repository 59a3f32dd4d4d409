"""Does a brain run draw cortical thickness, or only please the measure it was trained against?

``loss.measured_gamma`` trains the decoder against the evaluation's thickness measure
(:mod:`AttriVAELib.cohorts.brain.measure`: partial-volume GM over the tissue area). This benchmark scores
the same run with four measures that the loss never saw: grey matter summed *linearly* from the
intensities over the brain's outer ``D`` mm (D = 10, 12) plus a 2-voxel rim outside it,

    GM ≈ (Σ r − c·n_brain − (1 − c)·n_wm) / (g − c),   r = I / white-matter level,

(``n_wm`` counts the voxels brighter than halfway from GM to WM), divided by the brain volume^⅔
or by the tissue area. A linear sum does not change under blur, so a blurred reconstruction
reads what it holds. For held-out subjects without lesions it prints Spearman ρ against the true
thickness of each measure on the inputs and on their reconstructions, and pooled over the
thickness dim's traversals (5–95 % of μ, 9 steps) with the traversal's gain (median change ÷ the
inputs' 5–95 % spread).

    PYTHONPATH=. python benchmarks/brain_independent_measures.py --run brain/run [--subjects 12]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from AttriVAELib.cohorts.brain.measure import (brain_mask, cohort_levels, tissue_fractions,  # noqa: E402
                                               white_matter_level)
from AttriVAELib.cohorts.registry import get_cohort  # noqa
from AttriVAELib.core.errors import AttriVAEError  # noqa: E402
from AttriVAELib.data.cohort_files import read_cohort_info  # noqa: E402
from AttriVAELib.data.io import Volume  # noqa: E402
from AttriVAELib.evaluate.evaluation import evaluation_records  # noqa: E402
from AttriVAELib.evaluate.fidelity import spearman_rho  # noqa: E402
from AttriVAELib.inference.model import AttriVAEModel  # noqa: E402

ATTRIBUTE = "cortical_thickness_mm"
DEPTHS_MM = (10.0, 12.0)


def linear_measures(volume: Volume, levels: tuple[float, float]) -> dict[str, float] | None:
    """``lin{D}/vol⅔`` and ``lin{D}/area`` of a skull-stripped T1, or None without a brain."""
    array = np.asarray(volume.array, np.float32)
    spacing = tuple(float(h) for h in volume.geometry.spacing[::-1])
    brain = brain_mask(array)
    if brain.sum() < 100:
        return None
    r = array / white_matter_level(array[brain])
    c, g = levels
    depth = ndi.distance_transform_edt(brain, sampling=spacing)
    rim = ndi.binary_dilation(brain, iterations=2) & ~brain
    voxel = float(np.prod(spacing))
    csf, _ = tissue_fractions(r, levels)
    tissue = np.where(brain, 1.0 - csf, 0.0)
    area = np.sqrt(sum((d / h) ** 2 for d, h in zip(np.gradient(tissue), spacing)))
    out = {}
    for d in DEPTHS_MM:
        shell = brain & (depth <= d)
        grey = (float(r[shell | rim].sum()) - c * float(shell.sum()) - (1 - c) * float((r[shell] > (g + 1) / 2).sum())) / (g - c)
        out[f"lin{d:g}/vol⅔"] = grey * voxel / (float(brain.sum()) * voxel) ** (2 / 3)
        out[f"lin{d:g}/area"] = grey * voxel / float(area[shell].sum())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="run folder trained on a synth-brain cohort")
    parser.add_argument("--subjects", type=int, default=12, help="subjects traversed")
    parser.add_argument("--reconstructed", type=int, default=40, help="subjects reconstructed")
    args = parser.parse_args()

    model = AttriVAEModel.load(args.run, device="cpu")
    manifest, records, _ = evaluation_records(model, None, "test")
    info = read_cohort_info(manifest.root)
    if get_cohort(info.get("generator")).name != "brain":
        parser.error(f"{args.run} was not trained on a synth-brain cohort")
    levels = cohort_levels(info)
    dim = model.dim_index(ATTRIBUTE)
    truth = manifest.attribute_matrix(records)[:, manifest.attribute_names.index(ATTRIBUTE)]
    encodings = model.encode_batch([r.image for r in records])
    mu = np.stack([e.mu for e in encodings])
    lo, hi = np.percentile(mu[:, dim], [5, 95])
    values = np.linspace(lo, hi, 9)
    healthy = [(e, t) for e, r, t in zip(encodings, records, truth) if r.label in (None, "0")]

    def measure(array, enc) -> dict[str, float]:
        return linear_measures(model.to_input_grid(array, enc), levels) or {}

    shown = healthy[:args.reconstructed]
    inputs = [measure(e.image, e) for e, _ in shown]
    recons = [measure(model.reconstruct(e), e) for e, _ in shown]
    t = [v for _, v in shown]
    names = list(inputs[0])
    xs: list[float] = []
    pooled: dict[str, list[float]] = {n: [] for n in names}
    changes: dict[str, list[float]] = {n: [] for n in names}
    for enc, _ in healthy[:args.subjects]:
        rows = [measure(v, enc) for v in model.traverse(enc, dim, values)]
        xs.extend(values)
        for n in names:
            y = [row[n] for row in rows]
            pooled[n].extend(y)
            changes[n].append(float(np.polyfit(values, y, 1)[0]) * (hi - lo))
    print(f"{ATTRIBUTE}: {len(shown)} held-out subjects reconstructed, {min(args.subjects, len(healthy))} traversed")
    print(f"{'measure':<12} {'ρ input':>8} {'ρ recon':>8} {'ρ traversal':>12} {'gain':>6}")
    for n in names:
        spread = float(np.subtract(*np.percentile([m[n] for m in inputs], [95, 5])))
        print(f"{n:<12} {spearman_rho(np.asarray(t), [m[n] for m in inputs]):>+8.2f} {spearman_rho(np.asarray(t), [m[n] for m in recons]):>+8.2f} "
              f"{spearman_rho(np.asarray(xs), pooled[n]):>+12.2f} {np.median(changes[n]) / spread:>6.2f}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AttriVAEError as err:  # a missing or wrong run: one line, as the CLI does
        sys.exit(f"brain_independent_measures: {err}")
