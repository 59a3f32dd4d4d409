"""The measured-lesion loss of phantom cohorts: its calibration on real phantom files, its arithmetic,
and training with it (or the one line where it cannot be used)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from AttriVAELib.cohorts.phantom.loss import MeasuredLesionLoss, lesion_contrast
from AttriVAELib.core.errors import ConfigError

SIZE = 16


def _loss(ml_per_unit: float = 1.0, spread: float = 1.0) -> MeasuredLesionLoss:
    return MeasuredLesionLoss(weight=2.0, dim=1, ml_per_unit=ml_per_unit, spread=spread, threshold=0.3,
                              radius_voxels=3.0, voxel_ml=0.001)


def _shell() -> torch.Tensor:
    """A phantom-like (1, 1, N, N, N) volume: background 0.05, wall 0.25, lumen 0.5."""
    grids = torch.meshgrid(*(torch.arange(SIZE, dtype=torch.float32) for _ in range(3)), indexing="ij")
    r = torch.sqrt(sum((g - SIZE / 2) ** 2 for g in grids))
    return torch.where(r <= 4, 0.5, torch.where(r <= 6, 0.25, 0.05))[None, None]


def _drawing_decoder(base: torch.Tensor, dim: int):
    """Decodes z as ``base`` plus, in a small ball in the wall, an intensity of z[dim] (a drawn lesion)."""
    grids = torch.meshgrid(*(torch.arange(SIZE) for _ in range(3)), indexing="ij")
    ball = (sum((g - c) ** 2 for g, c in zip(grids, (SIZE // 2, SIZE // 2, SIZE // 2 + 5))) <= 1).float()

    def decode(z: torch.Tensor) -> torch.Tensor:
        return base.expand(len(z), 1, SIZE, SIZE, SIZE) + z[:, dim, None, None, None, None] * ball

    return decode, int(ball.sum())


def test_a_decoder_that_ignores_the_lesion_dim_pays_the_whole_volume():
    base = torch.full((1, 1, SIZE, SIZE, SIZE), 0.3)  # no phantom found: nothing is drawn
    z = torch.zeros(4, 3)
    attributes = torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 0.5], [0.0, 0.0]])
    recon = base.expand(4, 1, SIZE, SIZE, SIZE)
    loss = _loss(ml_per_unit=2.0, spread=0.5)
    value = loss(lambda codes: base.expand(len(codes), 1, SIZE, SIZE, SIZE), {"z": z, "recon": recon}, recon,
                 attributes)
    v = 2.0 * attributes[:, 1]
    assert float(value) == pytest.approx(2.0 * float((v ** 2 + v.roll(1) ** 2).mean()) / 0.5 ** 2, rel=1e-6)
    # Without a subject free of lesion in the batch there is no "no lesion" value: the term is 0.
    assert float(loss(lambda codes: base.expand(len(codes), 1, SIZE, SIZE, SIZE), {"z": z, "recon": recon}, recon,
                      torch.tensor([[0.0, 1.0]] * 4))) == 0.0


def test_a_decoder_that_draws_the_lesion_from_its_dim_pays_little_and_a_faint_one_much():
    decode, voxels = _drawing_decoder(_shell(), 1)
    attributes = torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    z = torch.tensor([[0.0, 0.0, 0.3], [0.0, 0.8, 0.1], [0.0, 0.8, 0.2], [0.0, 0.0, 0.0]])
    loss = _loss(ml_per_unit=voxels * 0.001, spread=voxels * 0.001)
    drawing = float(loss(decode, {"z": z, "recon": decode(z)}, _shell(), attributes))
    # The same added intensity spread thin (below the threshold) is no lesion.
    faint = float(loss(lambda codes: decode(codes * 0.25), {"z": z, "recon": decode(z * 0.25)}, _shell(), attributes))
    assert drawing < 0.05 and faint > 20 * drawing
    # Drawing it and changing the rest of the image too pays for the rest: Σ (0.05·z[1])² outside the ball.
    def leaky(codes: torch.Tensor) -> torch.Tensor:
        return decode(codes) + 0.05 * codes[:, 1, None, None, None, None]

    leaking = float(loss(leaky, {"z": z, "recon": leaky(z)}, _shell(), attributes))
    assert leaking > drawing + 0.25 * (0.05 * 0.8) ** 2 * SIZE ** 3  # half the subjects get a lesion value


def test_the_gradient_reaches_the_code_that_draws():
    decode, voxels = _drawing_decoder(_shell(), 1)
    z = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.32, 0.0]], requires_grad=True)
    loss = _loss(ml_per_unit=voxels * 0.001)
    loss(decode, {"z": z, "recon": decode(z)}, _shell(), torch.tensor([[0.0, 0.0], [0.0, 1.0]])).backward()
    # Drawing barely at the threshold: more of the lesion dim lowers the loss.
    assert float(z.grad[1, 1]) < 0


def test_the_swapped_decoding_does_not_train_the_reference():
    decode, voxels = _drawing_decoder(_shell(), 1)
    scale = torch.ones((), requires_grad=True)  # multiplies the reference decodings only

    def scaled(codes: torch.Tensor) -> torch.Tensor:
        out = decode(codes)
        half = len(codes) // 2
        return torch.cat([out[:half] * scale, out[half:]])

    z = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.1, 0.0]])
    attributes = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    recon = torch.zeros(2, 1, SIZE, SIZE, SIZE)  # far below the reference: its term is flat
    _loss(ml_per_unit=voxels * 0.001)(scaled, {"z": z, "recon": recon}, _shell(), attributes).backward()
    # Darkening the reference would make the swapped decoding's lesion larger; it is not asked to.
    assert abs(float(scale.grad)) < 1e-6


def test_calibration_on_real_phantoms_reads_their_lesions(tiny_cohort: Path):
    from AttriVAELib.cohorts.phantom.cohort import segment_shell
    from AttriVAELib.data.dataset import CohortDataset
    from AttriVAELib.data.manifest import load_manifest
    from AttriVAELib.data.preprocessing import PreprocessSpec

    manifest = load_manifest(tiny_cohort)
    data = CohortDataset(manifest, [r.subject for r in manifest.records], spec=PreprocessSpec(size=32), cache=False)
    volumes = manifest.attribute_matrix(manifest.records)[:, manifest.attribute_names.index("lesion_volume_ml")]
    spacing = float(data.mapping(0).model.spacing[0])
    top = float(volumes.max())
    samples = [(data.image(i)[0].numpy(), data.lesion(i, "linear"), float(volumes[i]) / top, float(volumes[i]))
               for i in range(len(data))]
    loss, summary = MeasuredLesionLoss.calibrate(3.0, 3, samples, spacing)
    assert summary["lesions"] >= 3 and summary["lesions"] <= int((volumes > 0).sum())
    # The phantoms' lesions (0.75–0.95) stand well above their wall (0.15–0.3).
    assert 0.3 < summary["contrast"] < 0.9 and loss.threshold == pytest.approx(0.5 * summary["contrast"])
    assert loss.ml_per_unit == pytest.approx(top) and loss.dim == 3 and loss.voxel_ml == pytest.approx(spacing ** 3 / 1e3)
    assert 1.0 < loss.radius_voxels < 16
    i = int(np.flatnonzero(volumes > 0)[0])
    image = samples[i][0]
    assert lesion_contrast(np.full_like(image, 0.3), samples[i][1], segment_shell(image)) == 0.0
    with pytest.raises(ConfigError, match="loss.measured_gamma: the measured-lesion loss needs training subjects"):
        MeasuredLesionLoss.calibrate(3.0, 3, [s for s in samples if s[3] > 0], spacing)
    shifted = [(s[0], s[1], s[2] + 0.1, s[3]) for s in samples]
    with pytest.raises(ConfigError, match="is not proportional to the lesion volume"):
        MeasuredLesionLoss.calibrate(3.0, 3, shifted, spacing)


def test_training_a_phantom_model_with_the_loss_logs_it_and_moves_the_decoder(tiny_cohort: Path, tmp_path: Path):
    from conftest import TINY_TRAIN, epoch_moves_the_decoder

    from AttriVAELib.train.config import resolve_config
    from AttriVAELib.train.trainer import Trainer

    config = resolve_config("attri_vae", {**TINY_TRAIN, "loss": {"measured_gamma": 10.0},
                                          "train": {**TINY_TRAIN["train"], "epochs": 1}})
    logged: list[str] = []
    trainer = Trainer(config, tiny_cohort, tmp_path / "run", progress=False, log=logged.append)
    dim = trainer.manifest.attribute_names.index("lesion_volume_ml")
    assert trainer.measured is not None and trainer.measured.dim == dim
    assert any(line.startswith("measured-lesion loss (λ 10)") for line in logged)
    epoch_moves_the_decoder(trainer)


def _train_cli(cohort: Path, tmp_path: Path, loss: dict, data: dict | None = None) -> subprocess.CompletedProcess:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"model": {"input_size": 16, "latent_dim": 8, "width": 0.5}, "loss": loss,
                                      "train": {"epochs": 1}, **({"data": data} if data else {})}))
    return subprocess.run([sys.executable, "-m", "AttriVAELib.cli", "train", "--data", str(cohort), "--config",
                           str(config), "--out", str(tmp_path / "run"), "--quiet"],
                          capture_output=True, encoding="utf-8", errors="replace")


@pytest.mark.parametrize("generator, data, expected", [
    ("phantom", {"attributes": ["volume_ml"]},
     "loss.measured_gamma needs lesion_volume_ml among the regularized attributes of this phantom cohort; "
     "{manifest} regularizes volume_ml"),
    ("my-scanner", None,
     "loss.measured_gamma needs a synth-brain or a phantom cohort (attrivae synth-brain, attrivae synth); "
     "{manifest} is neither"),
])
def test_a_cohort_the_loss_cannot_measure_is_refused_in_one_line(cohort_copy: Path, tmp_path: Path, generator: str,
                                                                 data: dict | None, expected: str):
    info = json.loads((cohort_copy / "cohort.json").read_text())
    (cohort_copy / "cohort.json").write_text(json.dumps({**info, "generator": generator}))
    done = _train_cli(cohort_copy, tmp_path, {"measured_gamma": 10.0}, data)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith(expected.format(manifest=cohort_copy / "manifest.csv"))
    assert not (tmp_path / "run").exists()


def test_the_metrics_log_the_term(tiny_cohort: Path, tmp_path: Path):
    done = _train_cli(tiny_cohort, tmp_path, {"measured_gamma": 5.0})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "measured-lesion loss (λ 5)" in done.stderr
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert float(rows[-1]["train_measured"]) > 0 and float(rows[-1]["val_measured"]) > 0
