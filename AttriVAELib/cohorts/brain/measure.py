"""Re-measuring a brain's attributes on a T1-like image alone (e.g. a decoded one).

The generator (:mod:`AttriVAELib.cohorts.brain.generator`) measures its attributes on the tissue maps it
renders from; a decoded volume has none, only intensities. This module estimates brain
volume, ventricle volume and mean cortical thickness from a skull-stripped T1 so that
traversal fidelity (:mod:`AttriVAELib.evaluate.evaluation`) can check whether moving a latent dim
changes the anatomy it is tied to. The estimates are not the generator's numbers, but they
rank subjects the same way (Spearman ρ ≥ 0.95 on rendered cohorts; tested), which is what
a fidelity ρ needs.

Method (all lengths in mm, with the image's spacing):

1. Brain: voxels above 15% of the 99th intensity percentile, holes filled, largest component.
2. White-matter level ``w``: the median of the brightest 30% of brain voxels; ``r = I / w``.
3. Partial-volume fractions from ``r`` with the cohort's CSF and GM levels ``c < g < 1``:
   CSF fraction 1 below ``c`` falling linearly to 0 at ``g``; GM fraction rising from ``c``
   to ``g`` and falling to 0 at white matter.
4. Ventricle volume: the CSF fractions summed where a ventricle atlas (the share of the
   cohort's subjects with ventricle at that place, in coordinates normalized to the brain's
   bounding box; built from the ``tissues/`` maps by :meth:`VentricleAtlas.from_label_maps`)
   exceeds 10%. Intensity alone cannot tell the lateral ventricles from the cisterns and
   fissures next to them; the atlas can.
5. Cortical thickness: the GM fractions summed over the outer 15 mm of the brain (depth from
   its boundary), divided by the tissue surface area there, ``Σ |∇(1 - CSF fraction)|·voxel``.

Steps 1, 2 and the cortex region depend on the image only through thresholds;
:func:`cortical_thickness` computes step 5 from them in torch, differentiable in the
intensities, so that a training loss (:mod:`AttriVAELib.cohorts.brain.loss`) can use the same measure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from scipy import ndimage as ndi
from torch import Tensor

from AttriVAELib.core.errors import InputError
from AttriVAELib.data.attributes import largest_component
from AttriVAELib.data.io import Volume

__all__ = ["BRAIN_MEASURED", "DEFAULT_LEVELS", "BrainMeasure", "VentricleAtlas", "brain_mask", "cortex_region",
           "cortical_thickness", "cohort_levels", "measure_brain", "tissue_fractions", "white_matter_level"]

#: The attributes :func:`measure_brain` returns.
BRAIN_MEASURED = ("brain_volume_ml", "ventricle_volume_ml", "cortical_thickness_mm")
#: CSF and GM intensities relative to white matter in the MNI152 2009c T1 (cohort.json holds the exact ones).
DEFAULT_LEVELS = (0.33, 0.75)

_BRAIN_THRESHOLD = 0.15
_WM_QUANTILE = 0.70
_CORTEX_DEPTH_MM = 15.0
_ATLAS_SIZE = 48
_ATLAS_THRESHOLD = 0.1


def cohort_levels(info: Mapping[str, Any]) -> tuple[float, float]:
    """The CSF and GM levels a brain cohort's ``cohort.json`` records (:data:`DEFAULT_LEVELS` without them)."""
    template = info.get("template") or {}
    return (float(template.get("intensity_csf", DEFAULT_LEVELS[0])),
            float(template.get("intensity_gm", DEFAULT_LEVELS[1])))


def brain_mask(array: np.ndarray) -> np.ndarray:
    """The brain of a skull-stripped image (N, N, N): above 15% of the 99th percentile, holes filled,
    largest component."""
    top = float(np.percentile(array, 99))
    if top <= 0:
        return np.zeros(array.shape, bool)
    return largest_component(ndi.binary_fill_holes(array > _BRAIN_THRESHOLD * top))


def white_matter_level(values: np.ndarray) -> float:
    """The white-matter intensity of a brain's voxel values: the median of their brightest 30%."""
    return float(np.median(values[values >= np.quantile(values, _WM_QUANTILE)]))


def cortex_region(brain: np.ndarray, spacing_zyx: Sequence[float]) -> np.ndarray:
    """The brain's outer 15 mm (depth from its boundary), where the cortical thickness is measured."""
    return brain & (ndi.distance_transform_edt(brain, sampling=spacing_zyx) <= _CORTEX_DEPTH_MM)


