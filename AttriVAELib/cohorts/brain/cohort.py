"""The brain cohort (``attrivae synth-brain``): T1-weighted brains of an aging population.

Registered as ``"brain"``. Decoded images are segmented as foreground and re-measured with
the template's intensity levels and an atlas of the training subjects' ventricles (built from
the cohort's ``tissues/`` label maps); attention maps are scored in the tissue each attribute
lives in. The cohort also brings the measured-thickness loss (``loss.measured_gamma``,
:mod:`AttriVAELib.cohorts.brain.loss`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from AttriVAELib.cohorts.registry import Cohort, CohortKind, attribute_regions, segment_foreground
from AttriVAELib.core.errors import ConfigError
from AttriVAELib.data.cohort_files import label_map_path, read_label_map
from AttriVAELib.data.manifest import Manifest, training_subjects

__all__ = ["ATLAS_SUBJECTS", "CALIBRATION_SUBJECTS", "COHORT", "BrainCohort"]

#: Training subjects whose ventricles make the atlas of the re-measure.
ATLAS_SUBJECTS = 60
#: Training images that calibrate the measured-thickness loss.
CALIBRATION_SUBJECTS = 128


@dataclass(frozen=True)
class BrainCohort(Cohort):
    """Brains: a measure with the cohort's own intensity levels, tissue regions, the thickness loss."""

    def kind(self, manifest: Manifest, info: Mapping[str, Any]) -> CohortKind:
        from AttriVAELib.cohorts.brain.measure import BrainMeasure, VentricleAtlas, cohort_levels

        levels = cohort_levels(info)
        tissues = info.get("tissues") or {}
        atlas = None
        if tissues:
            folder, label = tissues["folder"], int(tissues["labels"]["ventricles"])
            maps = [read_label_map(manifest.root, folder, s).array
                    for s in training_subjects(manifest, ATLAS_SUBJECTS)
                    if label_map_path(manifest.root, folder, s).exists()]
            if maps:
                atlas = VentricleAtlas.from_label_maps((m > 0, m == label) for m in maps)
        return CohortKind(self.name, segment_foreground, BrainMeasure(levels, atlas), attribute_regions(info))

    def measured_loss(self, weight: float, manifest: Manifest, info: Mapping[str, Any], train_set: Any,
                      regularized: list[str], log: Callable[[str], None]) -> Any:
        """The measured-thickness loss, calibrated on up to :data:`CALIBRATION_SUBJECTS` training images."""
        from AttriVAELib.cohorts.brain.loss import THICKNESS_ATTRIBUTE, MeasuredThicknessLoss
        from AttriVAELib.cohorts.brain.measure import cohort_levels

        if THICKNESS_ATTRIBUTE not in regularized:
            raise ConfigError(f"loss.measured_gamma needs a synth-brain cohort with {THICKNESS_ATTRIBUTE} among the "
                              f"regularized attributes; {manifest.path} regularizes "
                              f"{', '.join(regularized) or 'no attribute'}")
        levels = cohort_levels(info)
        spacing = tuple(float(h) for h in reversed(train_set.mapping(0).model.spacing))
        dim = regularized.index(THICKNESS_ATTRIBUTE)
        count = min(len(train_set), CALIBRATION_SUBJECTS)
        samples = ((train_set.image(i), float(train_set.attributes[i, dim])) for i in range(count))
        loss, summary = MeasuredThicknessLoss.calibrate(weight, dim, samples, spacing, levels)
        log(f"measured-thickness loss (λ {weight:g}): {summary['subjects']} training images measure "
            f"{summary['mean_mm']:.2f} ± {summary['spread_mm']:.2f} mm, r {summary['correlation']:.2f} with "
            f"{THICKNESS_ATTRIBUTE}")
        return loss


COHORT = BrainCohort("brain", "T1 brains of an aging population from nilearn's MNI152 template (attrivae synth-brain)")
