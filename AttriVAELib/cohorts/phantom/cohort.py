"""The phantom cohort (``attrivae synth``): hollow ellipsoidal shells, some with a lesion.

Registered as ``"phantom"``. Decoded images are segmented into their wall (3-class Otsu: the
filled body minus the lumen) and re-measured with the same shape attributes the generator
computes (:func:`AttriVAELib.data.attributes.shape_attributes`, ``shell=True``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from scipy import ndimage as ndi

from AttriVAELib.cohorts.phantom.recipe import TRAINING_OVERRIDES
from AttriVAELib.cohorts.registry import Cohort, CohortKind
from AttriVAELib.core.errors import InputError
from AttriVAELib.data.attributes import largest_component
from AttriVAELib.data.io import Volume

__all__ = ["COHORT", "PhantomCohort", "measure_shell", "segment_shell"]

def segment_shell(array: np.ndarray) -> np.ndarray:
    """Wall of a phantom (background < wall < lumen): 3-class Otsu, the filled body minus the lumen."""
    from skimage.filters import threshold_multiotsu

    if float(array.max()) - float(array.min()) < 1e-6:
        return np.zeros(array.shape, bool)
    t1, t2 = threshold_multiotsu(array, classes=3)
    body = largest_component(ndi.binary_fill_holes(array > t1))
    return body & (array <= t2)


def measure_shell(volume: Volume) -> dict[str, float] | None:
    """Shape attributes of a (decoded) phantom on its grid, or None when no closed shell is found."""
    from AttriVAELib.data.attributes import shape_attributes

    wall = segment_shell(volume.array)
    if not wall.any():
        return None
    try:
        return shape_attributes(wall, volume.geometry.spacing, shell=True)
    except InputError:  # the decoded shell has no closed lumen at this step
        return None


@dataclass(frozen=True)
class PhantomCohort(Cohort):
    """Phantoms: the wall is segmented and its shape re-measured."""

    def kind(self, manifest: Any, info: Mapping[str, Any]) -> CohortKind:
        return CohortKind(self.name, segment_shell, measure_shell)


COHORT = PhantomCohort("phantom", "synthetic hollow ellipsoidal shells with wall lesions (attrivae synth)",
                       {"data": TRAINING_OVERRIDES["data"], "model": TRAINING_OVERRIDES["model"]})
