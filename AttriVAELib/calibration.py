"""Monotone calibration from a regularized latent value to its attribute in physical units.

Fitted on the training split's μ with isotonic regression (direction chosen from the data),
stored in the checkpoint as knots, evaluated by linear interpolation (clamped at the ends).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


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
