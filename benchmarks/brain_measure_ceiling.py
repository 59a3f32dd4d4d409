"""How sharp a decoded brain must be for the re-measure to see each attribute.

Traversal fidelity and ``decoded_attributes`` (``attrivae evaluate``) re-measure a decoded
brain with :mod:`AttriVAELib.cohorts.brain.measure`. A decoder's output is smoother than its input,
so the measure's Spearman ρ against the generator's true values on *blurred* renderings is
the most a model can score at that blur, however well it has learned the attribute.

For each ``--sizes`` this renders ``--n`` subjects without lesions of a ``synth-brain``
cohort (seed ``--seed``; the subjects a cohort of that seed would hold) and prints ρ of the
re-measured cortical thickness and ventricle volume against the true values:

* on the rendered images blurred by a Gaussian of ``--blurs`` voxels (0 = as rendered);
* after the round trip into a model cube of the same size and back (the brain presets'
  preprocessing), with no model involved.

It also prints |ρ| of the thickness measure with the brain volume, which should be near 0
(the cohort's attributes are independent): where it is high, the measure reads head size
instead of thickness. The ventricle atlas is built from the same subjects' tissue maps.

    PYTHONPATH=. python benchmarks/brain_measure_ceiling.py [--sizes 64 96 128] [--n 60]
        [--blurs 0 0.5 1 1.5 2] [--workers 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from AttriVAELib.cohorts.brain import generator as brain  # noqa: E402
from AttriVAELib.cohorts.brain.measure import BrainMeasure, VentricleAtlas  # noqa: E402
from AttriVAELib.core.atomic import write_json  # noqa: E402
from AttriVAELib.core.errors import AttriVAEError  # noqa: E402
from AttriVAELib.data.io import Volume  # noqa: E402
from AttriVAELib.data.preprocessing import PreprocessSpec, preprocess, to_source_grid  # noqa: E402
from AttriVAELib.evaluate.fidelity import spearman_rho as rho  # noqa: E402  (Spearman ρ, 0 where a side is constant)

MEASURED = ("cortical_thickness_mm", "ventricle_volume_ml")


def healthy_indices(n: int, seed: int) -> list[int]:
    """The first ``n`` subject indices of a cohort of ``seed`` that have no lesion."""
    out, index = [], 0
    while len(out) < n:
        if brain.sample_factors(index, seed).label == 0:
            out.append(index)
        index += 1
    return out


def render(job: tuple[int, int, int]) -> tuple[dict, np.ndarray, np.ndarray]:
    index, size, seed = job
    row, image, _, _, extra = brain.render_subject(index, size, seed)
    return row, image.astype(np.float32), extra[brain.TISSUE_FOLDER]


def scores(values: list[dict | None], rows: list[dict]) -> dict[str, float]:
    keep = [i for i, v in enumerate(values) if v and all(np.isfinite(v.get(m, np.nan)) for m in MEASURED)]
    truth = {m: [rows[i][m] for i in keep] for m in (*MEASURED, "brain_volume_ml")}
    out = {m: rho([values[i][m] for i in keep], truth[m]) for m in MEASURED}
    out["thickness_vs_brain_volume"] = abs(rho([values[i]["cortical_thickness_mm"] for i in keep],
                                               truth["brain_volume_ml"]))
    out["measured"] = len(keep)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128])
    parser.add_argument("--n", type=int, default=60, help="subjects without lesions per size (default 60)")
    parser.add_argument("--blurs", type=float, nargs="+", default=[0.0, 0.5, 1.0, 1.5, 2.0],
                        help="Gaussian σ in voxels of each size's grid (default 0 0.5 1 1.5 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    if args.n < 5:
        parser.error("--n must be at least 5")
    if any(b < 0 for b in args.blurs):
        parser.error("--blurs must be ≥ 0")
    for size in args.sizes:
        if size % 16 or not brain.MIN_SIZE <= size <= brain.MAX_SIZE:
            parser.error(f"--sizes: {size} is not a multiple of 16 between {brain.MIN_SIZE} and {brain.MAX_SIZE}")

    indices = healthy_indices(args.n, args.seed)
    template = brain.load_template()
    levels = (template.csf_intensity, template.gm_intensity)
    label = brain.TISSUE_LABELS["ventricles"]
    results: dict[str, dict] = {}
    print(f"{args.n} subjects without lesions (seed {args.seed}); Spearman ρ vs the generator's values")
    print(f"{'size':>5} {'image':<22} {'thickness':>9} {'ventricles':>10} {'|ρ| thickness ~ brain volume':>29}")
    for size in args.sizes:
        start = time.perf_counter()
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            rendered = list(pool.map(render, [(i, size, args.seed) for i in indices]))
        rows = [r for r, _, _ in rendered]
        atlas = VentricleAtlas.from_label_maps((t > 0, t == label) for _, _, t in rendered)
        measure = BrainMeasure(levels, atlas)
        geometry = brain.geometry_for_size(size)
        variants: dict[str, list] = {}
        for blur in args.blurs:
            variants[f"blur {blur:g} voxels"] = [
                measure(Volume(ndi.gaussian_filter(image, blur) if blur > 0 else image, geometry))
                for _, image, _ in rendered]
        spec = PreprocessSpec(size=size)
        round_trip = []
        for _, image, _ in rendered:
            prepared = preprocess(Volume(image, geometry), spec)
            round_trip.append(measure(to_source_grid(prepared.image, prepared.mapping)))
        variants["model-grid round trip"] = round_trip
        results[str(size)] = {}
        for name, values in variants.items():
            s = scores(values, rows)
            results[str(size)][name] = s
            print(f"{size:>5} {name:<22} {s['cortical_thickness_mm']:>9.2f} {s['ventricle_volume_ml']:>10.2f} "
                  f"{s['thickness_vs_brain_volume']:>29.2f}")
        print(f"      ({time.perf_counter() - start:.0f} s; model voxel {max(brain.FOV_MM) / size:.2f} mm)")
    if args.json:
        write_json(args.json, {"n": args.n, "seed": args.seed, "results": results})
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AttriVAEError as err:
        sys.exit(f"brain_measure_ceiling: {err}")
