"""Where do the explanation maps look? Lesion localization and attribute attention.

* :func:`localization_scores`: on subjects with a lesion, a map's mass inside the lesion mask
  dilated by one voxel divided by the share a uniform map puts there, the pointing game (is the
  peak inside?) and the normalized cross-correlation with the mask.
* :func:`region_attention`: where the cohort saves where each attribute lives (the brain
  cohort's ``tissues/`` maps), the mass of each attribute's Grad-CAM inside its region divided
  by a uniform map's, over the whole image and over the foreground only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

if TYPE_CHECKING:
    from AttriVAELib.inference.model import AttriVAEModel, Encoding

__all__ = ["attribute_map_variants", "localization_scores", "map_localization", "region_attention"]


def map_localization(heatmap: np.ndarray, region: np.ndarray) -> dict[str, float] | None:
    """Mass ratio vs uniform, pointing game and NCC of a non-negative map against a region.

    Args:
        heatmap: (N, N, N) map, ≥ 0 (take |·| of signed maps first).
        region: (N, N, N) boolean region (e.g. the dilated lesion mask).

    Returns:
        ``{"mass_ratio", "pointing", "ncc"}`` or None when the map or the region is empty.
    """
    m = np.asarray(heatmap, np.float64)
    r = np.asarray(region, bool)
    total = m.sum()
    if total <= 0 or not r.any() or r.all():
        return None
    mass_ratio = float(m[r].sum() / total / r.mean())
    pointing = float(r.flat[int(np.argmax(m))])
    mz, rz = m - m.mean(), r - r.mean()
    denom = np.sqrt((mz ** 2).sum() * (rz ** 2).sum())
    ncc = float((mz * rz).sum() / denom) if denom > 0 else 0.0
    return {"mass_ratio": mass_ratio, "pointing": pointing, "ncc": ncc}


def localization_scores(model: AttriVAEModel, encodings: Sequence[Encoding], lesions: Sequence[np.ndarray], lesion_attribute: str | None,
                        ig_steps: int = 16, layer: str = "auto") -> dict[str, dict[str, Any]]:
    """Localization of each explanation map on subjects with a lesion (lesion masks on the model grid).

    Maps: the Grad-CAM of ``lesion_attribute``, the classifier Grad-CAM, the |counterfactual
    difference| and |latent-path integrated gradients| (when the model has a classifier).
    """
    from AttriVAELib.explain.explain import explain_encoding

    per_map: dict[str, list[dict[str, float]]] = {}
    for enc, lesion in zip(encodings, lesions):
        region = ndi.binary_dilation(lesion > 0, iterations=1)
        ex = explain_encoding(model, enc, layer=layer, ig_steps=ig_steps)
        maps = {
            "lesion_attribute_gradcam": ex.attribute_maps.get(lesion_attribute) if lesion_attribute else None,
            "classifier_gradcam": ex.classifier_map,
            "counterfactual_difference": None if ex.counterfactual is None else np.abs(ex.counterfactual.difference),
            "integrated_gradients": None if ex.integrated_gradients is None
            else np.abs(ex.integrated_gradients.attributions),
        }
        for key, m in maps.items():
            if m is None:
                continue
            score = map_localization(m, region)
            # An all-zero map points nowhere: it counts as a miss rather than being dropped.
            per_map.setdefault(key, []).append(score or {"mass_ratio": 0.0, "pointing": 0.0, "ncc": 0.0,
                                                         "empty": 1.0})
    out: dict[str, dict[str, Any]] = {}
    for key, rows in per_map.items():
        ratios = np.array([r["mass_ratio"] for r in rows])
        out[key] = {"mass_ratio_median": float(np.median(ratios)), "mass_ratio_mean": float(ratios.mean()),
                    "share_above_uniform": float((ratios > 1).mean()),
                    "pointing_game": float(np.mean([r["pointing"] for r in rows])),
                    "ncc_mean": float(np.mean([r["ncc"] for r in rows])), "subjects": len(rows),
                    "empty_maps": int(sum(r.get("empty", 0.0) for r in rows))}
    return out


def _region_ratios(m: np.ndarray, region: np.ndarray, foreground: np.ndarray) -> tuple[float, float, float, float]:
    """(ratio vs uniform, ratio vs uniform in the foreground, mass share, volume share); 0 for an empty map."""
    m = np.asarray(m, np.float64)
    total, inside_fg = m.sum(), m[foreground].sum()
    share = m[region].sum() / total if total > 0 else 0.0
    volume_share = float(region.mean())
    fg_share = m[region & foreground].sum() / inside_fg if inside_fg > 0 else 0.0
    fg_volume_share = (region & foreground).sum() / max(int(foreground.sum()), 1)
    return share / volume_share, fg_share / max(fg_volume_share, 1e-12), share, volume_share


def attribute_map_variants(model: AttriVAEModel, encoding: Encoding, layer: str = "auto") -> dict[str, dict[str, np.ndarray]]:
    """Each attribute's Grad-CAM at ``layer`` as ``"gradcam"`` (ReLU, as published) and ``"abs_signed_gradcam"``
    (|signed map|), both (N, N, N) on the model grid and unnormalized, from one backward pass."""
    import torch

    from AttriVAELib.explain.gradcam import gradcam_maps, upsample_maps

    raw = gradcam_maps(model, [encoding], "attributes", layer=layer, relu=False, upsample=False)  # (1, K, d, h, w)
    size = encoding.image.shape
    variants = {"gradcam": upsample_maps(torch.relu(raw), size)[0],
                "abs_signed_gradcam": upsample_maps(raw, size)[0].abs()}
    return {variant: {name: maps[k].numpy() for k, name in enumerate(model.attribute_names)}
            for variant, maps in variants.items()}


def region_attention(model: AttriVAEModel, encodings: Sequence[Encoding], regions: Sequence[Mapping[str, np.ndarray]],
                     foregrounds: Sequence[np.ndarray], layer: str = "auto") -> dict[str, dict[str, Any]]:
    """How much of each attribute's Grad-CAM falls where the attribute lives.

    Two maps per attribute: the usual Grad-CAM (ReLU: the evidence that raises the dim; it is
    empty when no feature does) and |signed Grad-CAM| (evidence either way).

    Args:
        encodings: the subjects.
        regions: per subject, attribute → boolean region on the model grid.
        foregrounds: per subject, the boolean foreground (e.g. brain) on the model grid.

    Returns:
        attribute → map (``"gradcam"``, ``"abs_signed_gradcam"``) → ``{"ratio_vs_uniform_median"``
        (mass share in the region / its volume share), ``"ratio_vs_uniform_in_foreground_median"``
        (the same within the foreground), ``"share_above_uniform"``, ``"mass_share_median"``,
        ``"region_share_median"``, ``"empty_maps"``, ``"subjects"}``.
    """
    rows: dict[tuple[str, str], list[tuple[float, ...]]] = {}
    for enc, subject_regions, foreground in zip(encodings, regions, foregrounds):
        for variant, maps in attribute_map_variants(model, enc, layer).items():
            for name, region in subject_regions.items():
                m = maps.get(name)
                if m is None or not region.any():
                    continue
                rows.setdefault((name, variant), []).append(
                    (*_region_ratios(m, region, foreground), float(not np.any(m > 0))))
    out: dict[str, dict[str, Any]] = {}
    for (name, variant), values in rows.items():
        v = np.array(values)
        out.setdefault(name, {})[variant] = {
            "ratio_vs_uniform_median": float(np.median(v[:, 0])),
            "ratio_vs_uniform_in_foreground_median": float(np.median(v[:, 1])),
            "share_above_uniform": float((v[:, 0] > 1).mean()),
            "mass_share_median": float(np.median(v[:, 2])),
            "region_share_median": float(np.median(v[:, 3])),
            "empty_maps": int(v[:, 4].sum()), "subjects": len(values)}
    return out
