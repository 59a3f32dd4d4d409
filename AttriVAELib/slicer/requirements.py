"""Python packages the engine needs inside 3D Slicer, and which of them are missing.

torch comes through the PyTorch extension (``PyTorchUtils``), the rest through pip; numpy,
SimpleITK and vtk are bundled with Slicer. :func:`missing_requirements` checks importability
without importing anything (fast, no side effects) and torch's installed version, so the module
can ask once, install, and check again.
"""

from __future__ import annotations

import re

__all__ = ["SLICER_REQUIREMENTS", "TORCH_REQUIREMENT", "missing_requirements"]

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
#: Oldest torch the engine supports (``torch.autograd.grad(..., is_grads_batched=True)``, safetensors I/O).
TORCH_REQUIREMENT = "torch>=2.1"
_TORCH_MINIMUM = (2, 1)


def _version_at_least(text: str, minimum: tuple[int, ...]) -> bool:
    """Whether version ``text`` (e.g. ``"2.0.1+cu118"``) is at least ``minimum``; non-numeric parts count as 0."""
    parts = []
    for piece in re.split(r"[.+]", text)[:len(minimum)]:
        digits = re.match(r"\d+", piece)
        parts.append(int(digits.group()) if digits else 0)
    return tuple(parts) >= minimum


def missing_requirements() -> list[str]:
    """Requirements (pip syntax) that are not met: torch ≥ 2.1 and :data:`SLICER_REQUIREMENTS`.

    Checks importability without importing (fast, no side effects), and torch's installed version.
    """
    import importlib.metadata
    import importlib.util

    missing = []
    if importlib.util.find_spec("torch") is None:
        missing.append(TORCH_REQUIREMENT)
    else:
        try:
            if not _version_at_least(importlib.metadata.version("torch"), _TORCH_MINIMUM):
                missing.append(TORCH_REQUIREMENT)
        except importlib.metadata.PackageNotFoundError:
            pass  # importable but not installed as a distribution (a source build): accept it
    missing += [req for req, module in SLICER_REQUIREMENTS if importlib.util.find_spec(module) is None]
    return missing
