"""Module settings saved with the scene, as JSON on the module's scripted module node.

Values are stored under ``PARAMETER_PREFIX + key`` on the singleton
``vtkMRMLScriptedModuleNode`` tagged :data:`PARAMETER_SINGLETON_TAG`, the node
``ScriptedLoadableModuleLogic.getParameterNode()`` returns, so they travel with the scene
(``.mrml``/``.mrb``) next to the ``parameterNodeWrapper`` fields.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from AttriVAELib.core.errors import InputError
from AttriVAELib.slicer.mrml._common import _require_scene, _slicer

__all__ = ["PARAMETER_SINGLETON_TAG", "PARAMETER_PREFIX", "save_parameters", "load_parameters"]

#: Singleton tag of the scripted module node that stores the module's settings. It is the
#: module name, so the node is shared with ``ScriptedLoadableModuleLogic.getParameterNode()``.
PARAMETER_SINGLETON_TAG = "AttriVAE"
#: Prefix of the parameters written by :func:`save_parameters`. It is not a Python identifier,
#: so these entries never collide with ``parameterNodeWrapper`` fields on the same node.
PARAMETER_PREFIX = "json."


def _parameter_node(scene, create: bool):
    slicer = _slicer()
    node = scene.GetSingletonNode(PARAMETER_SINGLETON_TAG, "vtkMRMLScriptedModuleNode")
    if node is None and create:
        node = slicer.vtkMRMLScriptedModuleNode()
        node.SetSingletonTag(PARAMETER_SINGLETON_TAG)
        node.SetName(PARAMETER_SINGLETON_TAG)
        node.SetAttribute("ModuleName", PARAMETER_SINGLETON_TAG)
        node = scene.AddNode(node)
    return node


def save_parameters(scene, parameters: Mapping[str, Any], *, replace: bool = False):
    """Store JSON-serialisable settings on the module's scripted module node; return the node.

    Each value is written as JSON under ``PARAMETER_PREFIX + key`` on the singleton node
    tagged :data:`PARAMETER_SINGLETON_TAG`, so it is saved with the scene (``.mrml``/``.mrb``)
    and coexists with ``parameterNodeWrapper`` fields. Keys not given are kept unless
    ``replace``.
    """
    _require_scene(scene)
    encoded = {}
    for key, value in parameters.items():
        if not isinstance(key, str) or not key:
            raise InputError(f"parameter name {key!r} must be a non-empty string")
        try:
            encoded[key] = json.dumps(value, allow_nan=False, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise InputError(f"parameter '{key}' cannot be saved: {exc}") from None
    node = _parameter_node(scene, create=True)
    was_modifying = node.StartModify()
    try:
        if replace:
            for existing in list(node.GetParameterNames()):
                if existing.startswith(PARAMETER_PREFIX):
                    node.UnsetParameter(existing)
        for key, text in encoded.items():
            node.SetParameter(PARAMETER_PREFIX + key, text)
    finally:
        node.EndModify(was_modifying)
    return node


def load_parameters(scene) -> dict[str, Any]:
    """Settings written by :func:`save_parameters` ({} if none). A value that is not valid
    JSON (edited by hand) is returned as its raw string."""
    _require_scene(scene)
    node = _parameter_node(scene, create=False)
    if node is None:
        return {}
    out: dict[str, Any] = {}
    for key in node.GetParameterNames():
        if not key.startswith(PARAMETER_PREFIX):
            continue
        text = node.GetParameter(key)
        try:
            out[key[len(PARAMETER_PREFIX):]] = json.loads(text)
        except (TypeError, ValueError):
            out[key[len(PARAMETER_PREFIX):]] = text
    return out
