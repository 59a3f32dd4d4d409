"""The session's results as persistent MRML output nodes, and how the slice views show them.

Every output node lives on the input volume's exact grid (its IJKToRAS), sits under the
input's parent transform, and is reused on every update: one node per name (:data:`NODE_NAMES`)
and role (see :func:`AttriVAELib.slicer.mrml.update_volume_node`). Display conventions:

* reconstruction: the input's window/level (the same intensity scale);
* attention maps: ReLU maps in [0, 1] with Inferno, window [0, 1] and values below the
  threshold transparent; signed maps in [-1, 1] with ColdToHotRainbow centred at 0;
* counterfactual difference (counterfactual − reconstruction): signed, ColdToHotRainbow with
  window ±max|difference|, overlaid on the input.

Every writer takes a :class:`~AttriVAELib.data.io.Volume` or a :class:`Prepared` one: a background
task makes the ``vtkImageData`` and the value range in its worker (:func:`prepare`), so writing
a large output on the main thread only swaps the image into the node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence, Union

import numpy as np

from AttriVAELib.data.io import Volume
from AttriVAELib.slicer import mrml
from AttriVAELib.slicer.mrml.volumes import prepare_image

__all__ = ["NODE_NAMES", "Prepared", "input_window", "prepare", "prepare_colormaps", "restyle_heatmap", "style_colormap", "show_counterfactual", "show_difference", "show_heatmaps",
           "show_reconstruction", "show_traversal", "style_heatmap", "write_counterfactual"]

#: Names of the persistent output nodes (heatmaps get ``": <attribute>"`` appended).
NODE_NAMES = {
    "reconstruction": "AttriVAE reconstruction",
    "heatmap": "AttriVAE attention",
    "counterfactual": "AttriVAE counterfactual",
    "difference": "AttriVAE counterfactual difference",
    "traversal": "AttriVAE traversal",
}


@dataclass
class Prepared:
    """An output volume made ready off the main thread: its voxels as a ``vtkImageData`` and its range."""

    volume: Volume
    image: Any
    low: float
    high: float


Output = Union[Volume, Prepared]


def prepare(volume: Volume, check=None, slab_voxels: int = 1 << 22) -> Prepared:
    """:class:`Prepared` of ``volume`` (no MRML: safe in a worker thread; ``check`` runs between slabs)."""
    flat = volume.array.reshape(-1)
    low, high = (np.inf, -np.inf) if flat.size else (0.0, 0.0)
    for start in range(0, flat.size, slab_voxels):
        part = flat[start:start + slab_voxels]
        low, high = min(low, float(part.min())), max(high, float(part.max()))
    return Prepared(volume, prepare_image(volume, check=check, slab_voxels=slab_voxels), float(low), float(high))


def _unpack(item: Output) -> tuple[Volume, Any, float | None, float | None]:
    if isinstance(item, Prepared):
        return item.volume, item.image, item.low, item.high
    return item, None, None, None


def prepare_colormaps() -> None:
    """Import what building a colour table may need (matplotlib), e.g. in a worker thread ahead of time."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pass


def style_colormap(scene, *, signed: bool, colormap: str | None = None):
    """The colour node :func:`style_heatmap` uses (built now if the scene lacks it)."""
    return mrml.ensure_colormap(scene, colormap or ("ColdToHotRainbow" if signed else "Inferno"))


def input_window(reference) -> tuple[float, float] | None:
    """(window, level) of the input's display node, None without one."""
    source = reference.GetDisplayNode() if reference is not None else None
    if source is not None and source.IsA("vtkMRMLScalarVolumeDisplayNode") and source.GetWindow() > 0:
        return float(source.GetWindow()), float(source.GetLevel())
    return None


def _write_like_input(scene, item: Output, name: str, role: str, reference):
    """Write ``item`` with the input's window/level (automatic window/level only if the input has none)."""
    window = input_window(reference)
    volume, image, _, _ = _unpack(item)
    node = mrml.update_volume_node(scene, volume, name, reference=reference, role=role,
                                   auto_window_level=window is None, image=image)
    display = node.GetDisplayNode()
    if window is not None and display is not None:
        display.SetWindowLevel(*window)
    return node


