"""Image input/output through SimpleITK, keeping the physical geometry.

Arrays are in SimpleITK's index order reversed, i.e. ``array[k, j, i]`` (z, y, x), exactly
as :func:`SimpleITK.GetArrayFromImage` returns them. Geometry follows ITK (LPS physical
space): ``spacing``/``origin`` are (x, y, z) and ``direction`` is the row-major 3×3 matrix
whose columns are the directions of the i, j, k index axes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from AttriVAELib.core.atomic import atomic_path
from AttriVAELib.core.errors import InputError

READABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
WRITABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")


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
        array = sitk.GetArrayFromImage(image)
        if dtype is not None:
            array = array.astype(dtype, copy=False)
        return cls(array, Geometry.from_image(image))


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
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), series[0]))
    return reader.Execute()


def read_sitk(path: str | os.PathLike) -> sitk.Image:
    """Read a 3D scalar image (NIfTI, NRRD, MHA/MHD or a DICOM series folder)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    try:
        if path.is_dir():
            image = _read_dicom_series(path)
        else:
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
    return image


def _nifti_nonfinite_count(path: Path) -> int:
    """Non-finite voxels in a floating-point NIfTI file, read raw.

    ITK's NIfTI reader silently replaces NaN with 0, so the check must look at the file.
    """
    import nibabel

    try:
        image = nibabel.load(str(path))
    except Exception:  # unreadable by nibabel: SimpleITK already read it, nothing more to check
        return 0
    if not np.issubdtype(image.get_data_dtype(), np.floating):
        return 0
    return int((~np.isfinite(np.asarray(image.dataobj))).sum())


def read_image(path: str | os.PathLike, *, dtype: type = np.float32) -> Volume:
    """Read an image as a :class:`Volume`; NaN or infinite voxels are an error."""
    path = Path(path)
    volume = Volume.from_sitk(read_sitk(path), dtype=dtype)
    bad = int((~np.isfinite(volume.array)).sum())
    if not bad and _has_suffix(path, (".nii", ".nii.gz")):
        bad = _nifti_nonfinite_count(path)
    if bad:
        raise InputError(f"{path}: image has {bad} NaN or infinite voxels")
    return volume


def read_mask(path: str | os.PathLike, reference: Geometry | None = None) -> Volume:
    """Read a binary mask (any non-zero voxel is foreground).

    With ``reference``, the mask is resampled (nearest neighbour) onto the reference grid
    when its grid differs, and an error is raised if it does not overlap that grid.
    """
    path = Path(path)
    image = read_sitk(path)
    if _has_suffix(path, (".nii", ".nii.gz")) and _nifti_nonfinite_count(path):
        raise InputError(f"{path}: mask has NaN or infinite voxels")
    if reference is not None and not Geometry.from_image(image).allclose(reference):
        image = sitk.Resample(image, reference.reference_image(), sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    array = sitk.GetArrayFromImage(image)
    if not np.isfinite(array).all():
        raise InputError(f"{path}: mask has NaN or infinite voxels")
    mask = array != 0
    if not mask.any():
        where = " inside the image's extent" if reference is not None else ""
        raise InputError(f"{path}: mask is empty (no foreground voxels{where})")
    return Volume(mask.astype(np.uint8), Geometry.from_image(image))


def write_image(volume: Volume, path: str | os.PathLike, *, compress: bool = True) -> Path:
    """Write a volume with its geometry, atomically. Format from the suffix."""
    path = Path(path)
    if not _has_suffix(path, WRITABLE_SUFFIXES):
        raise InputError(f"{path}: unsupported output format; use one of {', '.join(WRITABLE_SUFFIXES)}")
    with atomic_path(path) as tmp:
        sitk.WriteImage(volume.to_sitk(), str(tmp), compress)
    return path
