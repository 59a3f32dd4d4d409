"""Cohorts: each kind brings its generator, its measures and any extra loss through the registry."""

from AttriVAELib.cohorts.registry import (AttributeRegion, Cohort, CohortKind, cohort_for, cohort_kind, get_cohort,
                                          registered_cohorts)

__all__ = ["AttributeRegion", "Cohort", "CohortKind", "cohort_for", "cohort_kind", "get_cohort",
           "registered_cohorts"]