def show_reconstruction(scene, volume: Output, reference):
    """Write the decoded volume into the reconstruction node (input's window/level); return it."""
    return _write_like_input(scene, volume, NODE_NAMES["reconstruction"], "reconstruction", reference)


def style_heatmap(scene, node, *, signed: bool, colormap: str | None = None, threshold: float | None = None,
                  opacity: float | None = None, data_max: float | None = None) -> None:
    """Inferno/[0, 1]/threshold for a ReLU map; ColdToHotRainbow centred at 0 for a signed one."""
    if signed:
        table = mrml.ensure_colormap(scene, colormap or "ColdToHotRainbow")
        mrml.set_signed_heatmap_display(node, table, 1.0, opacity)
    else:
        table = mrml.ensure_colormap(scene, colormap or "Inferno")
        mrml.set_heatmap_display(node, table, (0.0, 1.0), threshold, opacity, data_max=data_max)


def show_heatmaps(scene, maps: Mapping[str, Output], reference, *, signed: bool, colormap: str | None = None,
                  threshold: float | None = 0.2, opacity: float | None = 0.5) -> dict:
    """One styled node per map (``"AttriVAE attention: <name>"``, role ``heatmap:<name>``); name → node."""
    nodes = {}
    for name, item in maps.items():
        volume, image, _, high = _unpack(item)
        node = mrml.update_volume_node(scene, volume, f"{NODE_NAMES['heatmap']}: {name}", reference=reference,
                                       role=f"heatmap:{name}", auto_window_level=False, image=image)
        if high is None:
            high = float(np.max(volume.array)) if volume.array.size else 0.0
        style_heatmap(scene, node, signed=signed, colormap=colormap, threshold=threshold, opacity=opacity,
                      data_max=high)
        nodes[name] = node
    return nodes


def restyle_heatmap(scene, node, *, signed: bool, colormap: str | None = None, threshold: float | None = None,
                    opacity: float | None = None) -> None:
    """Change what is given (colour table, threshold, opacity) and keep the current threshold otherwise."""
    if threshold is None and colormap is None and opacity is None:
        return
    display = node.GetDisplayNode()
    known_max = display.GetUpperThreshold() if display.GetApplyThreshold() else None  # ≥ the data maximum
    if threshold is None and display.GetApplyThreshold():
        threshold = display.GetLowerThreshold()
    style_heatmap(scene, node, signed=signed, colormap=colormap, threshold=threshold, opacity=opacity,
                  data_max=known_max)


def show_counterfactual(scene, counterfactual: Output, difference: Output, reference, opacity: float = 0.5):
    """Write the counterfactual and its signed difference; overlay the difference on ``reference``; return it."""
    write_counterfactual(scene, counterfactual, reference)
    return show_difference(scene, difference, reference, opacity)


def write_counterfactual(scene, counterfactual: Output, reference):
    """Write the counterfactual volume (input's window/level); return its node."""
    return _write_like_input(scene, counterfactual, NODE_NAMES["counterfactual"], "counterfactual", reference)


def show_difference(scene, difference: Output, reference, opacity: float = 0.5):
    """Write the signed difference (window ±max|value|) and overlay it on ``reference``; return its node."""
    volume, image, low, high = _unpack(difference)
    node = mrml.update_volume_node(scene, volume, NODE_NAMES["difference"], reference=reference,
                                   role="difference", auto_window_level=False, image=image)
    peak = float(np.abs(volume.array).max()) if low is None else max(abs(low), abs(high))
    table = mrml.ensure_colormap(scene, "ColdToHotRainbow")
    mrml.set_signed_heatmap_display(node, table, peak if peak > 0 else 1.0, opacity)
    mrml.show_overlay(scene, background=reference, foreground=node, opacity=opacity)
    return node


def show_traversal(scene, volumes: Sequence[Volume], values: Sequence[float], *, attribute: str, unit: str,
                   reference):
    """The traversal sequence ``"AttriVAE traversal"`` (refilled on every call) and its browser."""
    return mrml.traversal_sequence(scene, volumes, [float(v) for v in values], NODE_NAMES["traversal"],
                                   attribute=attribute, unit=unit, reference=reference)
