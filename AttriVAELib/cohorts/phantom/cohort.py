"""The phantom cohort (``attrivae synth``): hollow ellipsoidal shells, some with a lesion.

Registered as ``"phantom"``. Decoded images are segmented into their wall (3-class Otsu: the
filled body minus the lumen) and re-measured with the same shape attributes the generator
computes (:func:`AttriVAELib.data.attributes.shape_attributes`, ``shell=True``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
from scipy import ndimage as ndi

from AttriVAELib.cohorts.phantom.recipe import TRAINING_OVERRIDES
from AttriVAELib.cohorts.registry import Cohort, CohortKind
from AttriVAELib.core.errors import ConfigError, InputError
from AttriVAELib.data.attributes import largest_component
from AttriVAELib.data.io import Volume

__all__ = ["COHORT", "PhantomCohort", "measure_shell", "segment_body", "segment_shell"]

#: Training subjects the measured-lesion loss is calibrated on.
CALIBRATION_SUBJECTS = 200


def _body_and_lumen_level(array: np.ndarray) -> tuple[np.ndarray, float]:
    """The filled body of a phantom and the level above which a voxel is lumen (3-class Otsu)."""
    from skimage.filters import threshold_multiotsu

    if float(array.max()) - float(array.min()) < 1e-6:
        return np.zeros(array.shape, bool), float("inf")
    t1, t2 = threshold_multiotsu(array, classes=3)
    return largest_component(ndi.binary_fill_holes(array > t1)), float(t2)


def segment_shell(array: np.ndarray) -> np.ndarray:
    """Wall of a phantom (background < wall < lumen): 3-class Otsu, the filled body minus the lumen."""
    body, lumen_level = _body_and_lumen_level(array)
    return body & (array <= lumen_level)


def segment_body(array: np.ndarray) -> np.ndarray:
    """The whole phantom, wall and lumen (its outer surface filled), as :func:`segment_shell` finds it."""
    return _body_and_lumen_level(array)[0]


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

    def measured_loss(self, weight: float, manifest: Any, info: Mapping[str, Any], train_set: Any,
                      regularized: list[str], log: Callable[[str], None]) -> Any:
        """The measured-lesion loss (:mod:`AttriVAELib.cohorts.phantom.loss`), calibrated on training images."""
        from AttriVAELib.cohorts.phantom.loss import LESION_ATTRIBUTE, measured_lesion_loss

        if LESION_ATTRIBUTE not in regularized:
            raise ConfigError(f"loss.measured_gamma needs {LESION_ATTRIBUTE} among the regularized attributes of this "
                              f"phantom cohort; {manifest.path} regularizes {', '.join(regularized) or 'no attribute'}")
        volumes = manifest.attribute_matrix(train_set.records)[:, manifest.attribute_names.index(LESION_ATTRIBUTE)]
        count = min(len(train_set), CALIBRATION_SUBJECTS)
        return measured_lesion_loss(weight, regularized.index(LESION_ATTRIBUTE), train_set, volumes, count, log)


COHORT = PhantomCohort("phantom", "synthetic hollow ellipsoidal shells with wall lesions (attrivae synth)",
                       {"data": TRAINING_OVERRIDES["data"], "model": TRAINING_OVERRIDES["model"]})
