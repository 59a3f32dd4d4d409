"""What the page shows, as plain JSON-ready values, and who may drive the viewer.

Pure functions of the session's panel views (:meth:`~AttriVAELib.slicer.session.AttriVAESession.slider_specs`,
``summary_lines()``, ``dimension_choices()``, ...), so the page never reads the model and the
texts match the Slicer panel's. No trame here: the controller copies these values into the
trame state.

One viewer, one user: a trame server has one state that every connected page shares. The
first tab that connects *owns* the viewer (:class:`TabOwner`); other tabs are told so and show
the views read-only, until the owner's tab closes (its connection ends) or another tab takes
over explicitly.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterable, Sequence

__all__ = ["COLORMAPS", "DEFAULT_STATE", "GRADCAM_LAYERS", "MAX_MESSAGES", "MessageLog", "TabOwner",
           "choices", "slider_items"]

#: Colour tables offered for attention maps (the Slicer panel's; ColdToHotRainbow suits signed maps).
COLORMAPS = ("Inferno", "Viridis", "Magma", "Plasma", "ColdToHotRainbow")
#: Grad-CAM layers offered (``auto``: the model's default).
GRADCAM_LAYERS = ("auto", "conv1", "conv2", "conv3", "conv4", "conv5")
#: Messages kept on the page (newest last).
MAX_MESSAGES = 6

#: Every state key the page uses and its value before anything is loaded.
DEFAULT_STATE: dict[str, Any] = {
    "owner_tab": None,
    "busy": False, "progress": 0, "progress_text": "", "messages": [],
    "model_choices": [], "model_choice": "demo", "model_info": "",
    "files": [], "files_note": "", "image_key": None, "mask_key": None, "upload_limit": 0, "upload_limit_text": "",
    "has_encoding": False, "input_label": "", "summary_lines": [], "sliders": [], "slider_labels": [],
    "decode_count": 0,
    "overlay": "none", "heatmap_names": [], "heatmap_name": None, "heatmap_opacity": 0.5, "heatmap_threshold": 0.2,
    "heatmap_colormap": COLORMAPS[0], "heatmap_signed": False, "gradcam_layer": GRADCAM_LAYERS[0],
    "colormaps": list(COLORMAPS), "gradcam_layers": list(GRADCAM_LAYERS),
    "output_mode": "reconstruction", "output_modes": ["reconstruction"],
    "traversal_dims": [], "traversal_dim": None, "traversal_units": "latent", "traversal_from": -2.0,
    "traversal_to": 2.0, "traversal_steps": 7, "traversal_labels": [], "traversal_frame": 0, "traversal_playing": False,
    "cf_mode": "other class", "cf_attributes": [], "cf_attribute": None, "cf_value": 0.0, "cf_lines": [],
}


def choices(pairs: Iterable[tuple[str, Any]]) -> list[dict[str, Any]]:
    """``[{"title": text, "value": value}, ...]`` for a select box."""
    return [{"title": str(title), "value": value} for title, value in pairs]


def slider_items(specs: Sequence[Any], revision: int = 0) -> list[dict[str, Any]]:
    """One slider per *regularized* dim (the attribute dims) from the session's slider specs.

    Each item: ``dim``, ``name``, ``unit``, ``min``, ``max``, ``step``, ``value``, ``mu``,
    ``label`` (``"name (unit): value"``, the Slicer panel's text) and ``rev``. The page moves
    its sliders itself while dragging; ``revision`` (new on every encode or reset) makes the
    list differ from the last one sent, so the page takes the server's values again.
    """
    return [{"dim": s.dim, "name": s.name, "unit": s.unit, "min": s.minimum, "max": s.maximum, "step": s.step,
             "value": s.value, "mu": s.mu, "label": s.label, "rev": int(revision)}
            for s in specs if s.regularized]


class MessageLog:
    """The messages shown on the page: ``{"id", "kind", "text"}``, newest last, at most :data:`MAX_MESSAGES`."""

    def __init__(self, limit: int = MAX_MESSAGES) -> None:
        self.limit = int(limit)
        self.items: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    def add(self, text: str, kind: str = "info") -> list[dict[str, Any]]:
        """Add one message (``kind``: ``"info"``, ``"success"``, ``"warning"`` or ``"error"``); return the list."""
        self.items = [*self.items, {"id": next(self._ids), "kind": kind, "text": " ".join(str(text).split())}]
        self.items = self.items[-self.limit:]
        return self.items

    def dismiss(self, message_id: int) -> list[dict[str, Any]]:
        """Remove the message ``message_id``; return the list."""
        self.items = [m for m in self.items if m["id"] != message_id]
        return self.items


class TabOwner:
    """Which browser tab drives the viewer (see the module docstring).

    Tabs identify themselves with a random id made in the page and are tied to their websocket
    connection. :meth:`claim` gives the viewer to a tab when nobody has it; when the owner's
    connection closes (:meth:`disconnected`) nobody has it, the open tabs see that and claim
    it again, and the first to ask gets it. :meth:`take_over` hands it to a tab on request.
    """

    def __init__(self) -> None:
        self.owner: str | None = None
        self._connections: dict[str, Any] = {}

    def is_owner(self, tab: str | None) -> bool:
        return bool(tab) and tab == self.owner

    def claim(self, tab: str, connection: Any = None) -> bool:
        """A tab asks for the viewer: it gets it if nobody has it; True if it owns it now."""
        if not tab:
            return False
        if connection is not None:
            self._connections[tab] = connection
        if self.owner is None:
            self.owner = tab
        return self.owner == tab

    def take_over(self, tab: str, connection: Any = None) -> None:
        """The tab asked to drive the viewer (the previous owner's tab is told so)."""
        if tab:
            if connection is not None:
                self._connections[tab] = connection
            self.owner = tab

    def disconnected(self, connection: Any) -> bool:
        """A connection closed: forget its tabs; True if it was the owner's (nobody owns the viewer now)."""
        gone = [tab for tab, conn in self._connections.items() if conn == connection]
        for tab in gone:
            del self._connections[tab]
        if self.owner in gone:
            self.owner = None
            return True
        return False
