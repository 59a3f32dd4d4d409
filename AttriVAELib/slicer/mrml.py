"""MRML bridge: Slicer volume, segmentation, colour, sequence and parameter nodes ↔ AttriVAELib.

This is the only AttriVAELib module that touches ``slicer``/``vtk``, and it imports them inside
functions, so ``import AttriVAELib`` (and even ``import AttriVAELib.slicer.mrml``) works without Slicer.
Every function takes the scene (or a node) as an argument: it runs inside the Slicer
application and against a bare ``slicer.vtkMRMLScene()`` from the ``slicer-core`` wheel, where
``slicer.app`` and ``slicer.modules`` do not exist and ``slicer.mrmlScene`` may be None.
Call these functions from the main (GUI) thread only: MRML is not thread-safe.

Geometry
    Slicer keeps a volume's grid in its IJKToRAS matrix (RAS physical space); the image data
    itself has unit spacing and zero origin. :class:`AttriVAELib.data.io.Geometry` follows ITK (LPS
    physical space). The two differ by a sign flip of the first two physical axes::

        IJKToRAS = diag(-1, -1, 1, 1) @ IJKToLPS,   IJKToLPS = Geometry.index_to_physical_matrix()

    Arrays are (k, j, i) = (z, y, x) in both worlds (``slicer.util.arrayFromVolume`` order).

Nodes written here carry the attribute :data:`ROLE_ATTRIBUTE` (e.g. ``"reconstruction"``,
``"heatmap:LV volume"``, ``"difference"``); :func:`update_volume_node` finds a node by name
and role, so repeated updates (slider moves) reuse one node instead of piling up new ones.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from AttriVAELib.core.errors import InputError
from AttriVAELib.data.io import Geometry, Volume

if TYPE_CHECKING:  # pragma: no cover - type names only
    import slicer  # noqa: F401

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

#: Attribute that marks nodes created by AttriVAE and says what they hold.
ROLE_ATTRIBUTE = "AttriVAE.Role"
#: Node reference role from an output node to the input volume it was computed from.
SOURCE_REFERENCE_ROLE = "AttriVAE.source"
#: Singleton tag of the scripted module node that stores the module's settings. It is the
#: module name, so the node is shared with ``ScriptedLoadableModuleLogic.getParameterNode()``.
PARAMETER_SINGLETON_TAG = "AttriVAE"
#: Prefix of the parameters written by :func:`save_parameters`. It is not a Python identifier,
#: so these entries never collide with ``parameterNodeWrapper`` fields on the same node.
PARAMETER_PREFIX = "json."

#: diag(-1, -1, 1): maps LPS to RAS and back (it is its own inverse).
RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0])

_VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")

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


# --------------------------------------------------------------------------------------
# Imports and small helpers
# --------------------------------------------------------------------------------------


def _slicer():
    try:
        import slicer
    except ImportError:
        raise InputError("MRML functions need 3D Slicer or the 'slicer-core' wheel (pip install slicer-core)") from None
    return slicer


def _vtk():
    import vtk
    from vtk.util import numpy_support

    return vtk, numpy_support


def _label(node) -> str:
    """A node's name for messages."""
    name = node.GetName() if node is not None else None
    return f"'{name}'" if name else (node.GetID() or node.GetClassName())


def _vtk_to_np(matrix) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def _np_to_vtk(array: np.ndarray):
    vtk, _ = _vtk()
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def _require_scene(scene) -> None:
    if scene is None:
        raise InputError("no MRML scene given")


# --------------------------------------------------------------------------------------
# Geometry conversion (pure numpy)
# --------------------------------------------------------------------------------------


def ijk_to_ras_from_geometry(geometry: Geometry) -> np.ndarray:
    """4×4 IJKToRAS matrix (Slicer) of an ITK/LPS :class:`Geometry`."""
    m = geometry.index_to_physical_matrix()
    out = np.eye(4)
    out[:3, :] = RAS_FROM_LPS @ m[:3, :]
    return out


