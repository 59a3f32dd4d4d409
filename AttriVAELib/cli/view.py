"""The ``attrivae view`` command: the interactive session in a web browser.

``attrivae view [--model RUN|demo] [IMAGE ...] [--host 127.0.0.1] [--port 0]`` starts the web
viewer (:mod:`AttriVAELib.web`) and prints its address. The page can open only the folders and
files given as IMAGE (and uploads). trame and trame-slicer are imported inside the handler, so
``attrivae --help`` stays light; without them the command says which extra to install.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from AttriVAELib.cli.command import Command, bounded_int, finite_float
from AttriVAELib.core.errors import ConfigError

__all__ = ["COMMANDS", "WEB_EXTRA_HINT", "add_view_arguments", "run_view"]

#: What to install when the web viewer's packages are missing.
WEB_EXTRA_HINT = "install with pip install 'attrivae[web]'"
#: Packages the viewer imports (checked before anything starts).
_NEEDED = ("trame", "trame_slicer", "trame_vuetify", "slicer", "vtk", "torch")


def add_view_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="*", type=Path, metavar="IMAGE",
                   help="folders and volume files the page may open (NIfTI, NRRD, MHA); nothing else is readable")
    p.add_argument("--model", default="demo", metavar="RUN",
                   help="run folder or model.safetensors file loaded at start, or 'demo' (default)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1: this machine only; others print a warning)")
    p.add_argument("--port", type=bounded_int(0, 65535), default=0, help="port (default 0: a free port)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--max-upload-mb", type=finite_float, default=None, metavar="MB",
                   help="largest upload accepted, in MiB (default 512)")


def _missing_packages() -> list[str]:
    missing = []
    for name in _NEEDED:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def run_view(args: argparse.Namespace) -> int:
    from AttriVAELib.web.app import model_choices
    from AttriVAELib.web.files import DEFAULT_MAX_UPLOAD_MB, FileRoots

    roots = FileRoots(args.images)  # bad paths and models are refused before anything heavy is imported
    model_choices(args.model)
    limit = DEFAULT_MAX_UPLOAD_MB if args.max_upload_mb is None else args.max_upload_mb
    if not limit > 0:
        raise ConfigError(f"--max-upload-mb must be positive (got {limit:g})")
    missing = _missing_packages()
    if missing:
        raise ConfigError(f"the web viewer needs {', '.join(missing)}: {WEB_EXTRA_HINT}")
    from AttriVAELib.web.server import prepare_environment, serve

    prepare_environment()
    from AttriVAELib.web.app import AttriVAEWebApp

    app = AttriVAEWebApp(roots, model=args.model, device=args.device, max_upload_mb=limit)
    try:
        serve(app, host=args.host, port=args.port)
    finally:
        app.close()
    return 0


COMMANDS = (
    Command("view", "the interactive session (sliders, attention, traversal, counterfactual) in a web browser",
            add_view_arguments, run_view),
)
