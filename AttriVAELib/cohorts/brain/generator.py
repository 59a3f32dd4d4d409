"""Synthetic brain-MRI cohort for aging and atrophy, built from the real MNI152 template.

Every subject is the MNI152 2009c symmetric template (T1 and GM/WM probability maps at
1 mm, shipped inside the nilearn wheel: nothing is downloaded) changed by known, smooth,
anatomically plausible operations whose sizes are drawn independently per subject:

Template preparation (once per process, cached)
    Brain mask: the non-zero voxels of the skull-stripped T1 (holes filled). CSF: voxels of
    the mask with P(GM) + P(WM) < 0.5 that are also darker than 0.6 × the median GM
    intensity. Ventricles: the connected CSF components of at least 1 mL whose every voxel
    lies at least 8 mm inside the brain mask; sulcal and cisternal CSF touches the surface
    and is left out, so these are the two lateral ventricles (≈ 13.7 mL together).

Ventricular enlargement
    A stationary velocity field ``v = -∇(G_σ * V)`` (``V`` the ventricle mask, σ = 4 mm),
    normalized to a maximal speed of 1 mm, points out of the ventricles and decays within
    a few σ. The expansion is ``exp(α·v)`` computed by scaling and squaring (a
    diffeomorphism; ``α < 0`` shrinks the ventricles), so periventricular tissue is pushed
    outwards and compressed while the cortex and the brain mask stay where they are.

Cortical thinning
    Grey matter within ``t`` mm of the pial surface (the signed distance to the outer
    boundary of GM ∪ WM ∪ ventricles) is removed and becomes CSF, with a 1 mm linear ramp;
    the millimetre of GM next to white matter is never removed, so the cortex cannot vanish.
    The T1 changes by the same partial-volume amounts (GM intensity → CSF intensity).

Head size
    An isotropic scaling ``s`` about the brain centre. MNI152 is larger than most native
    brains, so ``s`` is centred below 1.

Nuisances
    A small rotation and translation, a random smooth displacement field (cubic B-spline
    of random control points, at most ``warp_mm``), gamma contrast and gain, a smooth
    multiplicative bias field and Rician noise. Images are skull-stripped (× the brain mask).

Class
    Label 1 (Bernoulli 0.5) adds 2–10 spherical white-matter-hyperintensity-like lesions,
    centred at white-matter sites 3–12 mm from the template ventricles and carried into the
    subject with the deformation; each is the part of a ball (radius 2.5–5.5 mm in subject
    space) that lies in white matter. On T1 such lesions are hypointense: white matter inside
    a lesion takes 0.45–0.7 of its intensity (between GM and CSF).

Measured attributes (manifest columns) are computed from the generated tissue maps on a
fixed 2 mm grid over the field of view, the same for every output ``size``:

* ``brain_volume_ml``: volume of the brain mask (partial-volume sum), the intracranial
  volume of a skull-stripped scan. Thinning and ventricular expansion happen inside the
  mask, so it follows the head size only.
* ``ventricle_volume_ml``: volume of the ventricle map (the template ventricles carried
  through the deformation, partial-volume sum).
* ``cortical_thickness_mm``: cortical GM volume / pial area, both over the region within
  10 mm (template) of the pial surface, which leaves out deep grey nuclei. The area is the
  total variation ``Σ|∇p|·h³`` of the tissue fraction ``p = GM + WM + ventricles``.
* ``lesion_load_ml``: volume of the lesion mask (0 for label 0).

So that the measured attributes are mutually independent, the generator does not draw
the expansion ``α`` and the thinning ``t`` but the target ventricle volume and cortical
thickness of the subject, independently of the scale, and solves for ``α`` and ``t``
with calibration curves measured once per process on the template (ventricle volume
against ``α``; thickness against ``t`` at two scales). Both the targets and the applied
``α`` and ``t`` are saved as ``factor_*`` columns.

Images, brain masks and lesion masks are written at ``size``³ over the fixed field of view
:data:`FOV_MM` (LPS, identity direction), so the spacing is ``FOV_MM / size``; the template
maps are smoothed by about one output voxel before sampling (partial volume). Everything
about subject ``i`` comes from ``numpy.random.default_rng([seed, i])``, so a cohort does
not depend on the number of worker processes.

Why one long module: the steps above (factors, deformation, tissue maps, calibration,
rendering, the cohort on disk) form one pipeline that shares the parameter tables below and
is read top to bottom with this description; the template preparation, which stands alone,
lives in :mod:`AttriVAELib.cohorts.brain.template`.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

from AttriVAELib import __version__
from AttriVAELib.cohorts.brain.template import (CVAL, TEMPLATE_FILES, Lattice, Template, load_template, smoothed_maps,
                                                template_paths)
from AttriVAELib.cohorts.phantom.generator import subject_id, to_stored_intensity
from AttriVAELib.core.errors import ConfigError, InputError
from AttriVAELib.data.cohort_files import describe_cohort, write_cohort
from AttriVAELib.data.io import Geometry

__all__ = [
    "ATTRIBUTES",
    "ATTRIBUTE_REGIONS",
    "BrainFactors",
    "FOV_MM",
    "MANIFEST_COLUMNS",
    "applied_changes",
    "generate_brain_cohort",
    "geometry_for_size",
    "measure_factors",
    "render_factors",
    "render_subject",
    "sample_factors",
    "summarize_brain_cohort",
    "template_paths",
    "TISSUE_FOLDER",
    "TISSUE_LABELS",
]

FORMAT_VERSION = 1
MIN_SIZE = 16
MAX_SIZE = 256


FOV_MM = (176.0, 212.0, 184.0)  # (x, y, z)
CENTRE_MM = (0.0, 17.0, 5.0)  # LPS centre of the MNI152 brain mask: scaling and rotation centre
MEASURE_SPACING_MM = 2.0

# Template preparation.
_KEEP_GM_MM = 1.0  # GM within this distance of WM is never removed by thinning
_CORTEX_DEPTH_MM = 10.0  # thickness region: within this depth (template) of the pial surface
_WARP_LATTICE_MM = 8.0
_WARP_CONTROL_POINTS = (6, 7, 6)  # (x, y, z) over the field of view: ~35 mm apart

RANGES: dict[str, tuple[float, float]] = {
    "scale": (0.85, 1.05),
    "target_ventricle_volume_ml": (10.0, 34.0),
    "target_cortical_thickness_mm": (3.7, 4.9),
    "rotation_deg": (-4.0, 4.0),
    "translation_mm": (-3.0, 3.0),
    "warp_mm": (0.0, 2.0),
    "gamma": (0.8, 1.25),
    "gain": (0.9, 1.1),
    "noise_sd": (0.01, 0.04),
    "bias_strength": (0.0, 0.3),
    "target_lesion_load_ml": (0.5, 6.0),
    "lesion_count": (3, 10),
    "lesion_relative_radius": (1.0, 2.2),
    "lesion_intensity": (0.45, 0.7),
}
LESION_PROBABILITY = 0.5
#: Factors drawn from a scrambled Sobol' sequence (see :func:`sample_factors`); "label" is
#: ``u < LESION_PROBABILITY`` of its coordinate, the others are uniform over their range.
DESIGN = ("scale", "label", "target_ventricle_volume_ml", "target_cortical_thickness_mm", "target_lesion_load_ml")
MAX_LESIONS = int(RANGES["lesion_count"][1])
# Calibration grids of the expansion α (mm) and of the template thinning t (mm).
_ALPHAS = np.linspace(-3.0, 14.0, 18)
_THINNINGS = np.linspace(0.0, 3.0, 7)
_CALIBRATION_SCALES = (RANGES["scale"][0], RANGES["scale"][1])

#: Attribute columns of the manifest and their units.
ATTRIBUTES: dict[str, str] = {
    "brain_volume_ml": "mL",
    "ventricle_volume_ml": "mL",
    "cortical_thickness_mm": "mm",
    "lesion_load_ml": "mL",
}
ATTRIBUTE_DESCRIPTIONS = {
    "brain_volume_ml": "brain-mask (intracranial) volume, partial-volume sum on a 2 mm grid",
    "ventricle_volume_ml": "lateral-ventricle volume, partial-volume sum on a 2 mm grid",
    "cortical_thickness_mm": "cortical GM volume / pial area within 10 mm of the pial surface",
    "lesion_load_ml": "volume of the lesion mask on a 2 mm grid (0 without lesions)",
}
META: dict[str, str] = {
    "gm_volume_ml": "mL",
    "wm_volume_ml": "mL",
    "csf_volume_ml": "mL",
    "pial_area_mm2": "mm^2",
}
FACTORS = (
    "scale", "target_ventricle_volume_ml", "target_cortical_thickness_mm",
    "ventricle_expansion_mm", "ventricle_volume_ratio", "thinning_mm",
    "rotation_x_deg", "rotation_y_deg", "rotation_z_deg",
    "translation_x_mm", "translation_y_mm", "translation_z_mm", "warp_mm",
    "gamma", "gain", "noise_sd", "bias_strength",
    "target_lesion_load_ml", "lesion_count", "lesion_mean_radius_mm", "lesion_intensity",
)
MANIFEST_COLUMNS: tuple[str, ...] = (
    "subject", "image", "mask", "lesion", "label",
    *ATTRIBUTES,
    *(f"meta_{name}" for name in META),
    *(f"factor_{name}" for name in FACTORS),
)

_BIAS_TERMS = 9


# --------------------------------------------------------------------------------------
# Factors


@dataclass(frozen=True)
class BrainFactors:
    """Everything that determines one subject (lengths in mm, angles in degrees)."""

    index: int
    label: int
    scale: float
    target_ventricle_volume_ml: float
    target_cortical_thickness_mm: float
    target_lesion_load_ml: float  # total nominal volume of the lesion balls
    rotation_deg: tuple[float, float, float]  # about x, y, z
    translation_mm: tuple[float, float, float]
    warp_mm: float
    warp_seed: int
    gamma: float
    gain: float
    noise_sd: float
    bias_strength: float
    bias_coefficients: tuple[float, ...]
    lesion_count: int
    lesion_sites: tuple[float, ...]  # MAX_LESIONS numbers in [0, 1) picking candidate sites
    lesion_relative_radii: tuple[float, ...]  # MAX_LESIONS; the first lesion_count are used
    lesion_intensity: float
    noise_seed: int

    @property
    def lesions(self) -> int:
        """Number of lesions actually present (0 for label 0)."""
        return self.lesion_count if self.label == 1 else 0

    @property
    def lesion_radii_mm(self) -> tuple[float, ...]:
        """Radii of the present lesions: the relative radii scaled so that the balls'
        volumes add up to ``target_lesion_load_ml``."""
        relative = np.asarray(self.lesion_relative_radii[:self.lesions])
        if not len(relative):
            return ()
        unit_ml = float((4 / 3 * np.pi * relative ** 3).sum()) / 1000.0
        return tuple(float(r) for r in relative * (self.target_lesion_load_ml / unit_ml) ** (1 / 3))


def _design_point(index: int, seed: int) -> np.ndarray:
    """Point ``index`` of the scrambled Sobol' sequence of ``seed``, one coordinate per DESIGN name."""
    from scipy.stats import qmc

    try:
        sobol = qmc.Sobol(len(DESIGN), scramble=True, rng=seed)
    except TypeError:  # SciPy < 1.15 names it seed
        sobol = qmc.Sobol(len(DESIGN), scramble=True, seed=seed)
    if index:  # fast_forward(0) is an error in SciPy
        sobol.fast_forward(index)
    return sobol.random(1)[0]


