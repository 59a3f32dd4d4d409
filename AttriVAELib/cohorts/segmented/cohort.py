"""The cohort kind of folders written by ``attrivae cohort`` (:mod:`AttriVAELib.data.cohort_builder`).

Registered as ``"segmented"``. Decoded images are segmented as foreground (their intensities are
the user's, so no measure of the shape attributes is assumed); each measured attribute lives in
the labels it was measured on (``cohort.json``'s ``attribute_regions``, label maps in ``labels/``),
where ``evaluate`` scores its attention maps. The recipe crops to the mask with the builder's
augmentations; the builder's ``train.yaml`` adds the cohort's own field of view.
"""

from __future__ import annotations

from AttriVAELib.cohorts.registry import Cohort
from AttriVAELib.data.cohort_builder import TRAINING_RECIPE

__all__ = ["COHORT"]

COHORT = Cohort("segmented", "one's own images, segmentations and clinical table (attrivae cohort)",
                {"data": TRAINING_RECIPE["data"], "model": TRAINING_RECIPE["model"]})
