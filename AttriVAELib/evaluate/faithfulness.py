"""Do the decoded images carry what the latent says? Class agreement, counterfactuals, the lesion dim.

* :func:`reconstruction_agreement`: the model's classifier on the re-encoded reconstruction
  ``cls(enc(dec(μ)))`` against the labels (AUC) and against its class on the input
  (agreement), and the independent judge (:mod:`.judge`) on the inputs and the reconstructions:
  AUC, and per class the share it assigns to that class (``judge_recall_*``).
* :func:`counterfactual_faithfulness`: for each subject the decoded counterfactual towards the
  other class (binary) or the runner-up, made as ``explain`` makes it (``method``: a donor
  exemplar where the model stores them), by direction ``"a→b"``:

  - ``valid_judge``: share the independent judge assigns to the target class, beside the
    share of this model's reconstructions of target-class subjects it assigns there
    (``judge_recall_reconstruction_target``): a decoded counterfactual is drawn by the same
    decoder, and that share says how often its drawings of real members of the class pass;
  - ``valid_encoder``: share the model's own encoder and classifier assign to it (it can be
    fooled; shown beside the judge so a gap is visible);
  - ``valid_measure`` (cohorts with lesion masks): towards a lesion class, share whose drawn
    lesion (:func:`drawn_lesion`, beyond the reconstruction) reaches ``τ``, half the 10th
    percentile of the true lesion volumes, with at least :data:`MIN_COMPACTNESS` of the added
    intensity in one lesion-sized ball (``drawn_compactness``); towards class 0, share whose
    contrast inside the subject's true lesion mask (mean minus the surrounding ring's) is below
    half the real one;
  - ``lesion_mass_ratio`` (subjects with a lesion mask): the |difference|'s mass inside the
    lesion mask dilated by one voxel ÷ the share a uniform map puts there;
  - ``proximity_l1``: Σ|cf − rec| outside the dilated lesion ÷ Σ|rec| there (normalized L1),
    so that "valid" cannot be bought by redrawing the whole image.
* :func:`lesion_traversal`: the lesion dim's traversal re-measured as drawn lesion volume.

A drawn lesion is read as intensity excess, ``V = Σ max(0, I − R − f)·dv / s``, over a reference
``R`` of the same subject (its reconstruction, or the traversal's first step) with the scale
``s`` (:func:`lesion_scale`) measured the same way on the real images: blur moves intensity but
keeps its sum, so a lesion drawn softly still counts; the floor ``f`` (:data:`EXCESS_FLOOR`)
keeps a faint brightening spread over the whole image from counting as a lesion, and only the
excess within a lesion-sized ball around its peak counts (:func:`lesion_radius`: twice the
radius of the median true lesion), so brightening a whole organ does not either.

Images are compared on the model grid (N³); lesion masks are given there too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
from scipy import ndimage as ndi

from AttriVAELib.data.attributes import sphere_radius_mm
from AttriVAELib.evaluate.localization import map_localization
from AttriVAELib.train.heldout import macro_auc

if TYPE_CHECKING:
    from AttriVAELib.evaluate.judge import Judge
    from AttriVAELib.inference.model import AttriVAEModel, Encoding

#: Brightening (model intensities, [0, 1]) below which a voxel does not count as lesion.
EXCESS_FLOOR = 0.1

#: Share of a counterfactual's added intensity that must lie in one lesion-sized ball for the
#: physical check to call it a lesion (a real lesion puts all of it there; a brightened ring
#: around the whole wall a small part).
MIN_COMPACTNESS = 0.5

__all__ = ["EXCESS_FLOOR", "MIN_COMPACTNESS", "counterfactual_faithfulness", "drawn_lesion", "faithfulness_section",
           "judge_for", "lesion_radius", "lesion_scale", "lesion_traversal", "reconstruction_agreement"]


def _auc(labels: np.ndarray, probs: np.ndarray) -> float | None:
    keep = labels >= 0
    if len(set(labels[keep].tolist())) < 2:
        return None
    return float(macro_auc(labels[keep], probs[keep]))


def reconstruction_agreement(model: AttriVAEModel, encodings: Sequence[Encoding], labels: np.ndarray,
                             judge: Judge | None = None, batch_size: int = 16) -> dict[str, Any]:
    """Class of the re-encoded reconstructions vs the labels and vs the inputs' class (see module doc)."""
    labels = np.asarray(labels)
    inputs = np.stack([e.probabilities for e in encodings])
    mu = np.stack([e.mu for e in encodings])
    recons = np.concatenate([model.decode(mu[i:i + batch_size]) for i in range(0, len(mu), batch_size)])
    again = np.concatenate([model.encode_arrays(recons[i:i + batch_size])["probabilities"]
                            for i in range(0, len(recons), batch_size)])
    out: dict[str, Any] = {
        "auc_input": _auc(labels, inputs), "auc_reencoded": _auc(labels, again),
        "agreement": float(np.mean(inputs.argmax(1) == again.argmax(1))),
        "subjects": len(encodings),
    }
    if judge is not None:
        real = judge.probabilities(np.stack([e.image for e in encodings]))
        drawn = judge.probabilities(recons)
        names = model.class_names
        out.update(judge_auc_input=_auc(labels, real), judge_auc_reconstruction=_auc(labels, drawn),
                   judge_agreement=float(np.mean(real.argmax(1) == drawn.argmax(1))),
                   judge_recall_input=_recall(labels, real, names),
                   judge_recall_reconstruction=_recall(labels, drawn, names))
    return out


