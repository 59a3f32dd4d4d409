"""Image input/output through SimpleITK, keeping the physical geometry.

Arrays are in SimpleITK's index order reversed, i.e. ``array[k, j, i]`` (z, y, x), exactly
as :func:`SimpleITK.GetArrayFromImage` returns them. Geometry follows ITK (LPS physical
space): ``spacing``/``origin`` are (x, y, z) and ``direction`` is the row-major 3×3 matrix
whose columns are the directions of the i, j, k index axes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import SimpleITK as sitk

from AttriVAELib.core.atomic import atomic_path
from AttriVAELib.core.errors import InputError
from AttriVAELib.data.headers import (DEFAULT_MAX_VOXELS, MAX_VOXELS_ENV, ImageFileInfo, check_regular_file,
                                      check_voxel_count, inspect_image_file, max_voxels)

READABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
WRITABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")
#: Largest |DᵀD − I| of a direction matrix D taken as orthonormal (rounding in headers).
ORTHONORMAL_TOLERANCE = 1e-4

__all__ = ["DEFAULT_MAX_VOXELS", "MAX_VOXELS_ENV", "Geometry", "READABLE_SUFFIXES", "Volume", "WRITABLE_SUFFIXES",
           "check_geometry", "check_image_file", "check_volume", "max_voxels", "read_image", "read_mask", "read_sitk", "write_image"]


@contextlib.contextmanager
def _quiet_itk() -> Iterator[None]:
    """Silence ITK's warnings (printed on stderr) for one call; errors still raise."""
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


