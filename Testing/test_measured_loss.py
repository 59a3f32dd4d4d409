"""The measured-thickness loss: the differentiable measure is the evaluation's, its arithmetic,
its calibration on real brain images, and training with it (or the one line where it cannot)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from AttriVAELib.cohorts.brain.loss import MeasuredThicknessLoss
from AttriVAELib.cohorts.brain.measure import (brain_mask, cortex_region, cortical_thickness, measure_brain,
                                               white_matter_level)
from AttriVAELib.core.errors import ConfigError
from AttriVAELib.nn.losses import LossConfig
from AttriVAELib.train.config import resolve_config

needs_template = pytest.mark.skipif(importlib.util.find_spec("nilearn") is None,
                                    reason="needs nilearn's MNI152 template")

SIZE = 48
N = 14
LEVELS = (0.33, 0.75)
TRAIN = {
    "model": {"input_size": SIZE, "latent_dim": 8, "width": 0.5},
    "loss": {"measured_gamma": 10.0},
    "optim": {"lr": 1e-3, "batch_size": 4},
    "train": {"epochs": 1, "precision": "fp32", "seed": 3},
}


@pytest.fixture(scope="module")
def brain_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from AttriVAELib.cohorts.brain import generator as brain

    out = tmp_path_factory.mktemp("measured") / "brains"
    brain.generate_brain_cohort(out, n=N, size=SIZE, seed=1, workers=1, progress=False)
    return out


def _images(cohort: Path) -> list:
    from AttriVAELib.data.io import read_image
    from AttriVAELib.data.manifest import load_manifest

    return [read_image(r.image) for r in load_manifest(cohort).records]


@needs_template
def test_the_differentiable_thickness_is_the_evaluation_measure(brain_cohort: Path):
    volume = _images(brain_cohort)[0]
    array = np.asarray(volume.array, np.float32)
    spacing = tuple(float(h) for h in volume.geometry.spacing[::-1])
    brain = brain_mask(array)
    image = torch.from_numpy(array).requires_grad_(True)
    value = cortical_thickness(image, torch.from_numpy(brain), torch.from_numpy(cortex_region(brain, spacing)),
                               white_matter_level(array[brain]), spacing, LEVELS)
    assert float(value.detach()) == pytest.approx(measure_brain(volume, LEVELS)["cortical_thickness_mm"], rel=1e-4)
    value.backward()
    grad = image.grad.numpy()
    assert np.isfinite(grad).all() and np.abs(grad[brain]).max() > 0
    assert not grad[~brain].any()  # outside the brain nothing is measured


@needs_template
def test_the_loss_is_the_squared_error_of_both_decodings_in_units_of_the_spread(brain_cohort: Path):
    volumes = _images(brain_cohort)[:4]
    spacing = tuple(float(h) for h in volumes[0].geometry.spacing[::-1])
    x = torch.stack([torch.from_numpy(np.asarray(v.array, np.float32) / np.float32(v.array.max()))
                     for v in volumes])[:, None]
    attributes = torch.tensor([[0.1], [0.9], [0.4], [0.6]])
    loss = MeasuredThicknessLoss(weight=3.0, dim=0, spacing_zyx=spacing, levels=LEVELS, slope=0.8, spread=0.5)
    z = torch.zeros(4, 2)

    # A decoder that gives back the input: the reconstruction is exact, the swap changes nothing.
    value = loss(lambda _: x, {"z": z, "recon": x}, x, attributes)
    shift = attributes[:, 0].roll(1) - attributes[:, 0]
    assert float(value) == pytest.approx(3.0 * float(((0.8 * shift) ** 2).mean()) / 0.5 ** 2, rel=1e-5)
    # With equal attributes there is nothing to change: the loss is 0.
    assert float(loss(lambda _: x, {"z": z, "recon": x}, x, torch.full((4, 1), 0.5))) == pytest.approx(0.0, abs=1e-9)
    # An empty image in the batch has no thickness and is left out, not a NaN.
    x[1] = 0
    assert torch.isfinite(loss(lambda _: x, {"z": z, "recon": x}, x, attributes))


@needs_template
def test_calibration_follows_the_attribute_and_refuses_images_it_cannot_measure(brain_cohort: Path):
    from AttriVAELib.data.manifest import load_manifest

    manifest = load_manifest(brain_cohort)
    column = manifest.attribute_names.index("cortical_thickness_mm")
    volumes = _images(brain_cohort)
    spacing = tuple(float(h) for h in volumes[0].geometry.spacing[::-1])
    truth = manifest.attribute_matrix(manifest.records)[:, column]
    samples = [(torch.from_numpy(np.asarray(v.array, np.float32))[None], float(t)) for v, t in zip(volumes, truth)]
    loss, summary = MeasuredThicknessLoss.calibrate(5.0, 2, samples, spacing, LEVELS)
    assert summary["subjects"] == N and summary["correlation"] >= 0.5
    assert loss.slope > 0 and loss.spread > 0 and loss.dim == 2 and loss.weight == 5.0
    noise = [(torch.rand(1, SIZE, SIZE, SIZE, generator=torch.Generator().manual_seed(i)), float(t))
             for i, t in enumerate(truth)]
    with pytest.raises(ConfigError, match="loss.measured_gamma: "):
        MeasuredThicknessLoss.calibrate(5.0, 2, noise, spacing, LEVELS)


def test_a_negative_weight_is_refused():
    with pytest.raises(ConfigError, match="loss.measured_gamma must be a non-negative number"):
        LossConfig(measured_gamma=-1.0).validate()


@needs_template
def test_training_with_the_loss_logs_it_and_moves_the_decoder(brain_cohort: Path, tmp_path: Path):
    from conftest import epoch_moves_the_decoder

    from AttriVAELib.train.trainer import Trainer

    config = resolve_config("brain_cpu", TRAIN)
    logged: list[str] = []
    trainer = Trainer(config, brain_cohort, tmp_path / "run", progress=False, log=logged.append)
    assert trainer.measured is not None and trainer.measured.dim == 2
    assert any(line.startswith("measured-thickness loss (λ 10)") for line in logged)
    epoch_moves_the_decoder(trainer)
    assert trainer.validate(0)["val_measured"] > 0
    # Off by default: the term is logged as 0.
    plain = Trainer(resolve_config("brain_cpu", {**TRAIN, "loss": {}}), brain_cohort, tmp_path / "plain", progress=False)
    assert plain.measured is None and plain.train_epoch(0, None)["train_measured"] == 0


@needs_template
def test_the_walkthrough_fine_tunes_with_the_loss_from_the_model_so_far(brain_cohort: Path, tmp_path: Path):
    import os
    import shutil
    import subprocess
    import sys

    out = tmp_path / "b"
    shutil.copytree(brain_cohort, out / "cohort")  # the script reuses a cohort it finds
    env = {**os.environ, "SIZE": str(SIZE), "PRESET": "brain_cpu", "EPOCHS": "1", "MEASURED_EPOCHS": "1",
           "WORKERS": "1", "EVALUATE": "0", "ATTRIVAE": f"{sys.executable} -m AttriVAELib.cli"}
    script = Path(__file__).resolve().parents[1] / "scripts" / "brain_walkthrough.sh"
    done = subprocess.run(["bash", str(script), str(out)], env=env, capture_output=True, encoding="utf-8",
                          errors="replace")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "measured-thickness loss (λ 30)" in done.stderr
    config = (out / "run_measured" / "config.yaml").read_text()
    assert "measured_gamma: 30.0" in config and f"init_from: {out / 'run'}" in config
    header = (out / "run_measured" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "train_measured" in header and "val_measured" in header
