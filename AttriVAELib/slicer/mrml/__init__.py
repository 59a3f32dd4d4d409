"""MRML bridge: Slicer volume, segmentation, colour, sequence and parameter nodes ↔ AttriVAELib.

This is the only part of AttriVAELib that touches ``slicer``/``vtk``, and it imports them inside
functions, so ``import AttriVAELib`` (and even ``import AttriVAELib.slicer.mrml``) works without
Slicer. Every function takes the scene (or a node) as an argument: it runs inside the Slicer
application and against a bare ``slicer.vtkMRMLScene()`` from the ``slicer-core`` wheel, where
``slicer.app`` and ``slicer.modules`` do not exist and ``slicer.mrmlScene`` may be None.
Call these functions from the main (GUI) thread only: MRML is not thread-safe.

One module per concern, all re-exported here (``from AttriVAELib.slicer import mrml;
mrml.update_volume_node(...)``):

:mod:`~AttriVAELib.slicer.mrml.geometry`
    IJKToRAS (Slicer, RAS) ↔ :class:`AttriVAELib.data.io.Geometry` (ITK, LPS)::

        IJKToRAS = diag(-1, -1, 1, 1) @ IJKToLPS,   IJKToLPS = Geometry.index_to_physical_matrix()

    Arrays are (k, j, i) = (z, y, x) in both worlds (``slicer.util.arrayFromVolume`` order).
:mod:`~AttriVAELib.slicer.mrml.volumes`
    volume nodes ↔ :class:`~AttriVAELib.data.io.Volume`; volume files read/written through MRML.
:mod:`~AttriVAELib.slicer.mrml.segmentations`
    binary masks from labelmap or segmentation nodes on a reference volume's grid.
:mod:`~AttriVAELib.slicer.mrml.colors`
    colour tables (Inferno, ColdToHotRainbow), heatmap display, slice-view overlays.
:mod:`~AttriVAELib.slicer.mrml.sequences`
    latent traversals as a sequence of volumes plus a browser.
:mod:`~AttriVAELib.slicer.mrml.parameters`
    module settings saved with the scene (JSON on the module's scripted module node).

Nodes written here carry the attribute :data:`ROLE_ATTRIBUTE` (e.g. ``"reconstruction"``,
``"heatmap:LV volume"``, ``"difference"``); :func:`update_volume_node` finds a node by name
and role, so repeated updates (slider moves) reuse one node instead of piling up new ones.
"""

from AttriVAELib.slicer.mrml._common import ROLE_ATTRIBUTE, SOURCE_REFERENCE_ROLE
from AttriVAELib.slicer.mrml.colors import (BUILTIN_COLORMAPS, ensure_colormap, set_heatmap_display,
                                            set_signed_heatmap_display, show_overlay)
from AttriVAELib.slicer.mrml.geometry import (RAS_FROM_LPS, geometry_from_ijk_to_ras, geometry_from_node,
                                              ijk_to_ras_from_geometry)
from AttriVAELib.slicer.mrml.parameters import (PARAMETER_PREFIX, PARAMETER_SINGLETON_TAG, load_parameters,
                                                save_parameters)
from AttriVAELib.slicer.mrml.segmentations import segmentation_or_labelmap_mask
from AttriVAELib.slicer.mrml.sequences import set_traversal_item, traversal_sequence
from AttriVAELib.slicer.mrml.volumes import load_volume_node, save_volume_node, update_volume_node, volume_from_node

__all__ = [
    "ROLE_ATTRIBUTE",
    "SOURCE_REFERENCE_ROLE",
    "PARAMETER_SINGLETON_TAG",
    "PARAMETER_PREFIX",
    "BUILTIN_COLORMAPS",
    "RAS_FROM_LPS",
    "ijk_to_ras_from_geometry",
    "geometry_from_ijk_to_ras",
    "geometry_from_node",
    "volume_from_node",
    "update_volume_node",
    "segmentation_or_labelmap_mask",
    "ensure_colormap",
    "set_heatmap_display",
    "set_signed_heatmap_display",
    "show_overlay",
    "traversal_sequence",
    "set_traversal_item",
    "save_parameters",
    "load_parameters",
    "save_volume_node",
    "load_volume_node",
]
