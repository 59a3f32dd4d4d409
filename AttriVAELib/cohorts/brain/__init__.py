"""The brain cohort: template (:mod:`.template`), generator (:mod:`.generator`), measures
(:mod:`.measure`), the measured-thickness loss (:mod:`.loss`) and its registry entry (:mod:`.cohort`)."""

from AttriVAELib.core.lazy import lazy_exports

_EXPORTS = {
    "generate_brain_cohort": "AttriVAELib.cohorts.brain.generator",
    "summarize_brain_cohort": "AttriVAELib.cohorts.brain.generator",
    "BrainMeasure": "AttriVAELib.cohorts.brain.measure",
    "measure_brain": "AttriVAELib.cohorts.brain.measure",
    "MeasuredThicknessLoss": "AttriVAELib.cohorts.brain.loss",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
