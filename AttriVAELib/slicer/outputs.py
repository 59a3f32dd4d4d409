"""The session's results as persistent MRML output nodes, and how the slice views show them.

Every output node lives on the input volume's exact grid (its IJKToRAS), sits under the
input's parent transform, and is reused on every update: one node per name (:data:`NODE_NAMES`)
and role (see :func:`AttriVAELib.slicer.mrml.update_volume_node`). Display conventions:

* reconstruction: the input's window/level (the same intensity scale);
* attention maps: ReLU maps in [0, 1] with Inferno, window [0, 1] and values below the
  threshold transparent; signed maps in [-1, 1] with ColdToHotRainbow centred at 0;
* counterfactual difference (counterfactual − reconstruction): signed, ColdToHotRainbow with
  window ±max|difference|, overlaid on the input.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from AttriVAELib.data.io import Volume
from AttriVAELib.slicer import mrml

__all__ = ["NODE_NAMES", "restyle_heatmap", "show_counterfactual", "show_heatmaps", "show_reconstruction",
           "show_traversal", "style_heatmap"]

#: Names of the persistent output nodes (heatmaps get ``": <attribute>"`` appended).
NODE_NAMES = {
    "reconstruction": "AttriVAE reconstruction",
    "heatmap": "AttriVAE attention",
    "counterfactual": "AttriVAE counterfactual",
    "difference": "AttriVAE counterfactual difference",
    "traversal": "AttriVAE traversal",
}


def show_reconstruction(scene, volume: Volume, reference):
    """Write the decoded volume into the reconstruction node (input's window/level); return it."""
    node = mrml.update_volume_node(scene, volume, NODE_NAMES["reconstruction"], reference=reference,
                                   role="reconstruction")
    source = reference.GetDisplayNode() if reference is not None else None
    display = node.GetDisplayNode()
    if source is not None and display is not None and source.IsA("vtkMRMLScalarVolumeDisplayNode") \
            and source.GetWindow() > 0:
        display.AutoWindowLevelOff()
        display.SetWindowLevel(source.GetWindow(), source.GetLevel())
    return node


def style_heatmap(scene, node, *, signed: bool, colormap: str | None = None, threshold: float | None = None,
                  opacity: float | None = None) -> None:
    """Inferno/[0, 1]/threshold for a ReLU map; ColdToHotRainbow centred at 0 for a signed one."""
    if signed:
        table = mrml.ensure_colormap(scene, colormap or "ColdToHotRainbow")
        mrml.set_signed_heatmap_display(node, table, 1.0, opacity)
    else:
        table = mrml.ensure_colormap(scene, colormap or "Inferno")
        mrml.set_heatmap_display(node, table, (0.0, 1.0), threshold, opacity)


def show_heatmaps(scene, maps: Mapping[str, Volume], reference, *, signed: bool, colormap: str | None = None,
                  threshold: float | None = 0.2, opacity: float | None = 0.5) -> dict:
    """One styled node per map (``"AttriVAE attention: <name>"``, role ``heatmap:<name>``); name → node."""
    nodes = {}
    for name, volume in maps.items():
        node = mrml.update_volume_node(scene, volume, f"{NODE_NAMES['heatmap']}: {name}", reference=reference,
                                       role=f"heatmap:{name}")
        style_heatmap(scene, node, signed=signed, colormap=colormap, threshold=threshold, opacity=opacity)
        nodes[name] = node
    return nodes


def restyle_heatmap(scene, node, *, signed: bool, colormap: str | None = None, threshold: float | None = None,
                    opacity: float | None = None) -> None:
    """Change what is given (colour table, threshold, opacity) and keep the current threshold otherwise."""
    if threshold is None and colormap is None and opacity is None:
        return
    display = node.GetDisplayNode()
    if threshold is None and display.GetApplyThreshold():
        threshold = display.GetLowerThreshold()
    style_heatmap(scene, node, signed=signed, colormap=colormap, threshold=threshold, opacity=opacity)


def show_counterfactual(scene, counterfactual: Volume, difference: Volume, reference, opacity: float = 0.5):
    """Write the counterfactual and its signed difference; overlay the difference on ``reference``; return it."""
    mrml.update_volume_node(scene, counterfactual, NODE_NAMES["counterfactual"], reference=reference,
                            role="counterfactual")
    node = mrml.update_volume_node(scene, difference, NODE_NAMES["difference"], reference=reference,
                                   role="difference")
    peak = float(np.abs(difference.array).max())
    table = mrml.ensure_colormap(scene, "ColdToHotRainbow")
    mrml.set_signed_heatmap_display(node, table, peak if peak > 0 else 1.0, opacity)
    mrml.show_overlay(scene, background=reference, foreground=node, opacity=opacity)
    return node


def show_traversal(scene, volumes: Sequence[Volume], values: Sequence[float], *, attribute: str, unit: str,
                   reference):
    """The traversal sequence ``"AttriVAE traversal"`` (refilled on every call) and its browser."""
    return mrml.traversal_sequence(scene, volumes, [float(v) for v in values], NODE_NAMES["traversal"],
                                   attribute=attribute, unit=unit, reference=reference)
