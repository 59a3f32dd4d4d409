"""Invertible preprocessing of a 3D image into the model's N×N×N cube.

The model grid is a cube in physical space with the source image's direction cosines and
an *isotropic* spacing ``s = L / N``, where ``L`` is the largest physical extent of the
region of interest (the whole image, the mask's bounding box plus a margin, or a fixed
``fov_mm``), centred on the region's centre. The region is padded to a cube, never
stretched per axis, so shapes keep their aspect ratio and (with ``fov_mm``) their
absolute physical size across subjects. Anisotropic spacing and oblique (rotated)
direction matrices are handled by resampling in physical space with SimpleITK.

Everything needed to go back is kept in a :class:`GridMapping`: :func:`to_source_grid`
maps any model-grid array (reconstruction, heatmap, label map) onto the source grid with
exactly the source geometry; :func:`to_model_grid` maps another volume of the subject
(e.g. a lesion mask) onto the model grid.

Arrays are (z, y, x) as in :mod:`AttriVAELib.data.io`; geometry is ITK (LPS) order.

Why one long module: the preprocessing and the invertible grid mapping it creates are one
contract (every forward step has its inverse here), read and tested together.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from AttriVAELib.core.errors import ConfigError, InputError
from AttriVAELib.data.io import Geometry, Volume, read_image, read_mask

__all__ = [
    "GridMapping",
    "PreprocessSpec",
    "Preprocessed",
    "preprocess",
    "preprocess_file",
    "to_model_grid",
    "to_source_grid",
]

SIZE_MULTIPLE = 16
_INTERPOLATORS = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}
# Above this many voxels, intensity percentiles are computed on a regular subsample
# (every k-th voxel): the result changes by far less than one grey level, ~10x faster.
_PERCENTILE_MAX_VOXELS = 2_000_000


@dataclass
class PreprocessSpec:
    """How an image becomes the model's input cube; stored in checkpoints (``to_dict``).

    Args:
        size: side N of the model cube in voxels; a positive multiple of 16.
        crop_to_mask: centre the cube on the mask's bounding box (plus ``margin_mm``)
            instead of on the whole image.
        margin_mm: margin around the mask's bounding box, in mm.
        fov_mm: fixed physical side of the cube in mm, so the physical voxel size is the
            same for every subject; None: the largest extent of the region.
        apply_mask: zero the voxels outside the mask (and compute the intensity
            percentiles inside the mask only).
        intensity_window: fixed (low, high) intensities scaled to [0, 1] instead of per-image
            percentiles (e.g. a CT window, or (0, 1000) for the phantoms' stored units).
        percentiles: lower/upper intensity percentiles (0-100) clipped to, then scaled to [0, 1].
            The upper default (99.99) clips only isolated spikes: a lower one (e.g. 99.5)
            saturates small bright lesions together with the brightest normal tissue and
            erases exactly the contrast a classifier needs.
        gamma: optional gamma applied after scaling (``x ** gamma``).
        antialias: Gaussian pre-filter (sigma = (factor - 1) / 2 voxels per axis) when the
            model grid is coarser than the source, to avoid aliasing.
    """

    size: int = 80
    crop_to_mask: bool = False
    margin_mm: float = 10.0
    fov_mm: float | None = None
    apply_mask: bool = False
    percentiles: tuple[float, float] = (0.5, 99.99)
    intensity_window: tuple[float, float] | None = None
    gamma: float | None = None
    antialias: bool = True

    def __post_init__(self) -> None:
        integral = isinstance(self.size, (int, np.integer, float)) and not isinstance(self.size, bool)
        if not integral or self.size != int(self.size):
            raise ConfigError(f"preprocess size must be an integer multiple of {SIZE_MULTIPLE} (got {self.size!r})")
        self.size = int(self.size)
        if self.size <= 0 or self.size % SIZE_MULTIPLE:
            raise ConfigError(f"preprocess size must be a positive multiple of {SIZE_MULTIPLE} (got {self.size})")
        self.margin_mm = _number("margin_mm", self.margin_mm)
        if self.margin_mm < 0:
            raise ConfigError(f"preprocess margin_mm must be >= 0 (got {self.margin_mm})")
        if self.fov_mm is not None:
            self.fov_mm = _number("fov_mm", self.fov_mm)
            if not self.fov_mm > 0:
                raise ConfigError(f"preprocess fov_mm must be > 0 or null (got {self.fov_mm})")
        try:
            lo, hi = (float(p) for p in self.percentiles)
        except (TypeError, ValueError):
            raise ConfigError(f"preprocess percentiles must be two numbers (got {self.percentiles!r})") from None
        if not 0.0 <= lo < hi <= 100.0:
            raise ConfigError(f"preprocess percentiles must satisfy 0 <= low < high <= 100 (got {lo}, {hi})")
        self.percentiles = (lo, hi)
        if self.intensity_window is not None:
            try:
                w_lo, w_hi = (float(v) for v in self.intensity_window)
            except (TypeError, ValueError):
                raise ConfigError(f"preprocess intensity_window must be two numbers or null "
                                  f"(got {self.intensity_window!r})") from None
            if not (np.isfinite(w_lo) and np.isfinite(w_hi) and w_lo < w_hi):
                raise ConfigError(f"preprocess intensity_window must satisfy low < high (got {w_lo}, {w_hi})")
            self.intensity_window = (w_lo, w_hi)
        if self.gamma is not None:
            self.gamma = _number("gamma", self.gamma)
            if not self.gamma > 0:
                raise ConfigError(f"preprocess gamma must be > 0 or null (got {self.gamma})")
        for name in ("crop_to_mask", "apply_mask", "antialias"):
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):
                raise ConfigError(f"preprocess {name} must be true or false (got {value!r})")
            setattr(self, name, bool(value))

    @property
    def needs_mask(self) -> bool:
        return self.crop_to_mask or self.apply_mask

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["percentiles"] = list(self.percentiles)
        if self.intensity_window is not None:
            d["intensity_window"] = list(self.intensity_window)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "PreprocessSpec":
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown preprocess option(s) {unknown}; known: {sorted(known)}")
        for key in ("percentiles", "intensity_window"):
            if isinstance(d.get(key), list):
                d[key] = tuple(d[key])
        return cls(**d)


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"preprocess {name} must be a number (got {value!r})")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"preprocess {name} must be a number (got {value!r})") from None
    if not math.isfinite(out):
        raise ConfigError(f"preprocess {name} must be finite (got {value!r})")
    return out


@dataclass
class GridMapping:
    """Everything needed to map model-grid volumes back to the source image.

    Attributes:
        source: the input image's grid.
        model: the N×N×N model grid in physical space (isotropic spacing, source direction).
        intensity_range: (lo, hi) source intensities mapped to 0 and 1.
        gamma: the gamma applied after scaling, or None.
    """

    source: Geometry
    model: Geometry
    intensity_range: tuple[float, float]
    gamma: float | None = None

    @property
    def spacing_mm(self) -> float:
        """Isotropic voxel size of the model grid in mm."""
        return float(self.model.spacing[0])

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source.to_dict(),
            "model": self.model.to_dict(),
            "intensity_range": [float(v) for v in self.intensity_range],
            "gamma": self.gamma,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GridMapping":
        lo, hi = (float(v) for v in d["intensity_range"])
        gamma = d.get("gamma")
        return cls(
            source=Geometry.from_dict(d["source"]),
            model=Geometry.from_dict(d["model"]),
            intensity_range=(lo, hi),
            gamma=None if gamma is None else float(gamma),
        )

    def scale_intensity(self, values: np.ndarray) -> np.ndarray:
        """Source intensities → [0, 1] (clip, scale, gamma), as float32."""
        lo, hi = self.intensity_range
        out = np.clip((np.asarray(values, dtype=np.float32) - lo) / np.float32(hi - lo), 0.0, 1.0)
        if self.gamma is not None:
            np.power(out, np.float32(self.gamma), out=out)
        return out

    def unscale_intensity(self, values: np.ndarray) -> np.ndarray:
        """[0, 1] model intensities → source intensities (inverse of :meth:`scale_intensity` inside the range)."""
        lo, hi = self.intensity_range
        out = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)
        if self.gamma is not None:
            out = np.power(out, np.float32(1.0 / self.gamma))
        return out * np.float32(hi - lo) + np.float32(lo)


@dataclass
class Preprocessed:
    """Output of :func:`preprocess`.

    Attributes:
        image: (N, N, N) float32 in [0, 1], (z, y, x) on the model grid.
        mask: (N, N, N) uint8 mask on the model grid (nearest neighbour), or None.
        mapping: the grids and intensity range, for inverse mapping.
    """

    image: np.ndarray
    mask: np.ndarray | None
    mapping: GridMapping


def _model_geometry(source: Geometry, spec: PreprocessSpec, mask: np.ndarray | None) -> Geometry:
    """The N³ model grid: isotropic, source direction, centred on the region of interest."""
    spacing = np.asarray(source.spacing, dtype=np.float64)
    size = np.asarray(source.size, dtype=np.float64)
    if spec.crop_to_mask:
        assert mask is not None
        # Bounding box of the mask in (i, j, k) index order; the mask array is (k, j, i).
        nz = [np.flatnonzero(mask.any(axis=axes)) for axes in ((0, 1), (0, 2), (1, 2))]
        first = np.array([a[0] for a in nz], dtype=np.float64)
        last = np.array([a[-1] for a in nz], dtype=np.float64)
        centre_index = (first + last) / 2.0
        extent = (last - first + 1.0) * spacing + 2.0 * spec.margin_mm
    else:
        centre_index = (size - 1.0) / 2.0
        extent = size * spacing
    side = spec.fov_mm if spec.fov_mm is not None else float(extent.max())
    n = spec.size
    step = side / n
    centre = source.index_to_physical(centre_index)
    origin = centre - source.direction_matrix @ np.full(3, step * (n - 1) / 2.0)
    return Geometry(
        size=(n, n, n),
        spacing=(step, step, step),
        origin=tuple(float(v) for v in origin),
        direction=source.direction,
    )


def _cube_index_box(source: Geometry, model: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Continuous (i, j, k) source-index bounds of the model cube (voxel edges included)."""
    n = np.asarray(model.size, dtype=np.float64)
    corners = np.array([[a, b, c] for a in (-0.5, n[0] - 0.5) for b in (-0.5, n[1] - 0.5) for c in (-0.5, n[2] - 0.5)])
    idx = source.physical_to_index(model.index_to_physical(corners))
    return idx.min(axis=0), idx.max(axis=0)


def _slices(first: np.ndarray, last: np.ndarray) -> tuple[slice, slice, slice]:
    """(z, y, x) array slices for inclusive (i, j, k) index bounds."""
    return tuple(slice(int(first[a]), int(last[a]) + 1) for a in (2, 1, 0))  # type: ignore[return-value]


def _sub_image(sub: np.ndarray, source: Geometry, first: np.ndarray) -> sitk.Image:
    """A sub-array of a source-grid array, starting at index ``first`` (i, j, k), as a
    SimpleITK image with its geometry."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(sub))
    _place(image, source, first)
    return image


def _place(image: sitk.Image, source: Geometry, first: np.ndarray) -> None:
    image.SetSpacing(source.spacing)
    image.SetDirection(source.direction)
    image.SetOrigin(tuple(float(v) for v in source.index_to_physical(first.astype(np.float64))))


def _float_sub_image(region: np.ndarray, source: Geometry, first: np.ndarray) -> tuple[sitk.Image, np.ndarray]:
    """A float32 SimpleITK image holding ``region``, and a writable array over ITK's own buffer (valid
    while the image lives): one copy, filtered in place, keeps a large image's preprocessing near 2× its size."""
    import ctypes

    image = sitk.Image([int(s) for s in region.shape[::-1]], sitk.sitkFloat32)
    _place(image, source, first)
    view = sitk.GetArrayViewFromImage(image)  # read-only numpy view; makes the buffer unique
    address = view.__array_interface__["data"][0]
    buffer = (ctypes.c_float * view.size).from_address(address)
    array = np.ctypeslib.as_array(buffer).reshape(view.shape)
    array[...] = region
    return image, array


