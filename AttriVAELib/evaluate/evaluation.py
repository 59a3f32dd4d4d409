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

The scores live in :mod:`.scores`, :mod:`.fidelity` and :mod:`.localization`; this module
runs them all on a run (:func:`evaluate_run`) and picks the headline numbers (:func:`headline`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from AttriVAELib.cohorts.registry import cohort_kind
from AttriVAELib.core.errors import ConfigError, InputError
from AttriVAELib.data.cohort_files import read_label_map
from AttriVAELib.data.io import read_mask
from AttriVAELib.data.manifest import Manifest, Record, find_split, load_manifest, load_split
from AttriVAELib.evaluate.fidelity import decoded_attributes, format_rho, spearman_rho, traversal_fidelity
from AttriVAELib.evaluate.localization import (attribute_map_variants, localization_scores, map_localization,
                                               region_attention)
from AttriVAELib.evaluate.scores import classification_scores, reconstruction_scores
from AttriVAELib.explain import COUNTERFACTUAL_METHODS

if TYPE_CHECKING:
    from AttriVAELib.inference.model import AttriVAEModel

__all__ = [
    "EvaluationSettings",
    "evaluation_records",
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
        counterfactual_subjects: labelled subjects whose decoded counterfactuals are judged
            (:mod:`AttriVAELib.evaluate.faithfulness`), split evenly between the classes. Each
            costs a decode and two classifications; with 20 per direction one subject moves a
            validity by 5 points, more than recipes differ by.
        judge_epochs: training epochs of each of the independent judge's networks (0: no judge).
            At 20 a single network erred on 1.3–2.7 % of the phantom cohort's real validation
            images, at 40 on 0–0.7 %.
        judge_members: networks in the judge, from seeds ``seed, seed+1, …``; its verdict is their
            mean probability (:mod:`AttriVAELib.evaluate.judge`).
        counterfactual_method: how those counterfactuals are made (``"auto"``, ``"exemplar"``,
            ``"class_mean"``, ``"flip"``; see :func:`~AttriVAELib.explain.counterfactual.counterfactual`).
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
    counterfactual_subjects: int = 200
    judge_epochs: int = 40
    judge_members: int = 3
    counterfactual_method: str = "auto"
    bootstrap: int = 1000
    ig_steps: int = 16
    seed: int = 0
    layer: str = "auto"

    def __post_init__(self) -> None:
        for name in ("traversal_subjects", "localization_subjects", "reconstruction_subjects", "counterfactual_subjects",
                     "judge_epochs", "bootstrap"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be ≥ 0 (got {getattr(self, name)})")
        if self.judge_members < 1:
            raise ConfigError(f"judge_members must be ≥ 1 (got {self.judge_members})")
        if self.traversal_steps < 3:
            raise ConfigError(f"traversal_steps must be ≥ 3 (got {self.traversal_steps})")
        if self.ig_steps < 1:
            raise ConfigError(f"ig_steps must be ≥ 1 (got {self.ig_steps})")
        if self.counterfactual_method not in COUNTERFACTUAL_METHODS:
            raise ConfigError(f"counterfactual_method must be one of {', '.join(COUNTERFACTUAL_METHODS)} "
                              f"(got {self.counterfactual_method!r})")


# --------------------------------------------------------------------------- the whole evaluation
def evaluation_records(model: AttriVAEModel, data: str | os.PathLike | None, split: str) -> tuple[Manifest, list[Record], str]:
    source = data if data is not None else (model.meta.get("data") or {}).get("manifest")
    if source is None:
        raise ConfigError("the checkpoint does not name its training data; pass --data")
    manifest = load_manifest(source)
    missing = [n for n in model.attribute_names if n not in manifest.attribute_names]
    if missing:
        raise InputError(f"{manifest.path}: lacks the model's attribute columns {missing}")
    if model.has_classifier and manifest.label_names:
        unknown = [n for n in manifest.label_names if n not in model.label_names]
        if unknown:
            raise InputError(f"{manifest.path}: labels {', '.join(map(repr, unknown))} are not classes of the model "
                             f"({model.num_classes} classes: {', '.join(model.label_names) or 'unnamed'})")
    if find_split(manifest) is None:  # a held-out dataset of its own: evaluated whole
        return manifest, list(manifest.records), "all"
    splits = load_split(manifest, create=False)
    if split not in splits:
        raise ConfigError(f"unknown split {split!r}; choose from {', '.join(splits)}")
    if not splits[split]:
        others = [name for name, subjects in splits.items() if subjects and name != split]
        raise ConfigError(f"the {split} split of {manifest.path} is empty; nothing to evaluate"
                          + (f" (try --split {others[-1]})" if others else ""))
    return manifest, manifest.subset(splits[split]), split


def _class_indices(model: AttriVAEModel, manifest: Manifest, records: Sequence[Record]) -> np.ndarray:
    """Each record's class index in the model's classes (−1 without a label)."""
    names = model.label_names
    if not names:
        return manifest.labels(records)
    return np.array([names.index(r.label) if r.label is not None and r.label in names else -1 for r in records],
                    dtype=np.int64)


def _lesion_attribute(names: Sequence[str]) -> str | None:
    return next((n for n in names if n.startswith("lesion")), None)


def evaluate_run(run: str | os.PathLike, data: str | os.PathLike | None = None,
                 settings: EvaluationSettings | None = None, device: str = "auto",
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Evaluate the best model of ``run`` on the held-out split of ``data`` (default: its training data).

    Returns the JSON-ready dictionary written to ``metrics.json`` by :func:`write_evaluation`.
    """
    from AttriVAELib.data.preprocessing import to_model_grid
    from AttriVAELib.evaluate import metrics as M
    from AttriVAELib.explain.gradcam import resolve_layer
    from AttriVAELib.inference.model import AttriVAEModel

    s = settings or EvaluationSettings()
    model = AttriVAEModel.load(run, device=device)
    layer, _ = resolve_layer(model.network, s.layer)  # a wrong layer fails before any work
    manifest, records, split = evaluation_records(model, data, s.split)
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
    labels = _class_indices(model, manifest, records) if model.has_classifier else manifest.labels(records)
    result: dict[str, Any] = {
        "run": str(Path(run).resolve()), "data": str(manifest.path), "split": split, "n": len(records),
        "cohort_kind": kind.name, "attributes": scored, "regularized_dims": list(range(k)),
        "preset": model.meta.get("preset"), "gradcam_layer": layer,
    }
    if scored and len(records) >= 10 and len(scored) <= mu.shape[1]:
        result["disentanglement"] = M.summarize(mu, attributes, names=scored, intended=list(range(len(scored))),
                                                random_state=s.seed)
        result["latent_spearman"] = {n: spearman_rho(mu[:, j], attributes[:, j]) for j, n in enumerate(scored)}
    if model.has_classifier and (labels >= 0).any():
        probs = np.stack([e.probabilities for e in encodings])
        result["classification"] = classification_scores(labels, probs, s.bootstrap, s.seed)
    chosen = encodings if s.reconstruction_subjects == 0 else encodings[:s.reconstruction_subjects]
    masks = [None if r.mask is None else read_mask(r.mask, reference=e.mapping.source)
             for r, e in zip(records, chosen)]
    result["reconstruction"] = reconstruction_scores(model, chosen, masks, kind.segment)
    log("reconstruction: MSE {mse[mean]:.4f}  SSIM {ssim[mean]:.3f}".format(**result["reconstruction"]))
    lesion_name = _lesion_attribute(names)
    # Subjects of class "0" have no lesion (their lesion files, where saved, are empty).
    lesions_all = [None if r.lesion is None or r.label in (None, "0")
                   else to_model_grid(read_mask(r.lesion, reference=e.mapping.source), e.mapping, "nearest")
                   for e, r in zip(encodings, records)]
    if model.has_classifier and (labels >= 0).any() and s.counterfactual_subjects:
        from AttriVAELib.evaluate.faithfulness import faithfulness_section, judge_for

        judge = judge_for(model, manifest, lambda rs: _class_indices(model, manifest, rs), epochs=s.judge_epochs,
                          members=s.judge_members, seed=s.seed, log=log) if s.judge_epochs else None
        lesion_dim = names.index(lesion_name) if lesion_name in names else None
        with_masks = lesion_name in manifest.attribute_names and any(m is not None for m in lesions_all)
        result["faithfulness"] = faithfulness_section(
            model, encodings, labels, lesions_all, judge, lesion_dim=lesion_dim,
            lesion_volumes=manifest.attribute_matrix(records)[:, manifest.attribute_names.index(lesion_name)]
            if with_masks else None,
            lesion_range=None if lesion_dim is None else tuple(np.percentile(mu[:, lesion_dim], [5, 95])),
            subjects=s.counterfactual_subjects, traversal_subjects=s.traversal_subjects,
            traversal_steps=s.traversal_steps, method=s.counterfactual_method, log=log)
    if kind.measure is not None and k:
        is_healthy = [r.lesion is None or r.label in (None, "0") for r in records]
        healthy = [e for e, ok in zip(encodings, is_healthy) if ok]
        truth = {n: attributes[np.asarray(is_healthy, bool), j] for j, n in enumerate(scored)}
        result["decoded_attributes"] = decoded_attributes(model, healthy, kind.measure, truth)
        log("attributes re-measured on input / reconstruction, ρ vs truth: " + ", ".join(
            f"{n} {format_rho(v['rho_input'])} / {format_rho(v['rho_reconstruction'])}"
            for n, v in result["decoded_attributes"].items()))
        probe = kind.measure(model.to_input_grid(model.reconstruct(healthy[0]), healthy[0])) if healthy else None
        measurable = [j for j in range(k) if probe is None or names[j] in probe]
        ranges = {j: tuple(np.percentile(mu[:, j], [5, 95])) for j in measurable}
        spreads = {names[j]: float(np.subtract(*np.percentile(attributes[:, j], [95, 5]))) for j in measurable}
        result["traversal_fidelity"] = traversal_fidelity(model, healthy[:s.traversal_subjects], kind.measure,
                                                          ranges, s.traversal_steps, progress=log, spreads=spreads)
    with_lesion = [(e, lesion) for e, lesion in zip(encodings, lesions_all) if lesion is not None]
    with_lesion = with_lesion[:s.localization_subjects]
    if with_lesion:
        result["localization"] = localization_scores(model, [e for e, _ in with_lesion], [m for _, m in with_lesion],
                                                     lesion_name, s.ig_steps, s.layer)
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
    faith = result.get("faithfulness") or {}
    for key, suffix in (("lesion_traversal", ""), ("lesion_traversal_with_lesion", "_with_lesion")):
        lesion = faith.get(key) or {}
        if lesion.get("rho") is not None:
            out[f"lesion_fidelity_rho{suffix}"] = lesion["rho"]
        if lesion.get("gain") is not None:
            out[f"lesion_gain{suffix}"] = lesion["gain"]
        if lesion.get("valid_judge") is not None:
            out[f"lesion_traversal_judge{suffix}"] = lesion["valid_judge"]
    rc = faith.get("reconstruction_class") or {}
    if rc.get("auc_reencoded") is not None:
        out["auc_reencoded"] = rc["auc_reencoded"]
    cf = [v for v in (faith.get("counterfactual") or {}).values() if "valid_judge" in v]
    if cf:
        out["cf_valid_judge_min"] = min(v["valid_judge"] for v in cf)
    masses = [v["lesion_mass_ratio_median"] for v in (faith.get("counterfactual") or {}).values()
              if "lesion_mass_ratio_median" in v]
    if masses:
        out["cf_lesion_mass_ratio"] = max(masses)
    rec = result.get("reconstruction") or {}
    if rec.get("ssim"):
        out["ssim"] = rec["ssim"]["mean"]
    if rec.get("dice"):
        out["dice"] = rec["dice"]["mean"]
    return out
