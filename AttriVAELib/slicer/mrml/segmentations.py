"""Masks from labelmap or segmentation nodes, on the grid of a reference volume node.

A labelmap is resampled (nearest neighbour, through linear parent transforms) when its grid
differs from the reference's; a segmentation is exported onto the reference grid with the
Segmentations logic (``slicer.modules.segmentations`` in the application,
``vtkSlicerSegmentationsModuleLogic`` with the bare ``slicer-core`` wheel), and the temporary
export nodes are removed from the scene again.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from AttriVAELib.core.errors import InputError
from AttriVAELib.data.io import Geometry, Volume
from AttriVAELib.slicer.mrml._common import _check_volume_node, _label, _require_scene, _slicer, _vtk
from AttriVAELib.slicer.mrml.geometry import _node_ijk_to_ras, geometry_from_ijk_to_ras, geometry_from_node
from AttriVAELib.slicer.mrml.volumes import volume_from_node

__all__ = ["segmentation_or_labelmap_mask"]


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