def geometry_from_ijk_to_ras(ijk_to_ras: np.ndarray, size: Sequence[int]) -> Geometry:
    """Inverse of :func:`ijk_to_ras_from_geometry` for a grid of ``size`` (i, j, k) voxels.

    Raises :class:`InputError` if the matrix is singular or sheared (ITK needs orthonormal
    direction cosines).
    """
    ijk_to_ras = np.asarray(ijk_to_ras, dtype=np.float64)
    lps = RAS_FROM_LPS @ ijk_to_ras[:3, :]
    columns = lps[:, :3]
    spacing = np.linalg.norm(columns, axis=0)
    if not np.all(np.isfinite(lps)) or np.any(spacing <= 0):
        raise InputError("volume geometry is degenerate (zero or non-finite spacing in IJKToRAS)")
    direction = columns / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise InputError("volume geometry is sheared (non-orthogonal axes); harden or remove the shearing transform")
    return Geometry(
        size=tuple(int(s) for s in size),
        spacing=tuple(float(s) for s in spacing),
        origin=tuple(float(v) for v in lps[:, 3]),
        direction=tuple(float(v) for v in direction.ravel()),
    )


# --------------------------------------------------------------------------------------
# Volume nodes → Volume
# --------------------------------------------------------------------------------------


def _node_ijk_to_ras(node, world: bool) -> np.ndarray:
    """The node's IJKToRAS, optionally composed with its (linear) parent transforms."""
    vtk, _ = _vtk()
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    ijk_to_ras = _vtk_to_np(matrix)
    transform_node = node.GetParentTransformNode() if world else None
    if transform_node is not None:
        if not transform_node.IsTransformToWorldLinear():
            raise InputError(
                f"volume {_label(node)} is under a non-linear transform {_label(transform_node)}; harden it first"
            )
        to_world = vtk.vtkMatrix4x4()
        transform_node.GetMatrixTransformToWorld(to_world)
        ijk_to_ras = _vtk_to_np(to_world) @ ijk_to_ras
    return ijk_to_ras


def _check_volume_node(node, what: str = "volume"):
    """Validate a 3D single-component volume node; return its vtkImageData."""
    _slicer()
    if node is None:
        raise InputError(f"no {what} selected")
    if node.IsA("vtkMRMLSequenceNode") or node.IsA("vtkMRMLSequenceBrowserNode"):
        raise InputError(f"{what} {_label(node)} is a sequence (4D); select one time point (its proxy volume)")
    if not node.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError(f"{what} {_label(node)} is a {node.GetClassName()}, not a scalar volume")
    if node.IsA("vtkMRMLVectorVolumeNode") or node.IsA("vtkMRMLDiffusionWeightedVolumeNode"):
        raise InputError(f"{what} {_label(node)} is a multi-component (4D/vector) volume; expected a 3D scalar volume")
    image = node.GetImageData()
    scalars = image.GetPointData().GetScalars() if image is not None else None
    if scalars is None:
        raise InputError(f"{what} {_label(node)} has no image data")
    components = image.GetNumberOfScalarComponents()
    if components != 1:
        raise InputError(
            f"{what} {_label(node)} has {components} components per voxel (4D/vector); expected a 3D scalar volume"
        )
    dims = image.GetDimensions()
    if min(dims) < 2:
        raise InputError(f"{what} {_label(node)} has size {tuple(dims)}: a 2D slice, expected a 3D volume")
    return image


def geometry_from_node(node, *, world: bool = False) -> Geometry:
    """ITK/LPS :class:`Geometry` of a volume node.

    With ``world=True`` the node's linear parent transforms are included (the grid as shown
    in the views); a non-linear transform is then an error.
    """
    image = _check_volume_node(node)
    return geometry_from_ijk_to_ras(_node_ijk_to_ras(node, world), image.GetDimensions())


