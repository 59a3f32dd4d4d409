"""Shared plumbing of the MRML bridge: lazy ``slicer``/``vtk`` lookups and node conventions.

``slicer`` and ``vtk`` are imported inside :func:`_slicer`/:func:`_vtk`, so every module of
:mod:`AttriVAELib.slicer.mrml` imports without Slicer and only fails (with a one-line
:class:`~AttriVAELib.core.errors.InputError`) when an MRML function is called.

Nodes written by AttriVAE carry the attribute :data:`ROLE_ATTRIBUTE` (e.g. ``"reconstruction"``,
``"heatmap:LV volume"``, ``"difference"``); :func:`_find_node` finds a node by class, name and
role, so repeated updates reuse one node instead of piling up new ones.

Node collections returned by ``vtkMRMLScene.GetNodesByClass``/``GetNodesByClassByName`` are
created for the caller, which must release them (as ``slicer.util.getNodesByClass`` does):
:func:`_nodes_by_class` copies them into a list and releases them, so no collection (and no
removed node it holds) is leaked. New nodes are made with ``AddNewNodeByClass``, so the
scene's default nodes (``vtkMRMLScene.AddDefaultNode``) apply to them.
"""

from __future__ import annotations

from AttriVAELib.core.errors import InputError

__all__ = ["ROLE_ATTRIBUTE", "SOURCE_REFERENCE_ROLE"]

#: Attribute that marks nodes created by AttriVAE and says what they hold.
ROLE_ATTRIBUTE = "AttriVAE.Role"
#: Node reference role from an output node to the input volume it was computed from.
SOURCE_REFERENCE_ROLE = "AttriVAE.source"


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


def _require_scene(scene) -> None:
    if scene is None:
        raise InputError("no MRML scene given")


def _nodes_by_class(scene, class_name: str, name: str | None = None) -> list:
    """Nodes of ``class_name`` (and subclasses), optionally only those called ``name``.

    The scene hands over a new ``vtkCollection`` that the caller owns; it is released here
    (``UnRegister``), so neither the collection nor the nodes it references outlive the call.
    """
    nodes = scene.GetNodesByClass(class_name) if name is None else scene.GetNodesByClassByName(class_name, name)
    if nodes is None:
        return []
    try:
        return [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]
    finally:
        nodes.UnRegister(None)


def _add_new_node(scene, class_name: str, name: str):
    """A new node of ``class_name`` added to ``scene`` through ``AddNewNodeByClass`` (scene defaults apply).

    A class the scene has not registered (e.g. the sequence browser in a bare ``slicer-core``
    scene without the Sequences logic) is instantiated directly and added.
    """
    node = scene.AddNewNodeByClass(class_name, name) if scene.IsNodeClassRegistered(class_name) else None
    if node is None:
        factory = getattr(_slicer(), class_name, None)
        if factory is None:
            raise InputError(f"the MRML scene cannot create a {class_name}")
        node = factory()
        node.SetName(name)
        node = scene.AddNode(node)
    return node


def _find_node(scene, class_name: str, name: str, role: str | None):
    """First node of exactly ``class_name`` called ``name`` whose role attribute is ``role``."""
    for candidate in _nodes_by_class(scene, class_name, name):
        if candidate.GetClassName() == class_name and candidate.GetAttribute(ROLE_ATTRIBUTE) == role:
            return candidate
    return None


def _find_or_add_node(scene, class_name: str, name: str, role: str):
    """The node :func:`_find_node` finds, or a new one of ``class_name`` with that name and role."""
    node = _find_node(scene, class_name, name, role)
    if node is None:
        node = _add_new_node(scene, class_name, name)
        node.SetAttribute(ROLE_ATTRIBUTE, role)
    return node


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
