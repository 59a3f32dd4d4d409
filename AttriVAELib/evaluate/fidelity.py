"""Does the decoder draw what the latent says? Traversal fidelity and decoded attributes.

* :func:`traversal_fidelity` (the exact version of Fader networks' evaluation classifier):
  decode a sweep of each regularized shape dim, segment, re-measure every shape attribute;
  Spearman ρ of the measured target attribute vs the latent value, and the largest |ρ| leaking
  into another, both over all traversed subjects' steps pooled (per-subject values are kept
  too), and the gain: the measured change across the sweep ÷ the attribute's 5–95 % spread.
* :func:`decoded_attributes`: each attribute re-measured on the inputs and on their
  reconstructions (Spearman ρ vs the true values): the measure's ceiling vs what the decoder renders.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
from scipy.stats import spearmanr

from AttriVAELib.cohorts.registry import Measure

if TYPE_CHECKING:
    from AttriVAELib.inference.model import AttriVAEModel, Encoding

__all__ = ["decoded_attributes", "format_rho", "spearman_rho", "traversal_fidelity"]


def spearman_rho(x: np.ndarray, y: Sequence[float]) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant measurement has no ρ: counted as 0
        r = spearmanr(x, y).statistic
    return float(r) if np.isfinite(r) else 0.0


def decoded_attributes(model: AttriVAEModel, encodings: Sequence[Encoding], measure: Measure, truth: Mapping[str, Sequence[float]]
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
        return spearman_rho(np.asarray(t), m) if len(t) >= 3 else None

    return {name: {"rho_input": rho("input", row), "rho_reconstruction": rho("reconstruction", row),
                   "subjects_input": len(row.get("input", ([],))[0]),
                   "subjects_reconstruction": len(row.get("reconstruction", ([],))[0]),
                   "subjects": len(encodings)}
            for name, row in pairs.items()}


def format_rho(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def traversal_fidelity(model: AttriVAEModel, encodings: Sequence[Encoding], measure: Measure, ranges: Mapping[int, tuple[float, float]],
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
            within.append(spearman_rho(x, target))
            changes.append(float(np.polyfit(x, target, 1)[0]) * (hi - lo))
            for other in others:
                within_leaks.setdefault(other, []).append(abs(spearman_rho(x, [rows[i][other] for i in keep])))
            pooled_x.extend(x.tolist())
            for name in (names[k], *others):
                pooled.setdefault(name, []).extend(rows[i][name] for i in keep)
        if progress:
            progress(f"traversal fidelity: {names[k]} on {len(within)} subjects")
        if not within:
            continue
        x_all = np.asarray(pooled_x)
        leaks = {o: abs(spearman_rho(x_all, v)) for o, v in pooled.items() if o != names[k] and len(v) == len(x_all)}
        worst = max(leaks.items(), key=lambda kv: kv[1]) if leaks else (None, 0.0)
        change = float(np.median(changes))
        spread = (spreads or {}).get(names[k])
        gain = change / spread if spread else None
        result[names[k]] = {"rho": spearman_rho(x_all, pooled[names[k]]), "leakage_max": worst[1],
                            "leakage_max_attribute": worst[0], "leakage": leaks,
                            "rho_within_median": float(np.median(within)), "rho_within_min": float(np.min(within)),
                            "leakage_within": {o: float(np.median(v)) for o, v in within_leaks.items()},
                            "change_median": change, "spread": None if spread is None else float(spread),
                            "gain": gain, "subjects": len(within)}
    return result
