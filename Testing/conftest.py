"""Shared fixtures: a tiny synthetic cohort generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 phantom subjects at 32³ (read-only: copy it before writing into it)."""
    from AttriVAELib.synth import generate_cohort

    out = tmp_path_factory.mktemp("cohort") / "tiny"
    generate_cohort(out, n=40, size=32, seed=1, workers=1, progress=False)
    return out


@pytest.fixture()
def cohort_copy(tiny_cohort: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny cohort that a test may modify."""
    import shutil

    dst = tmp_path / "cohort"
    shutil.copytree(tiny_cohort, dst)
    return dst
