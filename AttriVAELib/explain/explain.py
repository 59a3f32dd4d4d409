"""The one explanation step of an encoded image: what ``attrivae explain``, the evaluation,
the report, the demo and the Slicer module all call.

For an :class:`~AttriVAELib.inference.Encoding` of one image (model grid N³):

- attribute-wise Grad-CAM: one map (N, N, N) per regularized latent dim, from one batched
  backward pass (:class:`~AttriVAELib.explain.gradcam.AttributeGradCAM`), normalized to its peak;
- classifier Grad-CAM of the predicted class; for a binary head the class-0 map is the
  negated class-1 map (class 0's log-odds are −s). Like captum and MONAI, the map is rectified
  at the layer's resolution and upsampled after;
- the counterfactual (the latent moved to the other class, decoded) and latent-path
  integrated gradients of the classifier between the counterfactual and the encoding;
- the read-back of the reconstruction and the counterfactual (:mod:`AttriVAELib.inference.readback`):
  what each decoded image shows when encoded again, with a note where it is not what its code says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

import numpy as np
import torch

from AttriVAELib.core.errors import InputError
from AttriVAELib.explain.counterfactual import Counterfactual
from AttriVAELib.explain.counterfactual import counterfactual as make_counterfactual
from AttriVAELib.explain.gradcam import gradcam_maps, normalize_maps, resolve_layer, upsample_maps
from AttriVAELib.explain.integrated_gradients import PathAttribution, latent_path_integrated_gradients

if TYPE_CHECKING:
    from AttriVAELib.inference.model import AttriVAEModel, Encoding
    from AttriVAELib.inference.readback import ReadBack

__all__ = ["Explanation", "empty_map_notes", "explain_encoding"]


@dataclass
class Explanation:
    """Explanations of one encoded image, on the model grid (N, N, N) each.

    Attributes:
        attribute_maps: name → Grad-CAM map of each regularized attribute (normalized to its peak).
        classifier_map: classifier Grad-CAM of the predicted class (normalized) or None.
        peaks: name → peak |value| of each raw Grad-CAM map before normalization.
        counterfactual: :class:`~AttriVAELib.explain.counterfactual.Counterfactual` or None.
        integrated_gradients: :class:`~AttriVAELib.explain.counterfactual.PathAttribution` or None.
        read_back: ``"reconstruction"`` (and ``"counterfactual"``) → what the decoded image shows.
        notes: what the user must know: the input's own notes, why a part was skipped, where a
            map is empty (``empty_maps``) and where a decoded image does not show what its code says.
        empty_maps: one line per rectified map that is zero everywhere (:func:`empty_map_notes`).
    """

    attribute_maps: dict[str, np.ndarray]
    classifier_map: np.ndarray | None
    peaks: dict[str, float]
    counterfactual: Counterfactual | None = None
    integrated_gradients: PathAttribution | None = None
    notes: list[str] = field(default_factory=list)
    read_back: dict[str, ReadBack] = field(default_factory=dict)
    empty_maps: list[str] = field(default_factory=list)


def empty_map_notes(model: AttriVAEModel, peaks: Mapping[str, float], layer: str = "auto") -> list[str]:
    """One line per rectified Grad-CAM map at ``layer`` that is zero everywhere (``peaks``: map name →
    its largest |value|, as :attr:`Explanation.peaks` holds them).

    Grad-CAM keeps the features that raise the target; where every feature at the layer lowers it,
    the rectified map is empty although the signed map is not, and an empty overlay must not pass
    for "nothing here matters".
    """
    used = resolve_layer(model.network, layer)[0].removeprefix("encoder.")
    return [f"the Grad-CAM map of {'the classifier' if name == 'classifier' else name} at layer {used} is empty: "
            "every feature there lowers it; the signed map shows where" for name, peak in peaks.items() if peak == 0.0]


def explain_encoding(model: AttriVAEModel, enc: Encoding, *, layer: str = "auto", relu: bool = True,
                     ig_steps: int = 64, counterfactual: bool = True, target_class: int | str | None = None,
                     method: str = "auto") -> Explanation:
    """Attribute-wise and classifier Grad-CAM, counterfactual and latent-path IG of one encoding.

    The Grad-CAM maps of all attributes (and the classifier's) come from one batched backward each.
    """
    x = torch.as_tensor(enc.image[None])
    maps: dict[str, np.ndarray] = {}
    peaks: dict[str, float] = {}
    if model.num_regularized:
        raw = gradcam_maps(model, x, "attributes", layer=layer, relu=relu)[0]  # (K, N, N, N)
        norm = normalize_maps(raw)
        for k, name in enumerate(model.attribute_names):
            maps[name] = norm[k].numpy()
            peaks[name] = float(raw[k].abs().max())
    cls_map = None
    notes: list[str] = list(enc.notes)
    cf = ig = None
    if model.has_classifier:
        # Map of the predicted class. A binary head has one logit s (class 1); class 0's
        # log-odds are −s, so its signed map is the negated one.
        coarse = gradcam_maps(model, x, "classifier", layer=layer, relu=False, upsample=False)[0]
        predicted = int(enc.predicted_class)
        coarse = (-coarse[0] if predicted == 0 else coarse[0]) if model.num_classes == 2 else coarse[predicted]
        if relu:
            coarse = torch.relu(coarse)
        raw = upsample_maps(coarse[None, None], enc.image.shape)[0, 0]
        cls_map = normalize_maps(raw).numpy()
        peaks["classifier"] = float(raw.abs().max())
        if counterfactual:
            try:
                cf = make_counterfactual(model, enc, target_class=target_class, method=method)
            except InputError as exc:
                notes.append(f"counterfactual skipped: {exc}")
            if cf is not None:
                ig = latent_path_integrated_gradients(model, cf.z_cf, cf.z, steps=ig_steps)
    else:
        notes.append("the model has no classifier: no classifier map, counterfactual or integrated gradients")
    empty = empty_map_notes(model, peaks, layer) if relu else []
    notes.extend(empty)
    reconstruction = cf.reconstruction if cf is not None else model.reconstruct(enc)  # decoded once
    read_back = {"reconstruction": model.read_back(reconstruction, enc.mu, "reconstruction")}
    if cf is not None:
        read_back["counterfactual"] = model.read_back(cf.counterfactual, cf.z_cf, "decoded counterfactual", cf.dims)
    for checked in read_back.values():
        notes.extend(checked.warnings)
    return Explanation(maps, cls_map, peaks, cf, ig, notes, read_back, empty)
