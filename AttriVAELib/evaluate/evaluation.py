"""Evaluation of a trained run on held-out subjects: everything ``metrics.json`` holds.

* **Disentanglement** of μ against the regularized attributes (:mod:`AttriVAELib.evaluate.metrics`).
* **Classification**: accuracy, balanced accuracy and AUC over the whole split, each with a
  percentile-bootstrap 95% interval.
* **Reconstruction**: MSE and SSIM on the model grid; Dice of the segmented reconstruction
  against the subject's mask.
* **Traversal fidelity** (the exact version of Fader networks' evaluation classifier): decode a
  sweep of each regularized shape dim, segment, re-measure every shape attribute; Spearman ρ of
  the measured target attribute vs the latent value, and the largest |ρ| leaking into another,
  both over all traversed subjects' steps pooled (per-subject values are kept too), and the
  traversal's gain: the measured change across the sweep ÷ the attribute's 5–95 % spread.
* **Localization** of every explanation map on subjects with a lesion: the map's mass inside
  the lesion mask dilated by one voxel divided by the share a uniform map puts there, the
  pointing game (is the peak inside?) and the normalized cross-correlation with the mask.
* **Attribute attention** where the cohort saves where each attribute lives (the brain
  cohort's ``tissues/`` maps): the mass of each attribute's Grad-CAM inside its region
  divided by a uniform map's, over the whole image and over the brain (foreground) only.

Traversal fidelity and the Dice need to know how to segment and measure a decoded volume,
which depends on the cohort: the cohort registry (:func:`AttriVAELib.cohorts.cohort_kind`) maps
a cohort's generator (its ``cohort.json``) to a :class:`~AttriVAELib.cohorts.CohortKind`. A
user's own data without one gets every other number.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi
from scipy.stats import spearmanr

from AttriVAELib.cohorts.registry import CohortKind, Measure, Segment, cohort_kind, segment_foreground
from AttriVAELib.data.cohort_files import read_label_map
from AttriVAELib.core.errors import ConfigError, InputError
from AttriVAELib.data.io import Volume, read_image, read_mask
from AttriVAELib.data.manifest import SPLIT_FILE, Manifest, Record, load_manifest, load_split

__all__ = [
    "EvaluationSettings",
    "classification_scores",
    "decoded_attributes",
    "evaluate_run",
    "headline",
    "localization_scores",
    "map_localization",
    "reconstruction_scores",
    "attribute_map_variants",
    "region_attention",
    "traversal_fidelity",
]



# --------------------------------------------------------------------------- settings
@dataclass
class EvaluationSettings:
    """What to evaluate and how much of it (the defaults take about a minute at 32³ on 2 cores).

    Attributes:
        split: the split evaluated (``"test"``); a manifest without a saved split is evaluated whole.
        traversal_subjects: subjects (without a lesion) traversed per dim.
        traversal_steps: latent values per traversal, from the 5th to the 95th percentile of μ.
        localization_subjects: subjects with a lesion whose maps are localized.
        reconstruction_subjects: subjects reconstructed for MSE/SSIM/Dice (0 = all).
        bootstrap: resamples for the classification intervals.
        ig_steps: steps of the latent-path integrated gradients.
        seed: seed of the bootstrap and of the estimators.
        layer: Grad-CAM layer of the localization and attribute-attention maps (``"auto"``, ``"conv1"``…
            ``"conv5"``; see :mod:`AttriVAELib.explain.gradcam`): at 64³ the auto layer (conv4) is 4³, coarser
            than small structures such as the ventricles.
    """

    split: str = "test"
    traversal_subjects: int = 6
    traversal_steps: int = 9
    localization_subjects: int = 20
    reconstruction_subjects: int = 0
    bootstrap: int = 1000
    ig_steps: int = 16
    seed: int = 0
    layer: str = "auto"

    def __post_init__(self) -> None:
        for name in ("traversal_subjects", "localization_subjects", "reconstruction_subjects", "bootstrap"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be ≥ 0 (got {getattr(self, name)})")
        if self.traversal_steps < 3:
            raise ConfigError(f"traversal_steps must be ≥ 3 (got {self.traversal_steps})")
        if self.ig_steps < 1:
            raise ConfigError(f"ig_steps must be ≥ 1 (got {self.ig_steps})")


# --------------------------------------------------------------------------- classification
def _bootstrap_interval(values: np.ndarray) -> list[float]:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return [float("nan"), float("nan")]
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def classification_scores(labels: np.ndarray, probabilities: np.ndarray, n_boot: int = 1000,
                          seed: int = 0) -> dict[str, dict[str, Any]]:
    """Accuracy, balanced accuracy and AUC of class probabilities with bootstrap 95% intervals.

    Args:
        labels: (N,) class indices (−1 = unlabelled, ignored).
        probabilities: (N, C) class probabilities.

    Returns:
        ``{"accuracy": {"value", "ci95"}, "balanced_accuracy": …, "auc": …}``; the AUC is over
        the whole split (one-vs-rest macro average for C > 2).
    """
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    keep = labels >= 0
    y, p = labels[keep], probabilities[keep]
    if len(y) == 0:
        raise InputError("no labelled subjects to score the classifier on")

    def auc(yy: np.ndarray, pp: np.ndarray) -> float:
        if len(np.unique(yy)) < 2:
            return float("nan")
        return float(roc_auc_score(yy, pp[:, 1]) if pp.shape[1] == 2 else
                     roc_auc_score(yy, pp, multi_class="ovr", labels=np.arange(pp.shape[1])))

    def scores(yy: np.ndarray, pp: np.ndarray) -> tuple[float, float, float]:
        pred = pp.argmax(1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a resample holding one class
            bal = float(balanced_accuracy_score(yy, pred))
        return float((pred == yy).mean()), bal, auc(yy, pp)

    point = scores(y, p)
    rng = np.random.default_rng(seed)
    boots = np.array([scores(y[idx], p[idx]) for idx in rng.integers(0, len(y), (n_boot, len(y)))]).reshape(-1, 3)
    names = ("accuracy", "balanced_accuracy", "auc")
    out = {name: {"value": point[i], "ci95": _bootstrap_interval(boots[:, i])} for i, name in enumerate(names)}
    out["n"] = {"value": int(len(y))}
    return out


# --------------------------------------------------------------------------- reconstruction
def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


def reconstruction_scores(model, encodings: Sequence, masks: Sequence[Volume | None],
                          segment: Segment) -> dict[str, Any]:
    """MSE and SSIM of the reconstruction vs the model input (model grid); Dice of the segmented
    reconstruction vs the mask on the input image's grid (where the cohort's segmentation applies:
    the model cube may hold padding the image does not have).

    Args:
        encodings: :class:`~AttriVAELib.inference.model.Encoding` of each subject.
        masks: each subject's mask volume (None: no Dice for it).
    """
    from skimage.metrics import structural_similarity

    mse, ssim, dice = [], [], []
    for enc, mask in zip(encodings, masks):
        rec = np.clip(model.reconstruct(enc).astype(np.float64), 0, 1)
        img = enc.image.astype(np.float64)
        mse.append(float(np.mean((rec - img) ** 2)))
        ssim.append(float(structural_similarity(img, rec, data_range=1.0)))
        if mask is not None:
            on_input = model.to_input_grid(rec.astype(np.float32), enc).array
            dice.append(_dice(segment(on_input), mask.array > 0))

    def stats(v: list[float]) -> dict[str, float] | None:
        return None if not v else {"mean": float(np.mean(v)), "sd": float(np.std(v)), "n": len(v)}

    return {"mse": stats(mse), "ssim": stats(ssim), "dice": stats(dice)}


# --------------------------------------------------------------------------- traversal fidelity
def _rho(x: np.ndarray, y: Sequence[float]) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant measurement has no ρ: counted as 0
        r = spearmanr(x, y).statistic
    return float(r) if np.isfinite(r) else 0.0


def decoded_attributes(model, encodings: Sequence, measure: Measure, truth: Mapping[str, Sequence[float]]
                       ) -> dict[str, dict[str, Any]]:
    """How well each attribute survives encoding and decoding: Spearman ρ against the true
    values of the attribute re-measured on the input and on its reconstruction.

    A dim that tracks its attribute (latent ρ high) can still traverse badly when the decoder
    does not render the attribute; ``rho_reconstruction`` far below ``rho_input`` says so, and
    ``rho_input`` is the measure's own ceiling on these images.

    Args:
        encodings: the subjects (their model-grid input is ``enc.image``).
        measure: volume on the input grid → {attribute: value} or None (not measurable).
        truth: attribute name → true value per subject, aligned with ``encodings``.

    Returns:
        attribute → ``{"rho_input", "rho_reconstruction", "subjects_input",
        "subjects_reconstruction", "subjects"}``: ρ over the subjects where that image could be
        measured (None below 3 of them), for the attributes the measure returns.
    """
    pairs: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for i, enc in enumerate(encodings):
        images = {"input": enc.image, "reconstruction": model.reconstruct(enc)}
        for which, image in images.items():
            values = measure(model.to_input_grid(image, enc)) or {}
            for name in truth:
                if name in values:
                    t, m = pairs.setdefault(name, {}).setdefault(which, ([], []))
                    t.append(float(truth[name][i]))
                    m.append(values[name])

    def rho(which: str, row: dict) -> float | None:
        t, m = row.get(which, ([], []))
        return _rho(np.asarray(t), m) if len(t) >= 3 else None

    return {name: {"rho_input": rho("input", row), "rho_reconstruction": rho("reconstruction", row),
                   "subjects_input": len(row.get("input", ([],))[0]),
                   "subjects_reconstruction": len(row.get("reconstruction", ([],))[0]),
                   "subjects": len(encodings)}
            for name, row in pairs.items()}


def _fmt_rho(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def traversal_fidelity(model, encodings: Sequence, measure: Measure, ranges: Mapping[int, tuple[float, float]],
                       steps: int = 9, progress: Callable[[str], None] | None = None,
                       spreads: Mapping[str, float] | None = None) -> dict[str, dict[str, Any]]:
    """Spearman ρ of re-measured attributes vs the latent value along each traversal.

    The headline numbers pool every (subject, step) of a dim's traversals: ``rho`` is ρ of the
    measured target attribute vs the latent value and ``leakage`` is |ρ| of each other attribute
    vs the same value. Pooled, a perfectly disentangled decoder scores ρ = 1 (the target follows
    the dim whatever the subject) and leakage 0 (the other attributes keep each subject's own
    values); a side effect counts in proportion to the attributes' spread across subjects.
    Within one subject any monotone side effect, however small, has |ρ| = 1; those per-subject
    numbers are kept as ``rho_within_median``, ``rho_within_min`` and ``leakage_within``.

    How far a traversal moves its attribute tells a low pooled ρ of a decoder that renders too
    small a change (gain ≪ 1, each subject keeping its own offset) from one that renders the
    wrong thing: ``change_median`` is the median over subjects of the measured change across the
    sweep (least-squares slope × the swept range, in the attribute's units), and ``gain`` divides it
    by the attribute's spread among real subjects where ``spreads`` gives one.

    Args:
        encodings: the subjects to traverse.
        measure: volume on the input grid → {attribute: value} or None (step skipped).
        ranges: regularized dim → (low, high) latent values swept.
        spreads: attribute name → its spread among real subjects (e.g. the 5–95 % range of the
            true values over the range's subjects), for ``gain``.

    Returns:
        attribute name → ``{"rho", "leakage_max", "leakage_max_attribute", "leakage": {other: |ρ|},
        "rho_within_median", "rho_within_min", "leakage_within": {other: median |ρ|},
        "change_median", "spread", "gain", "subjects"}`` (``spread`` and ``gain`` None without
        ``spreads``); only attributes the measure returns.
    """
    names = model.attribute_names
    result: dict[str, dict[str, Any]] = {}
    for k, (lo, hi) in ranges.items():
        values = np.linspace(lo, hi, steps)
        within: list[float] = []
        changes: list[float] = []
        within_leaks: dict[str, list[float]] = {}
        pooled: dict[str, list[float]] = {}
        pooled_x: list[float] = []
        for enc in encodings:
            decoded = model.traverse(enc, k, values)
            rows = [measure(model.to_input_grid(v, enc)) for v in decoded]
            keep = [i for i, r in enumerate(rows) if r is not None and names[k] in r]
            if len(keep) < max(3, steps // 2):
                continue
            x = values[keep]
            others = [o for o in names if o != names[k] and all(o in rows[i] for i in keep)]
            target = [rows[i][names[k]] for i in keep]
            within.append(_rho(x, target))
            changes.append(float(np.polyfit(x, target, 1)[0]) * (hi - lo))
            for other in others:
                within_leaks.setdefault(other, []).append(abs(_rho(x, [rows[i][other] for i in keep])))
            pooled_x.extend(x.tolist())
            for name in (names[k], *others):
                pooled.setdefault(name, []).extend(rows[i][name] for i in keep)
        if progress:
            progress(f"traversal fidelity: {names[k]} on {len(within)} subjects")
        if not within:
            continue
        x_all = np.asarray(pooled_x)
        leaks = {o: abs(_rho(x_all, v)) for o, v in pooled.items() if o != names[k] and len(v) == len(x_all)}
        worst = max(leaks.items(), key=lambda kv: kv[1]) if leaks else (None, 0.0)
        change = float(np.median(changes))
        spread = (spreads or {}).get(names[k])
        gain = change / spread if spread else None
        result[names[k]] = {"rho": _rho(x_all, pooled[names[k]]), "leakage_max": worst[1],
                            "leakage_max_attribute": worst[0], "leakage": leaks,
                            "rho_within_median": float(np.median(within)), "rho_within_min": float(np.min(within)),
                            "leakage_within": {o: float(np.median(v)) for o, v in within_leaks.items()},
                            "change_median": change, "spread": None if spread is None else float(spread),
                            "gain": gain, "subjects": len(within)}
    return result


# --------------------------------------------------------------------------- localization
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


def localization_scores(model, encodings: Sequence, lesions: Sequence[np.ndarray], lesion_attribute: str | None,
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


def attribute_map_variants(model, encoding, layer: str = "auto") -> dict[str, dict[str, np.ndarray]]:
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


def region_attention(model, encodings: Sequence, regions: Sequence[Mapping[str, np.ndarray]],
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


# --------------------------------------------------------------------------- the whole evaluation
def _evaluation_records(model, data: str | os.PathLike | None, split: str) -> tuple[Manifest, list[Record], str]:
    source = data if data is not None else (model.meta.get("data") or {}).get("manifest")
    if source is None:
        raise ConfigError("the checkpoint does not name its training data; pass --data")
    manifest = load_manifest(source)
    missing = [n for n in model.attribute_names if n not in manifest.attribute_names]
    if missing:
        raise InputError(f"{manifest.path}: lacks the model's attribute columns {missing}")
    if not (manifest.root / SPLIT_FILE).exists():  # a held-out dataset of its own: evaluated whole
        return manifest, list(manifest.records), "all"
    splits = load_split(manifest, create=False)
    if split not in splits:
        raise ConfigError(f"unknown split {split!r}; choose from {', '.join(splits)}")
    return manifest, manifest.subset(splits[split]), split


def _lesion_attribute(names: Sequence[str]) -> str | None:
    return next((n for n in names if n.startswith("lesion")), None)


def evaluate_run(run: str | os.PathLike, data: str | os.PathLike | None = None,
                 settings: EvaluationSettings | None = None, device: str = "auto",
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Evaluate the best model of ``run`` on the held-out split of ``data`` (default: its training data).

    Returns the JSON-ready dictionary written to ``metrics.json`` by :func:`write_evaluation`.
    """
    from AttriVAELib.evaluate import metrics as M
    from AttriVAELib.explain.gradcam import resolve_layer
    from AttriVAELib.inference.model import AttriVAEModel
    from AttriVAELib.data.preprocessing import to_model_grid

    s = settings or EvaluationSettings()
    model = AttriVAEModel.load(run, device=device)
    layer, _ = resolve_layer(model.network, s.layer)  # a wrong layer fails before any work
    manifest, records, split = _evaluation_records(model, data, s.split)
    kind = cohort_kind(manifest)
    log(f"evaluating {run} on {len(records)} subjects ({split} split of {manifest.path}, cohort kind {kind.name})")
    encodings = model.encode_batch([r.image for r in records],
                                   [r.mask for r in records] if model.spec.needs_mask else None)
    mu = np.stack([e.mu for e in encodings]).astype(np.float64)
    k = model.num_regularized
    names = model.attribute_names
    # A model without regularized dims (VAE, β-VAE) is scored against the attributes it was trained beside.
    scored = names or [n for n in (model.meta.get("attributes") or {}).get("names") or []
                       if n in manifest.attribute_names]
    attributes = manifest.attribute_matrix(records)[:, [manifest.attribute_names.index(n) for n in scored]]
    labels = manifest.labels(records)
    result: dict[str, Any] = {
        "run": str(Path(run).resolve()), "data": str(manifest.path), "split": split, "n": len(records),
        "cohort_kind": kind.name, "attributes": scored, "regularized_dims": list(range(k)),
        "preset": model.meta.get("preset"), "gradcam_layer": layer,
    }
    if scored and len(records) >= 10 and len(scored) <= mu.shape[1]:
        result["disentanglement"] = M.summarize(mu, attributes, names=scored, intended=list(range(len(scored))),
                                                random_state=s.seed)
        result["latent_spearman"] = {n: _rho(mu[:, j], attributes[:, j]) for j, n in enumerate(scored)}
    if model.has_classifier and (labels >= 0).any():
        probs = np.stack([e.probabilities for e in encodings])
        result["classification"] = classification_scores(labels, probs, s.bootstrap, s.seed)
    chosen = encodings if s.reconstruction_subjects == 0 else encodings[:s.reconstruction_subjects]
    masks = [None if r.mask is None else read_mask(r.mask, reference=e.mapping.source)
             for r, e in zip(records, chosen)]
    result["reconstruction"] = reconstruction_scores(model, chosen, masks, kind.segment)
    log("reconstruction: MSE {mse[mean]:.4f}  SSIM {ssim[mean]:.3f}".format(**result["reconstruction"]))
    if kind.measure is not None and k:
        is_healthy = [r.lesion is None or r.label in (None, "0") for r in records]
        healthy = [e for e, ok in zip(encodings, is_healthy) if ok]
        truth = {n: attributes[np.asarray(is_healthy, bool), j] for j, n in enumerate(scored)}
        result["decoded_attributes"] = decoded_attributes(model, healthy, kind.measure, truth)
        log("attributes re-measured on input / reconstruction, ρ vs truth: " + ", ".join(
            f"{n} {_fmt_rho(v['rho_input'])} / {_fmt_rho(v['rho_reconstruction'])}"
            for n, v in result["decoded_attributes"].items()))
        probe = kind.measure(model.to_input_grid(model.reconstruct(healthy[0]), healthy[0])) if healthy else None
        measurable = [j for j in range(k) if probe is None or names[j] in probe]
        ranges = {j: tuple(np.percentile(mu[:, j], [5, 95])) for j in measurable}
        spreads = {names[j]: float(np.subtract(*np.percentile(attributes[:, j], [95, 5]))) for j in measurable}
        result["traversal_fidelity"] = traversal_fidelity(model, healthy[:s.traversal_subjects], kind.measure,
                                                          ranges, s.traversal_steps, progress=log, spreads=spreads)
    with_lesion = [(e, r) for e, r in zip(encodings, records)
                   if r.lesion is not None and r.label not in (None, "0")][:s.localization_subjects]
    if with_lesion:
        lesions = [to_model_grid(read_mask(r.lesion), e.mapping, "nearest") for e, r in with_lesion]
        result["localization"] = localization_scores(model, [e for e, _ in with_lesion], lesions,
                                                     _lesion_attribute(names), s.ig_steps, s.layer)
        log(f"localization on {len(with_lesion)} subjects with a lesion")
    tied = {n: kind.regions[n] for n in names if n in kind.regions}
    if tied:
        chosen = list(zip(encodings, records))[:s.localization_subjects]
        regions, foregrounds = [], []
        for e, r in chosen:
            labels_map = {folder: to_model_grid(read_label_map(manifest.root, folder, r.subject), e.mapping, "nearest")
                          for folder in {region.folder for region in tied.values()}}
            regions.append({n: np.isin(labels_map[reg.folder], reg.labels) for n, reg in tied.items()})
            foregrounds.append(next(iter(labels_map.values())) > 0)
        result["attribute_attention"] = region_attention(model, [e for e, _ in chosen], regions, foregrounds,
                                                         s.layer)
        log(f"attribute attention on {len(chosen)} subjects")
    result["settings"] = s.__dict__
    return result


def headline(result: Mapping[str, Any]) -> dict[str, float]:
    """The few numbers a table shows: interpretability, MIG, SAP, SCC, modularity, AUC, fidelity."""
    out: dict[str, float] = {}
    scores = (result.get("disentanglement") or {}).get("scores") or {}
    for key, source in (("interpretability", "interpretability"), ("mig", "mig_knn"), ("mig_binned", "mig_binned"),
                        ("sap", "sap"), ("scc", "scc"), ("modularity", "modularity_binned"),
                        ("dci_disentanglement", "dci_disentanglement"), ("dci_completeness", "dci_completeness"),
                        ("dci_informativeness", "dci_informativeness")):
        if source in scores:
            out[key] = float(scores[source])
    cls = result.get("classification")
    if cls:
        out["auc"] = cls["auc"]["value"]
        out["accuracy"] = cls["accuracy"]["value"]
    fid = result.get("traversal_fidelity") or {}
    if fid:
        out["fidelity_rho_min"] = min(v["rho"] for v in fid.values())
        out["fidelity_leakage_max"] = max(v["leakage_max"] for v in fid.values())
    rec = result.get("reconstruction") or {}
    if rec.get("ssim"):
        out["ssim"] = rec["ssim"]["mean"]
    if rec.get("dice"):
        out["dice"] = rec["dice"]["mean"]
    return out
