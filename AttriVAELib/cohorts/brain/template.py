"""The MNI152 template that every synthetic brain is made from, prepared once per process.

Template preparation (cached): brain mask (the non-zero voxels of the skull-stripped T1,
holes filled); CSF (voxels of the mask with P(GM) + P(WM) < 0.5 that are also darker than
0.6 × the median GM intensity); ventricles (the connected CSF components of at least 1 mL
whose every voxel lies at least 8 mm inside the brain mask: the two lateral ventricles,
≈ 13.7 mL together); signed distances to the pial and white surfaces; the ventricular
expansion velocity ``v = -∇(G_σ * V)`` (σ = 4 mm, maximal speed 1 mm) on a coarse lattice;
candidate white-matter lesion sites 3–12 mm from the ventricles. See
:mod:`AttriVAELib.cohorts.brain.generator` for how subjects are made from it.

The T1, GM and WM files ship inside the nilearn wheel: nothing is downloaded.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from AttriVAELib.core.errors import InputError
from AttriVAELib.data.attributes import largest_component

__all__ = ["TEMPLATE_FILES", "Lattice", "Template", "load_template", "template_paths", "smoothed_maps"]

TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
_CROP_MARGIN_MM = 8
_CSF_DARKNESS = 0.6  # CSF is darker than this fraction of the median GM intensity
_VENTRICLE_MIN_ML = 1.0
_VENTRICLE_MIN_DEPTH_MM = 8.0
_VELOCITY_SIGMA_MM = 4.0
_VELOCITY_SPACING_MM = 3
_VELOCITY_MARGIN_MM = 18
_LESION_SITE_DISTANCE_MM = (3.0, 12.0)  # from the ventricles
_LESION_SITE_MIN_ABS_X_MM = 6.0  # off the midline: not in the septum or callosal midline



def template_paths() -> dict[str, Path]:
    """The MNI152 2009c T1, GM and WM files inside the installed nilearn package."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the brain cohort is built from the MNI152 template shipped with nilearn, "
                         "which is not installed: pip install nilearn")
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    paths = {name: folder / file for name, file in TEMPLATE_FILES.items()}
    missing = [path for path in paths.values() if not path.is_file()]
    if missing:
        raise InputError(f"{missing[0]}: MNI152 template file missing from the installed nilearn; "
                         "pip install --force-reinstall nilearn")
    return paths


