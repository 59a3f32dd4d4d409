"""The page's exploration tools on the encoded image: attention maps, traversals, counterfactuals.

Part of :class:`~AttriVAELib.web.controller.ViewerController` (kept apart: the controller
holds the input and the sliders, this is what the page computes from the encoding). Every
computation is the session's task (:meth:`~AttriVAELib.slicer.session.AttriVAESession.attention_task`,
``traversal_task``, ``counterfactual_task``); the mixin turns its result into state and
into the slice views' layers:

* the input row's overlay (``overlay``): ``"none"``, ``"attention"`` (the selected map,
  restyled without recomputing when the opacity, threshold or colour table change) or
  ``"difference"`` (counterfactual − reconstruction);
* the output row (``output_mode``): ``"reconstruction"``, ``"counterfactual"`` or
  ``"traversal"`` (the selected frame; Play steps through the frames on the server).
"""

from __future__ import annotations

import asyncio
from typing import Any

from AttriVAELib.core.errors import ConfigError
from AttriVAELib.web.runner import error_text

__all__ = ["ExploreMixin", "FRAME_SECONDS", "number"]

#: Seconds each traversal frame is shown while playing.
FRAME_SECONDS = 0.5


def number(value: Any, what: str, *, whole: bool = False) -> float | int:
    """A number typed in the page (text or number), or a one-line :class:`ConfigError` naming the field."""
    try:
        result = float(value)
        if whole:
            if result != int(result):
                raise ValueError
            return int(result)
    except (TypeError, ValueError):
        kind = "a whole number" if whole else "a number"
        raise ConfigError(f"{what} must be {kind} (got {value!r})") from None
    return result