def volume_from_node(node, *, dtype: type | np.dtype | None = np.float32, world: bool = False) -> Volume:
    """A scalar volume node as a :class:`Volume` (array copied, shape (k, j, i), full geometry).

    ``dtype=None`` keeps the voxel type. Errors (:class:`InputError`): no node, not a scalar
    volume, no image data, a 2D slice, a vector (multi-component) volume or a sequence, NaN or
    infinite voxels.
    """
    _, numpy_support = _vtk()
    image = _check_volume_node(node)
    geometry = geometry_from_ijk_to_ras(_node_ijk_to_ras(node, world), image.GetDimensions())
    flat = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    array = np.array(flat.reshape(geometry.shape), dtype=dtype, copy=True)
    if np.issubdtype(flat.dtype, np.floating) or np.issubdtype(array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise InputError(f"volume {_label(node)} has {bad} NaN or infinite voxels")
    return Volume(array, geometry)


# --------------------------------------------------------------------------------------
# Volume → volume nodes
# --------------------------------------------------------------------------------------


def _as_vtk_ready(array: np.ndarray) -> np.ndarray:
    if array.ndim != 3:
        raise ValueError(f"expected a 3D array, got shape {array.shape}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    elif not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"unsupported voxel type {array.dtype}")
    return np.ascontiguousarray(array)


def _fill_volume_node(node, volume: Volume) -> None:
    """Set a volume node's voxels and IJKToRAS from ``volume`` (in place when the grid matches)."""
    vtk, numpy_support = _vtk()
    array = _as_vtk_ready(volume.array)
    size = tuple(int(s) for s in volume.geometry.size)
    was_modifying = node.StartModify()
    try:
        image = node.GetImageData()
        scalars = image.GetPointData().GetScalars() if image is not None else None
        reuse = (
            scalars is not None
            and tuple(image.GetDimensions()) == size
            and image.GetNumberOfScalarComponents() == 1
            and scalars.GetDataType() == numpy_support.get_vtk_array_type(array.dtype)
        )
        if reuse:
            numpy_support.vtk_to_numpy(scalars)[:] = array.ravel()
            scalars.Modified()
            image.Modified()
        else:
            image = vtk.vtkImageData()
            image.SetDimensions(*size)
            vtk_array = numpy_support.numpy_to_vtk(array.ravel(), deep=True)
            vtk_array.SetName("ImageScalars")
            image.GetPointData().SetScalars(vtk_array)
            node.SetAndObserveImageData(image)
        node.SetIJKToRASMatrix(_np_to_vtk(ijk_to_ras_from_geometry(volume.geometry)))
        node.Modified()
    finally:
        node.EndModify(was_modifying)


def _find_node(scene, class_name: str, name: str, role: str | None):
    """First node of exactly ``class_name`` called ``name`` whose role attribute is ``role``."""
    nodes = scene.GetNodesByClassByName(class_name, name)
    for i in range(nodes.GetNumberOfItems()):
        candidate = nodes.GetItemAsObject(i)
        if candidate.GetClassName() == class_name and candidate.GetAttribute(ROLE_ATTRIBUTE) == role:
            return candidate
    return None


def update_volume_node(
    scene,
    volume: Volume,
    name: str,
    node=None,
    reference=None,
    *,
    role: str = "output",
    labelmap: bool = False,
):
    """Create or update the volume node that shows ``volume``; return it.

    ``node`` is updated if given; otherwise the node named ``name`` whose
    :data:`ROLE_ATTRIBUTE` equals ``role`` is reused, and created only if there is none, so
    calling this on every slider move keeps one node. The node gets the voxels (in place when
    the grid is unchanged), the IJKToRAS of ``volume.geometry``, a display node if it had
    none, and the role attribute. With ``reference`` (the input volume node) the node is put
    under the reference's parent transform and keeps a :data:`SOURCE_REFERENCE_ROLE` reference
    to it. ``labelmap=True`` makes a ``vtkMRMLLabelMapVolumeNode``.
    """
    slicer = _slicer()
    _require_scene(scene)
    if not isinstance(volume, Volume):
        raise TypeError(f"expected an AttriVAELib.data.io.Volume, got {type(volume).__name__}")
    class_name = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    if node is None:
        node = _find_node(scene, class_name, name, role)
    if node is None:
        node = getattr(slicer, class_name)()
        node.SetName(name)
        scene.AddNode(node)
    else:
        if not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLVectorVolumeNode"):
            raise InputError(f"output node {_label(node)} is a {node.GetClassName()}, not a scalar volume")
        if node.GetScene() is None:
            scene.AddNode(node)
        if node.GetName() != name:
            node.SetName(name)
    node.SetAttribute(ROLE_ATTRIBUTE, role)
    _fill_volume_node(node, volume)
    if reference is not None:
        node.SetAndObserveTransformNodeID(reference.GetTransformNodeID())
        node.SetNodeReferenceID(SOURCE_REFERENCE_ROLE, reference.GetID())
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


# --------------------------------------------------------------------------------------
# Masks from labelmaps and segmentations
# --------------------------------------------------------------------------------------


def _resample_mask(mask: np.ndarray, source: Geometry, target: Geometry) -> np.ndarray:
    """Nearest-neighbour resampling of a binary mask from ``source`` onto ``target``."""
    import SimpleITK as sitk

    image = Volume(mask.astype(np.uint8), source).to_sitk()
    resampled = sitk.Resample(image, target.reference_image(), sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return sitk.GetArrayFromImage(resampled) != 0


def _segmentation_logic():
    slicer = _slicer()
    modules = getattr(slicer, "modules", None)
    module = getattr(modules, "segmentations", None) if modules is not None else None
    if module is not None:
        return module.logic()
    return getattr(slicer, "vtkSlicerSegmentationsModuleLogic", None)


def _mask_from_segmentation(scene, node, reference, segment_ids: Sequence[str] | None) -> np.ndarray:
    slicer = _slicer()
    vtk, numpy_support = _vtk()
    logic = _segmentation_logic()
    if logic is None:
        raise InputError(
            f"segmentation {_label(node)} cannot be used here: the Segmentations module logic is not available; "
            "export it to a labelmap volume first"
        )
    segmentation = node.GetSegmentation()
    if segmentation is None or segmentation.GetNumberOfSegments() == 0:
        raise InputError(f"segmentation {_label(node)} is empty (it has no segments)")
    ids = vtk.vtkStringArray()
    for segment_id in segment_ids or ():
        if segmentation.GetSegment(segment_id) is None:
            raise InputError(f"segmentation {_label(node)} has no segment '{segment_id}'")
        ids.InsertNextValue(segment_id)
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    labelmap = slicer.vtkMRMLLabelMapVolumeNode()
    labelmap.SetName(scene.GenerateUniqueName("AttriVAE mask export"))
    labelmap.SetHideFromEditors(True)
    labelmap.SetSaveWithScene(False)
    scene.AddNode(labelmap)  # the export needs the labelmap in the segmentation's scene
    try:
        if not logic.ExportSegmentsToLabelmapNode(node, ids, labelmap, reference):
            raise InputError(f"segmentation {_label(node)} could not be exported onto volume {_label(reference)}")
        image = labelmap.GetImageData()
        scalars = image.GetPointData().GetScalars() if image is not None else None
        if scalars is None:
            raise InputError(f"segmentation {_label(node)} is empty or does not overlap volume {_label(reference)}")
        dims = image.GetDimensions()
        array = numpy_support.vtk_to_numpy(scalars).reshape(dims[2], dims[1], dims[0]) != 0
        source = geometry_from_ijk_to_ras(_node_ijk_to_ras(labelmap, False), dims)
    finally:
        # Remove the temporary labelmap and what the export made for it (display node, colour
        # table); keep scene singletons such as the subject hierarchy.
        created = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
        for extra in created:
            if extra.GetID() in before or extra.GetSingletonTag() or extra.IsA("vtkMRMLSubjectHierarchyNode"):
                continue
            scene.RemoveNode(extra)
    target = geometry_from_ijk_to_ras(_node_ijk_to_ras(reference, False), reference.GetImageData().GetDimensions())
    if not source.allclose(target, atol=1e-6):  # exported on the reference grid already, normally
        array = _resample_mask(array, source, target)
    return array


def segmentation_or_labelmap_mask(
    scene,
    node,
    reference_volume_node,
    *,
    segment_ids: Sequence[str] | None = None,
    label: int | None = None,
) -> Volume:
    """Binary mask (uint8 0/1) on the grid of ``reference_volume_node``.

    ``node`` is a labelmap (or scalar) volume node — foreground is any non-zero voxel, or
    only ``label`` if given — resampled (nearest neighbour, through linear parent transforms)
    onto the reference grid when its grid differs; or a segmentation node, exported with the
    Segmentations logic (all segments, or ``segment_ids``). The returned geometry is the
    reference node's own (local) geometry, i.e. what :func:`volume_from_node` returns for it.
    Errors: no node, no reference, empty mask, mask that does not overlap the volume.
    """
    _require_scene(scene)
    if node is None:
        raise InputError("no mask (labelmap or segmentation) selected")
    if reference_volume_node is None:
        raise InputError("no reference volume selected for the mask")
    reference_image = _check_volume_node(reference_volume_node, "reference volume")
    target = geometry_from_ijk_to_ras(_node_ijk_to_ras(reference_volume_node, False), reference_image.GetDimensions())
    if node.IsA("vtkMRMLSegmentationNode"):
        mask = _mask_from_segmentation(scene, node, reference_volume_node, segment_ids)
        if not mask.any():
            raise InputError(
                f"segmentation {_label(node)} is empty or does not overlap volume {_label(reference_volume_node)}"
            )
        return Volume(mask.astype(np.uint8), target)
    if not node.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError(
            f"mask {_label(node)} is a {node.GetClassName()}; expected a labelmap volume or a segmentation"
        )
    source = volume_from_node(node, dtype=None, world=False)
    mask = source.array == label if label is not None else source.array != 0
    what = f"label {label}" if label is not None else "foreground"
    if not mask.any():
        raise InputError(f"labelmap {_label(node)} is empty (no {what} voxels)")
    same_frame = node.GetTransformNodeID() == reference_volume_node.GetTransformNodeID()
    if not (same_frame and source.geometry.allclose(target, atol=1e-6)):
        if same_frame:
            source_geometry, target_geometry = source.geometry, target
        else:  # compare in world coordinates; the result is indexed on the reference grid
            source_geometry = geometry_from_node(node, world=True)
            target_geometry = geometry_from_node(reference_volume_node, world=True)
        mask = _resample_mask(mask, source_geometry, target_geometry)
        if not mask.any():
            raise InputError(f"labelmap {_label(node)} does not overlap volume {_label(reference_volume_node)}")
    return Volume(mask.astype(np.uint8), target)


# --------------------------------------------------------------------------------------
# Colour tables and heatmap display
# --------------------------------------------------------------------------------------


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
        nodes = scene.GetNodesByClassByName("vtkMRMLColorNode", name)
        found = nodes.GetItemAsObject(0) if nodes.GetNumberOfItems() else None
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
):
    """Show ``node`` as a heatmap; return its scalar display node.

    Colour node ``colormap_node``; fixed window/level spanning ``window`` (auto window/level
    off); voxels below ``threshold`` transparent (ApplyThreshold with the upper threshold at
    the data maximum), or no threshold if None; ``opacity`` stored on the display node (the
    slice-view foreground opacity is set by :func:`show_overlay`); linear interpolation.
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
            display.SetUpperThreshold(max(high, _data_max(node)))
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
    nodes = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    count = nodes.GetNumberOfItems()
    for i in range(count):
        composite = nodes.GetItemAsObject(i)
        if background is not None:
            composite.SetBackgroundVolumeID(background.GetID())
        if foreground is not None:
            composite.SetForegroundVolumeID(foreground.GetID())
        if opacity is not None:
            composite.SetForegroundOpacity(float(opacity))
    return count


# --------------------------------------------------------------------------------------
# Sequences (latent traversals)
# --------------------------------------------------------------------------------------


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
    """
    slicer = _slicer()
    _require_scene(scene)
    sequence_class = getattr(slicer, "vtkMRMLSequenceNode", None)
    if sequence_class is None:
        raise InputError("this Slicer has no Sequences support (vtkMRMLSequenceNode is missing)")
    volumes = list(volumes)
    values = [float(v) for v in values]
    if not volumes:
        raise InputError("traversal has no volumes")
    if len(volumes) != len(values):
        raise InputError(f"traversal has {len(volumes)} volumes but {len(values)} values")
    if not all(math.isfinite(v) for v in values):
        raise InputError("traversal values must be finite numbers")
    texts = [_index_text(v) for v in values]
    if len(set(texts)) != len(texts):
        raise InputError("traversal values must be distinct")

    sequence = _find_node(scene, "vtkMRMLSequenceNode", name, role)
    if sequence is None:
        sequence = sequence_class()
        sequence.SetName(name)
        sequence.SetAttribute(ROLE_ATTRIBUTE, role)
        scene.AddNode(sequence)
    was_modifying = sequence.StartModify()
    try:
        sequence.RemoveAllDataNodes()
        sequence.SetIndexName(attribute or name)
        sequence.SetIndexUnit(unit)
        sequence.SetIndexType(sequence_class.NumericIndex)
        for volume, text in zip(volumes, texts):
            item = slicer.vtkMRMLScalarVolumeNode()
            item.SetName(f"{name} [{text}]")
            _fill_volume_node(item, volume)
            sequence.SetDataNodeAtValue(item, text)  # the sequence keeps its own copy
    finally:
        sequence.EndModify(was_modifying)

    browser_class = getattr(slicer, "vtkMRMLSequenceBrowserNode", None)
    if browser_class is None:
        return sequence, None
    browser_name = f"{name} browser"
    browser = _find_node(scene, "vtkMRMLSequenceBrowserNode", browser_name, role)
    if browser is None:
        browser = browser_class()
        browser.SetName(browser_name)
        browser.SetAttribute(ROLE_ATTRIBUTE, role)
        scene.AddNode(browser)
    setter = getattr(browser, "SetAndObservePrimarySequenceNodeID", None) or browser.SetAndObserveMasterSequenceNodeID
    setter(sequence.GetID())
    proxy = set_traversal_item(scene, browser, 0)
    if proxy is not None:
        proxy.SetAttribute(ROLE_ATTRIBUTE, f"{role}:proxy")
        if reference is not None:
            proxy.SetAndObserveTransformNodeID(reference.GetTransformNodeID())
            proxy.SetNodeReferenceID(SOURCE_REFERENCE_ROLE, reference.GetID())
        if proxy.GetDisplayNode() is None:
            proxy.CreateDefaultDisplayNodes()
    return sequence, browser


# --------------------------------------------------------------------------------------
# Module settings saved with the scene
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------


def _volume_suffix(path: Path) -> str | None:
    name = path.name.lower()
    return next((s for s in _VOLUME_SUFFIXES if name.endswith(s)), None)


def save_volume_node(node, path: str | os.PathLike, *, compress: bool = True) -> Path:
    """Write a volume node (NRRD, NIfTI, MHA) with its geometry, atomically; return the path.

    Uses a ``vtkMRMLVolumeArchetypeStorageNode`` of its own, so the node's storage node (if
    any) is left as it was.
    """
    from AttriVAELib.core.atomic import atomic_path

    slicer = _slicer()
    path = Path(path)
    if _volume_suffix(path) in (None, ".nhdr", ".mhd"):
        raise InputError(f"{path}: unsupported volume format; use .nrrd, .nii, .nii.gz or .mha")
    _check_volume_node(node)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetUseCompression(1 if compress else 0)
    with atomic_path(path) as tmp:
        tmp.unlink()  # the writer would report "removing old version" of the placeholder
        storage.SetFileName(str(tmp))
        if not storage.WriteData(node):
            raise InputError(f"{path}: cannot write volume {_label(node)}")
    return path


def load_volume_node(scene, path: str | os.PathLike, name: str | None = None, *, labelmap: bool = False):
    """Read a NRRD/NIfTI/MHA file into a new volume node (with a display node); return it.

    The node keeps its storage node, so Slicer's Save dialog knows the file. Errors: missing
    or unreadable file, a 2D or multi-component image.
    """
    slicer = _slicer()
    _require_scene(scene)
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    suffix = _volume_suffix(path)
    if suffix is None:
        raise InputError(f"{path}: unsupported volume format; use one of {', '.join(_VOLUME_SUFFIXES)}")
    node = (slicer.vtkMRMLLabelMapVolumeNode if labelmap else slicer.vtkMRMLScalarVolumeNode)()
    node.SetName(name or path.name[: -len(suffix)])
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    scene.AddNode(node)
    scene.AddNode(storage)
    node.SetAndObserveStorageNodeID(storage.GetID())
    try:
        if not storage.ReadData(node):
            raise InputError(f"{path}: cannot read the file as a volume")
        _check_volume_node(node)
    except InputError:
        scene.RemoveNode(node)
        scene.RemoveNode(storage)
        raise
    node.CreateDefaultDisplayNodes()
    return node
