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
from typing import Callable

import numpy as np

from AttriVAELib.core.errors import InputError
from AttriVAELib.data.io import Volume, check_image_file
from AttriVAELib.slicer.mrml._common import (ROLE_ATTRIBUTE, SOURCE_REFERENCE_ROLE, _add_new_node, _check_volume_node,
                                             _find_node, _label, _require_scene, _slicer, _vtk)
from AttriVAELib.slicer.mrml.geometry import (_node_ijk_to_ras, _np_to_vtk, geometry_from_ijk_to_ras,
                                              ijk_to_ras_from_geometry)

__all__ = ["checked_copy", "prepare_image", "volume_from_node", "update_volume_node", "save_volume_node", "load_volume_node"]

_VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")


def volume_from_node(node, *, dtype: type | np.dtype | None = np.float32, world: bool = False,
                     copy: bool = True) -> Volume:
    """A scalar volume node as a :class:`Volume` (array copied, shape (k, j, i), full geometry).

    ``dtype=None`` keeps the voxel type. Errors (:class:`InputError`): no node, not a scalar
    volume, no image data, a 2D slice, a vector (multi-component) volume or a sequence, NaN or
    infinite voxels.

    ``copy=False`` returns a read-only *view* of the node's voxels in their own type (``dtype``
    ignored) without the NaN check, in about a millisecond whatever the size: the background
    tasks take it on the main thread and convert and check it (:func:`checked_copy`) in their
    worker thread. The view keeps the voxel buffer alive.
    """
    _, numpy_support = _vtk()
    image = _check_volume_node(node)
    geometry = geometry_from_ijk_to_ras(_node_ijk_to_ras(node, world), image.GetDimensions())
    flat = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    if not copy:
        view = flat.reshape(geometry.shape)
        view.flags.writeable = False
        return Volume(view, geometry)
    return checked_copy(Volume(flat.reshape(geometry.shape), geometry), _label(node), dtype=dtype)


