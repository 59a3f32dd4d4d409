"""MRML helpers shared by the tests that use a real scene from the slicer-core wheel.

They build and read nodes directly through VTK, bypassing the code under test.
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support


def ijk_to_ras(node) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def raw_node(scene, array: np.ndarray, cls=None, components: int = 1):
    """A volume node filled directly through VTK (array (k, j, i) or (k, j, i, components))."""
    node = (cls or slicer.vtkMRMLScalarVolumeNode)()
    image = vtk.vtkImageData()
    if components == 1:
        k, j, i = array.shape
        flat = np.ascontiguousarray(array).ravel()
    else:
        k, j, i, _ = array.shape
        flat = np.ascontiguousarray(array).reshape(-1, components)
    image.SetDimensions(i, j, k)
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(flat, deep=True))
    node.SetAndObserveImageData(image)
    node.SetName("raw")
    scene.AddNode(node)
    return node
