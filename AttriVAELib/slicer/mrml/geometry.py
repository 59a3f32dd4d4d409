"""Geometry: Slicer's IJKToRAS matrix ↔ AttriVAELib's ITK/LPS :class:`~AttriVAELib.data.io.Geometry`.

Slicer keeps a volume's grid in its IJKToRAS matrix (RAS physical space); the image data
itself has unit spacing and zero origin. :class:`AttriVAELib.data.io.Geometry` follows ITK (LPS
physical space). The two differ by a sign flip of the first two physical axes::

    IJKToRAS = diag(-1, -1, 1, 1) @ IJKToLPS,   IJKToLPS = Geometry.index_to_physical_matrix()

so with direction cosines D (columns = voxel axes), spacing S and origin o (LPS)::

    IJKToRAS[:3, :3] = diag(-1, -1, 1) @ D @ diag(S),   IJKToRAS[:3, 3] = diag(-1, -1, 1) @ o

Arrays are (k, j, i) = (z, y, x) in both worlds (``slicer.util.arrayFromVolume`` order). ITK
needs orthonormal direction cosines, so a sheared or degenerate matrix is an error.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from AttriVAELib.core.errors import InputError
from AttriVAELib.data.io import Geometry
from AttriVAELib.slicer.mrml._common import _check_volume_node, _label, _vtk

__all__ = ["RAS_FROM_LPS", "ijk_to_ras_from_geometry", "geometry_from_ijk_to_ras", "geometry_from_node"]

#: diag(-1, -1, 1): maps LPS to RAS and back (it is its own inverse).
RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0])


def _vtk_to_np(matrix) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def _np_to_vtk(array: np.ndarray):
    vtk, _ = _vtk()
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


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


def geometry_from_node(node, *, world: bool = False) -> Geometry:
    """ITK/LPS :class:`Geometry` of a volume node.

    With ``world=True`` the node's linear parent transforms are included (the grid as shown
    in the views); a non-linear transform is then an error.
    """
    image = _check_volume_node(node)
    return geometry_from_ijk_to_ras(_node_ijk_to_ras(node, world), image.GetDimensions())