def checked_copy(volume: Volume, label: str = "volume", *, dtype: type | np.dtype | None = np.float32,
                 check: Callable[[], None] | None = None, slab_voxels: int = 1 << 22) -> Volume:
    """A copy of ``volume`` in ``dtype`` (None: its own), refusing NaN or infinite voxels.

    Copied slab by slab (``slab_voxels`` voxels each), calling ``check`` between slabs (a
    background task's cancellation check), so a large copy can be cancelled and never holds
    the interpreter for long.
    """
    view = volume.array
    out = np.empty(view.shape, dtype=view.dtype if dtype is None else dtype)
    floating = np.issubdtype(view.dtype, np.floating) or np.issubdtype(out.dtype, np.floating)
    per = max(1, int(slab_voxels) // max(1, view.shape[1] * view.shape[2]))
    bad = 0
    for k in range(0, view.shape[0], per):
        if check is not None:
            check()
        out[k:k + per] = view[k:k + per]
        if floating:
            bad += int(np.count_nonzero(~np.isfinite(out[k:k + per])))
    if bad:
        raise InputError(f"volume {label} has {bad} NaN or infinite voxels")
    return Volume(out, volume.geometry)


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


def prepare_image(volume: Volume, *, check: Callable[[], None] | None = None, slab_voxels: int = 1 << 22):
    """A ``vtkImageData`` holding a copy of ``volume``'s voxels, for :func:`update_volume_node` (``image=``).

    It touches no MRML object, so a worker thread can make it; the main thread then only
    swaps it into the node (no copy of a large volume there). The voxels are copied slab by
    slab into VTK's own buffer (VTK's one-call copy would hold the interpreter, and with it
    the GUI thread, for the whole volume); ``check`` runs between slabs.
    """
    vtk, numpy_support = _vtk()
    array = _as_vtk_ready(volume.array)
    flat = array.reshape(-1)
    vtk_array = vtk.vtkDataArray.CreateDataArray(numpy_support.get_vtk_array_type(array.dtype))
    vtk_array.SetNumberOfComponents(1)
    vtk_array.SetNumberOfTuples(flat.size)
    vtk_array.SetName("ImageScalars")
    target = numpy_support.vtk_to_numpy(vtk_array)  # a view of VTK's buffer
    step = max(1, int(slab_voxels))
    for start in range(0, flat.size, step):
        if check is not None:
            check()
        target[start:start + step] = flat[start:start + step]
    image = vtk.vtkImageData()
    image.SetDimensions(*(int(s) for s in volume.geometry.size))
    image.GetPointData().SetScalars(vtk_array)
    return image


def _fill_volume_node(node, volume: Volume, *, deep: bool = True, image=None) -> None:
    """Set a volume node's voxels and IJKToRAS from ``volume`` (in place when the grid matches).

    ``deep=False`` makes a new node's image wrap ``volume.array`` without copying (only for a
    node that is copied and dropped while the array is alive, such as a sequence item).
    """
    vtk, numpy_support = _vtk()
    array = _as_vtk_ready(volume.array)
    size = tuple(int(s) for s in volume.geometry.size)
    was_modifying = node.StartModify()
    prepared = image
    try:
        if prepared is not None:
            node.SetAndObserveImageData(prepared)
            node.SetIJKToRASMatrix(_np_to_vtk(ijk_to_ras_from_geometry(volume.geometry)))
            node.Modified()
            return
        image = node.GetImageData()
        scalars = image.GetPointData().GetScalars() if image is not None else None
        reuse = (
            scalars is not None
            and tuple(image.GetDimensions()) == size
            and image.GetNumberOfScalarComponents() == 1
            and scalars.GetDataType() == numpy_support.get_vtk_array_type(array.dtype)
        )
        if reuse and deep:
            numpy_support.vtk_to_numpy(scalars)[:] = array.ravel()
            scalars.Modified()
            image.Modified()
        else:
            image = vtk.vtkImageData()
            image.SetDimensions(*size)
            vtk_array = numpy_support.numpy_to_vtk(array.ravel(), deep=deep)
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
    auto_window_level: bool = True,
    image=None,
):
    """Create or update the volume node that shows ``volume``; return it.

    ``node`` is updated if given; otherwise the node named ``name`` whose
    :data:`ROLE_ATTRIBUTE` equals ``role`` is reused, and created only if there is none, so
    calling this on every slider move keeps one node. The node gets the voxels (in place when
    the grid is unchanged), the IJKToRAS of ``volume.geometry``, a display node if it had
    none, and the role attribute. With ``reference`` (the input volume node) the node is put
    under the reference's parent transform and keeps a :data:`SOURCE_REFERENCE_ROLE` reference
    to it. ``labelmap=True`` makes a ``vtkMRMLLabelMapVolumeNode``.

    A new node gets its display node before its voxels, and with ``auto_window_level=False``
    automatic window/level is off before the voxels arrive: the caller sets the window (a
    heatmap, or the input's window for a reconstruction), and no histogram pass over a large
    volume is spent on the main thread. ``image``: the voxels as a ``vtkImageData`` made by
    :func:`prepare_image` (e.g. in a worker thread), swapped in without a copy.
    """
    _slicer()
    _require_scene(scene)
    if not isinstance(volume, Volume):
        raise TypeError(f"expected an AttriVAELib.data.io.Volume, got {type(volume).__name__}")
    class_name = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    if node is None:
        node = _find_node(scene, class_name, name, role)
    if node is None:
        node = _add_new_node(scene, class_name, name)
    else:
        if not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLVectorVolumeNode"):
            raise InputError(f"output node {_label(node)} is a {node.GetClassName()}, not a scalar volume")
        if node.GetScene() is None:
            scene.AddNode(node)
        if node.GetName() != name:
            node.SetName(name)
    node.SetAttribute(ROLE_ATTRIBUTE, role)
    if node.GetDisplayNode() is None:
        if node.GetImageData() is not None and not auto_window_level:
            node.SetAndObserveImageData(None)  # no automatic window/level pass over the old voxels
        node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if display is not None and not auto_window_level and display.IsA("vtkMRMLScalarVolumeDisplayNode"):
        display.AutoWindowLevelOff()
    _fill_volume_node(node, volume, image=image)
    if reference is not None:
        node.SetAndObserveTransformNodeID(reference.GetTransformNodeID())
        node.SetNodeReferenceID(SOURCE_REFERENCE_ROLE, reference.GetID())
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
    or unreadable file, a truncated file or an oversized header (:func:`~AttriVAELib.data.io.check_image_file`),
    a 2D, 4D or multi-component image.
    """
    slicer = _slicer()
    _require_scene(scene)
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    suffix = _volume_suffix(path)
    if suffix is None:
        raise InputError(f"{path}: unsupported volume format; use one of {', '.join(_VOLUME_SUFFIXES)}")
    info = check_image_file(path)  # Slicer's readers zero-fill a truncated file; refuse it before they see it
    if info is not None and len(info.size) > 3 and any(n > 1 for n in info.size[3:]):
        # Slicer's archetype reader would keep the first frame without a word.
        raise InputError(f"{path}: a {len(info.size)}D image ({' × '.join(map(str, info.size))}); "
                         "give one 3D volume (e.g. one frame)")
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
