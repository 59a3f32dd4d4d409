"""One image encoded by :meth:`~AttriVAELib.inference.AttriVAEModel.encode`, and the input types."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from AttriVAELib.data.io import Volume
from AttriVAELib.data.preprocessing import GridMapping

__all__ = ["Dim", "Encoding", "ImageLike"]

#: An image given as a :class:`Volume` or a path to a readable 3D image.
ImageLike = Union[Volume, str, os.PathLike]
#: A latent dimension given by index or by the name of its regularized attribute.
Dim = Union[int, str]


@dataclass
class Encoding:
    """One image encoded by :meth:`AttriVAEModel.encode`.

    Attributes:
        mu: (L,) float32 posterior mean; the deterministic latent code.
        logvar: (L,) float32 posterior log-variance.
        probabilities: (C,) class probabilities (C = 2 for a binary head) or None.
        attributes: (K,) estimates of the regularized attributes in their physical units
            (from the stored calibration) or None when the checkpoint has no calibration.
        mapping: model grid ↔ input grid (:func:`~AttriVAELib.data.preprocessing.to_source_grid`).
        image: (N, N, N) float32 model input in [0, 1] (the preprocessed image).
        mask: (N, N, N) uint8 mask on the model grid, or None.
        attribute_names, attribute_units, label_names: copied from the model, so that the
            encoding describes itself (:meth:`to_dict`).
        notes: one line per thing the user must know about this encoding (e.g. an input far
            outside the model's intensity window; :func:`~AttriVAELib.inference.readback.intensity_note`).
    """

    mu: np.ndarray
    logvar: np.ndarray
    probabilities: np.ndarray | None
    attributes: np.ndarray | None
    mapping: GridMapping
    image: np.ndarray
    mask: np.ndarray | None = None
    attribute_names: list[str] = field(default_factory=list)
    attribute_units: list[str] = field(default_factory=list)
    label_names: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def latent(self) -> np.ndarray:
        """(L,) the latent code used for decoding and explanations (= μ)."""
        return self.mu

    @property
    def predicted_class(self) -> int | None:
        return None if self.probabilities is None else int(np.argmax(self.probabilities))

    @property
    def predicted_label(self) -> str | None:
        k = self.predicted_class
        if k is None:
            return None
        return self.label_names[k] if k < len(self.label_names) else str(k)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: regularized μ, attribute estimates with units, class probabilities."""
        k = len(self.attribute_names)
        out: dict[str, Any] = {
            "latent_dim": int(self.mu.shape[0]),
            "regularized": [
                {"dim": i, "name": self.attribute_names[i], "unit": self.attribute_units[i],
                 "mu": float(self.mu[i]), "sigma": float(np.exp(0.5 * self.logvar[i])),
                 "estimate": None if self.attributes is None else float(self.attributes[i])}
                for i in range(k)
            ],
            "mu": [float(v) for v in self.mu],
            "logvar": [float(v) for v in self.logvar],
        }
        if self.probabilities is not None:
            names = self.label_names or [str(i) for i in range(len(self.probabilities))]
            out["probabilities"] = {str(n): float(p) for n, p in zip(names, self.probabilities)}
            out["predicted_label"] = self.predicted_label
        out["model_grid"] = {"size": self.mapping.model.size[0], "spacing_mm": self.mapping.spacing_mm}
        if self.notes:
            out["notes"] = list(self.notes)
        return out