def _recall(labels: np.ndarray, probs: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Per class, the share of its subjects that ``probs`` (N, C) assigns to it (classes present only)."""
    from sklearn.metrics import recall_score

    keep = labels >= 0
    present = sorted({int(c) for c in labels[keep]})
    shares = recall_score(labels[keep], probs[keep].argmax(1), labels=present, average=None, zero_division=0)
    return {names[c]: float(share) for c, share in zip(present, shares)}


def lesion_scale(encodings: Sequence[Encoding], lesions: Sequence[np.ndarray | None],
                 volumes: Sequence[float]) -> float | None:
    """Intensity excess per mL of lesion on real model-grid images (median over subjects with a lesion).

    ``Σ_{lesion dilated by one voxel} max(0, I − median of the ring around it − f) · dv / V`` with ``dv`` the
    model voxel's volume (mL) and ``V`` the subject's true lesion volume: blurring keeps this
    sum, so it reads a lesion drawn at any sharpness. None with fewer than 3 such subjects.
    """
    ratios = []
    for enc, lesion, volume in zip(encodings, lesions, volumes):
        if lesion is None or not np.asarray(lesion).any() or not volume > 0:
            continue
        region = ndi.binary_dilation(np.asarray(lesion) > 0, iterations=1)
        ring = ndi.binary_dilation(region, iterations=2) & ~region
        if not ring.any():
            continue
        excess = float(np.clip(enc.image[region] - np.median(enc.image[ring]) - EXCESS_FLOOR, 0, None).sum())
        excess *= _voxel_ml(enc)
        ratios.append(excess / float(volume))
    return float(np.median(ratios)) if len(ratios) >= 3 and np.median(ratios) > 0 else None


def _voxel_ml(enc: Encoding) -> float:
    return float(np.prod(enc.mapping.model.spacing)) / 1000.0


def lesion_radius(volumes: Sequence[float]) -> float | None:
    """Radius (mm) of the ball a drawn lesion is read in: twice that of a sphere of the median true
    lesion volume (None without lesions)."""
    positive = np.asarray(volumes, dtype=float)
    positive = positive[positive > 0]
    if not len(positive):
        return None
    return 2.0 * sphere_radius_mm(float(np.median(positive)))


def _excess(image: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``max(0, I − R − f)`` per voxel, (N, N, N)."""
    return np.clip(np.squeeze(np.asarray(image) - np.asarray(reference)) - EXCESS_FLOOR, 0, None)


def _near_peak(excess: np.ndarray, enc: Encoding, radius_mm: float | None) -> np.ndarray:
    """``excess`` kept within ``radius_mm`` of its peak (the maximum of its 3×3×3 mean); all of it
    without a radius or an excess."""
    if radius_mm is None or not excess.any():
        return excess
    peak = np.unravel_index(int(np.argmax(ndi.uniform_filter(excess, size=3))), excess.shape)
    spacing = float(enc.mapping.model.spacing[0])  # the model grid is isotropic
    offsets = np.indices(excess.shape) - np.reshape(peak, (-1, 1, 1, 1))
    return np.where((offsets ** 2).sum(axis=0) * spacing ** 2 <= radius_mm ** 2, excess, 0.0)


def _volume_ml(excess: np.ndarray, enc: Encoding, scale: float) -> float:
    return float(excess.sum()) * _voxel_ml(enc) / scale


def drawn_lesion(image: np.ndarray, reference: np.ndarray, enc: Encoding, scale: float,
                 radius_mm: float | None = None) -> float:
    """Lesion volume (mL) ``image`` draws beyond ``reference`` (same subject): ``Σ max(0, I − R − f)·dv / s``.

    With ``radius_mm`` only the excess within that distance of its peak counts: a lesion is
    local, and a brightening spread over the whole image is not one.
    """
    return _volume_ml(_near_peak(_excess(image, reference), enc, radius_mm), enc, scale)


def _drawn_and_compactness(image: np.ndarray, reference: np.ndarray, enc: Encoding, scale: float,
                          radius_mm: float | None) -> tuple[float, float]:
    """:func:`drawn_lesion` and its compactness: the share of all the added intensity it holds (0 without any)."""
    excess = _excess(image, reference)
    drawn = _volume_ml(_near_peak(excess, enc, radius_mm), enc, scale)
    everywhere = _volume_ml(excess, enc, scale)
    return drawn, drawn / everywhere if everywhere > 0 else 0.0


def _contrast(image: np.ndarray, lesion: np.ndarray) -> float:
    ring = ndi.binary_dilation(lesion, iterations=2) & ~lesion
    return float(image[lesion].mean() - image[ring].mean()) if ring.any() else float("nan")


def counterfactual_faithfulness(model: AttriVAEModel, encodings: Sequence[Encoding], labels: np.ndarray,
                                lesions: Sequence[np.ndarray | None], judge: Judge | None = None,
                                scale: float | None = None, threshold: float | None = None,
                                radius_mm: float | None = None, method: str = "auto") -> dict[str, dict[str, Any]]:
    """Validity, localization and proximity of decoded counterfactuals, per direction (see module doc).

    Args:
        encodings, labels: the subjects and their class indices (−1: unknown, skipped).
        lesions: each subject's lesion mask on the model grid, or None.
        judge: the independent classifier (None: no judge numbers).
        scale, threshold: :func:`lesion_scale` and ``τ`` (mL); both needed for ``valid_measure``.
        radius_mm: a drawn lesion is read within this distance of its peak (:func:`lesion_radius`).
        method: how the counterfactuals are made (:func:`~AttriVAELib.explain.counterfactual.counterfactual`).
    """
    from AttriVAELib.explain.counterfactual import class_statistics, counterfactual

    stats = class_statistics(model)
    rows: dict[str, list[dict[str, float]]] = {}
    member_votes: dict[str, list[list[bool]]] = {}  # per direction, per subject: each judge member's verdict
    methods: dict[str, set[str]] = {}
    names = model.class_names
    for enc, label, lesion in zip(encodings, labels, lesions):
        if label < 0:
            continue
        label = int(label)
        target = next(int(c) for c in np.argsort(-enc.probabilities) if int(c) != label)  # the likeliest other
        cf = counterfactual(model, enc, target_class=target, stats=stats, method=method)
        row: dict[str, float] = {}
        encoded = model.encode_arrays(cf.counterfactual[None])["probabilities"][0]
        row["valid_encoder"] = float(int(np.argmax(encoded)) == target)
        members = None if judge is None else judge.member_probabilities(cf.counterfactual[None])[:, 0]  # (M, C)
        if members is not None:
            row["valid_judge"] = float(int(np.argmax(members.mean(0))) == target)
        has_lesion = lesion is not None and np.asarray(lesion).any()
        if scale is not None and threshold is not None:
            if target != 0:  # a compact lesion must appear: drawn beyond the reconstruction
                row["drawn_lesion_ml"], row["drawn_compactness"] = _drawn_and_compactness(
                    cf.counterfactual, cf.reconstruction, enc, scale, radius_mm)
                row["valid_measure"] = float(row["drawn_lesion_ml"] >= threshold
                                             and row["drawn_compactness"] >= MIN_COMPACTNESS)
            elif has_lesion:  # the subject's lesion must go: its contrast below half the real one
                real = _contrast(enc.image, np.asarray(lesion) > 0)
                row["valid_measure"] = float(_contrast(cf.counterfactual, np.asarray(lesion) > 0) < 0.5 * real)
        region = None
        if has_lesion:
            region = ndi.binary_dilation(np.asarray(lesion) > 0, iterations=1)
            score = map_localization(np.abs(cf.difference), region)
            row["lesion_mass_ratio"] = 0.0 if score is None else score["mass_ratio"]
            row["lesion_contrast_input"] = _contrast(enc.image, np.asarray(lesion) > 0)
            row["lesion_contrast_reconstruction"] = _contrast(cf.reconstruction, np.asarray(lesion) > 0)
            row["lesion_contrast_counterfactual"] = _contrast(cf.counterfactual, np.asarray(lesion) > 0)
        outside = np.ones(cf.difference.shape, bool) if region is None else ~region
        row["proximity_l1"] = float(np.abs(cf.difference[outside]).sum() / max(np.abs(cf.reconstruction[outside]).sum(),
                                                                                1e-12))
        direction = f"{names[label]}→{names[target]}"
        rows.setdefault(direction, []).append(row)
        methods.setdefault(direction, set()).add(cf.method)
        if members is not None:
            member_votes.setdefault(direction, []).append([int(np.argmax(p)) == target for p in members])
    out: dict[str, dict[str, Any]] = {}
    for direction, values in rows.items():
        out[direction] = {**_summarize(values), "method": ", ".join(sorted(methods[direction]))}
        if direction in member_votes:  # each member's share alone, beside the ensemble's valid_judge
            out[direction]["valid_judge_members"] = np.mean(member_votes[direction], axis=0).tolist()
    return out


def lesion_traversal(model: AttriVAEModel, encodings: Sequence[Encoding], dim: int, value_range: tuple[float, float],
                     scale: float, spread: float | None, steps: int = 9, radius_mm: float | None = None,
                     judge: Judge | None = None, classes: tuple[int, int] | None = None) -> dict[str, Any]:
    """The lesion dim's traversal re-measured as drawn lesion volume (beyond its lowest step).

    Spearman ρ of drawn volume vs the latent value over every (subject, step) pooled, and the
    gain: the median over subjects of the drawn change across the sweep (least-squares slope ×
    range, mL) ÷ ``spread`` (the lesion volume's 5–95 % spread among real subjects). With
    ``radius_mm`` a step's drawn lesion is read near its peak (:func:`drawn_lesion`) and the top
    step's compactness (the share of its added intensity there) is reported. With a ``judge`` and
    ``classes`` (without, with a lesion) the share of subjects whose lowest step the judge assigns
    to the first class and whose top step it assigns to the second.
    """
    from AttriVAELib.evaluate.fidelity import spearman_rho

    values = np.linspace(value_range[0], value_range[1], steps)
    xs: list[float] = []
    drawn: list[float] = []
    changes: list[float] = []
    compact: list[float] = []
    judged: list[float] = []
    for enc in encodings:
        decoded = model.traverse(enc, dim, values)
        row = [drawn_lesion(v, decoded[0], enc, scale, radius_mm) for v in decoded[:-1]]
        top, compactness = _drawn_and_compactness(decoded[-1], decoded[0], enc, scale, radius_mm)
        row.append(top)
        compact.append(compactness)
        xs.extend(values.tolist())
        drawn.extend(row)
        slope = float(np.polyfit(values, row, 1)[0]) if np.ptp(row) > 0 else 0.0
        changes.append(slope * (values[-1] - values[0]))
        if judge is not None and classes is not None:
            ends = judge.probabilities(np.stack([decoded[0], decoded[-1]])).argmax(1)
            judged.append(float(int(ends[0]) == classes[0] and int(ends[1]) == classes[1]))
    if not encodings:
        return {}
    change = float(np.median(changes))
    return {"rho": spearman_rho(np.asarray(xs), drawn), "change_median_ml": change,
            "drawn_max_median_ml": float(np.median(np.asarray(drawn).reshape(len(encodings), steps)[:, -1])),
            "compactness_median": float(np.median(compact)) if radius_mm is not None else None,
            "valid_judge": float(np.mean(judged)) if judged else None,
            "spread_ml": spread, "gain": None if not spread else change / spread, "subjects": len(encodings)}


def _summarize(rows: list[dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {"subjects": len(rows)}
    for key in sorted({k for r in rows for k in r}):
        values = np.array([r[key] for r in rows if key in r and np.isfinite(r[key])])
        if not len(values):
            continue
        if key.startswith("valid_"):
            out[key] = float(values.mean())
        else:
            out[f"{key}_median"] = float(np.median(values))
    return out


def judge_for(model: AttriVAEModel, manifest: Any, class_index: Callable[[Sequence[Any]], np.ndarray], *,
              epochs: int = 40, members: int = 3, seed: int = 0,
              log: Callable[[str], None] | None = None) -> Judge | None:
    """The independent judge (``members`` networks) trained on the model-grid images of
    ``manifest``'s train split (None without one)."""
    from AttriVAELib.data.dataset import CohortDataset
    from AttriVAELib.data.manifest import find_split, load_split
    from AttriVAELib.evaluate.judge import train_judge

    if find_split(manifest) is None or not model.has_classifier:
        return None
    subjects = load_split(manifest, create=False).get("train") or []
    if len(subjects) < 10:
        return None
    dataset = CohortDataset(manifest, subjects, model.spec)
    labels = class_index(dataset.records)
    if len(set(labels[labels >= 0].tolist())) < 2:
        return None
    if log is not None:
        log(f"training the independent judge ({_judge_name(members)}) on {len(subjects)} real training images")
    return train_judge(dataset.images, labels, max(model.num_classes, 2), epochs=epochs, members=members, seed=seed,
                       log=log)


def _judge_name(members: int) -> str:
    """``"a plain 3D CNN"`` or ``"3 plain 3D CNNs"`` (the verdict is their mean)."""
    return "a plain 3D CNN" if members == 1 else f"{members} plain 3D CNNs"


def faithfulness_section(model: AttriVAEModel, encodings: Sequence[Encoding], labels: np.ndarray,
                         lesions: Sequence[np.ndarray | None], judge: Judge | None, *,
                         lesion_dim: int | None = None, lesion_volumes: np.ndarray | None = None,
                         lesion_range: tuple[float, float] | None = None, subjects: int = 40,
                         traversal_subjects: int = 6, traversal_steps: int = 9, method: str = "auto",
                         log: Callable[[str], None] = print) -> dict[str, Any]:
    """``metrics.json``'s ``faithfulness``: reconstruction class, counterfactuals, the lesion traversal.

    Counterfactuals are made for up to ``subjects`` labelled subjects, as many of each class as
    there are (the first ones in split order). The lesion measures need the lesion masks, the
    true lesion volumes and the lesion dim (``lesion_dim``, swept over ``lesion_range``);
    ``method`` is how the counterfactuals are made.
    """
    out: dict[str, Any] = {"judge": None if judge is None else
                           f"{_judge_name(len(judge.networks))} trained on the real training images"}
    out["reconstruction_class"] = rc = reconstruction_agreement(model, encodings, labels, judge)
    line = "class of re-encoded reconstructions: AUC {} (inputs {}), agreement {:.0%}".format(
        _fmt(rc["auc_reencoded"]), _fmt(rc["auc_input"]), rc["agreement"])
    if judge is not None:
        shares = ", ".join(f"{name} {_pct(share)} / {_pct(rc['judge_recall_reconstruction'].get(name))}"
                           for name, share in rc["judge_recall_input"].items())
        line += (f"; judge AUC on inputs {_fmt(rc['judge_auc_input'])} / reconstructions "
                 f"{_fmt(rc['judge_auc_reconstruction'])}, judged as their class on inputs / reconstructions: {shares}")
    log(line)
    scale = threshold = radius = None
    if lesion_volumes is not None:
        scale = lesion_scale(encodings, lesions, lesion_volumes)
        radius = lesion_radius(lesion_volumes)
        positive = np.asarray(lesion_volumes)[np.asarray(lesion_volumes) > 0]
        threshold = 0.5 * float(np.percentile(positive, 10)) if len(positive) >= 3 else None
        out.update(lesion_scale=scale, lesion_threshold_ml=threshold, lesion_radius_mm=radius)
    classes = sorted({int(c) for c in labels if c >= 0})
    per_class = max(1, subjects // max(len(classes), 1))
    chosen = [int(i) for c in classes for i in np.flatnonzero(labels == c)[:per_class]]
    out["counterfactual"] = counterfactual_faithfulness(
        model, [encodings[i] for i in chosen], labels[chosen], [lesions[i] for i in chosen], judge, scale, threshold,
        radius, method)
    for direction, v in out["counterfactual"].items():
        # How often this decoder's drawings of real members of the target class pass the judge.
        reference = (rc.get("judge_recall_reconstruction") or {}).get(direction.split("→")[1])
        if reference is not None:
            v["judge_recall_reconstruction_target"] = reference
        members = v.get("valid_judge_members") or []
        spread = f" (its {len(members)} members {_pct(min(members))}–{_pct(max(members))})" if len(members) > 1 else ""
        log(f"counterfactual {direction} ({v['method']}): valid for the judge {_pct(v.get('valid_judge'))}{spread}"
            + ("" if reference is None else f" (it assigns {_pct(reference)} of this model's reconstructions of "
               f"that class to it)")
            + f", for the model's "
            f"encoder {_pct(v.get('valid_encoder'))}, by the lesion measure {_pct(v.get('valid_measure'))}; "
            f"mass in lesion ÷ uniform {_fmt(v.get('lesion_mass_ratio_median'))}, "
            + ("" if "drawn_compactness_median" not in v else
               f"share of the added intensity in one lesion-sized ball {_fmt(v['drawn_compactness_median'])}, ")
            + f"L1 change outside {_fmt(v.get('proximity_l1_median'))} ({v['subjects']} subjects)")
    if scale is not None and lesion_dim is not None and lesion_range is not None and traversal_subjects:
        spread = float(np.subtract(*np.percentile(lesion_volumes, [95, 5])))
        volumes = np.asarray(lesion_volumes)
        lesion_classes = _lesion_classes(labels, volumes)
        for key, chosen, who in (("lesion_traversal", volumes == 0, "without a lesion"),
                                 ("lesion_traversal_with_lesion", volumes > 0, "with a lesion")):
            group = [encodings[i] for i in np.flatnonzero(chosen)[:traversal_subjects]]
            out[key] = lt = lesion_traversal(model, group, lesion_dim, lesion_range, scale, spread, traversal_steps,
                                             radius, judge, lesion_classes)
            if lt:
                log(f"lesion traversal of subjects {who}: drawn lesion volume ρ {lt['rho']:.2f}, gain "
                    f"{_fmt(lt['gain'])}, share of the top step's added intensity in one lesion-sized ball "
                    f"{_fmt(lt['compactness_median'])}, lowest and top steps judged as the classes without and with "
                    f"a lesion {_pct(lt['valid_judge'])} (largest drawn {lt['drawn_max_median_ml']:.2f} mL; "
                    f"{lt['subjects']} subjects)")
    return out


def _lesion_classes(labels: np.ndarray, volumes: np.ndarray) -> tuple[int, int] | None:
    """(the class of most subjects without a lesion, that of most with one), or None where they are one class."""
    labels = np.asarray(labels)
    picked = []
    for chosen in (volumes == 0, volumes > 0):
        known = labels[chosen & (labels >= 0)]
        if not len(known):
            return None
        picked.append(int(np.bincount(known.astype(int)).argmax()))
    return None if picked[0] == picked[1] else (picked[0], picked[1])


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"