@dataclass(frozen=True)
class Geometry:
    """Grid of a 3D image: size (x, y, z), spacing (mm), origin (mm) and direction cosines."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]  # 9 values, row-major

    @classmethod
    def from_image(cls, image: sitk.Image) -> "Geometry":
        return cls(
            size=tuple(int(s) for s in image.GetSize()),
            spacing=tuple(float(s) for s in image.GetSpacing()),
            origin=tuple(float(s) for s in image.GetOrigin()),
            direction=tuple(float(s) for s in image.GetDirection()),
        )

    @classmethod
    def from_dict(cls, d: dict) -> "Geometry":
        return cls(
            size=tuple(int(v) for v in d["size"]),
            spacing=tuple(float(v) for v in d["spacing"]),
            origin=tuple(float(v) for v in d["origin"]),
            direction=tuple(float(v) for v in d["direction"]),
        )

    def to_dict(self) -> dict:
        return {
            "size": list(self.size),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": list(self.direction),
        }

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape (z, y, x) of volumes on this grid."""
        return (self.size[2], self.size[1], self.size[0])

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    def index_to_physical_matrix(self) -> np.ndarray:
        """4×4 homogeneous matrix mapping (i, j, k, 1) to LPS physical (x, y, z, 1)."""
        m = np.eye(4)
        m[:3, :3] = self.direction_matrix @ np.diag(self.spacing)
        m[:3, 3] = self.origin
        return m

    def index_to_physical(self, ijk: np.ndarray) -> np.ndarray:
        """Map continuous indices (…, 3) in (i, j, k) order to physical points (…, 3)."""
        ijk = np.asarray(ijk, dtype=np.float64)
        m = self.index_to_physical_matrix()
        return ijk @ m[:3, :3].T + m[:3, 3]

    def physical_to_index(self, xyz: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`index_to_physical` (continuous indices)."""
        xyz = np.asarray(xyz, dtype=np.float64)
        m = np.linalg.inv(self.index_to_physical_matrix())
        return xyz @ m[:3, :3].T + m[:3, 3]

    def reference_image(self) -> sitk.Image:
        """An empty image on this grid, usable as a resampling reference."""
        ref = sitk.Image([int(s) for s in self.size], sitk.sitkFloat32)
        self.apply_to(ref)
        return ref

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def allclose(self, other: "Geometry", atol: float = 1e-4) -> bool:
        return (
            self.size == other.size
            and np.allclose(self.spacing, other.spacing, atol=atol)
            and np.allclose(self.origin, other.origin, atol=atol)
            and np.allclose(self.direction, other.direction, atol=atol)
        )


@dataclass
class Volume:
    """A 3D array (z, y, x) with the geometry of the grid it lives on."""

    array: np.ndarray
    geometry: Geometry

    def __post_init__(self) -> None:
        if tuple(self.array.shape) != self.geometry.shape:
            raise ValueError(f"array shape {self.array.shape} does not match geometry {self.geometry.shape}")

    def to_sitk(self) -> sitk.Image:
        image = sitk.GetImageFromArray(np.ascontiguousarray(self.array))
        return self.geometry.apply_to(image)

    @classmethod
    def from_sitk(cls, image: sitk.Image, dtype: np.dtype | type | None = np.float32) -> "Volume":
        """The image's voxels as an array (one copy, converted straight into ``dtype``)."""
        view = sitk.GetArrayViewFromImage(image)
        if dtype is None or view.dtype == np.dtype(dtype):
            array = np.array(view, copy=True)
        else:
            array = view.astype(dtype)
        return cls(array, Geometry.from_image(image))


def check_volume(volume: Volume, where: str = "image") -> Volume:
    """A :class:`Volume` given in memory: 3D, numeric, finite, on a grid :func:`check_geometry` accepts."""
    array = np.asarray(volume.array)
    if array.ndim != 3:
        raise InputError(f"{where} must be a 3D volume, got an array of shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise InputError(f"{where} voxels must be numbers, got dtype {array.dtype}")
    bad = _nonfinite(array)
    if bad:
        raise InputError(f"{where} has {bad} NaN or infinite voxels")
    check_geometry(volume.geometry, where)
    return volume


def check_geometry(geometry: Geometry, where: str = "image") -> None:
    """Refuse grids that cannot be mapped and back exactly: zero, negative or non-finite spacing,
    a non-finite origin, a singular or non-orthonormal (sheared) direction matrix.

    Raises:
        InputError: one line naming ``where`` and the fault.
    """
    spacing = np.asarray(geometry.spacing, dtype=np.float64)
    if spacing.shape != (3,) or not (np.isfinite(spacing).all() and (spacing > 0).all()):
        raise InputError(f"{where}: voxel spacing {tuple(float(v) for v in geometry.spacing)} must be positive "
                         "and finite")
    if not np.isfinite(np.asarray(geometry.origin, dtype=np.float64)).all():
        raise InputError(f"{where}: origin {tuple(geometry.origin)} is not finite")
    d = np.asarray(geometry.direction, dtype=np.float64)
    if d.size != 9 or not np.isfinite(d).all():
        raise InputError(f"{where}: direction matrix must be 9 finite numbers, got {tuple(geometry.direction)}")
    d = d.reshape(3, 3)
    if abs(np.linalg.det(d)) < 1e-6:
        raise InputError(f"{where}: direction matrix is singular (its axes are not independent)")
    if np.abs(d.T @ d - np.eye(3)).max() > ORTHONORMAL_TOLERANCE:
        raise InputError(f"{where}: direction matrix is not orthonormal (a sheared or scaled grid); outputs could "
                         "not keep its geometry: resample it onto an orthonormal grid first")


def _has_suffix(path: Path, suffixes: Sequence[str]) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in suffixes)


def _read_dicom_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise InputError(f"{folder}: folder holds no DICOM series")
    if len(series) > 1:
        raise InputError(f"{folder}: folder holds {len(series)} DICOM series; point to a folder with one")
    names = reader.GetGDCMSeriesFileNames(str(folder), series[0])
    for name in names:
        check_regular_file(Path(name))
    first = sitk.ImageFileReader()
    first.SetFileName(names[0])
    first.ReadImageInformation()
    check_voxel_count(folder, (*first.GetSize()[:2], len(names)))
    reader.SetFileNames(names)
    return reader.Execute()


def check_image_file(path: str | os.PathLike) -> ImageFileInfo | None:
    """Check an image file before a reader sees it: a regular file (a FIFO would block), a header
    within the voxel limit (:func:`~AttriVAELib.data.headers.max_voxels`), and as many bytes of
    voxel data as the header promises (ITK zero-fills truncated NIfTI files).

    :func:`read_sitk` calls it; readers of their own (e.g. Slicer's storage nodes) should call it first.

    Returns:
        What the header says (size per axis, components), or None for a folder (a DICOM series).

    Raises:
        InputError: one line naming the file and the fault.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        return None
    with _quiet_itk():
        return inspect_image_file(path)


def read_sitk(path: str | os.PathLike) -> sitk.Image:
    """Read a 3D scalar image (NIfTI, NRRD, MHA/MHD or a DICOM series folder).

    The header is checked first (:func:`check_image_file`); the grid must be one outputs can
    keep exactly (:func:`check_geometry`).
    """
    return _read_sitk(Path(path))[0]


def _read_sitk(path: Path) -> tuple[sitk.Image, int]:
    """(image, NaN/inf voxels counted in the raw NIfTI data)."""
    if not path.exists():
        raise InputError(f"{path}: file not found")
    nonfinite = 0
    try:
        with _quiet_itk():
            if path.is_dir():
                image = _read_dicom_series(path)
            else:
                nonfinite = inspect_image_file(path).nonfinite
                image = sitk.ReadImage(str(path))
    except InputError:
        raise
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = next((ln.strip() for ln in first if "ERROR" in ln or "Could not" in ln), "not a readable image")
        raise InputError(f"{path}: cannot read image ({detail[:160]})") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path}: image has {image.GetNumberOfComponentsPerPixel()} components per voxel; expected a scalar image")
    dim = image.GetDimension()
    if dim == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
        dim = 3
    if dim != 3:
        raise InputError(f"{path}: image is {dim}D (size {image.GetSize()}); expected a 3D volume")
    if min(image.GetSize()) < 2:
        raise InputError(f"{path}: image size {image.GetSize()} is a 2D slice; expected a 3D volume")
    check_geometry(Geometry.from_image(image), str(path))
    return image, nonfinite


def _nonfinite(array: np.ndarray) -> int:
    if not np.issubdtype(array.dtype, np.floating):
        return 0
    finite = np.isfinite(array)
    return 0 if finite.all() else int(finite.size - np.count_nonzero(finite))


def read_image(path: str | os.PathLike, *, dtype: type = np.float32) -> Volume:
    """Read an image as a :class:`Volume`; NaN or infinite voxels are an error.

    Memory: the file's voxels once in ITK's buffer plus once as the returned array, briefly.
    """
    path = Path(path)
    image, bad = _read_sitk(path)
    volume = Volume.from_sitk(image, dtype=dtype)
    del image
    bad = bad or _nonfinite(volume.array)
    if bad:
        raise InputError(f"{path}: image has {bad} NaN or infinite voxels")
    return volume


def read_mask(path: str | os.PathLike, reference: Geometry | None = None, allow_empty: bool = False) -> Volume:
    """Read a binary mask (any non-zero voxel is foreground).

    With ``reference``, the mask is resampled (nearest neighbour) onto the reference grid
    when its grid differs, and an error is raised if it does not overlap that grid. An empty
    mask is an error unless ``allow_empty`` (e.g. the lesion mask of a subject without lesion).
    """
    path = Path(path)
    image, bad = _read_sitk(path)
    if bad:
        raise InputError(f"{path}: mask has NaN or infinite voxels")
    if reference is not None and not Geometry.from_image(image).allclose(reference):
        image = sitk.Resample(image, reference.reference_image(), sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    array = sitk.GetArrayFromImage(image)
    if not np.isfinite(array).all():
        raise InputError(f"{path}: mask has NaN or infinite voxels")
    mask = array != 0
    if not mask.any() and not allow_empty:
        where = " inside the image's extent" if reference is not None else ""
        raise InputError(f"{path}: mask is empty (no foreground voxels{where})")
    return Volume(mask.astype(np.uint8), Geometry.from_image(image))


def write_image(volume: Volume, path: str | os.PathLike, *, compress: bool = True) -> Path:
    """Write a volume with its geometry, atomically. Format from the suffix."""
    path = Path(path)
    if not _has_suffix(path, WRITABLE_SUFFIXES):
        raise InputError(f"{path}: unsupported output format; use one of {', '.join(WRITABLE_SUFFIXES)}")
    with atomic_path(path) as tmp:
        try:
            with _quiet_itk():
                sitk.WriteImage(volume.to_sitk(), str(tmp), compress)
        except RuntimeError as exc:
            raise _write_error(path, exc) from None
    return path


def _write_error(path: Path, exc: RuntimeError) -> OSError:
    """ITK reports a failed write as a RuntimeError; name the cause as the OS would."""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    if free is not None and free < (1 << 20):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    if not os.access(path.parent, os.W_OK):
        return OSError(errno.EACCES, os.strerror(errno.EACCES), str(path))
    lines = str(exc).strip().splitlines()
    detail = next((ln.strip() for ln in lines if "ERROR" in ln or "Could not" in ln), "write failed")
    return OSError(errno.EIO, f"cannot write image ({detail[:160]})", str(path))
