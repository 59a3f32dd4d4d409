"""Volume nodes ↔ :class:`~AttriVAELib.data.io.Volume`, and volume files read/written through MRML.

:func:`volume_from_node` copies a scalar volume node's voxels (shape (k, j, i)) with its full
ITK/LPS geometry (see :mod:`AttriVAELib.slicer.mrml.geometry` for the IJKToRAS ↔ LPS
convention); :func:`update_volume_node` writes a :class:`Volume` into a node, reusing the
node named ``name`` with the same :data:`ROLE_ATTRIBUTE` (in place when the grid is unchanged),
so a slider move updates one node. :func:`save_volume_node`/:func:`load_volume_node` use a
``vtkMRMLVolumeArchetypeStorageNode`` (NRRD, NIfTI, MHA).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from AttriVAELib.core.errors import InputError
from AttriVAELib.data.io import Volume
from AttriVAELib.slicer.mrml._common import (ROLE_ATTRIBUTE, SOURCE_REFERENCE_ROLE, _check_volume_node, _find_node,
                                             _label, _require_scene, _slicer, _vtk)
from AttriVAELib.slicer.mrml.geometry import _node_ijk_to_ras, _np_to_vtk, geometry_from_ijk_to_ras, \
    ijk_to_ras_from_geometry

__all__ = ["volume_from_node", "update_volume_node", "save_volume_node", "load_volume_node"]

_VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")


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
