"""Cohorts built from one's own images and segmentations by ``attrivae cohort`` (:mod:`.cohort`)."""
