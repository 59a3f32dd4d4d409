"""The panel's decisions that do not need Qt: which input to preselect, path text, the trained
model's selection, and which widget signals are real user changes.

* :func:`default_input_node`: the first scalar volume of the scene that is neither a label map
  nor an AttriVAE output (a label map listed first must not stop the automatic choice).
* :func:`path_text`: a path setting as the text to show (``""`` when unset, never ``"."``).
* :func:`select_trained_model`: make a finished training run the selected model in the scene's
  module parameter node, in the stored format of ``parameterNodeWrapper`` (``str`` as is, ``bool``
  as ``"True"``/``"False"``), whether or not the panel is shown and even after a scene close.
* :class:`PanelSync`: entering the module re-binds the widgets to the parameter node, and the
  GUI connectors clear and refill the combo boxes, which fires their change signals. The
  widget asks :meth:`PanelSync.should_apply` before acting on such a signal: nothing is acted
  on while connecting, nor when the value is the one last applied, so module entry neither
  resets the slice views nor a custom traversal range.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Hashable, Iterator

from AttriVAELib.slicer.mrml._common import ROLE_ATTRIBUTE, _nodes_by_class, _require_scene
from AttriVAELib.slicer.mrml.parameters import _parameter_node

__all__ = ["PanelSync", "default_input_node", "path_text", "select_trained_model"]

_MISSING = object()


def path_text(value: Any) -> str:
    """A path setting as text: ``""`` for None, ``""``, ``"."`` (what an empty ``pathlib.Path`` prints)."""
    text = str(value if value is not None else "").strip()
    return "" if text in ("", ".") else text


def default_input_node(scene):
    """The first scalar volume that is not a label map and not an AttriVAE output, else None."""
    _require_scene(scene)
    for node in _nodes_by_class(scene, "vtkMRMLScalarVolumeNode"):
        if node.IsA("vtkMRMLLabelMapVolumeNode") or node.GetAttribute(ROLE_ATTRIBUTE):
            continue
        if node.IsA("vtkMRMLVectorVolumeNode") or node.IsA("vtkMRMLDiffusionWeightedVolumeNode"):
            continue
        return node
    return None


def select_trained_model(scene, run_dir: str | os.PathLike) -> Path:
    """Make ``run_dir`` the selected model (``modelPath``, ``useDemoModel`` off) of the scene's module settings."""
    _require_scene(scene)
    run_dir = Path(run_dir)
    node = _parameter_node(scene, create=True)
    was_modifying = node.StartModify()
    try:
        node.SetParameter("modelPath", str(run_dir))
        node.SetParameter("useDemoModel", "False")
    finally:
        node.EndModify(was_modifying)
    return run_dir


class PanelSync:
    """Acts only on real user changes of grouped widget values (see the module docstring)."""

    def __init__(self) -> None:
        self._quiet = 0
        self._applied: dict[str, Any] = {}

    @contextlib.contextmanager
    def connecting(self) -> Iterator[None]:
        """While the widgets are (re)bound to the parameter node: their signals are not user changes."""
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1

    @property
    def quiet(self) -> bool:
        return self._quiet > 0

    def remember(self, key: str, value: Hashable) -> None:
        """Record ``value`` as applied without acting (e.g. the values shown after connecting)."""
        self._applied[key] = value

    def forget(self, key: str) -> None:
        """The next value of ``key`` is applied whatever it is (e.g. after new results)."""
        self._applied.pop(key, None)

    def should_apply(self, key: str, value: Hashable) -> bool:
        """True for a real change of ``key`` (and record it); False while connecting, for an
        incomplete value (None or ``""`` in it: a cleared combo box) or the value last applied."""
        parts = value if isinstance(value, tuple) else (value,)
        if self._quiet or any(part is None or part == "" for part in parts):
            return False
        if self._applied.get(key, _MISSING) == value:
            return False
        self._applied[key] = value
        return True
