"""Model-grid results on the input grid, slab by slab, and bounded grids for traversal frames.

:func:`to_input_grid` maps an (N, N, N) model-grid array onto the input volume's grid like
:func:`AttriVAELib.data.preprocessing.to_source_grid` (the same voxels, bit for bit), but in
slabs of at most ``slab_voxels`` voxels along k, checking a background task's cancellation
between slabs: a 512×512×300 CT is about 20 slabs of a few tenths of a second each, so Cancel
stops it quickly.

A traversal keeps every frame in its sequence node, and the Sequences module copies the shown
frame into its proxy node on every step of the playback. :func:`traversal_grid` estimates the
memory of ``steps`` frames on the input grid first and, above ``memory_limit`` bytes in all or
``max_frame_voxels`` voxels per frame, puts the frames on a grid that is ``f`` times coarser per
axis (same physical extent, centres of f³ blocks) with f the smallest integer that fits. The
decoded frames come from the N³ model grid (32³-96³), so a frame of up to
``max_frame_voxels`` (2 M, about 128³) voxels still holds everything the model can show.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

from AttriVAELib.data.io import Geometry, Volume
from AttriVAELib.data.preprocessing import GridMapping, to_source_grid

__all__ = ["DEFAULT_FRAME_VOXELS", "DEFAULT_TRAVERSAL_MEMORY", "TraversalGrid", "coarser_geometry", "slab_geometry", "to_input_grid",
           "traversal_grid"]

#: Default limit of the memory that one traversal's frames may take (bytes).
DEFAULT_TRAVERSAL_MEMORY = 1 << 28
#: Default limit of the voxels of one traversal frame (a playback step copies one frame).
DEFAULT_FRAME_VOXELS = 1 << 21
#: Bytes per voxel of a frame (float32).
_FRAME_BYTES_PER_VOXEL = 4


def slab_geometry(geometry: Geometry, k0: int, depth: int) -> Geometry:
    """The sub-grid of ``geometry`` made of slices k0 .. k0 + depth - 1."""
    direction = geometry.direction_matrix
    origin = np.asarray(geometry.origin, dtype=np.float64) + direction @ (
        np.asarray(geometry.spacing, dtype=np.float64) * np.array([0.0, 0.0, float(k0)]))
    size = (int(geometry.size[0]), int(geometry.size[1]), int(depth))
    return dataclasses.replace(geometry, size=size, origin=tuple(float(v) for v in origin))


def coarser_geometry(geometry: Geometry, factor: int) -> Geometry:
    """``geometry`` with ``factor`` times the spacing over the same extent (voxel centres of factor³ blocks)."""
    factor = int(factor)
    if factor <= 1:
        return geometry
    spacing = np.asarray(geometry.spacing, dtype=np.float64)
    origin = np.asarray(geometry.origin, dtype=np.float64) + geometry.direction_matrix @ (spacing * (factor - 1) / 2)
    size = tuple(int(math.ceil(s / factor)) for s in geometry.size)
    return dataclasses.replace(geometry, size=size, spacing=tuple(float(v) for v in spacing * factor),
                               origin=tuple(float(v) for v in origin))


def to_input_grid(array: np.ndarray, mapping: GridMapping, *, rescale: bool = False, target: Geometry | None = None,
                  check: Callable[[], None] | None = None, slab_voxels: int = 1 << 22) -> Volume:
    """``array`` (N, N, N) on ``mapping.model`` resampled onto ``target`` (default: the input grid).

    Linear interpolation; ``rescale`` maps [0, 1] back to the input's intensities. Slab by slab,
    calling ``check`` before each slab.
    """
    target = mapping.source if target is None else target
    out = np.empty(target.shape, dtype=np.float32)
    depth = max(1, int(slab_voxels) // max(1, int(target.size[0]) * int(target.size[1])))
    array = np.asarray(array, dtype=np.float32)
    for k0 in range(0, int(target.size[2]), depth):
        if check is not None:
            check()
        slab = slab_geometry(target, k0, min(depth, int(target.size[2]) - k0))
        part = to_source_grid(array, dataclasses.replace(mapping, source=slab), "linear", rescale=rescale)
        out[k0:k0 + slab.size[2]] = part.array
    return Volume(out, target)


@dataclasses.dataclass(frozen=True)
class TraversalGrid:
    """Where the frames of a traversal go, and what they cost.

    Attributes:
        geometry: the grid of every frame (the input grid, or a coarser one).
        factor: 1, or how many times coarser than the input grid per axis.
        full_bytes: the memory the frames would take on the input grid.
        bytes: the memory they take on :attr:`geometry`.
        note: a one-line message for the user when the grid is coarser, else ``""``.
    """

    geometry: Geometry
    factor: int
    full_bytes: int
    bytes: int
    note: str


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


def traversal_grid(source: Geometry, steps: int, memory_limit: int = DEFAULT_TRAVERSAL_MEMORY,
                   max_frame_voxels: int = DEFAULT_FRAME_VOXELS) -> TraversalGrid:
    """The frame grid of a ``steps``-frame traversal of an input on ``source`` (see the module docstring)."""
    def cost(geometry: Geometry) -> tuple[int, int]:
        voxels = int(np.prod([int(v) for v in geometry.size]))
        return voxels, int(steps) * voxels * _FRAME_BYTES_PER_VOXEL

    voxels, full = cost(source)
    if full <= memory_limit and voxels <= max_frame_voxels:
        return TraversalGrid(source, 1, full, full, "")
    factor, geometry = 1, source
    while True:
        factor += 1
        geometry = coarser_geometry(source, factor)
        frame, total = cost(geometry)
        if (total <= memory_limit and frame <= max_frame_voxels) or min(geometry.size) <= 2:
            break
    size = "×".join(str(int(v)) for v in source.size)
    why = f"{_gb(full)} in all" if full > memory_limit else f"{voxels / 1e6:.0f} M voxels per frame"
    note = (f"traversal frames stored {factor}× coarser per axis: {steps} frames of {size} voxels would need "
            f"{why}, over the limit ({_gb(int(memory_limit))}, {max_frame_voxels / 1e6:.0f} M voxels per frame)")
    return TraversalGrid(geometry, factor, full, total, note)
