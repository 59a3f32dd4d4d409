"""What a trained model stores about its training split's latents, for use without the data.

- :class:`AttributeCalibration`: monotone map from a regularized latent value to its attribute
  in physical units. Fitted on the training split's μ with isotonic regression (direction
  chosen from the data), stored in the checkpoint as knots, evaluated by linear interpolation
  (clamped at the ends).
- :class:`ClassStatistics`: per-class means and standard deviations of μ (C, L), the targets
  of class-mean counterfactuals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from AttriVAELib.core.errors import ConfigError

__all__ = ["AttributeCalibration", "ClassStatistics"]


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
    """

    label_names: list[str]
    means: np.ndarray
    stds: np.ndarray
    counts: np.ndarray
    source: str = ""

    def effect_size(self, a: int, b: int) -> np.ndarray:
        """(L,) standardized mean difference (mean_b − mean_a) / pooled sd (Cohen's d)."""
        na, nb = float(self.counts[a]), float(self.counts[b])
        pooled = np.sqrt(((na - 1) * self.stds[a] ** 2 + (nb - 1) * self.stds[b] ** 2) / max(na + nb - 2, 1.0))
        return (self.means[b] - self.means[a]) / np.maximum(pooled, 1e-8)

    def to_dict(self) -> dict[str, Any]:
        return {"label_names": self.label_names, "means": self.means.tolist(), "stds": self.stds.tolist(),
                "counts": self.counts.tolist(), "source": self.source}

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
        return cls([str(n) for n in d["label_names"]], np.asarray(d["means"], dtype=np.float64),
                   np.asarray(d["stds"], dtype=np.float64), np.asarray(d["counts"], dtype=np.int64),
                   str(d.get("source", "")))