def sample_factors(index: int, seed: int) -> BrainFactors:
    """Subject ``index``'s factors: a pure function of ``(index, seed)``.

    The factors behind the label and the four attributes (:data:`DESIGN`) are point
    ``index`` of a scrambled Sobol' sequence: each is uniform over its range and they are
    mutually independent, as with independent draws, but the points are balanced, so over
    a few hundred subjects their sample correlations are ~0.01 instead of the ~1/√n of
    independent draws. The nuisances come from ``default_rng([seed, index])``; every one is
    drawn for every subject, in a fixed order, so a subject differs from its lesion-free
    twin only by the lesions.
    """
    if seed < 0 or index < 0:
        raise ConfigError(f"seed {seed} and subject index {index} must not be negative")
    design = dict(zip(DESIGN, _design_point(index, seed)))
    rng = np.random.default_rng([seed, index])

    def uniform(name: str, size: int | None = None) -> Any:
        low, high = RANGES[name]
        return rng.uniform(low, high, size)

    def scaled(name: str) -> float:
        low, high = RANGES[name]
        return float(low + design[name] * (high - low))

    return BrainFactors(
        index=index,
        label=int(design["label"] < LESION_PROBABILITY),
        scale=scaled("scale"),
        target_ventricle_volume_ml=scaled("target_ventricle_volume_ml"),
        target_cortical_thickness_mm=scaled("target_cortical_thickness_mm"),
        target_lesion_load_ml=scaled("target_lesion_load_ml"),
        rotation_deg=tuple(float(v) for v in uniform("rotation_deg", 3)),
        translation_mm=tuple(float(v) for v in uniform("translation_mm", 3)),
        warp_mm=float(uniform("warp_mm")),
        warp_seed=int(rng.integers(2**63 - 1)),
        gamma=float(uniform("gamma")),
        gain=float(uniform("gain")),
        noise_sd=float(uniform("noise_sd")),
        bias_strength=float(uniform("bias_strength")),
        bias_coefficients=tuple(float(v) for v in rng.uniform(-1, 1, _BIAS_TERMS) / 3),
        lesion_count=int(rng.integers(RANGES["lesion_count"][0], RANGES["lesion_count"][1] + 1)),
        lesion_sites=tuple(float(v) for v in rng.random(MAX_LESIONS)),
        lesion_relative_radii=tuple(float(v) for v in uniform("lesion_relative_radius", MAX_LESIONS)),
        lesion_intensity=float(uniform("lesion_intensity")),
        noise_seed=int(rng.integers(2**63 - 1)),
    )