class ExploreMixin:
    """Attention, traversal and counterfactual actions (uses the controller's ``session``, ``state``,
    ``rows``, ``pump``, ``message`` and ``_allowed``)."""

    def _bind_explore(self, state) -> None:
        state.change("heatmap_name", "heatmap_opacity", "heatmap_threshold", "heatmap_colormap")(self._restyle)
        state.change("overlay")(self._on_overlay)
        state.change("output_mode")(self._on_output_mode)
        state.change("traversal_frame")(self._on_frame)
        state.change("traversal_dim", "traversal_units")(self._on_traversal_dim)
        state.change("cf_attribute")(self._on_cf_attribute)

    def _show_explore_choices(self) -> None:
        """Select boxes and defaults for a new encoding."""
        session = self.session
        self.state.traversal_dims = [{"title": t, "value": d} for t, d in session.dimension_choices()]
        attributes = [{"title": t, "value": d} for t, d in session.dimension_choices(attributes_only=True)]
        self.state.cf_attributes = attributes
        first = self.state.traversal_dims[0]["value"] if self.state.traversal_dims else None
        self.state.traversal_dim = first
        self._on_traversal_dim(traversal_dim=first)
        self.state.cf_attribute = attributes[0]["value"] if attributes else None
        self._on_cf_attribute(cf_attribute=self.state.cf_attribute)

    def _guarded(self, what: str, func, *args) -> Any:
        try:
            return func(*args)
        except Exception as exc:
            self.message(error_text(exc, what), "error")
            return None

    # ------------------------------------------------------------------ attention
    def attention(self, tab: str) -> None:
        """Compute every attribute's (and the classifier's) Grad-CAM map; show the selected one."""
        if not self._allowed(tab):
            return
        state = self.state

        def make():
            signed = bool(state.heatmap_signed)
            colormap = state.heatmap_colormap
            if signed and colormap == "Inferno":
                colormap = None  # a diverging table for signed maps (the session's default)
            return self.session.attention_task(state.gradcam_layer, relu=not signed, colormap=colormap,
                                               threshold=float(state.heatmap_threshold),
                                               opacity=float(state.heatmap_opacity))

        self.pump.run(make, self._attention_done)

    def _attention_done(self, maps: dict) -> None:
        names = list(maps)
        self.state.heatmap_names = names
        if self.state.heatmap_name not in names:
            self.state.heatmap_name = names[0] if names else None
        self.state.overlay = "attention"
        self._show_heatmap()

    def _show_heatmap(self) -> None:
        state, session = self.state, self.session
        name = state.heatmap_name
        if not name or name not in session.heatmap_names or session.input_node is None:
            return
        colormap = state.heatmap_colormap
        if session.heatmap_signed and colormap == "Inferno":
            colormap = None
        with self.rows.frozen("output"):
            node = session.show_heatmap(name, opacity=float(state.heatmap_opacity),
                                        threshold=float(state.heatmap_threshold), colormap=colormap)
            self.rows.arrange("input", session.input_node, node, float(state.heatmap_opacity))
            self.rows.reapply()

    def _restyle(self, **_kwargs) -> None:
        if self.state.overlay == "attention":
            self._guarded("showing the attention map", self._show_heatmap)
        elif self.state.overlay == "difference":
            self.rows.set_opacity(float(self.state.heatmap_opacity))

    def _on_overlay(self, overlay=None, **_kwargs) -> None:
        session = self.session
        if session.input_node is None:
            return
        if overlay == "attention" and session.heatmap_names:
            self._guarded("showing the attention map", self._show_heatmap)
        elif overlay == "difference" and session.output_node("difference") is not None:
            self.rows.arrange("input", session.input_node, session.output_node("difference"),
                              float(self.state.heatmap_opacity))
        else:
            self.rows.arrange("input", session.input_node, None)

    # ------------------------------------------------------------------ output row
    def _on_output_mode(self, output_mode=None, **_kwargs) -> None:
        session = self.session
        if output_mode != "traversal":
            self._stop_playing()
        if output_mode == "counterfactual" and session.output_node("counterfactual") is not None:
            self.rows.arrange("output", session.output_node("counterfactual"), None)
        elif output_mode == "traversal" and session.traversal_frames():
            self._on_frame(traversal_frame=self.state.traversal_frame)
        elif session.reconstruction_node is not None:
            self.rows.arrange("output", session.reconstruction_node, None)

    def _add_output_mode(self, mode: str) -> None:
        modes = [m for m in ("reconstruction", "counterfactual", "traversal")
                 if m == mode or m in self.state.output_modes]
        self.state.output_modes = modes
        self.state.output_mode = mode

    # ------------------------------------------------------------------ traversal
    def _on_traversal_dim(self, traversal_dim=None, **_kwargs) -> None:
        dim = self.state.traversal_dim if traversal_dim is None else traversal_dim
        if dim is None or not self.session.has_encoding:
            return
        low, high = self._guarded("choosing the traversal", self.session.traversal_range, int(dim),
                                  self.state.traversal_units) or (None, None)
        if low is not None:
            self.state.traversal_from = round(float(low), 4)
            self.state.traversal_to = round(float(high), 4)

    def traversal(self, tab: str) -> None:
        """Decode the traversal of the chosen dim into frames; show the first in the output row."""
        if not self._allowed(tab):
            return
        state = self.state
        self._stop_playing()

        def make():
            if state.traversal_dim is None:
                raise ConfigError("encode an image first")
            return self.session.traversal_task(int(state.traversal_dim), number(state.traversal_from, "From"),
                                               number(state.traversal_to, "To"),
                                               number(state.traversal_steps, "Steps", whole=True),
                                               units=state.traversal_units)

        self.pump.run(make, self._traversal_done)

    def _traversal_done(self, _sequence) -> None:
        self.state.traversal_labels = self.session.traversal_frames()
        self.state.traversal_frame = 0
        self._add_output_mode("traversal")
        self._on_frame(traversal_frame=0)

    def _on_frame(self, traversal_frame=None, **_kwargs) -> None:
        frames = self.session.traversal_frames()
        if not frames or self.state.output_mode != "traversal":
            return
        item = min(max(int(traversal_frame or 0), 0), len(frames) - 1)
        with self.rows.frozen("input"):
            proxy = self._guarded("showing the traversal frame", self.session.show_traversal_frame, item)
            if proxy is not None:
                self.rows.arrange("output", proxy, None)

    def play(self, tab: str) -> None:
        """Play or pause the traversal (frames advance on the server, looping)."""
        if not self._allowed(tab):
            return
        if self.state.traversal_playing:
            self._stop_playing()
            return
        if not self.session.traversal_frames():
            self.message("create a traversal first", "warning")
            return
        if self.state.output_mode != "traversal":
            self.state.output_mode = "traversal"
        self.state.traversal_playing = True
        self._player = asyncio.get_event_loop().create_task(self._play())

    async def _play(self) -> None:
        while True:
            await asyncio.sleep(FRAME_SECONDS)
            with self.state:
                frames = self.session.traversal_frames()
                if not self.state.traversal_playing or not frames or self.state.output_mode != "traversal":
                    self.state.traversal_playing = False
                    return
                frame = (int(self.state.traversal_frame) + 1) % len(frames)
                self.state.traversal_frame = frame
                self._on_frame(traversal_frame=frame)

    def _stop_playing(self) -> None:
        self.state.traversal_playing = False
        if self._player is not None:
            self._player.cancel()
            self._player = None

    # ------------------------------------------------------------------ counterfactual
    def _on_cf_attribute(self, cf_attribute=None, **_kwargs) -> None:
        if cf_attribute is None or not self.session.has_encoding:
            return
        estimate = self._guarded("choosing the attribute", self.session.attribute_estimate, int(cf_attribute))
        if estimate is not None:
            self.state.cf_value = round(float(estimate), 4)

    def counterfactual(self, tab: str) -> None:
        """The counterfactual (other class, or one attribute set to a value) and its difference overlay."""
        if not self._allowed(tab):
            return
        state = self.state

        def make():
            if state.cf_mode == "attribute value":
                if state.cf_attribute is None:
                    raise ConfigError("choose the attribute to change")
                mode: Any = ("attribute", int(state.cf_attribute), number(state.cf_value, "Value"))
            else:
                mode = "other_class"
            return self.session.counterfactual_task(mode, opacity=float(state.heatmap_opacity))

        self.pump.run(make, self._counterfactual_done)

    def _counterfactual_done(self, difference) -> None:
        self.state.cf_lines = self.session.counterfactual_lines()
        self.state.overlay = "difference"
        self.rows.arrange("input", self.session.input_node, difference, float(self.state.heatmap_opacity))
        self._add_output_mode("counterfactual")
        self.rows.arrange("output", self.session.output_node("counterfactual"), None)
        self.rows.reapply()
