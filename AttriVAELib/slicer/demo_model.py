"""Where the demo model lives: the small shipped model a new user can try offline.

Searched in order: ``$ATTRIVAE_DEMO_MODEL``; the installed extension's ``Resources/DemoModel``
(Slicer installs module resources next to the module file, where ``AttriVAELib`` also lives);
the source tree's ``AttriVAE/Resources/DemoModel``. A folder qualifies when it holds both
``model.safetensors`` and ``model.json``.
"""

from __future__ import annotations

import os
from pathlib import Path

from AttriVAELib.core.errors import CheckpointError

__all__ = ["DEMO_MODEL_ENV", "demo_model_dir", "find_demo_model"]

#: Environment variable naming a folder that holds the demo model (overrides the shipped one).
DEMO_MODEL_ENV = "ATTRIVAE_DEMO_MODEL"


def demo_model_dir() -> list[Path]:
    """Folders searched for the demo model, in order.

    ``$ATTRIVAE_DEMO_MODEL``; the installed extension's ``Resources/DemoModel`` (Slicer
    installs module resources next to the module file, where AttriVAELib also lives); the
    source tree's ``AttriVAE/Resources/DemoModel``.
    """
    here = Path(__file__).resolve().parents[2]  # the folder holding the AttriVAELib package
    folders = []
    if os.environ.get(DEMO_MODEL_ENV):
        folders.append(Path(os.environ[DEMO_MODEL_ENV]))
    folders += [here / "Resources" / "DemoModel", here / "AttriVAE" / "Resources" / "DemoModel"]
    return folders


def find_demo_model(folder: str | os.PathLike | None = None) -> Path:
    """The folder holding the demo model (``model.safetensors`` + ``model.json``).

    Raises:
        CheckpointError: no folder holds both files.
    """
    candidates = [Path(folder)] if folder is not None else demo_model_dir()
    for candidate in candidates:
        if (candidate / "model.safetensors").is_file() and (candidate / "model.json").is_file():
            return candidate
    where = " or ".join(str(c) for c in candidates)
    raise CheckpointError(f"the demo model is not installed (no model.safetensors + model.json in {where}); "
                          "choose a trained model folder, or train one in the 'Train a model' section")
