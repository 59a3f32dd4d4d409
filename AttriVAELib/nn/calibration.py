"""What a trained model stores about its training split's latents, for use without the data.

- :class:`AttributeCalibration`: monotone map from a regularized latent value to its attribute
  in physical units. Fitted on the training split's μ with isotonic regression (direction
  chosen from the data), stored in the checkpoint as knots, evaluated by linear interpolation
  (clamped at the ends).
- :class:`ClassStatistics`: per-class means and standard deviations of μ (C, L), the targets
  of class-mean counterfactuals, and exemplars: training subjects' μ whose decoded image the
  model reads back as their own class, the donors of exemplar counterfactuals.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np

from AttriVAELib.core.errors import CheckpointError, ConfigError

__all__ = ["EXEMPLARS_PER_CLASS", "MIN_READBACK", "AttributeCalibration", "ClassStatistics"]

#: Exemplars kept per class: those whose decoded image reads back most surely as their class.
EXEMPLARS_PER_CLASS = 128

#: An exemplar counterfactual takes its donor among the exemplars whose decoded image the model
#: reads back as their class with at least this probability (all of the class if none does).
MIN_READBACK = 0.99


@dataclass
class AttributeCalibration:
    """Per-attribute piecewise-linear monotone maps latent → attribute value."""

    names: list[str]
    knots_latent: list[np.ndarray]
    knots_value: list[np.ndarray]
    increasing: list[bool]

    @classmethod
    def fit(cls, latents: np.ndarray, values: np.ndarray, names: Sequence[str]) -> "AttributeCalibration":
        """``latents`` (N, K) μ of the regularized dims, ``values`` (N, K) attributes in their units."""
        from scipy.stats import spearmanr
        from sklearn.isotonic import IsotonicRegression

        latents = np.asarray(latents, dtype=np.float64)
        values = np.asarray(values, dtype=np.float64)
        xs, ys, inc = [], [], []
        for k in range(latents.shape[1]):
            x, y = latents[:, k], values[:, k]
            # Direction from the rank correlation; an untrained (constant) dim counts as increasing.
            rho = spearmanr(x, y).statistic if np.ptp(x) > 0 and np.ptp(y) > 0 else 1.0
            iso = IsotonicRegression(increasing=bool(rho >= 0), out_of_bounds="clip").fit(x, y)
            xs.append(np.asarray(iso.X_thresholds_, dtype=np.float64))
            ys.append(np.asarray(iso.y_thresholds_, dtype=np.float64))
            inc.append(bool(iso.increasing_))
        return cls(list(names), xs, ys, inc)

    def predict(self, latents: np.ndarray) -> np.ndarray:
        """(N, K) or (K,) latent values → attribute values in physical units."""
        z = np.asarray(latents, dtype=np.float64)
        single = z.ndim == 1
        z = np.atleast_2d(z)
        out = np.stack([np.interp(z[:, k], self.knots_latent[k], self.knots_value[k])
                        for k in range(len(self.names))], axis=1)
        return out[0] if single else out

    def latent_for(self, k: int, value: float) -> float:
        """A latent value whose calibrated attribute k is ``value`` (clamped to the fitted range).

        The calibration is a step-like monotone function; the inverse interpolates between
        the midpoints of its flat runs so that it is single-valued.
        """
        x, y = self.knots_latent[k], self.knots_value[k]
        uy, first = np.unique(y, return_index=True)
        mids = np.array([x[y == v].mean() for v in uy])
        if len(uy) == 1:
            return float(mids[0])
        return float(np.interp(value, uy, mids))

    def value_range(self, k: int) -> tuple[float, float]:
        return float(self.knots_value[k].min()), float(self.knots_value[k].max())

    def to_dict(self) -> dict:
        return {"method": "isotonic", "names": self.names,
                "knots_latent": [x.tolist() for x in self.knots_latent],
                "knots_value": [y.tolist() for y in self.knots_value], "increasing": self.increasing}

    @classmethod
    def from_dict(cls, d: dict) -> "AttributeCalibration":
        return cls(list(d["names"]), [np.asarray(x, dtype=np.float64) for x in d["knots_latent"]],
                   [np.asarray(y, dtype=np.float64) for y in d["knots_value"]], [bool(b) for b in d["increasing"]])


@dataclass
class ClassStatistics:
    """Per-class statistics of μ on the training split.

    Attributes:
        label_names: C class names.
        means: (C, L) class means of μ.
        stds: (C, L) class standard deviations of μ.
        counts: (C,) subjects per class.
        source: where they were computed (manifest and split).
        exemplars: (M, L) μ of training subjects (None: not stored), at most
            :data:`EXEMPLARS_PER_CLASS` per class.
        exemplar_labels: (M,) their class indices.
        exemplar_readback: (M,) p(own class) of each exemplar's reconstruction encoded again:
            how surely the decoder draws what makes the subject its class.
        exemplar_subjects: M subject IDs.
    """

    label_names: list[str]
    means: np.ndarray
    stds: np.ndarray
    counts: np.ndarray
    source: str = ""
    exemplars: np.ndarray | None = None
    exemplar_labels: np.ndarray | None = None
    exemplar_readback: np.ndarray | None = None
    exemplar_subjects: list[str] | None = None

    def effect_size(self, a: int, b: int) -> np.ndarray:
        """(L,) standardized mean difference (mean_b − mean_a) / pooled sd (Cohen's d)."""
        na, nb = float(self.counts[a]), float(self.counts[b])
        pooled = np.sqrt(((na - 1) * self.stds[a] ** 2 + (nb - 1) * self.stds[b] ** 2) / max(na + nb - 2, 1.0))
        return (self.means[b] - self.means[a]) / np.maximum(pooled, 1e-8)

    def spread_ratio(self, a: int, b: int) -> np.ndarray:
        """(L,) ratio of the larger to the smaller class standard deviation (≥ 1).

        A dim that varies in one class and hardly in the other (a lesion's position: spread among
        lesion subjects, fixed without a lesion) carries the class even when the means agree.
        """
        sa, sb = self.stds[a] + 1e-3, self.stds[b] + 1e-3
        return np.maximum(sa, sb) / np.minimum(sa, sb)

    def with_exemplars(self, mu: np.ndarray, labels: np.ndarray, readback: np.ndarray, subjects: Sequence[str],
                       per_class: int = EXEMPLARS_PER_CLASS) -> "ClassStatistics":
        """These statistics with exemplars: per class, the ``per_class`` subjects of μ (N, L)
        whose reconstruction is read back most surely as their class; ``readback`` (N, C): the
        class probabilities of each reconstruction encoded again; −1 labels are left out."""
        labels = np.asarray(labels)
        probs = np.asarray(readback, dtype=np.float64)
        readback = np.where(labels >= 0, probs[np.arange(len(labels)), np.clip(labels, 0, None)], -1.0)
        keep: list[int] = []
        for c in range(len(self.label_names)):
            members = np.flatnonzero(labels == c)
            keep += members[np.argsort(-readback[members], kind="stable")[:per_class]].tolist()
        keep.sort()
        return replace(self, exemplars=np.asarray(mu, dtype=np.float64)[keep],
                       exemplar_labels=labels[keep].astype(np.int64), exemplar_readback=readback[keep],
                       exemplar_subjects=[str(subjects[i]) for i in keep])

    def nearest_exemplar(self, z: np.ndarray, target: int, moved: Sequence[int],
                         min_readback: float = MIN_READBACK) -> int | None:
        """Index of the exemplar of class ``target`` closest to ``z`` (L,) in the dims not in
        ``moved``, among those read back as their class with p ≥ ``min_readback`` (all of the
        class if none is); None without exemplars of that class."""
        if self.exemplars is None or self.exemplar_labels is None:
            return None
        members = np.flatnonzero(self.exemplar_labels == target)
        if not len(members):
            return None
        sure = members[self.exemplar_readback[members] >= min_readback] if self.exemplar_readback is not None else []
        pool = sure if len(sure) else members
        kept = np.setdiff1d(np.arange(self.means.shape[1]), np.asarray(moved, dtype=np.int64))
        distance = ((self.exemplars[pool][:, kept] - np.asarray(z, dtype=np.float64)[kept]) ** 2).sum(1)
        return int(pool[int(np.argmin(distance))])

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label_names": self.label_names, "means": self.means.tolist(),
                               "stds": self.stds.tolist(), "counts": self.counts.tolist(), "source": self.source}
        if self.exemplars is not None:
            out["exemplars"] = {"mu": np.round(self.exemplars, 4).tolist(), "labels": self.exemplar_labels.tolist(),
                                "readback": np.round(self.exemplar_readback, 6).tolist(),
                                "subjects": list(self.exemplar_subjects or [])}
        return out

    @classmethod
    def from_latents(cls, mu: np.ndarray, labels: np.ndarray, label_names: Sequence[str],
                     source: str = "") -> "ClassStatistics":
        """Statistics of μ (N, L) per class (labels (N,) index ``label_names``; −1 is ignored).

        Raises:
            ConfigError: fewer than two classes, or a class without subjects.
        """
        names = [str(n) for n in label_names]
        c = len(names)
        if c < 2:
            raise ConfigError(f"{source or 'the data'}: fewer than two classes")
        means = np.zeros((c, mu.shape[1]))
        stds = np.zeros((c, mu.shape[1]))
        counts = np.zeros(c, dtype=np.int64)
        for i in range(c):
            sel = mu[labels == i]
            counts[i] = len(sel)
            if len(sel):
                means[i] = sel.mean(0)
                stds[i] = sel.std(0, ddof=1) if len(sel) > 1 else 0.0
        if (counts == 0).any():
            missing = [names[i] for i in np.flatnonzero(counts == 0)]
            raise ConfigError(f"{source or 'the data'}: no subjects of class(es) {missing}")
        return cls(names, means, stds, counts, source)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ClassStatistics":
        stats = cls([str(n) for n in d["label_names"]], np.asarray(d["means"], dtype=np.float64),
                    np.asarray(d["stds"], dtype=np.float64), np.asarray(d["counts"], dtype=np.int64),
                    str(d.get("source", "")))
        exemplars = d.get("exemplars")
        if isinstance(exemplars, Mapping) and exemplars.get("mu"):
            try:
                mu = np.asarray(exemplars["mu"], dtype=np.float64)
                labels = np.asarray(exemplars["labels"], dtype=np.int64)
                readback = np.asarray(exemplars["readback"], dtype=np.float64)
                subjects = [str(s) for s in exemplars.get("subjects") or []]
            except (KeyError, TypeError, ValueError) as exc:
                raise CheckpointError(f"the stored class exemplars are malformed ({exc})") from None
            m = len(mu)
            if (mu.shape != (m, stats.means.shape[1]) or labels.shape != (m,) or readback.shape != (m,)
                    or len(subjects) not in (0, m) or not np.isfinite(mu).all()
                    or ((labels < 0) | (labels >= len(stats.label_names))).any()):
                raise CheckpointError(f"the stored class exemplars are malformed: {m} codes do not match "
                                      f"{stats.means.shape[1]} latent dims, their labels, read-backs and subjects")
            stats.exemplars, stats.exemplar_labels, stats.exemplar_readback = mu, labels, readback
            stats.exemplar_subjects = subjects or [""] * m
        return stats