def _resample(image: sitk.Image, target: Geometry, interpolator: int, default: float, pixel: int) -> np.ndarray:
    out = sitk.Resample(image, target.reference_image(), sitk.Transform(), interpolator, float(default), pixel)
    return sitk.GetArrayFromImage(out)


def _flat_sample(region: np.ndarray) -> np.ndarray:
    """``region.ravel()``, or of a large non-contiguous one the every-k-th elements ``_percentiles`` keeps."""
    if region.flags.c_contiguous or region.size <= _PERCENTILE_MAX_VOXELS:
        return region.ravel()
    step = int(math.ceil(region.size / _PERCENTILE_MAX_VOXELS))
    flat = np.arange(0, region.size, step, dtype=np.int64)
    return region[np.unravel_index(flat, region.shape)]


def _percentiles(values: np.ndarray, q: tuple[float, float]) -> tuple[float, float]:
    if values.size > _PERCENTILE_MAX_VOXELS:
        values = values[:: int(math.ceil(values.size / _PERCENTILE_MAX_VOXELS))]
    lo, hi = (float(v) for v in np.percentile(values, q))
    if not hi > lo:
        # Constant region: everything maps to 0 instead of dividing by zero.
        hi = lo + 1.0
    return lo, hi


def _mask_on_source(mask: Volume, source: Geometry) -> np.ndarray:
    """The mask as a boolean (z, y, x) array on the source grid (resampled if needed)."""
    if mask.geometry.allclose(source):
        return np.asarray(mask.array) != 0
    image = sitk.GetImageFromArray(np.ascontiguousarray((np.asarray(mask.array) != 0).astype(np.uint8)))
    mask.geometry.apply_to(image)
    return _resample(image, source, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8) != 0


