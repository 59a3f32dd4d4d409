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
  :data:`MAX_TRAVERSAL_STEPS` decoded volumes). The memory of the frames is estimated first;
  above ``memory_limit`` they go on a coarser grid (:func:`AttriVAELib.slicer.gridding.traversal_grid`)
  and the session says so in its messages.

Each has a ``*_task`` form (:class:`~AttriVAELib.slicer.tasks.Task`): the torch part and the
resampling onto the input grid run in a worker thread, the nodes are written on the main
thread one per step.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from AttriVAELib.core.errors import ConfigError
from AttriVAELib.inference.readback import frames_note
from AttriVAELib.slicer import gridding, mrml, outputs
from AttriVAELib.slicer.mrml import sequences
from AttriVAELib.slicer.tasks import Task

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
        return self.attention_task(layer, relu, colormap=colormap, threshold=threshold, opacity=opacity,
                                   show=show).run_here()

    def attention_task(self, layer: str = "auto", relu: bool = True, *, colormap: str | None = None,
                       threshold: float = 0.2, opacity: float = 0.5, show: str | None = None) -> Task:
        """:meth:`attention` as a task (Grad-CAM and resampling in the worker, one node per step after)."""
        from AttriVAELib.explain.explain import explain_encoding

        self._require_model()
        enc = self._require_encoding()
        input_node = self.input_node

        def work(task: Task):
            task.report(0.0, "Grad-CAM")
            outputs.prepare_colormaps()  # any import the colour tables need happens here, not on the main thread
            explanation = self._guard(
                "computing attention maps",
                lambda: explain_encoding(self.model, enc, layer=layer, relu=relu, counterfactual=False))
            maps = dict(explanation.attribute_maps)
            if explanation.classifier_map is not None:
                maps["classifier"] = explanation.classifier_map
            if not maps:
                raise ConfigError("this model has neither regularized attributes nor a classifier: nothing to explain")
            volumes = {}
            for i, (name, array) in enumerate(maps.items()):
                task.report(0.2 + 0.8 * i / len(maps), f"resampling the map of {name}")
                volumes[name] = outputs.prepare(gridding.to_input_grid(array, enc.mapping, check=task.check),
                                                task.check)
            return volumes, explanation.empty_maps

        def apply(result):
            volumes, empty = result
            self.messages.extend(empty)
            self.heatmaps = {}  # none, should writing the nodes fail
            self._heatmap_signed = not relu
            outputs.style_colormap(self.scene, signed=not relu, colormap=colormap)
            yield
            nodes = {}
            for name, volume in volumes.items():
                nodes.update(outputs.show_heatmaps(self.scene, {name: volume}, input_node, signed=not relu,
                                                   colormap=colormap, threshold=threshold, opacity=opacity))
                yield
            self.heatmaps = nodes
            self.show_heatmap(show or next(iter(self.heatmaps)), opacity=opacity)
            return dict(self.heatmaps)

        return Task("Attention maps", work, apply)

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
            method: for ``"other_class"``: ``"exemplar"``, ``"class_mean"``, ``"flip"`` or
                ``"auto"`` (a donor exemplar, else the class mean, when class statistics are
                stored with the model, else ``"flip"``, which needs no training data).

        Returns:
            The difference node (counterfactual − reconstruction, ColdToHotRainbow centred at
            0); :attr:`last_counterfactual` holds the summary (moved dims, probabilities).
        """
        return self.counterfactual_task(mode, method=method, opacity=opacity).run_here()

    def counterfactual_task(self, mode: str | tuple = "other_class", *, method: str = "auto",
                            opacity: float = 0.5) -> Task:
        """:meth:`counterfactual` as a task."""
        from AttriVAELib.explain.counterfactual import counterfactual as make_counterfactual

        self._require_model()
        enc = self._require_encoding()
        input_node = self.input_node
        if isinstance(mode, str) and mode == "other_class":
            stats = self._class_statistics() if method in ("auto", "exemplar", "class_mean") else None
            how = "flip" if method == "auto" and stats is None else method
            kwargs: dict[str, Any] = {"method": how, "stats": stats}
        elif isinstance(mode, (tuple, list)) and len(mode) == 3 and mode[0] == "attribute":
            _, name, value = mode
            if value is None or not math.isfinite(float(value)):
                raise ConfigError("the counterfactual attribute value must be a finite number")
            kwargs = {"values": {name: float(value)}, "units": "attribute"}
        else:
            raise ConfigError(f"counterfactual mode must be 'other_class' or ('attribute', name, value); got {mode!r}")

        def work(task: Task):
            task.report(0.0, "moving the encoding")
            result = self._guard("computing the counterfactual",
                                 lambda: make_counterfactual(self.model, enc, **kwargs))
            checked = self.model.read_back(result.counterfactual, result.z_cf, "decoded counterfactual", result.dims)
            task.report(0.3, "resampling the counterfactual")
            counter = gridding.to_input_grid(result.counterfactual, enc.mapping, rescale=True, check=task.check)
            task.report(0.65, "resampling the difference")
            difference = gridding.to_input_grid(result.difference, enc.mapping, check=task.check)
            return result, checked, outputs.prepare(counter, task.check), outputs.prepare(difference, task.check)

        def apply(computed):
            result, checked, counter, difference = computed
            self.messages.extend(checked.warnings)
            outputs.write_counterfactual(self.scene, counter, input_node)
            yield
            node = outputs.show_difference(self.scene, difference, input_node, opacity)
            self.last_counterfactual = {**result.summary(self.model), "read_back": checked.to_dict(self.model)}
            return node

        return Task("Counterfactual", work, apply)

    # ------------------------------------------------------------------ traversal
    def traversal(self, dim: int | str, lo: float, hi: float, steps: int, *, units: str = "latent",
                  memory_limit: int = gridding.DEFAULT_TRAVERSAL_MEMORY):
        """Decode the current latent with dim ``dim`` swept from ``lo`` to ``hi`` in ``steps`` steps.

        The volumes go into the sequence ``"AttriVAE traversal"``, indexed by the requested
        values (named after the attribute, with its unit for ``units="attribute"``); calling
        again refills the same sequence. They are on the input grid when ``steps`` frames fit
        in ``memory_limit`` bytes, else on a coarser grid over the same extent (a message says
        so). A sequence browser to play it is kept in :attr:`traversal_browser` (None where
        the Sequences classes are missing).

        Returns:
            The sequence node.
        """
        return self.traversal_task(dim, lo, hi, steps, units=units, memory_limit=memory_limit).run_here()

    def traversal_task(self, dim: int | str, lo: float, hi: float, steps: int, *, units: str = "latent",
                       memory_limit: int = gridding.DEFAULT_TRAVERSAL_MEMORY) -> Task:
        """:meth:`traversal` as a task: frames decoded and resampled in the worker, one sequence item per step."""
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
        plan = gridding.traversal_grid(enc.mapping.source, steps, int(memory_limit))
        name, unit = self.dim_name(k), (self.dim_unit(k) if units == "attribute" else "latent")
        input_node = self.input_node
        sequence_name = outputs.NODE_NAMES["traversal"]

        def work(task: Task):
            task.report(0.0, "decoding the frames")
            frames = self._decode(z, preview=False)
            note = frames_note([self.model.read_back(frames[s], z[s], f"frame {s + 1} of the {name} traversal",
                                                     [k]).warnings for s in range(steps)])
            volumes = []
            for s in range(steps):
                task.report(0.1 + 0.9 * s / steps, f"resampling frame {s + 1} of {steps}")
                volumes.append(gridding.to_input_grid(frames[s], enc.mapping, rescale=True, target=plan.geometry,
                                                      check=task.check))
            return volumes, note

        def apply(computed):
            volumes, note = computed
            self.messages.extend(n for n in (plan.note, note) if n)
            sequence = sequences.begin_traversal(self.scene, values, sequence_name, attribute=name, unit=unit)
            for s, value in enumerate(values):
                sequences.add_traversal_item(sequence, volumes[s], float(value), sequence_name)
                volumes[s] = None  # the sequence holds its own copy
                yield
            self._traversal_browser = sequences.finish_traversal(self.scene, sequence, sequence_name,
                                                                 reference=input_node, window=outputs.input_window(input_node))
            return sequence

        return Task("Traversal", work, apply)

    # ------------------------------------------------------------------ outputs for other front ends (web viewer)
    def output_node(self, role: str):
        """The persistent output node of ``role`` (``"reconstruction"``, ``"counterfactual"``, ``"difference"``).

        None when the scene has none yet (e.g. before the first :meth:`counterfactual`).
        """
        from AttriVAELib.slicer.mrml._common import _find_node

        if role not in ("reconstruction", "counterfactual", "difference"):
            raise ConfigError(f"unknown output role {role!r}; use reconstruction, counterfactual or difference")
        return _find_node(self.scene, "vtkMRMLScalarVolumeNode", outputs.NODE_NAMES[role], role)

    def traversal_frames(self) -> list[str]:
        """The index values of the last :meth:`traversal`'s frames as text (``"12.5 mL"``); [] before one."""
        browser = self._traversal_browser
        sequence = None if browser is None else sequences._browser_sequence(browser)
        if sequence is None:
            return []
        unit = sequence.GetIndexUnit()
        return [f"{sequence.GetNthIndexValue(i)} {unit}".strip() for i in range(sequence.GetNumberOfDataNodes())]

    def show_traversal_frame(self, item: int):
        """Select frame ``item`` of the last :meth:`traversal`; return the proxy volume node showing it."""
        count = len(self.traversal_frames())
        if not count:
            raise ConfigError("no traversal yet; create one first")
        if not 0 <= int(item) < count:
            raise ConfigError(f"traversal frame {item} is outside 0..{count - 1}")
        browser = self._traversal_browser
        if getattr(self, "_sequences_logic", None) is None:  # one logic for all frames (it registers node classes)
            self._sequences_logic = sequences._sequences_logic(self.scene)
        browser.SetSelectedItemNumber(int(item))
        if self._sequences_logic is not None:
            self._sequences_logic.UpdateProxyNodesFromSequences(browser)
        return browser.GetProxyNode(sequences._browser_sequence(browser))
