"""Latent traversals as Sequences-module nodes (a sequence of volumes plus a browser to play it).

The sequence's index is numeric (the traversed latent or attribute values, with their unit);
each item is a volume on the input grid. Inside Slicer the Sequences module logic refreshes
the browser's proxy node; with the bare ``slicer-core`` wheel a ``vtkSlicerSequencesLogic`` of
our own does it.
"""

from __future__ import annotations

import math
from typing import Sequence

from AttriVAELib.core.errors import InputError
from AttriVAELib.data.io import Volume
from AttriVAELib.slicer.mrml._common import (ROLE_ATTRIBUTE, SOURCE_REFERENCE_ROLE, _add_new_node, _find_or_add_node,
                                             _require_scene, _slicer)
from AttriVAELib.slicer.mrml.volumes import _fill_volume_node

__all__ = ["add_traversal_item", "begin_traversal", "finish_traversal", "set_traversal_item",
           "traversal_sequence"]


def _sequences_logic(scene):
    """Sequences module logic inside Slicer; a fresh ``vtkSlicerSequencesLogic`` otherwise."""
    slicer = _slicer()
    modules = getattr(slicer, "modules", None)
    module = getattr(modules, "sequences", None) if modules is not None else None
    if module is not None:
        return module.logic()
    logic_class = getattr(slicer, "vtkSlicerSequencesLogic", None)
    if logic_class is None:
        return None
    logic = logic_class()
    logic.SetMRMLScene(scene)
    return logic


def _index_text(value: float) -> str:
    return format(float(value), ".6g")


def set_traversal_item(scene, browser, item: int):
    """Select item ``item`` of a traversal browser and refresh its proxy node; return the proxy.

    Inside Slicer the Sequences module refreshes proxies by itself; with the bare wheel this
    call does it.
    """
    browser.SetSelectedItemNumber(int(item))
    logic = _sequences_logic(scene)
    if logic is not None:
        logic.UpdateProxyNodesFromSequences(browser)
    sequence = _browser_sequence(browser)
    return browser.GetProxyNode(sequence) if sequence is not None else None


def _browser_sequence(browser):
    getter = getattr(browser, "GetPrimarySequenceNode", None) or getattr(browser, "GetMasterSequenceNode")
    return getter()


def traversal_sequence(
    scene,
    volumes: Sequence[Volume],
    values: Sequence[float],
    name: str,
    *,
    attribute: str | None = None,
    unit: str = "",
    reference=None,
    role: str = "traversal",
):
    """Store a latent traversal as a sequence (one volume per value); return (sequence, browser).

    The sequence node's index is numeric, named ``attribute`` (default ``name``) with
    ``unit``; items are the ``volumes`` at index values ``values``. A sequence browser (if the
    Sequences classes exist) plays it; its proxy volume shows the selected item and is placed
    under ``reference``'s parent transform. Calling again with the same ``name`` refills the
    same sequence and browser. The browser is None where the browser class is unavailable.
    The same in steps (one item per call, e.g. from a background task): :func:`begin_traversal`,
    :func:`add_traversal_item`, :func:`finish_traversal`.
    """
    volumes = list(volumes)
    values = [float(v) for v in values]
    if not volumes:
        raise InputError("traversal has no volumes")
    if len(volumes) != len(values):
        raise InputError(f"traversal has {len(volumes)} volumes but {len(values)} values")
    sequence = begin_traversal(scene, values, name, attribute=attribute, unit=unit, role=role)
    for volume, value in zip(volumes, values):
        add_traversal_item(sequence, volume, value, name)
    return sequence, finish_traversal(scene, sequence, name, reference=reference, role=role)


def begin_traversal(scene, values: Sequence[float], name: str, *, attribute: str | None = None, unit: str = "",
                    role: str = "traversal"):
    """Check the index values and empty (or create) the sequence ``name``; return it."""
    slicer = _slicer()
    _require_scene(scene)
    sequence_class = getattr(slicer, "vtkMRMLSequenceNode", None)
    if sequence_class is None:
        raise InputError("this Slicer has no Sequences support (vtkMRMLSequenceNode is missing)")
    values = [float(v) for v in values]
    if not values:
        raise InputError("traversal has no volumes")
    if not all(math.isfinite(v) for v in values):
        raise InputError("traversal values must be finite numbers")
    texts = [_index_text(v) for v in values]
    if len(set(texts)) != len(texts):
        raise InputError("traversal values must be distinct")
    sequence = _find_or_add_node(scene, "vtkMRMLSequenceNode", name, role)
    was_modifying = sequence.StartModify()
    try:
        sequence.RemoveAllDataNodes()
        sequence.SetIndexName(attribute or name)
        sequence.SetIndexUnit(unit)
        sequence.SetIndexType(sequence_class.NumericIndex)
    finally:
        sequence.EndModify(was_modifying)
    return sequence


def add_traversal_item(sequence, volume: Volume, value: float, name: str) -> None:
    """Add one traversal frame at index ``value`` (the sequence keeps its own copy)."""
    slicer = _slicer()
    text = _index_text(value)
    item = slicer.vtkMRMLScalarVolumeNode()
    item.SetName(f"{name} [{text}]")
    _fill_volume_node(item, volume, deep=False)  # wraps the array; the sequence makes the one copy
    sequence.SetDataNodeAtValue(item, text)


def finish_traversal(scene, sequence, name: str, *, reference=None, role: str = "traversal",
                     window: tuple[float, float] | None = None):
    """The browser that plays ``sequence`` (created or reused; None without the browser class).

    A new proxy volume gets a display node with ``window`` = (window, level) when given (no
    automatic window/level pass over its voxels), else Slicer's default display node.
    """
    slicer = _slicer()
    browser_class = getattr(slicer, "vtkMRMLSequenceBrowserNode", None)
    if browser_class is None:
        return None
    browser_name = f"{name} browser"
    browser = _find_or_add_node(scene, "vtkMRMLSequenceBrowserNode", browser_name, role)
    setter = getattr(browser, "SetAndObservePrimarySequenceNodeID", None) or browser.SetAndObserveMasterSequenceNodeID
    setter(sequence.GetID())
    proxy = set_traversal_item(scene, browser, 0)
    if proxy is not None:
        proxy.SetAttribute(ROLE_ATTRIBUTE, f"{role}:proxy")
        if reference is not None:
            proxy.SetAndObserveTransformNodeID(reference.GetTransformNodeID())
            proxy.SetNodeReferenceID(SOURCE_REFERENCE_ROLE, reference.GetID())
        if proxy.GetDisplayNode() is None:
            _proxy_display(scene, proxy, window)
    return browser


def _proxy_display(scene, proxy, window: tuple[float, float] | None) -> None:
    if window is None:
        proxy.CreateDefaultDisplayNodes()
        return
    display = _add_new_node(scene, "vtkMRMLScalarVolumeDisplayNode", f"{proxy.GetName()} display")
    display.AutoWindowLevelOff()
    display.SetWindowLevel(float(window[0]), float(window[1]))
    grey = scene.GetNodeByID("vtkMRMLColorTableNodeGrey")
    if grey is not None:
        display.SetAndObserveColorNodeID(grey.GetID())
    proxy.SetAndObserveDisplayNodeID(display.GetID())