def preprocess(volume: Volume, spec: PreprocessSpec, mask: Volume | None = None) -> Preprocessed:
    """Resample an image into the model cube and scale its intensities to [0, 1].

    Args:
        volume: the image, array (z, y, x) with its geometry; any real dtype.
        spec: the preprocessing settings.
        mask: optional binary mask (non-zero = foreground), on the image's grid or on any
            grid overlapping it (then resampled, nearest neighbour). Required when
            ``spec.crop_to_mask`` or ``spec.apply_mask``.

    Returns:
        :class:`Preprocessed` with ``image`` (N, N, N) float32 in [0, 1], ``mask``
        (N, N, N) uint8 or None, and the :class:`GridMapping`.

    Raises:
        InputError: the spec needs a mask and none is given; the mask is empty or does not
            overlap the image or the model cube.
    """
    source = volume.geometry
    array = np.asarray(volume.array)
    if not np.issubdtype(array.dtype, np.floating) or array.dtype.itemsize > 4:
        array = array.astype(np.float32)
    if spec.needs_mask and mask is None:
        option = "crop_to_mask" if spec.crop_to_mask else "apply_mask"
        raise InputError(f"preprocess option {option} needs a mask, but none was given")
    mask_array = None
    if mask is not None:
        mask_array = _mask_on_source(mask, source)
        if not mask_array.any():
            raise InputError("mask is empty or does not overlap the image")

    model = _model_geometry(source, spec, mask_array)
    size = np.asarray(source.size)
    box_lo, box_hi = _cube_index_box(source, model)

    # Voxels whose centres lie in the cube define the intensity statistics.
    inner_first = np.clip(np.ceil(box_lo - 1e-6), 0, size - 1)
    inner_last = np.clip(np.floor(box_hi + 1e-6), 0, size - 1)
    if (inner_first > inner_last).any() or (box_hi < -0.5).any() or (box_lo > size - 0.5).any():
        raise InputError("the model cube does not overlap the image (check fov_mm)")
    region = array[_slices(inner_first, inner_last)]
    if spec.apply_mask:
        values = region[mask_array[_slices(inner_first, inner_last)]]
        if values.size == 0:
            raise InputError("mask has no voxels inside the model cube (check fov_mm)")
    else:
        values = _flat_sample(region)
    # A fixed window (CT-like, or scanner units) cannot be shifted by a bright lesion, unlike
    # per-image percentiles, which darken everything else when a lesion sets the maximum.
    lo, hi = spec.intensity_window or _percentiles(values, spec.percentiles)

    # Anti-aliasing sigma (in source voxels) per axis, (i, j, k) order.
    factor = model.spacing[0] / np.asarray(source.spacing)
    sigma = np.maximum(0.0, (factor - 1.0) / 2.0) if spec.antialias else np.zeros(3)
    # Crop the source to the cube (plus interpolation and filter support) before filtering.
    pad = 2 + np.ceil(4.0 * sigma)
    first = np.clip(np.floor(box_lo) - pad, 0, size - 1)
    last = np.clip(np.ceil(box_hi) + pad, 0, size - 1)
    sub_image, sub = _float_sub_image(array[_slices(first, last)], source, first)
    if (sigma > 0.05).any():
        ndimage.gaussian_filter(sub, sigma=sigma[::-1], mode="nearest", truncate=4.0, output=sub)
    resampled = _resample(sub_image, model, sitk.sitkLinear, lo, sitk.sitkFloat32)
    del sub, sub_image

    mapping = GridMapping(source=source, model=model, intensity_range=(lo, hi), gamma=spec.gamma)
    image = mapping.scale_intensity(resampled)
    model_mask = None
    if mask_array is not None:
        sub_mask = _sub_image(mask_array[_slices(first, last)].astype(np.uint8), source, first)
        model_mask = _resample(sub_mask, model, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8).astype(np.uint8)
        if spec.apply_mask:
            image *= model_mask
    return Preprocessed(image=np.ascontiguousarray(image, dtype=np.float32), mask=model_mask, mapping=mapping)


