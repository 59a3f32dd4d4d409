"""The built-in synthetic phantom cohort: hollow ellipsoidal shells with an optional lesion.

Each subject is a myocardium-like shell: outer semi-axes ``(a, k·a, c)`` with ``k ≤ 1``
(so the maximal axial diameter is ``D = 2a``) and wall thickness ``t`` (the lumen is the
ellipsoid with every semi-axis shortened by ``t``). ``D``, the outer volume ``V`` (which fixes
``c``) and ``t`` are drawn independently and uniformly from ranges in which every
combination is feasible and fits the field of view, so the generator induces no
correlation between them. Nuisances: ``k``, in-plane rotation about z (which keeps ``D``),
a small translation, wall/lumen/background intensities, Gaussian noise and a smooth
multiplicative bias field. Class 1 (Bernoulli 0.5) adds a bright "scar" lesion, the part of
the wall inside a ball centred on the mid-wall surface; it changes intensities only.

The physical world does not depend on ``size``: the field of view is :data:`FOV_MM` and the
spacing is ``FOV_MM / size`` (1.5 × 1.5 × 1.8 mm at 64³). Images are rendered at twice the
resolution and averaged down (partial volume); masks are the majority of those samples.
The attributes in the manifest are measured from the masks with physical spacing
(:func:`AttriVAELib.data.attributes.shape_attributes`), next to the generating factors.

Everything about subject ``i`` comes from ``numpy.random.default_rng([seed, i])``, so a
cohort does not depend on the number of worker processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from typing import Any, Sequence

import numpy as np

from AttriVAELib import __version__
from AttriVAELib.core.errors import ConfigError
from AttriVAELib.data.attributes import ATTRIBUTE_UNITS, shape_attributes
from AttriVAELib.data.cohort_files import describe_cohort, write_cohort
from AttriVAELib.data.io import Geometry

__all__ = [
    "ATTRIBUTES",
    "FOV_MM",
    "Factors",
    "MANIFEST_COLUMNS",
    "generate_cohort",
    "geometry_for_size",
    "render_factors",
    "render_subject",
    "sample_factors",
    "summarize_cohort",
]

FORMAT_VERSION = 1
MIN_SIZE = 24  # below this a 5 mm wall is thinner than a voxel and the lumen is not enclosed
MAX_SIZE = 256  # rendering takes ~40 bytes per voxel and worker: 256³ is ~0.7 GB each

FOV_MM = (96.0, 96.0, 115.2)  # (x, y, z)
CENTRE_MM = (12.5, -20.0, 35.0)  # physical centre of the field of view, so the origin is not 0

# Uniform ranges of the generating factors. With a = D/2 ∈ [22, 28], k ∈ [0.85, 1] and
# V ∈ [56, 88] mL, c = 3V / (4π a² k) ∈ [17.1, 51.1] mm: every combination has a lumen at
# least 7 mm across in z (c - t) and 8.7 mm in-plane (k·a - t), and c + translation stays
# 3.5 mm inside the 57.6 mm half field of view in z.
RANGES: dict[str, tuple[float, float]] = {
    "outer_volume_ml": (56.0, 88.0),
    "diameter_mm": (44.0, 56.0),
    "thickness_mm": (5.0, 10.0),
    "k": (0.85, 1.0),
    "rotation_deg": (0.0, 180.0),
    "translation_mm": (-3.0, 3.0),
    "intensity_background": (0.0, 0.1),
    "intensity_wall": (0.15, 0.3),
    "intensity_lumen": (0.4, 0.6),
    "lesion_intensity": (0.75, 0.95),
    "noise_sd": (0.01, 0.04),
    "bias_strength": (0.0, 0.2),
    "lesion_radius_mm": (6.0, 14.0),  # ≥ 6 mm: resolvable by a 32³ model (3.6 mm voxels)
    "lesion_azimuth_deg": (0.0, 360.0),
    "lesion_elevation_deg": (-45.0, 45.0),
}
LESION_PROBABILITY = 0.5

#: Attribute columns of the manifest (measured from the masks) and their units.
ATTRIBUTES: dict[str, str] = {
    "volume_ml": "mL",
    "max_axial_diameter_mm": "mm",
    "wall_thickness_mm": "mm",
    "lesion_volume_ml": "mL",
}
ATTRIBUTE_DESCRIPTIONS = {
    "volume_ml": "volume enclosed by the outer wall surface (hole-filled wall mask)",
    "max_axial_diameter_mm": "largest in-plane Feret diameter over axial slices",
    "wall_thickness_mm": "mean distance from the outer to the inner wall surface",
    "lesion_volume_ml": "volume of the lesion mask (0 without a lesion)",
}
META = ("surface_area_mm2", "sphericity", "wall_volume_ml")
FACTORS = (
    "outer_volume_ml", "diameter_mm", "thickness_mm", "k", "c_mm", "rotation_deg",
    "translation_x_mm", "translation_y_mm", "translation_z_mm",
    "intensity_background", "intensity_wall", "intensity_lumen", "noise_sd", "bias_strength",
    "lesion_radius_mm", "lesion_azimuth_deg", "lesion_elevation_deg", "lesion_intensity",
)
MANIFEST_COLUMNS: tuple[str, ...] = (
    "subject", "image", "mask", "lesion", "label",
    *ATTRIBUTES,
    *(f"meta_{name}" for name in META),
    *(f"factor_{name}" for name in FACTORS),
)

_BIAS_TERMS = 9  # x, y, z, x², y², z², xy, xz, yz over the field of view scaled to [-1, 1]


@dataclass(frozen=True)
class Factors:
    """Everything that determines one subject (lengths in mm, angles in degrees)."""

    index: int
    label: int
    outer_volume_ml: float
    diameter_mm: float
    thickness_mm: float
    k: float
    rotation_deg: float
    translation_mm: tuple[float, float, float]  # (x, y, z)
    intensity_background: float
    intensity_wall: float
    intensity_lumen: float
    lesion_intensity: float
    noise_sd: float
    bias_strength: float
    bias_coefficients: tuple[float, ...]
    lesion_radius_mm: float
    lesion_azimuth_deg: float
    lesion_elevation_deg: float
    noise_seed: int

    @property
    def semi_axes(self) -> tuple[float, float, float]:
        """Outer semi-axes (a, k·a, c) in mm, before the in-plane rotation."""
        a = self.diameter_mm / 2
        c = 3 * self.outer_volume_ml * 1000 / (4 * np.pi * a * a * self.k)
        return a, self.k * a, c

    def row(self) -> dict[str, float]:
        """The ``factor_*`` columns; the lesion factors are 0 for a subject without lesion."""
        c = self.semi_axes[2]
        lesion = self.label == 1
        values = {
            "outer_volume_ml": self.outer_volume_ml,
            "diameter_mm": self.diameter_mm,
            "thickness_mm": self.thickness_mm,
            "k": self.k,
            "c_mm": c,
            "rotation_deg": self.rotation_deg,
            "translation_x_mm": self.translation_mm[0],
            "translation_y_mm": self.translation_mm[1],
            "translation_z_mm": self.translation_mm[2],
            "intensity_background": self.intensity_background,
            "intensity_wall": self.intensity_wall,
            "intensity_lumen": self.intensity_lumen,
            "noise_sd": self.noise_sd,
            "bias_strength": self.bias_strength,
            "lesion_radius_mm": self.lesion_radius_mm if lesion else 0.0,
            "lesion_azimuth_deg": self.lesion_azimuth_deg if lesion else 0.0,
            "lesion_elevation_deg": self.lesion_elevation_deg if lesion else 0.0,
            "lesion_intensity": self.lesion_intensity if lesion else 0.0,
        }
        return {f"factor_{name}": float(values[name]) for name in FACTORS}


def sample_factors(index: int, seed: int) -> Factors:
    """Draw subject ``index``'s factors from ``default_rng([seed, index])`` (pure).

    Every factor is drawn for every subject, in a fixed order, so the label does not shift
    the random stream: a subject differs from its lesion-free twin only by the lesion.
    """
    rng = np.random.default_rng([seed, index])

    def uniform(name: str, size: int | None = None) -> Any:
        low, high = RANGES[name]
        return rng.uniform(low, high, size)

    return Factors(
        index=index,
        label=int(rng.random() < LESION_PROBABILITY),
        outer_volume_ml=float(uniform("outer_volume_ml")),
        diameter_mm=float(uniform("diameter_mm")),
        thickness_mm=float(uniform("thickness_mm")),
        k=float(uniform("k")),
        rotation_deg=float(uniform("rotation_deg")),
        translation_mm=tuple(float(v) for v in uniform("translation_mm", 3)),
        intensity_background=float(uniform("intensity_background")),
        intensity_wall=float(uniform("intensity_wall")),
        intensity_lumen=float(uniform("intensity_lumen")),
        lesion_intensity=float(uniform("lesion_intensity")),
        noise_sd=float(uniform("noise_sd")),
        bias_strength=float(uniform("bias_strength")),
        bias_coefficients=tuple(float(v) for v in rng.uniform(-1, 1, _BIAS_TERMS) / 3),
        lesion_radius_mm=float(uniform("lesion_radius_mm")),
        lesion_azimuth_deg=float(uniform("lesion_azimuth_deg")),
        lesion_elevation_deg=float(uniform("lesion_elevation_deg")),
        noise_seed=int(rng.integers(2**63 - 1)),
    )


def geometry_for_size(size: int) -> Geometry:
    """The cohort's grid at ``size``³: fixed field of view and centre, identity direction."""
    spacing = tuple(fov / size for fov in FOV_MM)
    origin = tuple(centre - (size - 1) / 2 * h for centre, h in zip(CENTRE_MM, spacing))
    return Geometry(size=(size, size, size), spacing=spacing, origin=origin,
                    direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))


