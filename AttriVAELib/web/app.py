"""The web viewer assembled: a trame server, a trame-slicer scene, one session, the controller and the page.

::

    app = AttriVAEWebApp(["cohort/images"], model="demo")
    serve(app, host="127.0.0.1", port=0)            # AttriVAELib.web.server

The scene is a ``trame_slicer.core.SlicerApp``'s (MRML scene, application logic, colour
tables); :class:`~AttriVAELib.slicer.session.AttriVAESession` works on it exactly as it does
on ``slicer.mrmlScene`` in the Slicer module, and the six slice views render it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from AttriVAELib.core.errors import CheckpointError
from AttriVAELib.web.files import DEFAULT_MAX_UPLOAD_MB, FileRoots, UploadStore

__all__ = ["AttriVAEWebApp", "model_choices"]


def model_choices(model: str | os.PathLike = "demo") -> list[tuple[str, str]]:
    """``(title, location)`` of the models the page offers: ``model`` first, then the demo model.

    Raises:
        CheckpointError: ``model`` is neither ``"demo"`` nor an existing run folder or file.
    """
    text = str(model).strip() or "demo"
    if text.lower() == "demo":
        return [("demo model", "demo")]
    path = Path(text).expanduser()
    if not path.exists():
        raise CheckpointError(f"{text}: no such run folder or model file")
    path = path.resolve()
    return [(path.name if path.is_dir() else f"{path.parent.name}/{path.name}", str(path)), ("demo model", "demo")]


class AttriVAEWebApp:
    """The viewer on a trame server (see the module docstring).

    Args:
        paths: folders and volume files the page may open (or a :class:`~AttriVAELib.web.files.FileRoots`).
        model: ``"demo"``, a run folder or a ``model.safetensors`` file; loaded when the server is ready.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        max_upload_mb: the largest upload accepted, in MiB.
        server: a trame server (default: a new one).
    """

    def __init__(self, paths: Iterable[str | os.PathLike] | FileRoots = (), *, model: str | os.PathLike = "demo",
                 device: str = "auto", max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, server=None) -> None:
        from trame.app import get_server
        from trame_slicer.core import SlicerApp

        from AttriVAELib.slicer.session import AttriVAESession
        from AttriVAELib.web.controller import ViewerController
        from AttriVAELib.web.layout import build_layout
        from AttriVAELib.web.views import SliceRows

        models = model_choices(model)
        roots = paths if isinstance(paths, FileRoots) else FileRoots(paths)
        self.server = server if server is not None else get_server(None, client_type="vue3")
        self.slicer_app = SlicerApp()
        self.session = AttriVAESession(self.slicer_app.scene)
        self.rows = SliceRows(self.server, self.slicer_app)
        self.uploads = UploadStore(int(float(max_upload_mb) * (1 << 20)))
        self.controller = ViewerController(self.server, self.session, self.rows, roots, self.uploads, models,
                                           device=device)
        self.layout = build_layout(self.server, self.rows)
        self.server.controller.on_server_ready.add(lambda **_: self.controller.load_model(startup=True))
        self.server.controller.on_server_exited.add(lambda **_: self.close())

    def close(self) -> None:
        """Cancel any running task and remove the uploads."""
        self.session.cancel_task()
        self.uploads.close()
