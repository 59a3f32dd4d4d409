"""Quality of explanations of a trained model on held-out phantom subjects (not a test).

    python benchmarks/explanation_quality.py --model demo/run [--n 20] [--json FILE]

1. Localization: on test subjects with a lesion, the share of each map's mass inside the
   lesion mask dilated by one voxel, divided by the share a uniform map would put there
   (> 1: better than uniform), for the lesion-volume Grad-CAM, the classifier Grad-CAM and
   the counterfactual difference (|difference|).
2. Traversal fidelity: for each shape dim, decode a sweep over the 5th–95th percentile of
   the training μ, segment the decoded volume (3-class Otsu: background, wall, lumen), re-measure
   the shape attributes with physical spacing and report Spearman ρ of the measured target
   attribute vs the latent value (median over subjects without a lesion).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from scipy.stats import spearmanr


def localization(model, records, n: int) -> dict[str, list[float]]:
    from AttriVAELib.commands_explain import explain_encoding
    from AttriVAELib.io import read_mask
    from AttriVAELib.preprocessing import to_model_grid

    ratios: dict[str, list[float]] = {"lesion_gradcam": [], "classifier_gradcam": [], "counterfactual_difference": []}
    for rec in [r for r in records if r.label == "1"][:n]:
        enc = model.encode(rec.image)
        lesion = to_model_grid(read_mask(rec.lesion), enc.mapping, "nearest") > 0
        region = ndi.binary_dilation(lesion, iterations=1)
        ex = explain_encoding(model, enc, ig_steps=8)
        maps = {"lesion_gradcam": ex.attribute_maps.get("lesion_volume_ml"), "classifier_gradcam": ex.classifier_map,
                "counterfactual_difference": None if ex.counterfactual is None else np.abs(ex.counterfactual.difference)}
        uniform = region.mean()
        for key, m in maps.items():
            if m is not None and m.sum() > 0:
                ratios[key].append(float(m[region].sum() / m.sum() / uniform))
    return ratios


def measured_attributes(volume) -> dict[str, float] | None:
    from skimage.filters import threshold_multiotsu

    from AttriVAELib.attributes import shape_attributes

    a = volume.array
    t1, t2 = threshold_multiotsu(a, classes=3)
    body = ndi.binary_fill_holes(a > t1)
    labels, n = ndi.label(body)
    if n == 0:
        return None
    body = labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    wall = body & (a <= t2)
    try:
        return shape_attributes(wall, volume.geometry.spacing, shell=True)
    except Exception:  # no closed lumen in a decoded volume: skip the step
        return None


def traversal_fidelity(model, records, train_mu: np.ndarray, n: int, steps: int = 7) -> dict[str, dict]:
    names = model.attribute_names
    shape_dims = [k for k, name in enumerate(names) if not name.startswith("lesion")]
    result = {}
    for k in shape_dims:
        lo, hi = np.percentile(train_mu[:, k], [5, 95])
        values = np.linspace(lo, hi, steps)
        target, leaks = [], {other: [] for other in names if other != names[k] and not other.startswith("lesion")}
        for rec in [r for r in records if r.label == "0"][:n]:
            enc = model.encode(rec.image)
            decoded = model.traverse(enc, k, values)
            rows = [measured_attributes(model.to_input_grid(v, enc)) for v in decoded]
            keep = [i for i, r in enumerate(rows) if r is not None]
            if len(keep) < 4:
                continue
            target.append(spearmanr(values[keep], [rows[i][names[k]] for i in keep]).statistic)
            for other in leaks:
                leaks[other].append(abs(spearmanr(values[keep], [rows[i][other] for i in keep]).statistic))
        result[names[k]] = {"rho_median": float(np.nanmedian(target)), "rho_min": float(np.nanmin(target)),
                            "subjects": len(target),
                            "leak_median": {o: float(np.nanmedian(v)) for o, v in leaks.items()}}
    return result


def main() -> None:
    from AttriVAELib.inference import AttriVAEModel
    from AttriVAELib.manifest import load_manifest, load_split
    from AttriVAELib.train import _load_best, encode_split

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--n", type=int, default=20, help="subjects per measurement")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    model = AttriVAEModel.load(args.model, device="cpu")
    network, _, meta = _load_best(args.model)
    manifest = load_manifest(meta["data"]["manifest"], attributes=meta["attributes"]["names"])
    test = manifest.subset(load_split(manifest, create=False)["test"])
    train_mu = encode_split(network, meta, "train")["mu"]
    loc = localization(model, test, args.n)
    fid = traversal_fidelity(model, test, train_mu, max(3, args.n // 4))
    out = {"localization_ratio_vs_uniform": {k: {"median": float(np.median(v)), "mean": float(np.mean(v)),
                                                 "share_above_1": float(np.mean(np.asarray(v) > 1)), "n": len(v)}
                                             for k, v in loc.items() if v},
           "traversal_fidelity": fid}
    print("| map | mass in dilated lesion ÷ uniform (median) | mean | subjects > 1 | n |")
    print("|---|---|---|---|---|")
    for k, v in out["localization_ratio_vs_uniform"].items():
        print(f"| {k} | {v['median']:.2f} | {v['mean']:.2f} | {v['share_above_1']:.0%} | {v['n']} |")
    print()
    print("| traversed dim | Spearman ρ measured vs latent (median, min) | largest leak (median |ρ|) | subjects |")
    print("|---|---|---|---|")
    for k, v in fid.items():
        leak = max(v["leak_median"].items(), key=lambda kv: kv[1]) if v["leak_median"] else ("-", float("nan"))
        print(f"| {k} | {v['rho_median']:.2f}, {v['rho_min']:.2f} | {leak[0]} {leak[1]:.2f} | {v['subjects']} |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