def _lesion_centre(f: Factors) -> np.ndarray:
    """Lesion centre (x, y, z) in mm relative to the shell centre, on the mid-wall surface."""
    a, b, c = (s - f.thickness_mm / 2 for s in f.semi_axes)
    az, el = np.radians(f.lesion_azimuth_deg), np.radians(f.lesion_elevation_deg)
    u = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    local = u / np.sqrt((u[0] / a) ** 2 + (u[1] / b) ** 2 + (u[2] / c) ** 2)
    theta = np.radians(f.rotation_deg)
    return np.array([
        np.cos(theta) * local[0] - np.sin(theta) * local[1],
        np.sin(theta) * local[0] + np.cos(theta) * local[1],
        local[2],
    ])


class _Shape:
    """One subject's shell and lesion as implicit functions of (x, y, z) mm from the centre."""

    def __init__(self, f: Factors) -> None:
        self.outer = np.asarray(f.semi_axes)
        self.inner = self.outer - f.thickness_mm
        theta = np.radians(f.rotation_deg)
        self.cos, self.sin = np.cos(theta), np.sin(theta)
        self.lesion = f.label == 1
        self.lesion_centre = _lesion_centre(f)
        self.lesion_radius = f.lesion_radius_mm

    def radii(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Normalized radii (outer, inner, lesion) at broadcastable coordinates: ≤ 1 is inside.

        The ellipsoidal radius √Σ(xᵢ/aᵢ)² is 1/min(aᵢ)-Lipschitz and the lesion radius
        |p - centre|/r is 1/r-Lipschitz, which :func:`render_factors` uses to find the voxels
        that a surface may cross.
        """
        xr = self.cos * x + self.sin * y  # coordinates in the shell's own frame
        yr = -self.sin * x + self.cos * y

        def ellipsoidal(axes: np.ndarray) -> np.ndarray:
            return np.sqrt(((xr / axes[0]) ** 2 + (yr / axes[1]) ** 2) + (z / axes[2]) ** 2)

        if self.lesion:
            px, py, pz = self.lesion_centre
            lesion = np.sqrt(((x - px) ** 2 + (y - py) ** 2) + (z - pz) ** 2) / self.lesion_radius
        else:
            lesion = np.full(np.broadcast_shapes(np.shape(x), np.shape(y), np.shape(z)), np.inf)
        return ellipsoidal(self.outer), ellipsoidal(self.inner), lesion

    def slack(self, reach: float) -> tuple[float, float, float]:
        """Largest change of each normalized radius within ``reach`` mm of a point."""
        return reach / self.outer.min(), reach / self.inner.min(), reach / self.lesion_radius


# Offsets (in voxels, (x, y, z)) of the eight 2×-resolution samples of a voxel.
_SUBSAMPLES = np.array([[dx, dy, dz] for dz in (-0.25, 0.25) for dy in (-0.25, 0.25) for dx in (-0.25, 0.25)])


def _bias_field(f: Factors, geometry: Geometry) -> np.ndarray:
    """Smooth multiplicative field exp(strength·quadratic polynomial) on the (z, y, x) grid.

    The polynomial in (x, y, z) scaled to [-1, 1] over the field of view is a sum of
    functions of (z, y), (z, x) and (y, x), so the field is a product of three 2D exponentials.
    """
    x, y, z = (
        (geometry.origin[d] + np.arange(geometry.size[d]) * geometry.spacing[d] - CENTRE_MM[d]) / (FOV_MM[d] / 2)
        for d in range(3)
    )
    c = np.asarray(f.bias_coefficients) * f.bias_strength
    yx = (c[1] * y + c[4] * y * y)[:, None] + (c[0] * x + c[3] * x * x)[None, :] + c[6] * np.outer(y, x)
    zx = c[7] * np.outer(z, x)
    zy = (c[2] * z + c[5] * z * z)[:, None] + c[8] * np.outer(z, y)
    zy, zx, yx = (np.exp(term).astype(np.float32) for term in (zy, zx, yx))
    return zy[:, :, None] * zx[:, None, :] * yx[None, :, :]


def render_factors(f: Factors, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render (image float32, wall mask uint8, lesion mask uint8), each (z, y, x) = size³.

    Each voxel is sampled at its centre and at eight points ±1/4 voxel around it (2×
    resolution). The image averages the eight samples (partial volume); a mask takes their
    majority, 4-of-8 ties going to the centre. Only voxels that a surface may cross (by the
    Lipschitz bounds of :meth:`_Shape.slack`) are subsampled; the others are uniform.
    """
    geometry = geometry_for_size(size)
    spacing = np.asarray(geometry.spacing)
    origin = np.asarray(geometry.origin)
    centre = np.asarray(CENTRE_MM) + np.asarray(f.translation_mm)
    shape = _Shape(f)
    half = np.array([f.semi_axes[0], f.semi_axes[0], f.semi_axes[2]])  # a ≥ k·a bounds any rotation
    lo = np.clip(np.floor((centre - half - origin) / spacing).astype(int) - 1, 0, size)
    hi = np.clip(np.ceil((centre + half - origin) / spacing).astype(int) + 2, 0, size)
    axes = [origin[d] + np.arange(lo[d], hi[d]) * spacing[d] - centre[d] for d in range(3)]
    radii = shape.radii(axes[0][None, None, :], axes[1][None, :, None], axes[2][:, None, None])
    outer_in, inner_in, ball_in = (r <= 1 for r in radii)
    wall_in = outer_in & ~inner_in
    lesion_in = wall_in & ball_in  # the lesion is the part of the ball within the wall
    # Samples inside, of 8: (outer ellipsoid, lumen, lesion).
    counts = [8 * m.astype(np.uint8) for m in (outer_in, inner_in, lesion_in)]

    reach = 0.25 * float(np.linalg.norm(spacing))  # distance from a voxel centre to its samples
    near = np.zeros(outer_in.shape, dtype=bool)
    for r, slack in zip(radii, shape.slack(reach)):
        near |= np.abs(r - 1) <= slack
    k, j, i = np.nonzero(near)
    points = (np.stack([i, j, k], axis=1)[:, None, :] + _SUBSAMPLES[None] + lo) * spacing + origin - centre
    sub_outer, sub_inner, sub_ball = (r <= 1 for r in shape.radii(points[..., 0], points[..., 1], points[..., 2]))
    for count, samples in zip(counts, (sub_outer, sub_inner, sub_outer & ~sub_inner & sub_ball)):
        count[k, j, i] = np.count_nonzero(samples, axis=1)
    outer, inner, lesion_count = counts

    def majority(count: np.ndarray, centre_inside: np.ndarray) -> np.ndarray:
        return (count > 4) | ((count == 4) & centre_inside)

    box = tuple(slice(lo[d], hi[d]) for d in (2, 1, 0))
    wall_box = majority(outer - inner, wall_in)
    lesion_box = majority(lesion_count, lesion_in) & wall_box

    image = np.full(geometry.shape, f.intensity_background, dtype=np.float32)
    image[box] += (
        (f.intensity_wall - f.intensity_background) * outer
        + (f.intensity_lumen - f.intensity_wall) * inner
        + (f.lesion_intensity - f.intensity_wall) * lesion_count
    ).astype(np.float32) / 8
    image *= _bias_field(f, geometry)
    noise = np.random.default_rng(f.noise_seed).standard_normal(geometry.shape, dtype=np.float32)
    image += np.float32(f.noise_sd) * noise

    wall = np.zeros(geometry.shape, dtype=np.uint8)
    wall[box] = wall_box
    lesion = np.zeros(geometry.shape, dtype=np.uint8)
    lesion[box] = lesion_box
    return image, wall, lesion


def _measure(wall: np.ndarray, lesion: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """The measured attribute and ``meta_*`` columns of one subject."""
    measured = shape_attributes(wall, spacing, shell=True)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    return {
        "volume_ml": measured["volume_ml"],
        "max_axial_diameter_mm": measured["max_axial_diameter_mm"],
        "wall_thickness_mm": measured["wall_thickness_mm"],
        "lesion_volume_ml": float(np.count_nonzero(lesion)) * voxel_ml,
        **{f"meta_{name}": measured[name] for name in META},
    }


def subject_id(index: int) -> str:
    return f"sub-{index:04d}"


def render_subject(index: int, size: int, seed: int) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """(row, image, wall mask, lesion mask) of subject ``index``: a pure function.

    ``row`` holds the manifest columns except the file paths: ``subject``, ``label``, the
    measured attributes, ``meta_*`` and ``factor_*``. Arrays are (z, y, x) = size³.
    """
    f = sample_factors(index, seed)
    image, wall, lesion = render_factors(f, size)
    row: dict[str, Any] = {"subject": subject_id(index), "label": f.label}
    row.update(_measure(wall, lesion, geometry_for_size(size).spacing))
    row.update(f.row())
    return row, image, wall, lesion


#: Images are stored as 16-bit integers, as scanners store them: 1.0 ↦ 1000. Gzip of noisy
#: float32 voxels was most of the generation time; int16 is 3× smaller and faster to write.
STORED_INTENSITY_SCALE = 1000.0


def to_stored_intensity(image: np.ndarray) -> np.ndarray:
    """Float image (z, y, x) → int16 scanner-like values (``round(image · 1000)``)."""
    return np.clip(np.rint(image * STORED_INTENSITY_SCALE), -32768, 32767).astype(np.int16)


def generate_cohort(
    out: str | os.PathLike,
    n: int,
    size: int = 64,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Write ``n`` phantoms at ``size``³ into ``out`` (atomically) and return the summary.

    ``out`` receives ``images/``, ``masks/``, ``lesions/`` (``sub-0000.nii.gz`` …),
    ``manifest.csv`` (:data:`MANIFEST_COLUMNS`, paths relative to it) and ``cohort.json``
    (generator parameters and the summary). A run that is interrupted leaves no ``out``.
    """
    if size < MIN_SIZE:
        raise ConfigError(f"size = {size} is too small for the phantoms (walls of 5 mm in a {FOV_MM[2]:g} mm "
                          f"field of view); use at least {MIN_SIZE}")
    if size > MAX_SIZE:
        raise ConfigError(f"size = {size} is larger than the phantoms' maximum of {MAX_SIZE} voxels per axis")
    if not 0 <= seed < 2**32:
        raise ConfigError(f"seed = {seed}: must be a whole number from 0 to {2**32 - 1}")
    geometry = geometry_for_size(size)
    return write_cohort(out, n, partial(render_subject, size=size, seed=seed), geometry, MANIFEST_COLUMNS,
                        ATTRIBUTES, to_stored_intensity, lambda summary: _cohort_json(n, size, seed, geometry, summary),
                        workers=workers, progress=progress, overwrite=overwrite, desc="phantoms")


def _cohort_json(n: int, size: int, seed: int, geometry: Geometry, summary: dict) -> dict:
    """Contents of ``cohort.json``: deterministic, like the rest of the cohort."""
    return {
        "generator": "phantom",
        "version": __version__,
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "n": n,
        "size": size,
        "geometry": geometry.to_dict(),
        "spacing": list(geometry.spacing),
        "fov_mm": list(FOV_MM),
        "ranges": {name: list(bounds) for name, bounds in RANGES.items()},
        "lesion_probability": LESION_PROBABILITY,
        "label": {"0": "no lesion", "1": "lesion (bright scar within the wall)"},
        "attributes": {
            name: {"unit": unit, "description": ATTRIBUTE_DESCRIPTIONS[name]} for name, unit in ATTRIBUTES.items()
        },
        "meta": {f"meta_{name}": {"unit": ATTRIBUTE_UNITS[name]} for name in META},
        "factors": [f"factor_{name}" for name in FACTORS],
        "columns": list(MANIFEST_COLUMNS),
        "summary": summary,
    }


def summarize_cohort(folder: str | os.PathLike) -> str:
    """A short human-readable summary (counts, spacing, attribute ranges) of a phantom cohort folder."""
    return describe_cohort(folder, ATTRIBUTES, "phantom", ("no lesion", "lesion"))
