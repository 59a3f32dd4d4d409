"""The web page's actions on one :class:`~AttriVAELib.slicer.session.AttriVAESession` (state binding).

The controller is the glue between the trame state (what the page shows and edits) and the
session (all the work). It holds no logic of its own about models or images: each button
starts the session's ``*_task`` through :class:`~AttriVAELib.web.runner.TaskPump`, and the
result is copied back into the state with the session's panel views (:mod:`AttriVAELib.web.state`).

This module: who drives the viewer (tabs), messages, the model, picking or uploading the
input, Encode, the sliders and Reset. Attention, traversal and counterfactual:
:class:`~AttriVAELib.web.explore.ExploreMixin`.

Slider moves are coalesced: the page sends every move, the controller keeps the latest value
per dim and decodes (bf16 preview where native) whenever the previous decode has finished, so
the reconstruction follows the slider without a queue building up.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Sequence

from AttriVAELib.core.errors import InputError
from AttriVAELib.web.explore import ExploreMixin
from AttriVAELib.web.files import FileRoots, UploadStore, check_volume_file, volume_suffix
from AttriVAELib.web.runner import TaskPump, error_text
from AttriVAELib.web.state import DEFAULT_STATE, MessageLog, TabOwner, choices, slider_items
from AttriVAELib.web.views import SliceRows

__all__ = ["ViewerController"]


class ViewerController(ExploreMixin):
    """Binds the page's state and triggers to a session (see the module docstring).

    Args:
        server: the trame server.
        session: the session (its scene is the one the views show).
        rows: the slice views.
        roots: the folders and files the page may open.
        uploads: where uploads go (with their size limit).
        models: ``(title, location)`` of the models offered; the first is loaded at start.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
    """

    def __init__(self, server, session, rows: SliceRows, roots: FileRoots, uploads: UploadStore,
                 models: Sequence[tuple[str, str]], device: str = "auto") -> None:
        self.server = server
        self.state = server.state
        self.session = session
        self.rows = rows
        self.roots = roots
        self.uploads = uploads
        self.device = device
        self.log = MessageLog()
        self.owner = TabOwner()
        self.pump = TaskPump(session, self.state, self.message, on_idle=self._decode_pending)
        self._pending: dict[int, float] = {}
        self._requested: dict[int, float] = {}
        self._nodes: dict[tuple[str, bool], Any] = {}
        self._uploaded: dict[str, Path] = {}
        self._upload_names: dict[str, str] = {}
        self._files: list[dict[str, Any]] = []
        self._player: asyncio.Task | None = None
        self._revision = 0
        self.state.update(DEFAULT_STATE)
        self.state.model_choices = choices(models)
        self.state.model_choice = models[0][1] if models else "demo"
        self.state.upload_limit = uploads.max_bytes
        self.state.upload_limit_text = uploads.limit_text
        self.state.tab_id = ""
        self.state.client_only("tab_id")
        self._list_files()
        self._bind()

    # ------------------------------------------------------------------ wiring
    def _bind(self) -> None:
        ctrl, state = self.server.controller, self.state
        triggers = {
            "claim": self.claim, "take_over": self.take_over, "dismiss": self.dismiss,
            "load_model": self.load_model, "encode": self.encode, "upload": self.upload, "too_big": self.too_big,
            "slide": self.slide,
            "reset": self.reset, "cancel": self.cancel, "attention": self.attention,
            "traversal": self.traversal, "play": self.play, "counterfactual": self.counterfactual,
        }
        for name, func in triggers.items():
            ctrl.trigger(name)(func)
        ctrl.on_server_ready.add(lambda **_: self.watch_connections(self.server.protocol))
        state.change("image_key")(self._on_image_key)
        self._bind_explore(state)

    def message(self, text: str, kind: str = "info") -> None:
        """Add a line to the page's messages (``kind``: info, success, warning, error)."""
        self.state.messages = list(self.log.add(text, kind))

    def dismiss(self, message_id: int) -> None:
        self.state.messages = list(self.log.dismiss(int(message_id)))

    def _allowed(self, tab: str | None) -> bool:
        """Actions come from the tab that owns the viewer; others are ignored (their page says why)."""
        return self.owner.is_owner(tab)

    # ------------------------------------------------------------------ tabs
    def _connection(self) -> Any:
        """The websocket connection the current trigger came from (None where wslink does not say)."""
        backend = getattr(self.server, "_server", None)
        return getattr(backend, "last_active_client_id", None)

    def claim(self, tab: str) -> None:
        """A tab opened (or saw that nobody drives the viewer): it drives it if nobody does."""
        self.owner.claim(str(tab or ""), self._connection())
        self.state.owner_tab = self.owner.owner

    def take_over(self, tab: str) -> None:
        self.owner.take_over(str(tab or ""), self._connection())
        self.state.owner_tab = self.owner.owner
        self.message("another browser tab took over this viewer", "warning")

    def watch_connections(self, protocol) -> None:
        """Hear of closed websocket connections (wslink calls ``onClose(client_id)`` on the protocol)."""
        previous = getattr(protocol, "onClose", None)

        def closed(client_id, *args) -> None:
            if previous is not None:
                previous(client_id, *args)
            if self.owner.disconnected(client_id):
                with self.state:
                    self.state.owner_tab = None  # the open tabs claim the viewer again

        protocol.onClose = closed

    # ------------------------------------------------------------------ model
    def load_model(self, tab: str | None = None, *, startup: bool = False) -> None:
        """Load the chosen model in the background (at start, and from the Load button)."""
        if not startup and not self._allowed(tab):
            return
        self.pump.run(lambda: self.session.load_model_task(self.state.model_choice, self.device),
                      self._model_loaded)

    def _model_loaded(self, description: str) -> None:
        self.state.model_info = description
        self._clear_encoding()

    def _with_model(self, then) -> None:
        """Run ``then()`` once the chosen model is loaded (loading it first if needed)."""
        choice = self.state.model_choice
        if self.session.is_loaded(choice, self.device):
            then()
            return

        def loaded(description: str) -> None:
            self._model_loaded(description)
            then()

        self.pump.run(lambda: self.session.load_model_task(choice, self.device), loaded)

    # ------------------------------------------------------------------ input
    def _list_files(self) -> None:
        listed, cut = self.roots.list_files()
        self._files = [{"title": f.title, "value": f.key} for f in listed]
        self.state.files = self._files + [{"title": f"uploaded: {self._upload_names[k]}", "value": k}
                                          for k in self._uploaded]
        note = "" if self.roots else "no folders given on the command line: upload a volume"
        if cut:
            note = f"showing the first {len(listed)} files; start the viewer on a smaller folder to see the rest"
        self.state.files_note = note

    def _path(self, key: str) -> Path:
        if key in self._uploaded:
            return self._uploaded[key]
        return self.roots.resolve(key)

    def _node(self, key: str, labelmap: bool = False, label: str | None = None):
        """The volume node of a file key (read once; a labelmap for a mask); ``label`` names it in errors."""
        from AttriVAELib.slicer import mrml

        node = self._nodes.get((key, labelmap))
        if node is not None and node.GetScene() is not None:
            return node
        path = self._path(key)
        shown = self._upload_names.get(key)  # an upload is named as the user named it, not as stored
        check_volume_file(path, label or shown)
        name = shown[: -len(volume_suffix(shown) or "")] if shown else None
        node = mrml.load_volume_node(self.session.scene, path, name, labelmap=labelmap)
        self._nodes[(key, labelmap)] = node
        return node

    def _on_image_key(self, image_key=None, **_kwargs) -> None:
        """A new input was chosen: read it and show it in the input row (the old encoding is dropped)."""
        if not image_key:
            return
        if self.pump.busy:
            return  # shown at Encode
        try:
            node = self._node(image_key)
        except Exception as exc:
            self.message(error_text(exc, "reading the volume"), "error")
            return
        if node is self.session.input_node:
            return
        self.session.close_scene()
        self._clear_encoding()
        self.rows.arrange("input", node, None)
        self.rows.arrange("output", None, None)
        self.rows.fit()
        self.state.input_label = node.GetName()

    def upload(self, tab: str, kind: str, files: list[dict] | None) -> None:
        """A file the page sent (``kind``: ``"image"`` or ``"mask"``): keep it, read it, select it."""
        if not self._allowed(tab):
            return
        files = files or []
        if not files:
            return
        item = files[0] if isinstance(files, list) else files
        name = str(item.get("name") or "upload")
        key = f"upload:{self.uploads.count + 1}"
        path = None
        try:
            path = self.uploads.save(name, item.get("content"))
            self._uploaded[key], self._upload_names[key] = path, name
            self._node(key, labelmap=kind == "mask", label=name)  # refuse a bad file now, with its reason
        except Exception as exc:
            text = error_text(exc, f"reading the upload '{name}'")
            self._uploaded.pop(key, None)
            self._upload_names.pop(key, None)
            if path is not None:
                path.unlink(missing_ok=True)
                text = text.replace(str(path), name)
            self.message(text, "error")
            return
        self._list_files()
        self.message(f"uploaded {name}", "success")
        if kind == "mask":
            self.state.mask_key = key
        else:
            self.state.image_key = key

    def too_big(self, tab: str, name: str, size: int) -> None:
        """The page refused to send a file over the upload limit: say so (nothing was sent)."""
        if self._allowed(tab):
            self._guarded_check(name, size)

    def _guarded_check(self, name: str, size: int) -> None:
        try:
            self.uploads.check(str(name), int(size))
        except Exception as exc:
            self.message(error_text(exc, "uploading"), "error")

    # ------------------------------------------------------------------ encode
    def encode(self, tab: str) -> None:
        """Encode the chosen input (with its mask) with the chosen model."""
        if not self._allowed(tab):
            return
        image_key, mask_key = self.state.image_key, self.state.mask_key
        try:
            if not image_key:
                raise InputError("no input volume chosen; pick a file or upload one")
            node = self._node(image_key)
            mask = self._node(mask_key, labelmap=True) if mask_key else None
        except Exception as exc:
            self.message(error_text(exc, "reading the volume"), "error")
            return
        self._pending.clear()
        self._with_model(lambda: self.pump.run(lambda: self.session.encode_task(node, mask), self._encoded))

    def _encoded(self, _summary: dict) -> None:
        node = self.session.input_node
        self.state.input_label = node.GetName()
        self.rows.arrange("input", node, None)
        self.rows.arrange("output", self.session.reconstruction_node, None)
        self.rows.fit()
        self._show_encoding()
        self.message(f"encoded {node.GetName()}", "success")

    def _clear_encoding(self) -> None:
        for key in ("has_encoding", "summary_lines", "sliders", "slider_labels", "heatmap_names", "heatmap_name",
                    "overlay", "output_mode", "output_modes", "traversal_dims", "traversal_labels", "cf_attributes",
                    "cf_lines", "traversal_playing"):
            self.state[key] = DEFAULT_STATE[key]
        self._pending.clear()

    def _show_encoding(self) -> None:
        """Everything the page shows about a new encoding."""
        self.state.has_encoding = True
        self._show_sliders()
        self._show_explore_choices()

    def _show_sliders(self) -> None:
        self._revision += 1
        sliders = slider_items(self.session.slider_specs(), self._revision)
        self._requested = {s["dim"]: s["value"] for s in sliders}
        self.state.sliders = sliders
        self.state.slider_labels = [s["label"] for s in sliders]
        self.state.summary_lines = self.session.summary_lines()

    # ------------------------------------------------------------------ sliders
    def slide(self, tab: str, dim: int, value: float) -> None:
        """A slider moved: label now, decode when the previous decode is done."""
        if not self._allowed(tab) or not self.session.has_encoding:
            return
        try:
            dim, value = int(dim), float(value)
            label = self.session.dim_label(dim, value)
        except Exception as exc:
            self.message(error_text(exc, "moving the slider"), "error")
            return
        if self._requested.get(dim) == value:
            return  # the page sends the value again on release
        self._requested[dim] = value
        self._pending[dim] = value
        labels = list(self.state.slider_labels)
        for i, item in enumerate(self.state.sliders):
            if item["dim"] == dim and i < len(labels):
                labels[i] = label
        self.state.slider_labels = labels
        if not self.pump.busy:
            self._decode_pending()

    def _decode_pending(self) -> None:
        if not self._pending or not self.session.has_encoding:
            return
        values, self._pending = dict(self._pending), {}
        self.pump.run(lambda: self.session.latents_task(values, preview=True), self._decoded, quiet=True,
                      context=lambda: self.rows.frozen("input"))

    def _decoded(self, node) -> None:
        if self.state.output_mode != "reconstruction" or self.rows.shown("output")[0] is not node:
            self.state.output_mode = "reconstruction"
            self.rows.arrange("output", node, None)
        self.state.summary_lines = self.session.summary_lines()
        self.state.decode_count = int(self.state.decode_count) + 1

    def reset(self, tab: str) -> None:
        """Latent vector back to the encoding (sliders and reconstruction)."""
        if not self._allowed(tab):
            return
        self._pending.clear()

        def done(node) -> None:
            self._decoded(node)
            self._show_sliders()

        self.pump.run(self.session.reset_task, done)

    def cancel(self, tab: str) -> None:
        if self._allowed(tab):
            self._pending.clear()
            self._requested.clear()
            self.pump.cancel()
