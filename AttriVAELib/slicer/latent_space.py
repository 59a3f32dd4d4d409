"""What the latent dims mean on screen: names, units, slider ranges, labels and the encoding summary.

Pure functions of a loaded :class:`~AttriVAELib.inference.model.AttriVAEModel`, its
:class:`~AttriVAELib.inference.model.Encoding` and a latent vector: no MRML, no Qt. The K
regularized dims 0..K-1 stand for the model's attributes (a name and a physical unit; the
calibration maps a latent value to an attribute value); the free dims K..L-1 are called
``"dim d"`` and shown in latent units.

Slider range of dim d (latent units)::

    regularized, calibrated      [min, max] of the calibration knots (fitted on the training split's μ_d)
    class statistics stored      mean_d ± 3 SD_d, pooled over the classes c with counts n_c:
                                 mean = Σ n_c m_c / Σ n_c,  SD² = Σ n_c (s_c² + (m_c − mean)²) / Σ n_c
    otherwise                    ± 3 (the N(0, 1) prior)

then at least ± :data:`MIN_SLIDER_HALF_WIDTH` around the centre (a collapsed dim still gets a
usable slider), widened by :data:`SLIDER_MARGIN` of the span on both sides, and stretched to
include the encoded μ_d.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["MIN_SLIDER_HALF_WIDTH", "SLIDER_MARGIN", "dim_label", "dim_name", "dim_unit", "encoding_summary",
           "slider_ranges", "stored_class_statistics"]

#: Margin added on both sides of the training spread of a latent dim for its slider.
SLIDER_MARGIN = 0.1
#: Smallest half-width of a slider in latent units (a collapsed dim would otherwise have none).
MIN_SLIDER_HALF_WIDTH = 0.5


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def dim_name(model, dim: int) -> str:
    """The attribute name of a regularized dim, ``"dim d"`` for a free one."""
    return model.attribute_names[dim] if dim < model.num_regularized else f"dim {dim}"


def dim_unit(model, dim: int) -> str:
    """The attribute unit of a regularized dim, ``""`` for a free one."""
    return model.attribute_units[dim] if dim < model.num_regularized else ""


def dim_label(model, dim: int, value: float) -> str:
    """Slider label ``"name (unit): value"``: the calibrated attribute value of latent ``value``
    for a regularized dim (its latent value when there is no calibration), the latent value
    for a free dim."""
    name, unit = dim_name(model, dim), dim_unit(model, dim)
    if dim < model.num_regularized and model.calibration is not None:
        z = np.zeros(model.latent_size, dtype=np.float64)
        z[dim] = value
        estimate = float(model.predict_attributes(z)[dim])
        return f"{name} ({unit}): {_fmt(estimate)}" if unit else f"{name}: {_fmt(estimate)}"
    return f"{name} (latent): {value:+.3f}"


def stored_class_statistics(model):
    """Class statistics of the training split stored with the model, else None.

    From the checkpoint metadata or a ``class_statistics.json`` cache next to it written for
    these weights (same SHA-256), those holding exemplars first
    (:func:`AttriVAELib.explain.counterfactual.stored_class_statistics`). Never computes them:
    that would read the training set. Unreadable statistics count as none.
    """
    from AttriVAELib.core.errors import AttriVAEError
    from AttriVAELib.explain.counterfactual import stored_class_statistics as lookup

    try:
        return lookup(model) if model.has_classifier else None
    except (OSError, ValueError, KeyError, TypeError, AttriVAEError):
        return None


def slider_ranges(model, stats=None, mu: Sequence[float] | None = None) -> list[tuple[float, float]]:
    """(min, max) latent range per dim (see the module docstring).

    Args:
        stats: the training split's :class:`~AttriVAELib.nn.calibration.ClassStatistics`, if stored.
        mu: the encoded μ, always kept inside the range.
    """
    n = model.latent_size
    lo = np.full(n, -3.0)
    hi = np.full(n, 3.0)
    if stats is not None:
        weights = np.asarray(stats.counts, dtype=np.float64)[:, None]
        mean = (stats.means * weights).sum(0) / weights.sum()
        var = ((stats.stds ** 2 + (stats.means - mean) ** 2) * weights).sum(0) / weights.sum()
        sd = np.sqrt(np.maximum(var, 1e-12))
        lo, hi = mean - 3 * sd, mean + 3 * sd
    if model.calibration is not None:
        for k in range(model.num_regularized):
            knots = model.calibration.knots_latent[k]
            if len(knots) and np.ptp(knots) > 0:
                lo[k], hi[k] = float(np.min(knots)), float(np.max(knots))
    # A collapsed dim (μ nearly constant over the data) still gets a usable slider.
    centre = (lo + hi) / 2
    lo, hi = np.minimum(lo, centre - MIN_SLIDER_HALF_WIDTH), np.maximum(hi, centre + MIN_SLIDER_HALF_WIDTH)
    span = hi - lo
    lo, hi = lo - SLIDER_MARGIN * span, hi + SLIDER_MARGIN * span
    if mu is not None:
        mu = np.asarray(mu, dtype=np.float64)
        lo, hi = np.minimum(lo, mu), np.maximum(hi, mu)
    return [(float(a), float(b)) for a, b in zip(lo, hi)]


def encoding_summary(model, encoding, latent: np.ndarray, ranges: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """The encoding and the current latent vector, ready for display.

    Keys: ``model`` (description), ``probabilities`` ({label: p} or None),
    ``predicted_label``, ``attributes`` (one dict per regularized dim: ``name``,
    ``unit``, ``estimate`` of the encoded image, ``current`` estimate for the current
    latent, ``range`` of the calibration in physical units), ``dims`` (one dict per latent
    dim: ``dim``, ``name``, ``unit``, ``regularized``, ``mu``, ``value``, ``min``, ``max``,
    ``step``, ``label``), and with a classifier ``encoded_probabilities`` (of μ).
    """
    current = model.predict_attributes(latent)
    attributes = []
    for k, name in enumerate(model.attribute_names):
        value_range = model.calibration.value_range(k) if model.calibration is not None else None
        attributes.append({
            "dim": k, "name": name, "unit": model.attribute_units[k],
            "estimate": None if encoding.attributes is None else float(encoding.attributes[k]),
            "current": None if current is None else float(current[k]),
            "range": value_range,
        })
    dims = []
    for d in range(model.latent_size):
        lo, hi = ranges[d]
        dims.append({
            "dim": d, "name": dim_name(model, d), "unit": dim_unit(model, d), "regularized": d < model.num_regularized,
            "mu": float(encoding.mu[d]), "value": float(latent[d]), "min": lo, "max": hi,
            "step": (hi - lo) / 200.0, "label": dim_label(model, d, float(latent[d])),
        })
    out: dict[str, Any] = {"model": model.describe(), "attributes": attributes, "dims": dims,
                           "probabilities": None, "predicted_label": None}
    probs = model.class_probabilities(latent)
    if probs is not None:
        names = model.class_names
        out["probabilities"] = {str(n): float(p) for n, p in zip(names, probs)}
        out["predicted_label"] = str(names[int(np.argmax(probs))])
        out["encoded_probabilities"] = {str(n): float(p) for n, p in zip(names, encoding.probabilities)}
    return out
