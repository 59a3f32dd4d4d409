"""Read a decoded image back: does it show what its latent code says?

A decoded image (a reconstruction, a traversal frame, a counterfactual) is drawn from a code
``z``; the classifier and the attribute calibration give the class and attributes of ``z``.
Encoding the decoded image again gives what the *image* shows to the same model::

    said  = cls(z),             attributes(z)
    shown = cls(enc(dec(z))),   attributes(enc(dec(z)))

When they disagree (another class, or an attribute more than :data:`ATTRIBUTE_TOLERANCE` of its
calibrated range away), the decoder does not render what the code says, and a user looking at
the image must be told: :class:`ReadBack` carries one line per disagreement.

:func:`intensity_note` warns, for models trained with a fixed intensity window, when an input's
intensities lie far outside it (the model then sees a nearly uniform image).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    from AttriVAELib.inference.encoding import Encoding
    from AttriVAELib.inference.model import AttriVAEModel

__all__ = ["ATTRIBUTE_TOLERANCE", "ReadBack", "donor_note", "frames_note", "intensity_note", "read_back"]

#: An attribute read back further than this share of its calibrated range from the code's value disagrees.
ATTRIBUTE_TOLERANCE = 0.25
#: An image lies below the window when its 99th percentile maps below this share of it, and above
#: it when most of its voxels map above 1 minus this share.
_WINDOW_EDGE = 0.05


@dataclass
class ReadBack:
    """What a decoded image shows (encoded again) beside what its code says.

    Attributes:
        probabilities, probabilities_code: (C,) class probabilities of the image and of the code (or None).
        attributes, attributes_code: (K,) calibrated attribute estimates of the image and of the code (or None).
        warnings: one line per disagreement (empty when the image shows what the code says).
    """

    probabilities: np.ndarray | None
    probabilities_code: np.ndarray | None
    attributes: np.ndarray | None
    attributes_code: np.ndarray | None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self, model: AttriVAEModel) -> dict[str, Any]:
        out: dict[str, Any] = {"warnings": list(self.warnings)}
        if self.probabilities is not None:
            out["probabilities_image"] = [float(p) for p in self.probabilities]
            out["probabilities_code"] = [float(p) for p in self.probabilities_code]
        if self.attributes is not None:
            out["attributes_image"] = {n: float(v) for n, v in zip(model.attribute_names, self.attributes)}
            out["attributes_code"] = {n: float(v) for n, v in zip(model.attribute_names, self.attributes_code)}
        return out


def _class_name(model: AttriVAEModel, k: int) -> str:
    names = model.label_names
    return names[k] if k < len(names) else str(k)


def read_back(model: AttriVAEModel, image: np.ndarray, z: np.ndarray, what: str = "decoded image",
              dims: Sequence[int] | None = None) -> ReadBack:
    """Encode ``image`` (N, N, N) again and compare its class and attributes with those of ``z`` (L,).

    ``dims``: the regularized dims whose attributes are checked (default all; e.g. only the dim a
    traversal moves). The class is always checked.
    """
    shown = model.encode_arrays(np.asarray(image, dtype=np.float32)[None])
    z = np.asarray(z, dtype=np.float32)[None]
    p_code = model.class_probabilities(z)
    a_code = model.predict_attributes(z)
    p_image = None if shown["probabilities"] is None else shown["probabilities"][0]
    a_image = None if shown["attributes"] is None else shown["attributes"][0]
    result = ReadBack(p_image, None if p_code is None else p_code[0], a_image, None if a_code is None else a_code[0])
    if p_image is not None and result.probabilities_code is not None:
        said, seen = int(np.argmax(result.probabilities_code)), int(np.argmax(p_image))
        if said != seen:
            result.warnings.append(
                f"the {what} shows class {_class_name(model, seen)} (p {p_image[seen]:.2f}) while its code says class "
                f"{_class_name(model, said)} (p {result.probabilities_code[said]:.2f}): this model does not render "
                "what tells the classes apart")
    if a_image is not None and result.attributes_code is not None and model.calibration is not None:
        for k, name in enumerate(model.attribute_names):
            if dims is not None and k not in dims:
                continue
            lo, hi = model.calibration.value_range(k)
            if hi > lo and abs(a_image[k] - result.attributes_code[k]) > ATTRIBUTE_TOLERANCE * (hi - lo):
                unit = model.attribute_units[k] if k < len(model.attribute_units) else ""
                result.warnings.append(
                    f"the {what} reads back {name} {a_image[k]:.3g} {unit} while its code says "
                    f"{result.attributes_code[k]:.3g} {unit}: this model does not draw that value".replace("  ", " "))
    return result


def frames_note(warnings: Sequence[Sequence[str]]) -> str | None:
    """One line for a traversal: how many frames (``warnings``: each frame's read-back warnings)
    do not show what their code says, with the first such warning; None when all do."""
    warned = [w for w in warnings if w]
    if not warned:
        return None
    return f"{len(warned)} of {len(warnings)} frames do not show what their code says, e.g. {warned[0][0]}"


def donor_note(donor: Mapping[str, Any]) -> str:
    """Where an exemplar counterfactual took its dims from (``donor``: its ``subject`` and
    ``readback``), and how surely the model reads the donor's own decoded image as its class."""
    return (f"taken from training subject {donor['subject']} (its decoded image read back as the target class, "
            f"p {donor['readback']:.2f})")


def intensity_note(model: AttriVAEModel, encoding: Encoding) -> str | None:
    """One line when the input lies far outside the model's fixed intensity window, else None."""
    window = model.spec.intensity_window
    if window is None:
        return None  # per-image percentiles adapt to any intensity range
    lo, hi = (float(v) for v in window)
    image = np.asarray(encoding.image)
    if np.percentile(image, 99) < _WINDOW_EDGE:
        side = "below"
    elif np.mean(image > 1 - _WINDOW_EDGE) > 0.5:
        side = "above"
    else:
        return None
    return (f"this image's intensities lie almost all {side} the window the model was trained on "
            f"({lo:g} to {hi:g}): the model sees a nearly uniform image, so its estimates and maps mean little; "
            "rescale the image to the units of the training images")
