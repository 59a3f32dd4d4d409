"""Shared fixtures: a tiny synthetic cohort generated once per test session."""

from __future__ import annotations

import contextlib
import locale
from pathlib import Path
from typing import Iterator

import pytest


@contextlib.contextmanager
def kept_locale() -> Iterator[None]:
    """Restore the process's locale after the block. GDCM's DICOM writer (SimpleITK) switches it to "C"
    and leaves it there, after which Python's default text encoding is ASCII for every later test."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 phantom subjects at 32³ (read-only: copy it before writing into it)."""
    from AttriVAELib.cohorts.phantom.generator import generate_cohort

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


TINY_TRAIN = {
    "model": {"input_size": 16, "latent_dim": 8, "width": 0.5},
    "optim": {"lr": 1e-3, "batch_size": 8},
    "train": {"epochs": 2, "precision": "fp32", "seed": 3},
}


@pytest.fixture(scope="session")
def tiny_run(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder with a tiny trained Attri-VAE (16³, latent 8, K = 4, binary classifier)."""
    from AttriVAELib.train.config import resolve_config
    from AttriVAELib.train.trainer import train

    run = tmp_path_factory.mktemp("runs") / "tiny"
    train(tiny_cohort, run, config=resolve_config("attri_vae", TINY_TRAIN), progress=False)
    return run


def epoch_moves_the_decoder(trainer) -> dict:
    """Train ``trainer`` (a Trainer with a measured loss) one epoch; assert its measured term counted and its
    decoder's weights moved. Returns the epoch's row."""
    import numpy as np
    import torch

    before = {k: v.clone() for k, v in trainer.model.decoder.state_dict().items()}
    row = trainer.train_epoch(0, None)
    assert row["train_measured"] > 0 and np.isfinite(row["train_total"])
    after = trainer.model.decoder.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    return row