@dataclass(frozen=True)
class _Anatomy:
    """The geometric part of a subject: what the deformation and the tissue maps depend on."""

    scale: float = 1.0
    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    translation_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    warp_mm: float = 0.0
    warp_seed: int = 0
    expansion_mm: float = 0.0  # α
    thinning_mm: float = 0.0  # t, in template mm
    lesion_centres: tuple[tuple[float, float, float], ...] = ()  # template (x, y, z) mm
    lesion_radii_mm: tuple[float, ...] = ()  # subject mm


# --------------------------------------------------------------------------------------
# Geometry and deformation


def geometry_for_size(size: int) -> Geometry:
    """The cohort's grid at ``size``³: fixed field of view and centre, identity direction."""
    spacing = tuple(fov / size for fov in FOV_MM)
    origin = tuple(centre - (size - 1) / 2 * h for centre, h in zip(CENTRE_MM, spacing))
    return Geometry(size=(size, size, size), spacing=spacing, origin=origin,
                    direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))


def _measure_geometry() -> Geometry:
    size = tuple(int(round(fov / MEASURE_SPACING_MM)) for fov in FOV_MM)
    origin = tuple(c - (n - 1) / 2 * MEASURE_SPACING_MM for c, n in zip(CENTRE_MM, size))
    return Geometry(size=size, spacing=(MEASURE_SPACING_MM,) * 3, origin=origin,
                    direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))


def _axes(geometry: Geometry) -> list[np.ndarray]:
    """Physical coordinates (mm) of the grid lines along x, y and z."""
    return [geometry.origin[d] + np.arange(geometry.size[d]) * geometry.spacing[d] for d in range(3)]


