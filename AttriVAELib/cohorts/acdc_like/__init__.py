"""The ACDC-like cohort: short-axis cine frames of nested spheroidal shells with known geometry
(:mod:`.generator`, ``attrivae synth-acdc``; analytic values in :mod:`.geometry`)."""

from AttriVAELib.core.lazy import lazy_exports

_EXPORTS = {
    "generate_acdc_like": "AttriVAELib.cohorts.acdc_like.generator",
    "summarize_acdc_like": "AttriVAELib.cohorts.acdc_like.generator",
    "NestedShells": "AttriVAELib.cohorts.acdc_like.geometry",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