def cortical_thickness(image: Tensor, brain: Tensor, cortex: Tensor, white: float | Tensor,
                       spacing_zyx: Sequence[float], levels: Sequence[float] = DEFAULT_LEVELS) -> Tensor:
    """Mean cortical thickness (mm) of one image (N, N, N), differentiable in ``image``.

    Args:
        image: intensities, any scale (white matter brightest).
        brain, cortex: boolean (N, N, N) masks from :func:`brain_mask` and :func:`cortex_region`.
        white: the white-matter level (:func:`white_matter_level`).
        spacing_zyx: voxel size in mm along the array's axes.
        levels: CSF and GM intensities relative to white matter.

    Returns:
        A scalar tensor: GM fractions summed over ``cortex`` ÷ ``Σ |∇(1 − CSF fraction)|`` there.
    """
    c, g = float(levels[0]), float(levels[1])
    relative = image / white
    csf = ((g - relative) / (g - c)).clamp(0.0, 1.0)
    gm = torch.where(relative <= g, 1.0 - csf, ((1.0 - relative) / (1.0 - g)).clamp(0.0, 1.0))
    tissue = torch.where(brain, 1.0 - csf, torch.zeros_like(csf))
    gradients = torch.gradient(tissue, spacing=[float(h) for h in spacing_zyx])
    # The small constant keeps the square root differentiable where the tissue is flat.
    magnitude = torch.sqrt(sum(d * d for d in gradients) + 1e-12)
    return gm[cortex].sum() / magnitude[cortex].sum()


def _bounds(brain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    box = ndi.find_objects(brain.astype(np.uint8))[0]
    return (np.array([s.start for s in box], np.float64), np.array([s.stop for s in box], np.float64))


@dataclass(frozen=True)
class VentricleAtlas:
    """Ventricle probability (G, G, G) over the brain's bounding box (z, y, x), from 0 to 1."""

    probability: np.ndarray

    @classmethod
    def from_label_maps(cls, pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> "VentricleAtlas":
        """Average of (brain mask, ventricle mask) pairs, each resampled to its brain's bounding box."""
        total, n = np.zeros((_ATLAS_SIZE,) * 3, np.float64), 0
        for brain, ventricles in pairs:
            if not brain.any():
                continue
            lo, hi = _bounds(brain)
            centres = (np.arange(_ATLAS_SIZE) + 0.5) / _ATLAS_SIZE
            grid = np.meshgrid(*(lo[d] - 0.5 + centres * (hi[d] - lo[d]) for d in range(3)), indexing="ij")
            total += ndi.map_coordinates(ventricles.astype(np.float32), grid, order=1)
            n += 1
        if not n:
            raise InputError("no brain found in the label maps: cannot build a ventricle atlas")
        return cls(ndi.gaussian_filter(total / n, 1.0).astype(np.float32))

    def region(self, brain: np.ndarray) -> np.ndarray:
        """Boolean ventricle region of an image whose brain mask is ``brain``."""
        lo, hi = _bounds(brain)
        g = self.probability.shape[0]
        index = np.indices(brain.shape, dtype=np.float32)
        coords = [((index[d] + 0.5 - lo[d]) / (hi[d] - lo[d])) * g - 0.5 for d in range(3)]
        return (ndi.map_coordinates(self.probability, coords, order=1, mode="constant") > _ATLAS_THRESHOLD) & brain


def tissue_fractions(relative: np.ndarray, levels: Sequence[float] = DEFAULT_LEVELS) -> tuple[np.ndarray, np.ndarray]:
    """(CSF fraction, GM fraction) of intensities relative to white matter (WM = 1)."""
    c, g = float(levels[0]), float(levels[1])
    csf = np.clip((g - relative) / (g - c), 0.0, 1.0)
    gm = np.where(relative <= g, 1.0 - csf, np.clip((1.0 - relative) / (1.0 - g), 0.0, 1.0))
    return csf.astype(np.float32), gm.astype(np.float32)


@dataclass(frozen=True)
class BrainMeasure:
    """:func:`measure_brain` with a cohort's intensity levels and ventricle atlas: a ``Measure``."""

    levels: tuple[float, float] = DEFAULT_LEVELS
    atlas: VentricleAtlas | None = None

    def __call__(self, volume: Volume) -> dict[str, float] | None:
        return measure_brain(volume, self.levels, self.atlas)


def measure_brain(volume: Volume, levels: Sequence[float] = DEFAULT_LEVELS,
                  atlas: VentricleAtlas | None = None) -> dict[str, float] | None:
    """Brain volume (mL), ventricle volume (mL) and cortical thickness (mm) of a skull-stripped T1.

    Args:
        volume: the image with its physical geometry; any intensity scale (WM brightest).
        levels: CSF and GM intensities relative to WM.
        atlas: where ventricles are; without one, no ventricle volume is returned.

    Returns:
        ``{name: value}`` for :data:`BRAIN_MEASURED` (less the ventricles without an atlas),
        or None when no brain is found.
    """
    array = np.asarray(volume.array, np.float32)
    spacing_zyx = tuple(float(s) for s in volume.geometry.spacing[::-1])
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    brain = brain_mask(array)
    if brain.sum() < 100:
        return None
    w = white_matter_level(array[brain])
    if w <= 0:
        return None
    thickness = cortical_thickness(torch.from_numpy(array.astype(np.float64)), torch.from_numpy(brain),
                                   torch.from_numpy(cortex_region(brain, spacing_zyx)), w, spacing_zyx, levels)
    out = {
        "brain_volume_ml": float(brain.sum()) * voxel_ml,
        "cortical_thickness_mm": float(thickness) if torch.isfinite(thickness) else float("nan"),
    }
    if atlas is not None:
        csf, _ = tissue_fractions(array / w, levels)
        out["ventricle_volume_ml"] = float(csf[atlas.region(brain)].sum(dtype=np.float64)) * voxel_ml
    return out
