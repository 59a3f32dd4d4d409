"""The viewer's slice views: two rows of three (axial, coronal, sagittal) rendered by trame-slicer.

* Upper row, "input": the encoded volume with one overlay (an attention map or the
  counterfactual difference) at the chosen opacity.
* Lower row, "output": the reconstruction (live while the sliders move), the counterfactual,
  or the selected traversal frame.

All six views show the scene of one ``trame_slicer.core.SlicerApp`` (the scene the
:class:`~AttriVAELib.slicer.session.AttriVAESession` writes into) through remote-controlled
areas: the server renders each view with VTK (offscreen, EGL where there is no display),
encodes it as JPEG and streams it to the page. A view is re-rendered only when something it
shows changed: a slider move re-renders the three output views only (:meth:`SliceRows.frozen`). The session's
``show_overlay`` puts its nodes into every slice view; :meth:`SliceRows.arrange` then sets each
row's layers again. Views of the same orientation follow each other's slice position.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

__all__ = ["ORIENTATIONS", "ROWS", "SliceRows", "view_tag"]

#: Slice orientations, one per column.
ORIENTATIONS = ("Axial", "Coronal", "Sagittal")
#: Row name → caption shown in each view of that row.
ROWS = {"input": "Input", "output": "Output"}
_COLORS = {"Axial": "#F34A33", "Coronal": "#6DAD4A", "Sagittal": "#EFD64D"}
#: JPEG quality of every frame. trame-rca's still quality, so a change is rendered once (no
#: low-quality frame followed by a sharper re-render of every view).
STILL_QUALITY = 90
#: Name of the layout registered with the layout manager.
LAYOUT_ID = "AttriVAE"


def view_tag(row: str, orientation: str) -> str:
    """The singleton tag (and trame template name) of one view, e.g. ``"InputAxial"``."""
    return f"{ROWS[row]}{orientation}"


@dataclass
class _Layers:
    background: Any = None
    foreground: Any = None
    opacity: float = 0.0


class SliceRows:
    """The six slice views, their layout, and which volume each row shows.

    Args:
        server: the trame server.
        slicer_app: the ``trame_slicer.core.SlicerApp`` (its scene is the session's).
        target_fps: frames per second of each view's stream while something changes.
    """

    def __init__(self, server, slicer_app, *, target_fps: float = 30.0) -> None:
        from vtkmodules.vtkCommonCore import vtkObject

        self._server = server
        self._app = slicer_app
        warnings = vtkObject.GetGlobalWarningDisplay()
        vtkObject.GlobalWarningDisplayOff()  # trame-slicer's views warn about a VTK 9.6 deprecation, once each
        try:
            self._create_views(server, slicer_app, target_fps)
        finally:
            vtkObject.SetGlobalWarningDisplay(warnings)
        self._layers = {row: _Layers() for row in ROWS}
        for view in self.views():
            view.render_window().SetMultiSamples(0)  # 8× MSAA by default: most of a software render, useless in 2D
        self._link_twins()

    def _create_views(self, server, slicer_app, target_fps: float) -> None:
        from trame_slicer.core import LayoutManager
        from trame_slicer.rca_view import register_rca_factories
        from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition

        register_rca_factories(slicer_app.view_manager, server, slice_view_ui_f=self._view_ui,
                               rca_encoder="jpeg", target_fps=target_fps, blur_fps=target_fps,
                               interactive_quality=STILL_QUALITY)
        rows = []
        for row in ROWS:
            views = [ViewLayoutDefinition.slice_view(o, label=view_tag(row, o), color=_COLORS[o])
                     for o in ORIENTATIONS]
            rows.append(Layout(LayoutDirection.Horizontal, views))
        self.layout_manager = LayoutManager(slicer_app.scene, slicer_app.view_manager, server)
        self.layout_manager.register_layout(LAYOUT_ID, Layout(LayoutDirection.Vertical, rows))
        self.layout_manager.set_layout(LAYOUT_ID)

    # ------------------------------------------------------------------ views
    def view(self, row: str, orientation: str):
        """The trame-slicer ``SliceView`` of one row and orientation."""
        return self._app.view_manager.get_view(view_tag(row, orientation))

    def views(self, row: str | None = None) -> list:
        """The slice views of ``row`` (all six without one)."""
        rows = ROWS if row is None else (row,)
        return [self.view(r, o) for r in rows for o in ORIENTATIONS]

    def _view_ui(self, server, view_id: str, view) -> None:
        """A caption on each view (row and orientation) and its slice slider at the bottom."""
        from trame.widgets import html
        from trame_slicer.app.logic.slice_view_logic import connect_slice_view_slider_to_state
        from trame_slicer.app.ui.slider import Slider

        tag = view.get_singleton_tag()
        row = next(r for r in ROWS if tag.startswith(ROWS[r]))
        caption = f"{ROWS[row]} · {tag[len(ROWS[row]):].lower()}"
        html.Div(caption, classes="text-caption", style="position:absolute;top:2px;left:6px;color:#ddd;"
                 "pointer-events:none;text-shadow:0 0 3px #000;")
        with html.Div(style="position:absolute;bottom:0;left:0;width:100%;"):
            Slider(typed_state=connect_slice_view_slider_to_state(server, view), theme="dark", density="compact",
                   classes="mx-2")

    def _link_twins(self) -> None:
        """Views of one orientation show the same slice: a slice move in one row is copied to the other."""
        for orientation in ORIENTATIONS:
            pair = [self.view(row, orientation) for row in ROWS]

            def follow(source, others=pair):
                value = source.get_slice_value()
                for other in others:
                    if other is not source and abs(other.get_slice_value() - value) > 1e-6:
                        other.set_slice_value(value)

            for view in pair:
                view.modified.connect(follow)

    # ------------------------------------------------------------------ layers
    def arrange(self, row: str, background=None, foreground=None, opacity: float | None = None) -> None:
        """Show ``background`` (and ``foreground`` at ``opacity``) in every view of ``row``; keep that choice.

        The choice is re-applied by :meth:`reapply` after the session changed the layers of all views.
        """
        layers = self._layers[row]
        layers.background, layers.foreground = background, foreground
        if opacity is not None:
            layers.opacity = float(opacity)
        self._apply(row)

    def set_opacity(self, opacity: float) -> None:
        """The input row's overlay opacity."""
        self._layers["input"].opacity = float(opacity)
        self._apply("input")

    def reapply(self) -> None:
        """Set every row's layers again (after ``session.show_heatmap`` & co. changed all views)."""
        for row in ROWS:
            self._apply(row)

    def shown(self, row: str) -> tuple[Any, Any]:
        """(background, foreground) node of ``row``."""
        layers = self._layers[row]
        return layers.background, layers.foreground

    def _apply(self, row: str) -> None:
        layers = self._layers[row]
        for node in (layers.background, layers.foreground):
            if node is not None and node.GetScene() is None:
                return  # a node the scene no longer holds: leave the views as they are
        background = layers.background.GetID() if layers.background is not None else None
        foreground = layers.foreground.GetID() if layers.foreground is not None else None
        for view in self.views(row):
            if view.get_background_volume_id() != background:
                view.set_background_volume_id(background)
            if view.get_foreground_volume_id() != foreground:
                view.set_foreground_volume_id(foreground)
            opacity = layers.opacity if foreground else 0.0
            if abs(view.get_foreground_opacity() - opacity) > 1e-9:
                view.set_foreground_opacity(opacity)

    @contextmanager
    def frozen(self, row: str) -> Iterator[None]:
        """No re-render of ``row``'s views for changes made inside (they do not change what the row shows).

        Every slice view's displayable managers react to any volume node's new voxels, so a
        reconstruction update would re-render the input row too. trame-slicer 2.0's
        ``set_render_blocked(False)`` schedules a render, so the flag is put back directly.
        """
        views = self.views(row)
        before = [view.set_render_blocked(True) for view in views]
        try:
            yield
        finally:
            for view, was in zip(views, before):
                if hasattr(view, "_is_render_blocked"):
                    view._is_render_blocked = was  # noqa: SLF001 (see the docstring)
                else:
                    view.set_render_blocked(was)

    def fit(self) -> None:
        """Fit every view to its background volume (after a new input)."""
        for view in self.views():
            view.fit_view_to_content()
            view.schedule_render()

    def initialize_layout(self, ui) -> None:
        """Place the view grid in the trame layout at the calling point."""
        self.layout_manager.initialize_layout_grid(ui)