def _interpolator(name: str) -> int:
    try:
        return _INTERPOLATORS[name]
    except KeyError:
        raise ConfigError(f"interpolator must be one of {sorted(_INTERPOLATORS)} (got {name!r})") from None


def _as_sitk_array(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    return array


def to_source_grid(
    array: np.ndarray,
    mapping: GridMapping,
    interpolator: str = "linear",
    *,
    rescale: bool = False,
) -> Volume:
    """Map a model-grid array back onto the source image's grid.

    Args:
        array: (N, N, N) array (z, y, x) on ``mapping.model`` (e.g. a reconstruction,
            a heatmap, a label map); a torch tensor must be converted with ``.numpy()``.
        mapping: the mapping returned by :func:`preprocess`.
        interpolator: ``"linear"`` (float32 output) or ``"nearest"`` (keeps the dtype; for labels).
        rescale: also undo the intensity scaling (``[0, 1]`` → source intensities); source
            voxels outside the cube then get the background intensity ``lo``.

    Returns:
        A :class:`Volume` with exactly ``mapping.source`` as geometry. Source voxels
        outside the model cube are 0.
    """
    method = _interpolator(interpolator)
    array = _as_sitk_array(array)
    if tuple(array.shape) != mapping.model.shape:
        raise InputError(f"array of shape {tuple(array.shape)} is not on the model grid {mapping.model.shape}")
    if interpolator == "linear":
        array = array.astype(np.float32, copy=False)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    mapping.model.apply_to(image)
    out = _resample(image, mapping.source, method, 0, sitk.sitkUnknown)
    if rescale:
        out = mapping.unscale_intensity(out)
    return Volume(out, mapping.source)


def to_model_grid(volume: Volume, mapping: GridMapping, interpolator: str = "linear") -> np.ndarray:
    """Map another volume of the subject (e.g. a lesion mask) onto the model grid.

    The volume is resampled in physical space, so it may be on the source grid or on any
    other grid. No intensity scaling is applied.

    Args:
        volume: the volume, array (z, y, x).
        mapping: the mapping returned by :func:`preprocess`.
        interpolator: ``"linear"`` (float32 output; a binary mask gives the fraction of
            each model voxel covered) or ``"nearest"`` (keeps the dtype).

    Returns:
        (N, N, N) array; voxels outside the volume are 0.
    """
    method = _interpolator(interpolator)
    array = _as_sitk_array(volume.array)
    if interpolator == "linear":
        array = array.astype(np.float32, copy=False)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    volume.geometry.apply_to(image)
    return _resample(image, mapping.model, method, 0, sitk.sitkUnknown)


def preprocess_file(
    image_path: str | os.PathLike,
    spec: PreprocessSpec,
    mask_path: str | os.PathLike | None = None,
) -> Preprocessed:
    """Read an image (and mask) and :func:`preprocess` it; errors name the file(s)."""
    volume = read_image(image_path)
    if mask_path is None and spec.needs_mask:
        option = "crop_to_mask" if spec.crop_to_mask else "apply_mask"
        raise InputError(f"{image_path}: preprocess option {option} needs a mask, but none was given")
    mask = read_mask(mask_path, reference=volume.geometry) if mask_path is not None else None
    try:
        return preprocess(volume, spec, mask)
    except InputError as exc:
        where = f"{image_path}" if mask_path is None else f"{image_path} (mask {mask_path})"
        raise InputError(f"{where}: {exc}") from None
