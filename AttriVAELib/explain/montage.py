"""PNG montages of 3D volumes: orthogonal slices with a heatmap over the image (matplotlib Agg).

Volumes are (z, y, x) arrays on one grid; slices are shown in index space with the
physical aspect ratio of the voxel spacing (axial: y × x; coronal: z × x; sagittal: z × y,
with z upward).
"""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from AttriVAELib.inference.encoding import Encoding

__all__ = ["cube_centre_index", "orthogonal_slices", "montage_png", "save_montage", "save_strip", "strip_png",
           "peak_index", "figure_png"]

_VIEWS = ("axial", "coronal", "sagittal")


def _figure(width: float, height: float):
    """A standalone Agg figure: no pyplot state, no global backend change (safe inside Slicer)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def peak_index(array: np.ndarray) -> tuple[int, int, int]:
    """(k, j, i) index of the largest value of ``|array|`` (the centre voxel for a flat array)."""
    a = np.abs(np.asarray(array, dtype=np.float64))
    if not np.isfinite(a).all() or a.max() <= 0:
        return tuple(s // 2 for s in a.shape)  # type: ignore[return-value]
    return tuple(int(v) for v in np.unravel_index(int(np.argmax(a)), a.shape))  # type: ignore[return-value]


def orthogonal_slices(array: np.ndarray, centre: Sequence[int]) -> list[np.ndarray]:
    """Axial (y, x), coronal (z, x) and sagittal (z, y) slices through ``centre`` (k, j, i)."""
    k, j, i = (int(c) for c in centre)
    a = np.asarray(array)
    return [a[k], a[:, j, :], a[:, :, i]]


def _aspects(spacing: Sequence[float]) -> list[float]:
    sx, sy, sz = (float(s) for s in spacing)
    return [sy / sx, sz / sx, sz / sy]


def _window(image: np.ndarray) -> tuple[float, float]:
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, (1, 99))
    return float(lo), float(hi if hi > lo else lo + 1.0)


def save_montage(path: str | os.PathLike, image: np.ndarray, maps: Sequence[tuple[str, np.ndarray]],
                 *args, **options) -> None:
    """Write :func:`montage_png` to ``path`` (atomically)."""
    from AttriVAELib.core.atomic import write_bytes

    write_bytes(path, montage_png(image, maps, *args, **options))


def montage_png(image: np.ndarray, maps: Sequence[tuple[str, np.ndarray]],
                spacing: Sequence[float] = (1.0, 1.0, 1.0), signed: bool = False, threshold: float = 0.2,
                alpha: float = 0.55, title: str | None = None) -> bytes:
    """PNG bytes: one row per map: axial, coronal and sagittal slices through the map's peak, the map
    (normalized by its peak magnitude) over the grey image; values below ``threshold`` of the
    peak are transparent.

    Args:
        image: (z, y, x) background image.
        maps: (name, (z, y, x) map on the same grid) pairs.
        spacing: (x, y, z) voxel spacing in mm, for the aspect ratio.
        signed: diverging colours for signed maps (blue negative, red positive).
    """
    image = np.asarray(image, dtype=np.float32)
    lo, hi = _window(image)
    aspects = _aspects(spacing)
    rows = max(1, len(maps))
    fig = _figure(9.0, 3.0 * rows + (0.4 if title else 0.0))
    axes = fig.subplots(rows, 3, squeeze=False)
    cmap = "coolwarm" if signed else "inferno"
    for r, (name, heat) in enumerate(maps or [("image", np.zeros_like(image))]):
        heat = np.asarray(heat, dtype=np.float32)
        peak = float(np.nanmax(np.abs(heat))) if heat.size else 0.0
        norm = heat / peak if peak > 0 else heat
        centre = peak_index(heat)
        for c, (img2d, map2d) in enumerate(zip(orthogonal_slices(image, centre), orthogonal_slices(norm, centre))):
            ax = axes[r][c]
            origin = "upper" if c == 0 else "lower"
            ax.imshow(img2d, cmap="gray", vmin=lo, vmax=hi, aspect=aspects[c], origin=origin, interpolation="nearest")
            shown = np.ma.masked_where(np.abs(map2d) < threshold, map2d)
            ax.imshow(shown, cmap=cmap, vmin=-1.0 if signed else 0.0, vmax=1.0, alpha=alpha, aspect=aspects[c],
                      origin=origin, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name if peak > 0 else f"{name}\n(map is zero)", fontsize=9)
            ax.set_title(f"{_VIEWS[c]} {('k', 'j', 'i')[c]}={centre[c]}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return figure_png(fig)


def save_strip(path: str | os.PathLike, frames: Sequence[np.ndarray], labels: Sequence[str], *args, **options) -> None:
    """Write :func:`strip_png` to ``path`` (atomically)."""
    from AttriVAELib.core.atomic import write_bytes

    write_bytes(path, strip_png(frames, labels, *args, **options))


def strip_png(frames: Sequence[np.ndarray], labels: Sequence[str], spacing: Sequence[float] = (1.0, 1.0, 1.0),
              centre: Sequence[int] | None = None, title: str | None = None) -> bytes:
    """PNG bytes of a traversal strip: one column per frame, rows axial/coronal/sagittal through ``centre``
    (default: the middle of the grid), on a common grey window.

    A frame is a 3D volume, or already its three slices (axial, coronal, sagittal) through the
    centre (a sequence of three 2D arrays), so a long traversal of a large image need not
    keep every volume; the window then comes from the slices.
    """
    if not frames:
        raise ValueError("no frames to show")
    if all(isinstance(f, (list, tuple)) and len(f) == 3 for f in frames):
        views = [[np.asarray(v, dtype=np.float32) for v in f] for f in frames]
        lo, hi = _window(np.concatenate([v.ravel() for f in views for v in f]))
    else:
        volumes = [np.asarray(f, dtype=np.float32) for f in frames]
        centre = tuple(s // 2 for s in volumes[0].shape) if centre is None else tuple(centre)
        lo, hi = _window(np.stack(volumes))
        views = [orthogonal_slices(v, centre) for v in volumes]
    aspects = _aspects(spacing)
    n = len(views)
    fig = _figure(1.8 * n + 0.4, 5.6 + (0.3 if title else 0.0))
    axes = fig.subplots(3, n, squeeze=False)
    for s, (view, label) in enumerate(zip(views, labels)):
        for r, img2d in enumerate(view):
            ax = axes[r][s]
            ax.imshow(img2d, cmap="gray", vmin=lo, vmax=hi, aspect=aspects[r], origin="upper" if r == 0 else "lower",
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(label, fontsize=8)
            if s == 0:
                ax.set_ylabel(_VIEWS[r], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return figure_png(fig)


def new_figure(width: float, height: float):
    """A standalone Agg figure of ``width`` × ``height`` inches."""
    return _figure(width, height)


def figure_png(fig, dpi: int = 90) -> bytes:
    """PNG bytes of a matplotlib figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def cube_centre_index(enc: Encoding) -> tuple[int, int, int]:
    """(k, j, i) input-grid index nearest to the centre of the model cube (clamped to the grid)."""
    model_geo, source = enc.mapping.model, enc.mapping.source
    centre = model_geo.index_to_physical((np.asarray(model_geo.size, dtype=np.float64) - 1) / 2.0)
    ijk = np.rint(source.physical_to_index(centre)).astype(int)
    ijk = np.clip(ijk, 0, np.asarray(source.size) - 1)
    return int(ijk[2]), int(ijk[1]), int(ijk[0])
