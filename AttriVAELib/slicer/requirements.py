"""Python packages the engine needs inside 3D Slicer, and which of them are missing.

torch comes through the PyTorch extension (``PyTorchUtils``), the rest through pip; numpy,
SimpleITK and vtk are bundled with Slicer. :func:`missing_requirements` checks importability
without importing anything (fast, no side effects) and torch's installed version, so the module
can ask once, install, and check again.

An installed torch that is too old is never upgraded in place: it may already be imported
(by this or another module), and replacing its files under a running interpreter breaks it.
:func:`torch_update_message` says what to do instead (update it in the PyTorch Utils module,
then restart Slicer), as the reference extensions do.
"""

from __future__ import annotations

import re

__all__ = ["SLICER_REQUIREMENTS", "TORCH_MINIMUM", "TORCH_REQUIREMENT", "installed_torch_version",
           "missing_requirements", "torch_update_message"]

#: Python packages the engine needs inside Slicer besides torch (installed by PyTorchUtils)
#: and what Slicer bundles (numpy, SimpleITK, vtk): (pip requirement, import name).
SLICER_REQUIREMENTS = (
    ("monai>=1.3", "monai"),
    ("nibabel>=5.0", "nibabel"),
    ("scipy>=1.10", "scipy"),
    ("scikit-image>=0.21", "skimage"),
    ("scikit-learn>=1.3", "sklearn"),
    ("safetensors>=0.4", "safetensors"),
    ("tqdm>=4.64", "tqdm"),
    ("PyYAML>=6.0", "yaml"),
)
#: Oldest torch the engine supports: ``torch.compiler.is_compiling`` (the batch-norm fast path,
#: :mod:`AttriVAELib.nn.model`) appeared in torch 2.3; ``is_grads_batched`` and ``torch.func`` are older.
TORCH_MINIMUM = (2, 3)
TORCH_REQUIREMENT = "torch>=" + ".".join(str(v) for v in TORCH_MINIMUM)


def _version_at_least(text: str, minimum: tuple[int, ...]) -> bool:
    """Whether version ``text`` (e.g. ``"2.0.1+cu118"``) is at least ``minimum``; non-numeric parts count as 0."""
    parts = []
    for piece in re.split(r"[.+]", text)[:len(minimum)]:
        digits = re.match(r"\d+", piece)
        parts.append(int(digits.group()) if digits else 0)
    return tuple(parts) >= minimum


def installed_torch_version() -> str | None:
    """The installed torch distribution's version (None if torch is not installed as a distribution)."""
    import importlib.metadata

    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def torch_update_message() -> str | None:
    """One line telling the user to update torch and restart, if the installed torch is too old; else None."""
    import importlib.util

    version = installed_torch_version()
    if importlib.util.find_spec("torch") is None or version is None or _version_at_least(version, TORCH_MINIMUM):
        return None
    return (f"AttriVAE needs {TORCH_REQUIREMENT} but torch {version} is installed: update PyTorch in the "
            "PyTorch Utils module (Uninstall, then Install), restart Slicer, and try again")


def missing_requirements() -> list[str]:
    """Requirements (pip syntax) that are not met: torch (:data:`TORCH_REQUIREMENT`) and :data:`SLICER_REQUIREMENTS`.

    Checks importability without importing (fast, no side effects), and torch's installed version.
    """
    import importlib.metadata
    import importlib.util

    missing = []
    if importlib.util.find_spec("torch") is None:
        missing.append(TORCH_REQUIREMENT)
    else:
        try:
            if not _version_at_least(importlib.metadata.version("torch"), TORCH_MINIMUM):
                missing.append(TORCH_REQUIREMENT)
        except importlib.metadata.PackageNotFoundError:
            pass  # importable but not installed as a distribution (a source build): accept it
    missing += [req for req, module in SLICER_REQUIREMENTS if importlib.util.find_spec(module) is None]
    return missing
