"""Attention maps, counterfactuals and latent traversals of the encoded image, as MRML nodes.

:class:`ExplanationsMixin` is part of :class:`~AttriVAELib.slicer.session.AttriVAESession`
(kept in its own module: the session holds the state, this is what it computes from it). It
uses the session's ``scene``, ``input_node``, ``latent``, ``heatmaps``, ``heatmap_signed``,
``last_counterfactual``, ``dim_name``/``dim_unit`` and its private ``_require_model``,
``_require_encoding``, ``_guard`` (the CUDA out-of-memory fallback), ``_decode`` and
``_class_statistics``.

* Attention: attribute-wise Grad-CAM (and the classifier's) of the encoded image, one node per
  map; ReLU maps in [0, 1] (Inferno), signed maps in [-1, 1] (ColdToHotRainbow at 0).
* Counterfactual: the encoding moved towards the other class (class means when the model
  stores class statistics, else the classifier-direction flip) or to one attribute value; the
  difference counterfactual − reconstruction is overlaid on the input.
* Traversal: one latent dim swept over a range into a sequence (at most
  :data:`MAX_TRAVERSAL_STEPS` decoded volumes on the input grid).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from AttriVAELib.core.errors import ConfigError
from AttriVAELib.slicer import mrml, outputs

__all__ = ["ExplanationsMixin", "MAX_TRAVERSAL_STEPS"]

#: Most volumes one traversal may decode (each is kept in the sequence on the input grid).
MAX_TRAVERSAL_STEPS = 64


class ExplanationsMixin:
    """What the session computes from the encoded image (see the module docstring)."""

    # ------------------------------------------------------------------ attention
    def attention(self, layer: str = "auto", relu: bool = True, *, colormap: str | None = None,
                  threshold: float = 0.2, opacity: float = 0.5, show: str | None = None) -> dict[str, Any]:
        """Attribute-wise (and classifier) Grad-CAM of the encoded image as heatmap nodes.

        One persistent node per attribute (``"AttriVAE attention: <name>"``) plus
        ``"classifier"`` when the model has one, on the input's grid. ReLU maps are in
        [0, 1] (colour table Inferno, window [0, 1], values below ``threshold`` transparent);
        signed maps (``relu=False``) are in [-1, 1] (ColdToHotRainbow centred at 0). The map
        ``show`` (default: the first) is put in the slice views' foreground at ``opacity``.

        Returns:
            name → heatmap node.
        """
        from AttriVAELib.explain.explain import explain_encoding

        model = self._require_model()
        enc = self._require_encoding()
        explanation = self._guard(
            "computing attention maps",
            lambda: explain_encoding(self.model, enc, layer=layer, relu=relu, counterfactual=False))
        maps = dict(explanation.attribute_maps)
        if explanation.classifier_map is not None:
            maps["classifier"] = explanation.classifier_map
        if not maps:
            raise ConfigError("this model has neither regularized attributes nor a classifier: nothing to explain")
        volumes = {name: model.to_input_grid(np.asarray(array, dtype=np.float32), enc) for name, array in maps.items()}
        self.heatmaps = {}  # none, should writing the nodes fail
        self._heatmap_signed = not relu
        self.heatmaps = outputs.show_heatmaps(self.scene, volumes, self.input_node, signed=not relu,
                                              colormap=colormap, threshold=threshold, opacity=opacity)
        self.show_heatmap(show or next(iter(self.heatmaps)), opacity=opacity)
        return dict(self.heatmaps)

    def show_heatmap(self, name: str, *, opacity: float | None = None, threshold: float | None = None,
                     colormap: str | None = None):
        """Show heatmap ``name`` over the input in the slice views; restyle it if asked; return its node."""
        if name not in self.heatmaps:
            known = ", ".join(self.heatmaps) or "none (compute the attention maps first)"
            raise ConfigError(f"no attention map named {name!r}; available: {known}")
        node = self.heatmaps[name]
        outputs.restyle_heatmap(self.scene, node, signed=self.heatmap_signed, colormap=colormap, threshold=threshold,
                                opacity=opacity)
        mrml.show_overlay(self.scene, background=self.input_node, foreground=node, opacity=opacity)
        return node

    # ------------------------------------------------------------------ counterfactual
    def counterfactual(self, mode: str | tuple = "other_class", *, method: str = "auto", opacity: float = 0.5):
        """A counterfactual of the encoded image and its signed difference to the reconstruction.

        Args:
            mode: ``"other_class"`` (move the class-relevant dims towards the other class) or
                ``("attribute", name, value)`` (set one attribute to ``value`` in its unit).
            method: for ``"other_class"``: ``"class_mean"``, ``"flip"`` or ``"auto"`` (the class
                mean when class statistics are stored with the model, else ``"flip"``, which
                needs no training data).

        Returns:
            The difference node (counterfactual − reconstruction, ColdToHotRainbow centred at
            0); :attr:`last_counterfactual` holds the summary (moved dims, probabilities).
        """
        from AttriVAELib.explain.counterfactual import counterfactual as make_counterfactual

        model = self._require_model()
        enc = self._require_encoding()
        if isinstance(mode, str) and mode == "other_class":
            stats = self._class_statistics() if method in ("auto", "class_mean") else None
            how = "flip" if method == "auto" and stats is None else method
            kwargs: dict[str, Any] = {"method": how, "stats": stats}
        elif isinstance(mode, (tuple, list)) and len(mode) == 3 and mode[0] == "attribute":
            _, name, value = mode
            if value is None or not math.isfinite(float(value)):
                raise ConfigError("the counterfactual attribute value must be a finite number")
            kwargs = {"values": {name: float(value)}, "units": "attribute"}
        else:
            raise ConfigError(f"counterfactual mode must be 'other_class' or ('attribute', name, value); got {mode!r}")
        result = self._guard("computing the counterfactual",
                             lambda: make_counterfactual(self.model, enc, **kwargs))
        counter = model.to_input_grid(result.counterfactual, enc, rescale=True)
        difference = model.to_input_grid(result.difference, enc, rescale=False)
        node = outputs.show_counterfactual(self.scene, counter, difference, self.input_node, opacity)
        self.last_counterfactual = result.summary(model)
        return node

    # ------------------------------------------------------------------ traversal
    def traversal(self, dim: int | str, lo: float, hi: float, steps: int, *, units: str = "latent"):
        """Decode the current latent with dim ``dim`` swept from ``lo`` to ``hi`` in ``steps`` steps.

        The volumes (on the input grid) go into the sequence ``"AttriVAE traversal"``, indexed by
        the requested values (named after the attribute, with its unit for
        ``units="attribute"``); calling again refills the same sequence. A sequence browser to play
        it is kept in :attr:`traversal_browser` (None where the Sequences classes are missing).

        Returns:
            The sequence node.
        """
        model = self._require_model()
        enc = self._require_encoding()
        steps = int(steps)
        if not 1 <= steps <= MAX_TRAVERSAL_STEPS:
            raise ConfigError(f"traversal steps must be between 1 and {MAX_TRAVERSAL_STEPS} (got {steps})")
        if not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
            raise ConfigError("traversal range values must be finite numbers")
        if steps > 1 and float(lo) == float(hi):
            raise ConfigError("the traversal range is empty (from = to); widen it or use one step")
        k = model.dim_index(dim)
        values = np.linspace(float(lo), float(hi), steps)
        z = model.traversal_latents(self.latent, k, values, units=units)
        frames = self._decode(z, preview=False)
        volumes = [model.to_input_grid(frames[s], enc, rescale=True) for s in range(steps)]
        unit = self.dim_unit(k) if units == "attribute" else "latent"
        sequence, self._traversal_browser = outputs.show_traversal(
            self.scene, volumes, values, attribute=self.dim_name(k), unit=unit, reference=self.input_node)
        return sequence
