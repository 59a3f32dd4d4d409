"""The summary of a built cohort: attribute distributions, their Spearman matrix, what was left out.

Attribute-regularized latent dimensions can only be told apart when their attributes vary
independently: for each pair of attributes the Spearman rank correlation ρ over the subjects is
computed (``scipy.stats.spearmanr``), and pairs with ``|ρ| >`` :data:`CORRELATION_WARNING`
(0.7) are flagged as too correlated to disentangle (keep one of them, or accept that their
dimensions will share the information).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from AttriVAELib.data.manifest import attribute_unit

__all__ = ["CORRELATION_WARNING", "CohortSummary", "attribute_statistics", "correlated_pairs", "spearman_matrix"]

#: |ρ| above which two attributes are reported as too correlated to disentangle.
CORRELATION_WARNING = 0.7


def attribute_statistics(values: np.ndarray) -> dict[str, float]:
    """n, min, 5th percentile, median, mean, standard deviation, 95th percentile and max of one attribute."""
    v = np.asarray(values, dtype=np.float64)
    p5, median, p95 = np.percentile(v, [5, 50, 95])
    return {"n": int(v.size), "min": float(v.min()), "p5": float(p5), "median": float(median),
            "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0, "p95": float(p95),
            "max": float(v.max())}


def spearman_matrix(matrix: np.ndarray) -> np.ndarray:
    """(K, K) Spearman ρ between the columns of an (N, K) matrix; NaN where a column is constant."""
    from scipy.stats import spearmanr

    matrix = np.asarray(matrix, dtype=np.float64)
    k = matrix.shape[1]
    if k == 0 or matrix.shape[0] < 3:
        return np.full((k, k), np.nan)
    constant = np.ptp(matrix, axis=0) == 0
    rho = np.full((k, k), np.nan)
    varying = np.flatnonzero(~constant)
    if varying.size == 1:
        rho[varying[0], varying[0]] = 1.0
    elif varying.size > 1:
        result = np.atleast_2d(spearmanr(matrix[:, varying]).statistic)
        rho[np.ix_(varying, varying)] = result
    return rho


def correlated_pairs(names: Sequence[str], rho: np.ndarray,
                     threshold: float = CORRELATION_WARNING) -> list[tuple[str, str, float]]:
    """Pairs (a, b, ρ) with |ρ| > ``threshold``, strongest first."""
    pairs = [(names[i], names[j], float(rho[i, j])) for i in range(len(names)) for j in range(i + 1, len(names))
             if np.isfinite(rho[i, j]) and abs(rho[i, j]) > threshold]
    return sorted(pairs, key=lambda p: -abs(p[2]))


@dataclass
class CohortSummary:
    """What :func:`AttriVAELib.data.cohort_builder.build_cohort` made.

    Attributes:
        out: the cohort folder; ``manifest`` its manifest (None when stopped or nothing was usable).
        subjects: subjects in the manifest; ``groups``: patients they belong to.
        attributes: the attribute columns, in manifest order; ``metadata``: the ``meta_*`` columns.
        statistics: attribute → :func:`attribute_statistics`.
        spearman: the (K, K) Spearman matrix of the attributes, as nested lists (None for NaN).
        correlated: pairs (a, b, ρ) with |ρ| > :data:`CORRELATION_WARNING`.
        excluded: (subject, reason) of every pair left out, one line each.
        notes: other one-line findings (unpaired files, clinical rows without images, …).
        shells: labels measured as shells; ``crop_labels``: the crop mask's label values.
        measured / reused: subjects measured in this run / taken from the per-subject cache.
        stopped: the run was stopped (``should_stop``) before the manifest was written.
        recipe: the suggested training configuration file.
    """

    out: Path
    manifest: Path | None = None
    subjects: int = 0
    groups: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    attributes: list[str] = field(default_factory=list)
    metadata: list[str] = field(default_factory=list)
    statistics: dict[str, dict[str, float]] = field(default_factory=dict)
    spearman: list[list[float | None]] = field(default_factory=list)
    correlated: list[tuple[str, str, float]] = field(default_factory=list)
    excluded: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    shells: list[str] = field(default_factory=list)
    crop_labels: list[int] = field(default_factory=list)
    measured: int = 0
    reused: int = 0
    stopped: bool = False
    recipe: Path | None = None

    def set_attributes(self, names: Sequence[str], matrix: np.ndarray) -> None:
        """Fill :attr:`attributes`, :attr:`statistics`, :attr:`spearman` and :attr:`correlated` from (N, K) values."""
        self.attributes = list(names)
        self.statistics = {n: attribute_statistics(matrix[:, k]) for k, n in enumerate(names)}
        rho = spearman_matrix(matrix)
        self.spearman = [[None if not np.isfinite(v) else round(float(v), 4) for v in row] for row in rho]
        self.correlated = correlated_pairs(names, rho)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("out", "manifest", "recipe"):
            d[key] = None if d[key] is None else str(d[key])
        d["units"] = {n: attribute_unit(n) for n in self.attributes}
        d["correlation_threshold"] = CORRELATION_WARNING
        return d

    def warning_lines(self) -> list[str]:
        return [f"warning: {a} and {b} are too correlated to disentangle (Spearman ρ = {r:+.2f}, |ρ| > "
                f"{CORRELATION_WARNING:g}); keep one of them as an attribute" for a, b, r in self.correlated]

    def text(self) -> str:
        """The summary as printed: counts, distributions, the Spearman matrix, warnings, exclusions."""
        lines = []
        if self.stopped:
            lines.append(f"stopped: {self.measured} subject(s) measured and cached in {self.out}; run again to go on")
        elif self.manifest is not None:
            labels = ", ".join(f"{k}: {v}" for k, v in self.labels.items())
            lines.append(f"cohort {self.out}: {self.subjects} subjects ({self.groups} patients), "
                         f"{self.measured} measured, {self.reused} from the cache"
                         + (f"; labels {labels}" if labels else ""))
            lines.append(f"manifest: {self.manifest}")
            if self.shells:
                lines.append(f"shell labels (thickness, cavity volume): {', '.join(self.shells)}")
            if self.crop_labels:
                lines.append(f"crop mask (masks/): label values {', '.join(map(str, self.crop_labels))}")
        if self.attributes:
            width = max(24, *(len(n) + 2 for n in self.attributes))
            lines.append(f"{'attribute':<{width}}{'unit':>6}{'min':>11}{'median':>11}{'mean':>11}{'sd':>10}"
                         f"{'max':>11}")
            for name in self.attributes:
                s = self.statistics[name]
                lines.append(f"{name:<{width}}{attribute_unit(name) or '-':>6}{s['min']:11.4g}{s['median']:11.4g}"
                             f"{s['mean']:11.4g}{s['sd']:10.3g}{s['max']:11.4g}")
            lines.append("Spearman ρ between attributes:")
            short = [f"[{k}]" for k in range(len(self.attributes))]
            lines.append(" " * (width + 5) + "".join(f"{s:>7}" for s in short))
            for k, (name, row) in enumerate(zip(self.attributes, self.spearman)):
                cells = "".join(f"{'n/a':>7}" if v is None else f"{v:+7.2f}" for v in row)
                lines.append(f"{short[k]:>4} {name:<{width}}{cells}")
            lines.extend(self.warning_lines())
        lines.extend(self.notes)
        if self.excluded:
            lines.append(f"excluded {len(self.excluded)} subject(s):")
            lines.extend(f"  {subject}: {reason}" for subject, reason in self.excluded)
        if self.recipe is not None and self.manifest is not None:
            lines.append(f"train with: attrivae train --data {self.out} --config {self.recipe} --preset fast_cpu "
                         f"--out RUN")
        return "\n".join(lines)
