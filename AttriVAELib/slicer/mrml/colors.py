"""Colour tables, heatmap display and slice-view overlays.

Heatmaps in [0, 1] use Inferno with a fixed window [0, 1] and values below a threshold
transparent; signed maps (differences, signed Grad-CAM) use ColdToHotRainbow with a window
[-limit, limit] centred at 0. :func:`ensure_colormap` uses Slicer's own colour table when the
scene has it and builds a 256-entry table otherwise (matplotlib, else built-in anchors).
:func:`show_overlay` works on the scene's slice composite nodes (no ``slicer.app`` needed).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from AttriVAELib.core.errors import InputError
from AttriVAELib.slicer.mrml._common import ROLE_ATTRIBUTE, _label, _nodes_by_class, _require_scene, _slicer

__all__ = ["BUILTIN_COLORMAPS", "ensure_colormap", "set_heatmap_display", "set_signed_heatmap_display",
           "show_overlay"]

# Inferno (matplotlib, CC0), sampled at 17 evenly spaced points; used when neither Slicer's
# file colour table nor matplotlib is available.
_INFERNO_ANCHORS = (
    (0.0015, 0.0005, 0.0139), (0.0423, 0.0281, 0.1411), (0.1293, 0.0473, 0.2908),
    (0.2383, 0.0366, 0.3964), (0.3415, 0.0623, 0.4294), (0.4412, 0.0993, 0.4316),
    (0.5409, 0.1347, 0.4151), (0.6401, 0.1714, 0.3811), (0.7357, 0.2159, 0.3302),
    (0.8224, 0.2752, 0.2661), (0.8943, 0.3534, 0.1936), (0.9470, 0.4492, 0.1153),
    (0.9784, 0.5579, 0.0349), (0.9879, 0.6753, 0.0653), (0.9746, 0.7977, 0.2063),
    (0.9476, 0.9174, 0.4107), (0.9884, 0.9984, 0.6449),
)
# Cold (negative) to hot (positive) rainbow for signed maps centred at 0: dark blue, blue,
# cyan, green at the centre, yellow, red, dark red.
_COLD_TO_HOT_ANCHORS = (
    (0.0, 0.0, 0.5), (0.0, 0.0, 1.0), (0.0, 1.0, 1.0), (0.5, 1.0, 0.5),
    (1.0, 1.0, 0.0), (1.0, 0.0, 0.0), (0.5, 0.0, 0.0),
)
#: Colour tables :func:`ensure_colormap` can build without Slicer's colour files.
BUILTIN_COLORMAPS = ("Inferno", "ColdToHotRainbow")


def _interpolate_anchors(anchors: Sequence[Sequence[float]], n: int) -> np.ndarray:
    anchors = np.asarray(anchors, dtype=np.float64)
    x = np.linspace(0.0, 1.0, len(anchors))
    t = np.linspace(0.0, 1.0, n)
    return np.stack([np.interp(t, x, anchors[:, c]) for c in range(3)], axis=1)


def _colormap_rgb(name: str, n: int = 256) -> np.ndarray:
    """n×3 RGB table for ``name``: matplotlib when available, else built-in anchors."""
    if name == "ColdToHotRainbow":
        return _interpolate_anchors(_COLD_TO_HOT_ANCHORS, n)
    try:
        from matplotlib import colormaps
    except ImportError:
        colormaps = None
    if colormaps is not None:
        for key in (name, name.lower()):
            if key in colormaps:
                return np.asarray(colormaps[key](np.linspace(0.0, 1.0, n)))[:, :3]
    if name == "Inferno":
        return _interpolate_anchors(_INFERNO_ANCHORS, n)
    raise InputError(
        f"colour table '{name}' is not in the scene and cannot be built; use one of {', '.join(BUILTIN_COLORMAPS)}"
    )


def ensure_colormap(scene, name: str = "Inferno"):
    """Return the colour node called ``name``, building and adding a 256-entry table if absent.

    Slicer's file table (ID ``vtkMRMLColorTableNodeFile<name>.txt``) or any colour node with
    that name is used when the scene has one. Otherwise (e.g. the bare ``slicer-core`` scene,
    which has no file colour tables) a ``vtkMRMLColorTableNode`` is built: Inferno from
    matplotlib (or built-in anchors), ColdToHotRainbow for signed maps, or any matplotlib
    colormap name.
    """
    slicer = _slicer()
    _require_scene(scene)
    found = scene.GetNodeByID(f"vtkMRMLColorTableNodeFile{name}.txt")
    if found is None:
        nodes = _nodes_by_class(scene, "vtkMRMLColorNode", name)
        found = nodes[0] if nodes else None
    if found is not None:
        return found
    rgb = _colormap_rgb(name)
    table = slicer.vtkMRMLColorTableNode()
    table.SetName(name)
    table.SetTypeToUser()
    table.SetNumberOfColors(len(rgb))
    for i, (r, g, b) in enumerate(rgb):
        table.SetColor(i, f"{name} {i}", float(r), float(g), float(b), 1.0)
    table.SetAttribute("Category", "AttriVAE")
    table.SetAttribute(ROLE_ATTRIBUTE, f"colormap:{name}")
    scene.AddNode(table)
    return table


def _display_node(node):
    if node is None:
        raise InputError("no volume node to display")
    display = node.GetDisplayNode()
    if display is None:
        if node.GetScene() is None:
            raise InputError(f"volume {_label(node)} is not in a scene; cannot create its display node")
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
    if display is None or not display.IsA("vtkMRMLScalarVolumeDisplayNode"):
        raise InputError(f"volume {_label(node)} has no scalar volume display node")
    return display


def _data_max(node) -> float:
    image = node.GetImageData()
    if image is None or image.GetPointData().GetScalars() is None:
        return -math.inf
    return float(image.GetScalarRange()[1])


def set_heatmap_display(
    node,
    colormap_node,
    window: tuple[float, float] = (0.0, 1.0),
    threshold: float | None = 0.2,
    opacity: float | None = None,
    *,
    interpolate: bool = True,
    data_max: float | None = None,
):
    """Show ``node`` as a heatmap; return its scalar display node.

    Colour node ``colormap_node``; fixed window/level spanning ``window`` (auto window/level
    off); voxels below ``threshold`` transparent (ApplyThreshold with the upper threshold at
    the data maximum), or no threshold if None; ``opacity`` stored on the display node (the
    slice-view foreground opacity is set by :func:`show_overlay`); linear interpolation.
    ``data_max``: the largest voxel value if the caller knows it (else VTK computes the scalar
    range, a pass over every voxel).
    """
    low, high = float(window[0]), float(window[1])
    if not high > low:
        raise InputError(f"heatmap window {window} is empty; expected (low, high) with low < high")
    display = _display_node(node)
    was_modifying = display.StartModify()
    try:
        if colormap_node is not None:
            display.SetAndObserveColorNodeID(colormap_node.GetID())
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(low, high)
        display.AutoThresholdOff()
        if threshold is None:
            display.ApplyThresholdOff()
        else:
            display.SetLowerThreshold(float(threshold))
            display.SetUpperThreshold(max(high, _data_max(node) if data_max is None else float(data_max)))
            display.ApplyThresholdOn()
        if opacity is not None:
            display.SetOpacity(float(opacity))
        display.SetInterpolate(1 if interpolate else 0)
    finally:
        display.EndModify(was_modifying)
    return display


def set_signed_heatmap_display(
    node,
    colormap_node,
    limit: float = 1.0,
    opacity: float | None = None,
    *,
    interpolate: bool = True,
):
    """Show a signed map (e.g. a difference image) centred at 0: window [-limit, limit], level 0.

    No threshold (a single threshold interval cannot hide values near 0 from both sides); use
    a diverging colour node such as ``ensure_colormap(scene, "ColdToHotRainbow")``.
    """
    limit = abs(float(limit))
    if not limit > 0:
        raise InputError("signed heatmap limit must be positive")
    return set_heatmap_display(node, colormap_node, (-limit, limit), None, opacity, interpolate=interpolate)


def show_overlay(scene, background=None, foreground=None, opacity: float | None = None) -> int:
    """Put ``background``/``foreground`` volumes in every slice view; return the number of views.

    Works on the scene's slice composite nodes directly (no ``slicer.app`` needed); a None
    node leaves that layer unchanged.
    """
    _require_scene(scene)
    nodes = _nodes_by_class(scene, "vtkMRMLSliceCompositeNode")
    for composite in nodes:
        if background is not None:
            composite.SetBackgroundVolumeID(background.GetID())
        if foreground is not None:
            composite.SetForegroundVolumeID(foreground.GetID())
        if opacity is not None:
            composite.SetForegroundOpacity(float(opacity))
    return len(nodes)