@dataclass(frozen=True)
class Lattice:
    """Values on a regular LPS lattice (identity direction): ``values[..., k, j, i]``."""

    origin: np.ndarray  # (x, y, z) mm of node [0, 0, 0]
    spacing: float
    values: np.ndarray  # (z, y, x) or (c, z, y, x)

    def indices(self, points: np.ndarray) -> np.ndarray:
        """Continuous (k, j, i) lattice indices of points (3, …) given as (x, y, z) mm."""
        shape = (3,) + (1,) * (points.ndim - 1)
        origin = self.origin.reshape(shape).astype(points.dtype)
        return ((points - origin) / points.dtype.type(self.spacing))[::-1]

    def sample(self, points: np.ndarray, cval: float | None = 0.0) -> np.ndarray:
        """Trilinear interpolation at points (3, …) (x, y, z) mm; ``cval`` outside (None: nearest node)."""
        coords = self.indices(points).astype(np.float32)
        mode = "nearest" if cval is None else "constant"
        channels = [self.values] if self.values.ndim == 3 else list(self.values)
        values = [ndi.map_coordinates(c, coords, order=1, mode=mode, cval=cval or 0.0, prefilter=False)
                  for c in channels]
        return values[0] if self.values.ndim == 3 else np.stack(values)

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(x, y, z) mm of the first and the last node."""
        last = self.origin + (np.array(self.values.shape[-3:][::-1]) - 1) * self.spacing
        return self.origin, last


@dataclass(frozen=True, eq=False)
class Template:
    origin: np.ndarray  # (x, y, z) mm of voxel [0, 0, 0] of the 1 mm maps
    maps: dict[str, np.ndarray]  # t1 (WM = 1), gm, wm, mask, vent, pial (mm), white (mm)
    csf_intensity: float
    gm_intensity: float
    ventricle_volume_ml: float
    velocity: Lattice  # (3, z, y, x) mm per unit α, (x, y, z) components
    lesion_sites: np.ndarray  # (n, 3) candidate lesion centres (x, y, z) mm
    support: dict[str, tuple[np.ndarray, np.ndarray]]  # (x, y, z) mm box outside which a map is 0

    def lattice(self, name: str) -> Lattice:
        return Lattice(self.origin, 1.0, self.maps[name])


CVAL = {"pial": -100.0, "white": 100.0}  # outside the template: far outside the tissue and WM


def _read_lps(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = sitk.DICOMOrient(sitk.ReadImage(str(path)), "LPS")
    if not np.allclose(image.GetSpacing(), 1.0):
        raise InputError(f"{path}: expected the 1 mm MNI152 template, got spacing {image.GetSpacing()}")
    return sitk.GetArrayFromImage(image).astype(np.float32), np.asarray(image.GetOrigin(), dtype=np.float64)


def _signed_distance(inside: np.ndarray) -> np.ndarray:
    """Signed distance (mm, 1 mm grid) to the boundary of ``inside``, positive inside."""
    image = sitk.GetImageFromArray(inside.astype(np.uint8))
    distance = sitk.SignedMaurerDistanceMap(image, insideIsPositive=True, squaredDistance=False,
                                            useImageSpacing=True)
    # Maurer measures to the boundary voxels' centres; +0.5 puts 0 between voxels.
    return sitk.GetArrayFromImage(distance).astype(np.float32) + np.float32(0.5)


def _segment_ventricles(t1: np.ndarray, gm: np.ndarray, wm: np.ndarray, mask: np.ndarray,
                        gm_intensity: float) -> np.ndarray:
    """Lateral ventricles: deep connected components of dark, non-tissue voxels (see module doc)."""
    csf = mask & (gm + wm < 0.5) & (t1 < _CSF_DARKNESS * gm_intensity)
    coarse = mask[::2, ::2, ::2]  # depth to ±1 mm is enough, at an eighth of the cost
    depth = ndi.zoom(ndi.distance_transform_edt(coarse, sampling=2.0), 2, order=0)
    depth = depth[tuple(slice(0, n) for n in mask.shape)]
    labels, n = ndi.label(csf)
    index = np.arange(1, n + 1)
    volume_ml = ndi.sum_labels(csf, labels, index) / 1000.0
    min_depth = ndi.minimum(depth, labels, index)
    keep = index[(volume_ml >= _VENTRICLE_MIN_ML) & (min_depth >= _VENTRICLE_MIN_DEPTH_MM)]
    if not len(keep):
        raise InputError("MNI152 template: no ventricles found (is the nilearn template file intact?)")
    return np.isin(labels, keep)


def _box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    box = ndi.find_objects(mask.astype(np.uint8))[0]
    return tuple(slice(max(0, s.start - margin), min(n, s.stop + margin)) for s, n in zip(box, mask.shape))


def _velocity_field(vent: np.ndarray, origin: np.ndarray) -> Lattice:
    """``-∇(G_σ * V)`` with maximal speed 1, on a lattice around the ventricles."""
    box = _box(vent, _VELOCITY_MARGIN_MM)
    smooth = ndi.gaussian_filter(vent[box].astype(np.float32), _VELOCITY_SIGMA_MM)
    step = _VELOCITY_SPACING_MM
    gradient = np.stack(np.gradient(smooth))[:, ::step, ::step, ::step]
    velocity = -gradient[::-1] / np.sqrt((gradient ** 2).sum(axis=0)).max()  # (x, y, z) components
    corner = origin + np.array([box[2].start, box[1].start, box[0].start], dtype=np.float64)
    return Lattice(corner, float(step), np.ascontiguousarray(velocity, dtype=np.float32))


def _lesion_sites(vent: np.ndarray, wm: np.ndarray, origin: np.ndarray) -> np.ndarray:
    box = _box(vent, int(_LESION_SITE_DISTANCE_MM[1]) + 2)
    distance = ndi.distance_transform_edt(~vent[box])
    near, far = _LESION_SITE_DISTANCE_MM
    k, j, i = np.nonzero((wm[box] >= 0.9) & (distance >= near) & (distance <= far))
    points = origin + np.stack([i + box[2].start, j + box[1].start, k + box[0].start], axis=1)
    points = points[np.abs(points[:, 0]) >= _LESION_SITE_MIN_ABS_X_MM]
    return points[::7]  # every 7th site is plenty and keeps the array small


def _support(mask: np.ndarray, origin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    box = _box(mask, 1)
    lo = origin + np.array([box[2].start, box[1].start, box[0].start])
    hi = origin + np.array([box[2].stop, box[1].stop, box[0].stop]) - 1
    return lo.astype(np.float32), hi.astype(np.float32)


def _prepare_template(paths: dict[str, Path]) -> Template:
    t1, origin = _read_lps(paths["t1"])
    gm, wm = (_read_lps(paths[name])[0] / np.float32(255.0) for name in ("gm", "wm"))
    mask = ndi.binary_fill_holes(largest_component(t1 > 0))
    box = _box(mask, _CROP_MARGIN_MM)
    t1, gm, wm, mask = (np.ascontiguousarray(a[box]) for a in (t1, gm, wm, mask))
    origin = origin + np.array([box[2].start, box[1].start, box[0].start], dtype=np.float64)
    t1 /= np.float32(np.median(t1[wm >= 0.9]))
    gm_intensity = float(np.median(t1[gm >= 0.9]))
    vent = _segment_ventricles(t1, gm, wm, mask, gm_intensity)
    inside = ndi.binary_fill_holes((gm + wm >= 0.5) | vent) & mask
    maps = {
        "t1": t1, "gm": gm, "wm": wm,
        "mask": mask.astype(np.float32), "vent": vent.astype(np.float32),
        "pial": _signed_distance(inside),
        "white": -_signed_distance(wm >= 0.5),
    }
    return Template(
        origin=origin, maps=maps,
        csf_intensity=float(np.median(t1[vent])), gm_intensity=gm_intensity,
        ventricle_volume_ml=float(vent.sum()) / 1000.0,
        velocity=_velocity_field(vent, origin),
        lesion_sites=_lesion_sites(vent, wm, origin),
        support={"mask": _support(mask, origin), "vent": _support(vent, origin)},
    )


@functools.lru_cache(maxsize=1)
def load_template() -> Template:
    return _prepare_template(template_paths())


@functools.lru_cache(maxsize=2)
def smoothed_maps(sigma_zyx: tuple[float, float, float]) -> dict[str, np.ndarray]:
    """Template maps blurred by about one output voxel, for sampling at ``size``³."""
    template = load_template()
    if max(sigma_zyx) <= 0:
        return template.maps
    smoothed = dict(template.maps)
    for name in ("t1", "gm", "wm", "mask"):
        smoothed[name] = ndi.gaussian_filter(template.maps[name], sigma_zyx, mode="constant", truncate=3.0)
    return smoothed
