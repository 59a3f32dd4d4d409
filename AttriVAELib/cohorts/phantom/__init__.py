"""The phantom cohort: generator (:mod:`.generator`), measure (:mod:`.cohort`), training recipe (:mod:`.recipe`),
measured-lesion loss (:mod:`.loss`)."""

from AttriVAELib.core.lazy import lazy_exports

_EXPORTS = {
    "generate_cohort": "AttriVAELib.cohorts.phantom.generator",
    "summarize_cohort": "AttriVAELib.cohorts.phantom.generator",
    "measure_shell": "AttriVAELib.cohorts.phantom.cohort",
    "segment_shell": "AttriVAELib.cohorts.phantom.cohort",
    "segment_body": "AttriVAELib.cohorts.phantom.cohort",
    "MeasuredLesionLoss": "AttriVAELib.cohorts.phantom.loss",
    "DEMO_FINETUNE_OVERRIDES": "AttriVAELib.cohorts.phantom.recipe",
    "DEMO_OVERRIDES": "AttriVAELib.cohorts.phantom.recipe",
    "TRAINING_OVERRIDES": "AttriVAELib.cohorts.phantom.recipe",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