def _interpolation_matrix(nodes: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(len(points), len(nodes)) matrix of 1D linear interpolation (clamped at the ends)."""
    return np.stack([np.interp(points, nodes, unit) for unit in np.eye(len(nodes))], axis=1)


def _exp_field(velocity: Lattice, alpha: float) -> Lattice:
    """Displacement of ``exp(α·v)`` by scaling and squaring, on the velocity's lattice."""
    v = velocity.values
    speed = abs(alpha) * float(np.sqrt((v ** 2).sum(axis=0)).max())
    steps = max(0, int(np.ceil(np.log2(max(speed, 1e-12) / (0.4 * velocity.spacing)))))
    u = v * np.float32(alpha / 2 ** steps)
    grid = np.indices(v.shape[1:], dtype=np.float32)
    for _ in range(steps):
        coords = grid + u[::-1] / np.float32(velocity.spacing)
        u = u + np.stack([ndi.map_coordinates(c, coords, order=1, mode="nearest", prefilter=False) for c in u])
    return Lattice(velocity.origin, velocity.spacing, u)


class _Warp:
    """Pull-back from subject to template space: ``y = E⁻¹(c + Rᵀ(x + u(x) − c − τ)/s)``.

    ``u`` is the nuisance displacement and ``E = exp(α·v)`` the ventricular expansion. The
    similarity and ``u`` are held on an 8 mm lattice (trilinear in between, exact for the
    similarity); ``E⁻¹ = exp(−α·v)`` on the 3 mm velocity lattice.
    """

    def __init__(self, anatomy: _Anatomy, template: Template) -> None:
        self.anatomy = anatomy
        lo = np.asarray(CENTRE_MM) - np.asarray(FOV_MM) / 2 - _WARP_LATTICE_MM
        counts = [int(np.ceil(fov / _WARP_LATTICE_MM)) + 3 for fov in FOV_MM]
        self.nodes = [lo[d] + _WARP_LATTICE_MM * np.arange(counts[d]) for d in range(3)]
        x, y, z = np.meshgrid(*self.nodes, indexing="ij")
        points = np.stack([x.T, y.T, z.T])  # (3, z, y, x)
        points = points + _nuisance_warp(anatomy, points)
        centre = np.asarray(CENTRE_MM).reshape(3, 1, 1, 1)
        inverse = Rotation.from_euler("xyz", anatomy.rotation_deg, degrees=True).as_matrix().T
        moved = points - centre - np.asarray(anatomy.translation_mm).reshape(3, 1, 1, 1)
        similarity = np.einsum("ij,jzyx->izyx", inverse, moved) / anatomy.scale + centre
        self.similarity = Lattice(lo.astype(np.float64), _WARP_LATTICE_MM, similarity.astype(np.float32))
        self.expansion = _exp_field(template.velocity, -anatomy.expansion_mm) if anatomy.expansion_mm else None
        self._lesion_centres: np.ndarray | None = None

    def reaching(self, geometry: Geometry, lo: np.ndarray, hi: np.ndarray) -> tuple[Geometry, tuple[slice, ...]]:
        """The sub-grid of ``geometry`` (and its (z, y, x) slices) whose pull-back by the
        similarity and nuisance warp may land in the template box [lo, hi] (x, y, z mm)."""
        values = self.similarity.values
        k, j, i = np.nonzero(np.all((values >= lo.reshape(3, 1, 1, 1)) & (values <= hi.reshape(3, 1, 1, 1)), axis=0))
        if not len(k):
            return geometry, (slice(None),) * 3
        slices = []
        for d, nodes in zip(range(3), (i, j, k)):
            first = self.nodes[d][nodes.min()] - _WARP_LATTICE_MM
            last = self.nodes[d][nodes.max()] + _WARP_LATTICE_MM
            start = max(0, int(np.floor((first - geometry.origin[d]) / geometry.spacing[d])))
            stop = min(geometry.size[d], int(np.ceil((last - geometry.origin[d]) / geometry.spacing[d])) + 1)
            slices.append(slice(start, max(start + 1, stop)))
        size = tuple(sl.stop - sl.start for sl in slices)
        origin = tuple(o + sl.start * h for o, sl, h in zip(geometry.origin, slices, geometry.spacing))
        return Geometry(size, geometry.spacing, origin, geometry.direction), tuple(slices[::-1])

    def grid(self, geometry: Geometry) -> np.ndarray:
        """Template points (3, z, y, x) (x, y, z mm) of every voxel of ``geometry``."""
        mx, my, mz = (_interpolation_matrix(n, a).astype(np.float32) for n, a in zip(self.nodes, _axes(geometry)))
        # Separable trilinear interpolation: contract x, then y, then z.
        out = np.matmul(my, self.similarity.values @ mx.T)  # (3, Z, y, x)
        out = np.matmul(mz, out.reshape(3, len(mz[0]), -1)).reshape(3, *geometry.shape)
        if self.expansion is not None:  # only around the ventricles: E⁻¹ is the identity elsewhere
            _, box = self.reaching(geometry, *self.expansion.bounds)
            block = out[(slice(None), *box)]
            block += self.expansion.sample(block)
        return out

    def points(self, points: np.ndarray) -> np.ndarray:
        """Template points of subject points (3, n)."""
        points = self.similarity.sample(points, cval=None)
        return points if self.expansion is None else points + self.expansion.sample(points)

    def inverse_points(self, targets: np.ndarray) -> np.ndarray:
        """Subject points (3, n) whose template points are ``targets``: fixed-point iteration.

        The pull-back is close to the similarity ``Rᵀ(x − …)/s``, so ``x ← x − s·R(P(x) − y)``
        contracts as long as the warps are moderate (they are: |∇u| ≪ 1).
        """
        scale = self.anatomy.scale
        rotation = Rotation.from_euler("xyz", self.anatomy.rotation_deg, degrees=True).as_matrix()
        centre = np.asarray(CENTRE_MM).reshape(3, 1)
        x = centre + scale * rotation @ (targets - centre)
        for _ in range(50):
            step = scale * rotation @ (self.points(x) - targets)
            x = x - step
            if np.abs(step).max() < 1e-4:
                break
        return x

    @property
    def lesion_centres(self) -> np.ndarray:
        """Subject (x, y, z) mm (3, n) of the anatomy's lesion centres."""
        if self._lesion_centres is None:
            targets = np.asarray(self.anatomy.lesion_centres, dtype=np.float64).reshape(-1, 3).T
            self._lesion_centres = self.inverse_points(targets) if targets.size else targets
        return self._lesion_centres


def _nuisance_warp(anatomy: _Anatomy, points: np.ndarray) -> np.ndarray:
    """Random smooth displacement (3, …) at ``points``: cubic B-spline of random controls."""
    if anatomy.warp_mm <= 0:
        return np.zeros_like(points)
    controls = np.random.default_rng(anatomy.warp_seed).standard_normal((3, *_WARP_CONTROL_POINTS[::-1]))
    lo = np.asarray(CENTRE_MM) - np.asarray(FOV_MM) / 2
    shape = (3,) + (1,) * (points.ndim - 1)
    fraction = (points - lo.reshape(shape)) / np.asarray(FOV_MM).reshape(shape)
    coords = (fraction * (np.asarray(_WARP_CONTROL_POINTS).reshape(shape) - 1))[::-1]
    field = np.stack([ndi.map_coordinates(c, coords, order=3, mode="nearest") for c in controls])
    return field * (anatomy.warp_mm / np.sqrt((field ** 2).sum(axis=0)).max())


# --------------------------------------------------------------------------------------
# Tissue maps of a subject


def _ramp(x: np.ndarray) -> np.ndarray:
    """0 → 1 over [-0.5, 0.5]: a 1-unit linear transition (partial volume)."""
    return np.clip(x + 0.5, 0.0, 1.0)


def _lesion_field(centres: np.ndarray, radii: Sequence[float], geometry: Geometry) -> np.ndarray:
    """Soft union of balls (subject (x, y, z) mm centres, (3, n)) on ``geometry``, ramp of one voxel."""
    field = np.zeros(geometry.shape, dtype=np.float32)
    axes = _axes(geometry)
    width = float(min(geometry.spacing))
    for centre, radius in zip(centres.T, radii):
        reach = radius + width
        boxes = [np.nonzero(np.abs(a - c) <= reach)[0] for a, c in zip(axes, centre)]
        if any(len(b) == 0 for b in boxes):
            continue
        box = tuple(slice(b[0], b[-1] + 1) for b in boxes[::-1])
        dx, dy, dz = ((a[b[0]:b[-1] + 1] - c) ** 2 for a, b, c in zip(axes, boxes, centre))
        distance = np.sqrt(dz[:, None, None] + dy[None, :, None] + dx[None, None, :])
        np.maximum(field[box], _ramp((radius - distance) / width).astype(np.float32), out=field[box])
    return field


def _sample_maps(warp: _Warp, geometry: Geometry, maps: dict[str, np.ndarray],
                 names: Sequence[str]) -> tuple[Geometry, tuple[slice, ...], dict[str, np.ndarray]]:
    """Template ``mask`` and ``names`` pulled back onto the part of ``geometry`` they reach.

    Returns that sub-grid, its slices (z, y, x) in ``geometry`` and the maps on it; maps other
    than the mask are sampled inside the mask only (the fill value elsewhere).
    """
    template = load_template()
    sub, slices = warp.reaching(geometry, *template.support["mask"])
    points = warp.grid(sub)
    mask = Lattice(template.origin, 1.0, maps["mask"]).sample(points)
    inside = mask > 0
    inner = points[:, inside]
    out = {"mask": mask}
    for name in names:
        cval = CVAL.get(name, 0.0)
        values = np.full(sub.shape, cval, dtype=np.float32)
        where, points = inside, inner
        if name == "vent":  # sample only around the ventricles
            lo, hi = (bound.reshape(3, 1) for bound in template.support[name])
            near = np.all((inner >= lo) & (inner <= hi), axis=0)
            where, points = inside.copy(), inner[:, near]
            where[inside] = near
        values[where] = Lattice(template.origin, 1.0, maps[name]).sample(points, cval=cval)
        out[name] = values
    return sub, slices, out


def _thin(maps: dict[str, np.ndarray], thinning_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """(thinned GM, removed GM): GM within ``thinning_mm`` of the pial surface becomes CSF,
    except the ``_KEEP_GM_MM`` next to white matter."""
    removed = maps["gm"] * _ramp(thinning_mm - maps["pial"]) * _ramp(maps["white"] - _KEEP_GM_MM)
    return maps["gm"] - removed, removed


def _lesions(warp: _Warp, geometry: Geometry) -> np.ndarray:
    """Soft lesion field on ``geometry`` (zeros without lesions)."""
    return _lesion_field(warp.lesion_centres, warp.anatomy.lesion_radii_mm, geometry)


_MEASURE_NAMES = ("gm", "wm", "vent", "pial", "white")


def _measure_maps(maps: dict[str, Any], spacing: float) -> dict[str, float]:
    """Attributes and ``meta_*`` values from tissue maps on an isotropic grid (see module doc)."""
    voxel_mm3 = spacing ** 3
    gm, wm, vent, mask = maps["gm"], maps["wm"], maps["vent"], maps["mask"]
    tissue = np.clip(gm + wm + vent, 0.0, 1.0)
    gradient = np.sqrt(sum(g ** 2 for g in np.gradient(tissue, spacing)))
    cortex = maps["pial"] <= _CORTEX_DEPTH_MM
    pial_area = float(gradient[cortex].sum(dtype=np.float64)) * voxel_mm3
    cortical_gm = float(gm[cortex].sum(dtype=np.float64)) * voxel_mm3
    lesion = (maps["lesion"] >= 0.5) & (wm >= 0.5) & (mask >= 0.5)

    def ml(values: np.ndarray) -> float:
        return float(values.sum(dtype=np.float64)) * voxel_mm3 / 1000.0

    return {
        "brain_volume_ml": ml(mask),
        "ventricle_volume_ml": ml(vent),
        "cortical_thickness_mm": cortical_gm / pial_area,
        "lesion_load_ml": float(np.count_nonzero(lesion)) * voxel_mm3 / 1000.0,
        "meta_gm_volume_ml": ml(gm),
        "meta_wm_volume_ml": ml(wm),
        "meta_csf_volume_ml": ml(np.clip(mask - gm - wm, 0.0, None)),
        "meta_pial_area_mm2": pial_area,
    }


def _measure_warp(warp: _Warp) -> dict[str, float]:
    """Attributes of a subject, measured on the fixed 2 mm grid."""
    geometry, _, maps = _sample_maps(warp, _measure_geometry(), load_template().maps, _MEASURE_NAMES)
    maps["gm"], _ = _thin(maps, warp.anatomy.thinning_mm)
    maps["lesion"] = _lesions(warp, geometry)
    return _measure_maps(maps, MEASURE_SPACING_MM)


def _thickness_curve(scale: float) -> np.ndarray:
    """Measured cortical thickness at each of ``_THINNINGS`` for the template scaled by ``scale``."""
    warp = _Warp(_Anatomy(scale=scale), load_template())
    _, _, maps = _sample_maps(warp, _measure_geometry(), load_template().maps, _MEASURE_NAMES)
    maps["lesion"] = np.zeros_like(maps["mask"])
    curve = []
    for thinning in _THINNINGS:
        curve.append(_measure_maps({**maps, "gm": _thin(maps, float(thinning))[0]}, MEASURE_SPACING_MM)
                     ["cortical_thickness_mm"])
    return np.asarray(curve)


# --------------------------------------------------------------------------------------
# Calibration: from target ventricle volume and cortical thickness to α and t


@dataclass(frozen=True)
class _Calibration:
    ventricle_ml: np.ndarray  # template-space ventricle volume at each of _ALPHAS
    thickness_mm: np.ndarray  # (len(_CALIBRATION_SCALES), len(_THINNINGS)) measured thickness


def _ventricle_curve(template: Template) -> np.ndarray:
    """Ventricle volume (mL) after ``exp(α·v)`` for each α, on a 2 mm lattice around them."""
    velocity = template.velocity
    extent = (np.array(velocity.values.shape[1:][::-1]) - 1) * velocity.spacing
    axes = [velocity.origin[d] + np.arange(0.0, extent[d], MEASURE_SPACING_MM) for d in range(3)]
    z, y, x = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    points = np.stack([x, y, z])
    vent = template.lattice("vent")
    volumes = []
    for alpha in _ALPHAS:
        expansion = _exp_field(velocity, -alpha)
        volumes.append(float(vent.sample(points + expansion.sample(points)).sum(dtype=np.float64)))
    volumes = np.asarray(volumes) * MEASURE_SPACING_MM ** 3 / 1000.0
    if np.any(np.diff(volumes) <= 0):
        raise InputError("MNI152 template: ventricle volume is not monotonic in the expansion")
    return volumes


@functools.lru_cache(maxsize=1)
def _calibration() -> _Calibration:
    template = load_template()
    thickness = np.stack([_thickness_curve(scale) for scale in _CALIBRATION_SCALES])
    if np.any(np.diff(thickness, axis=1) >= 0):
        raise InputError("MNI152 template: cortical thickness is not monotonic in the thinning")
    return _Calibration(_ventricle_curve(template), thickness)


def applied_changes(f: BrainFactors) -> dict[str, float]:
    """The expansion α (mm), volume ratio and thinning (template and subject mm) that reach
    the subject's target ventricle volume and cortical thickness at its scale."""
    calibration = _calibration()
    template_ml = f.target_ventricle_volume_ml / f.scale ** 3
    alpha = float(np.interp(template_ml, calibration.ventricle_ml, _ALPHAS))
    ratio = float(np.interp(alpha, _ALPHAS, calibration.ventricle_ml)) / calibration.ventricle_ml[
        int(np.argmin(np.abs(_ALPHAS)))]
    lo, hi = np.log(_CALIBRATION_SCALES)
    weight = (np.log(f.scale) - lo) / (hi - lo)
    curve = (1 - weight) * calibration.thickness_mm[0] + weight * calibration.thickness_mm[1]
    thinning = float(np.interp(f.target_cortical_thickness_mm, curve[::-1], _THINNINGS[::-1]))
    return {
        "ventricle_expansion_mm": alpha,
        "ventricle_volume_ratio": ratio,
        "thinning_template_mm": thinning,
        "thinning_mm": thinning * f.scale,
    }


def _anatomy(f: BrainFactors) -> _Anatomy:
    applied = applied_changes(f)
    sites = load_template().lesion_sites
    chosen = [sites[min(int(u * len(sites)), len(sites) - 1)] for u in f.lesion_sites[:f.lesions]]
    return _Anatomy(
        scale=f.scale, rotation_deg=f.rotation_deg, translation_mm=f.translation_mm,
        warp_mm=f.warp_mm, warp_seed=f.warp_seed,
        expansion_mm=applied["ventricle_expansion_mm"], thinning_mm=applied["thinning_template_mm"],
        lesion_centres=tuple(tuple(float(v) for v in c) for c in chosen),
        lesion_radii_mm=f.lesion_radii_mm,
    )


def _factor_row(f: BrainFactors, applied: dict[str, float]) -> dict[str, float]:
    """The ``factor_*`` columns; the lesion factors are 0 without lesions."""
    radii = np.asarray(f.lesion_radii_mm)
    values = {
        "scale": f.scale,
        "target_ventricle_volume_ml": f.target_ventricle_volume_ml,
        "target_cortical_thickness_mm": f.target_cortical_thickness_mm,
        **{name: applied[name] for name in ("ventricle_expansion_mm", "ventricle_volume_ratio", "thinning_mm")},
        **{f"rotation_{axis}_deg": angle for axis, angle in zip("xyz", f.rotation_deg)},
        **{f"translation_{axis}_mm": shift for axis, shift in zip("xyz", f.translation_mm)},
        "warp_mm": f.warp_mm,
        "gamma": f.gamma,
        "gain": f.gain,
        "noise_sd": f.noise_sd,
        "bias_strength": f.bias_strength,
        "target_lesion_load_ml": f.target_lesion_load_ml if f.lesions else 0.0,
        "lesion_count": f.lesions,
        "lesion_mean_radius_mm": float(radii.mean()) if f.lesions else 0.0,
        "lesion_intensity": f.lesion_intensity if f.lesions else 0.0,
    }
    return {f"factor_{name}": float(values[name]) for name in FACTORS}


# --------------------------------------------------------------------------------------
# Rendering


_RENDER_NAMES = ("t1", "gm", "wm", "vent", "pial", "white")

#: Labels of the ``tissues/`` maps: the hard tissue class of each voxel.
TISSUE_LABELS = {"csf": 1, "gm": 2, "wm": 3, "ventricles": 4, "lesion": 5}
TISSUE_FOLDER = "tissues"
#: Tissue labels where each attribute lives (for scoring attention maps).
ATTRIBUTE_REGIONS = {
    "brain_volume_ml": ("csf", "gm", "wm", "ventricles", "lesion"),
    "ventricle_volume_ml": ("ventricles",),
    "cortical_thickness_mm": ("gm",),
    "lesion_load_ml": ("lesion",),
}


def _blur_sigma(geometry: Geometry) -> tuple[float, float, float]:
    """Gaussian σ (mm, z/y/x) that takes the 1 mm template to about one output voxel (FWHM)."""
    return tuple(round(0.42 * float(np.sqrt(max(h * h - 1.0, 0.0))), 2) for h in geometry.spacing[::-1])


def _bias_field(f: BrainFactors, geometry: Geometry) -> np.ndarray:
    """Smooth multiplicative field exp(strength·quadratic polynomial) on the (z, y, x) grid.

    The polynomial in (x, y, z) scaled to [-1, 1] over the field of view is a sum of
    functions of (z, y), (z, x) and (y, x), so the field is a product of three 2D exponentials.
    """
    x, y, z = ((axis - CENTRE_MM[d]) / (FOV_MM[d] / 2) for d, axis in enumerate(_axes(geometry)))
    c = np.asarray(f.bias_coefficients) * f.bias_strength
    yx = (c[1] * y + c[4] * y * y)[:, None] + (c[0] * x + c[3] * x * x)[None, :] + c[6] * np.outer(y, x)
    zx = c[7] * np.outer(z, x)
    zy = (c[2] * z + c[5] * z * z)[:, None] + c[8] * np.outer(z, y)
    zy, zx, yx = (np.exp(term).astype(np.float32) for term in (zy, zx, yx))
    return zy[:, :, None] * zx[:, None, :] * yx[None, :, :]


def _lesion_mask(lesion: np.ndarray, wm: np.ndarray, mask: np.ndarray, centres: np.ndarray,
                 geometry: Geometry) -> np.ndarray:
    """Lesion voxels: the soft balls' majority within white matter, plus the voxel holding
    each centre (a lesion smaller than a coarse voxel is still marked), within the brain."""
    marked = (lesion >= 0.5) & (wm >= 0.5)
    index = np.rint((centres - np.reshape(geometry.origin, (3, 1))) / np.reshape(geometry.spacing, (3, 1)))
    for i, j, k in index.astype(int).T:
        if 0 <= i < geometry.size[0] and 0 <= j < geometry.size[1] and 0 <= k < geometry.size[2]:
            marked[k, j, i] = True
    return marked & (mask >= 0.5)


def render_factors(f: BrainFactors, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render (T1 image float32 with WM ≈ gain, brain mask uint8, lesion mask uint8) at size³."""
    return _render(f, _Warp(_anatomy(f), load_template()), size)[:3]


def _tissue_labels(maps: dict[str, np.ndarray], gm: np.ndarray, lesion_mask: np.ndarray) -> np.ndarray:
    """Hard tissue classes (:data:`TISSUE_LABELS`) inside the brain mask: the largest fraction."""
    vent = np.clip(maps["vent"], 0.0, 1.0)
    wm = np.clip(maps["wm"] - vent, 0.0, 1.0)
    csf = np.clip(maps["mask"] - gm - wm - vent, 0.0, 1.0)
    classes = np.array([TISSUE_LABELS[name] for name in ("csf", "gm", "wm", "ventricles")], dtype=np.uint8)
    labels = classes[np.argmax(np.stack([csf, gm, wm, vent]), axis=0)]
    labels[lesion_mask > 0] = TISSUE_LABELS["lesion"]
    labels[maps["mask"] < 0.5] = 0
    return labels


def _render(f: BrainFactors, warp: _Warp, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    geometry = geometry_for_size(size)
    template = load_template()
    anatomy = warp.anatomy
    sub, box, maps = _sample_maps(warp, geometry, smoothed_maps(_blur_sigma(geometry)), _RENDER_NAMES)
    thinned, removed = _thin(maps, anatomy.thinning_mm)
    lesion = _lesions(warp, sub)
    t1 = (maps["t1"] + removed * np.float32(template.csf_intensity - template.gm_intensity)
          - lesion * maps["wm"] * np.float32(1.0 - f.lesion_intensity))
    signal = np.zeros(geometry.shape, dtype=np.float32)
    signal[box] = np.float32(f.gain) * np.maximum(t1, 0.0) ** np.float32(f.gamma)
    signal *= _bias_field(f, geometry)
    noise = np.random.default_rng(f.noise_seed).standard_normal((2, *geometry.shape), dtype=np.float32)
    noise *= np.float32(f.noise_sd)
    image = np.sqrt((signal + noise[0]) ** 2 + noise[1] ** 2)  # Rician: magnitude of complex noise
    mask = np.zeros(geometry.shape, dtype=np.float32)
    mask[box] = maps["mask"]
    image *= mask  # skull-stripped
    lesion_mask = np.zeros(geometry.shape, dtype=np.uint8)
    lesion_mask[box] = _lesion_mask(lesion, maps["wm"], maps["mask"], warp.lesion_centres, sub)
    tissues = np.zeros(geometry.shape, dtype=np.uint8)
    tissues[box] = _tissue_labels(maps, thinned, lesion_mask[box])
    return image, (mask >= 0.5).astype(np.uint8), lesion_mask, tissues


def measure_factors(f: BrainFactors) -> dict[str, float]:
    """The measured attributes and ``meta_*`` values of a subject (fixed 2 mm grid)."""
    return _measure_warp(_Warp(_anatomy(f), load_template()))


def render_subject(index: int, size: int, seed: int
                   ) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(row, image, brain mask, lesion mask, {"tissues": tissue labels}) of subject ``index``: a pure function.

    ``row`` holds the manifest columns except the file paths: ``subject``, ``label``, the
    measured attributes, ``meta_*`` and ``factor_*``. Arrays are (z, y, x) = size³.
    """
    f = sample_factors(index, seed)
    warp = _Warp(_anatomy(f), load_template())
    image, mask, lesion, tissues = _render(f, warp, size)
    row: dict[str, Any] = {"subject": subject_id(index), "label": f.label}
    row.update(_measure_warp(warp))
    row.update(_factor_row(f, applied_changes(f)))
    return row, image, mask, lesion, {TISSUE_FOLDER: tissues}


# --------------------------------------------------------------------------------------
# The cohort on disk


def _check_size(size: int) -> None:
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ConfigError(f"size = {size}: the brain cohort needs {MIN_SIZE} ≤ size ≤ {MAX_SIZE} voxels per axis")


def generate_brain_cohort(
    out: str | os.PathLike,
    n: int,
    size: int = 64,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write ``n`` synthetic brains at ``size``³ into ``out`` (atomically); return ``out``.

    ``out`` receives ``images/`` (int16 T1, 1000 ≈ white matter), ``masks/`` (brain masks),
    ``lesions/``, ``tissues/`` (tissue labels, :data:`TISSUE_LABELS`) (``sub-0000.nii.gz`` …),
    ``manifest.csv`` (:data:`MANIFEST_COLUMNS`, paths relative to it) and ``cohort.json``. A run that is interrupted leaves no ``out``.
    """
    out = Path(out)
    _check_size(size)
    if seed < 0:
        raise ConfigError(f"seed = {seed}: must not be negative")
    geometry = geometry_for_size(size)

    def prepare() -> None:
        template_paths()  # a missing nilearn is reported before anything is written
        # Prepared here once; forked workers inherit them instead of each preparing its own.
        _calibration()
        smoothed_maps(_blur_sigma(geometry))

    write_cohort(out, n, functools.partial(render_subject, size=size, seed=seed), geometry, MANIFEST_COLUMNS,
                 ATTRIBUTES, to_stored_intensity, lambda summary: _cohort_json(n, size, seed, geometry, summary),
                 workers=workers, progress=progress, overwrite=overwrite, desc="brains", largest_batch=8,
                 extra_folders=(TISSUE_FOLDER,), prepare=prepare)
    return out


def _nilearn_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nilearn")
    except PackageNotFoundError:
        return "unknown"


def _cohort_json(n: int, size: int, seed: int, geometry: Geometry, summary: dict) -> dict:
    """Contents of ``cohort.json``: deterministic, like the rest of the cohort."""
    template, calibration = load_template(), _calibration()
    return {
        "generator": "brain",
        "version": __version__,
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "n": n,
        "size": size,
        "geometry": geometry.to_dict(),
        "spacing": list(geometry.spacing),
        "fov_mm": list(FOV_MM),
        "measure_spacing_mm": MEASURE_SPACING_MM,
        "template": {
            "name": "MNI152 2009c nonlinear symmetric (nilearn)",
            "files": list(TEMPLATE_FILES.values()),
            "nilearn_version": _nilearn_version(),
            "ventricle_volume_ml": template.ventricle_volume_ml,
            "intensity_csf": template.csf_intensity,
            "intensity_gm": template.gm_intensity,
        },
        "calibration": {
            "ventricle_expansion_mm": _ALPHAS.tolist(),
            "template_ventricle_volume_ml": calibration.ventricle_ml.tolist(),
            "thinning_template_mm": _THINNINGS.tolist(),
            "scales": list(_CALIBRATION_SCALES),
            "cortical_thickness_mm": calibration.thickness_mm.tolist(),
        },
        "ranges": {name: list(bounds) for name, bounds in RANGES.items()},
        "lesion_probability": LESION_PROBABILITY,
        "label": {"0": "no lesion", "1": "white-matter lesions (hypointense on T1)"},
        "tissues": {"folder": TISSUE_FOLDER, "labels": TISSUE_LABELS},
        "attribute_regions": {name: {"folder": TISSUE_FOLDER, "labels": [TISSUE_LABELS[t] for t in tissues]}
                              for name, tissues in ATTRIBUTE_REGIONS.items()},
        "attributes": {
            name: {"unit": unit, "description": ATTRIBUTE_DESCRIPTIONS[name]} for name, unit in ATTRIBUTES.items()
        },
        "meta": {f"meta_{name}": {"unit": unit} for name, unit in META.items()},
        "factors": [f"factor_{name}" for name in FACTORS],
        "columns": list(MANIFEST_COLUMNS),
        "summary": summary,
    }


def summarize_brain_cohort(folder: str | os.PathLike) -> str:
    """A short human-readable summary (counts, grid, attribute ranges) of a brain cohort folder."""
    return describe_cohort(folder, ATTRIBUTES, "brain", ("no lesion", "white-matter lesions"))
