"""Trainer: runs end to end, resumes after SIGKILL to identical weights, DDP on 2 gloo processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from AttriVAELib.core.errors import ConfigError
from AttriVAELib.nn.checkpoint import load_checkpoint, split_prefix
from AttriVAELib.nn.model import AttriVAE, ModelConfig
from AttriVAELib.train.config import resolve_config
from AttriVAELib.train.trainer import learning_rate, train

TINY = {
    "model": {"input_size": 16, "latent_dim": 8, "width": 0.5},
    "optim": {"lr": 1e-3, "batch_size": 8},
    "train": {"epochs": 2, "precision": "fp32", "seed": 3},
}


def write_config(tmp_path: Path, extra: dict | None = None) -> Path:
    from AttriVAELib.train.config import deep_merge

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(deep_merge(TINY, extra or {})))
    return path


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "AttriVAELib.cli", *args], capture_output=True, encoding="utf-8", errors="replace", env=env,
                          **kwargs)


def test_train_writes_run_folder(cohort_copy: Path, tmp_path: Path) -> None:
    config = resolve_config("attri_vae", TINY)
    summary = train(cohort_copy, tmp_path / "run", config=config, progress=False)
    run = tmp_path / "run"
    for name in ("config.yaml", "run.json", "model.safetensors", "model.json", "last.safetensors", "metrics.csv",
                 "heldout.json"):
        assert (run / name).exists(), name
    assert list((run / "tensorboard").iterdir())
    tensors, meta = load_checkpoint(run)
    assert meta["attributes"]["names"] == ["volume_ml", "max_axial_diameter_mm", "wall_thickness_mm",
                                           "lesion_volume_ml"]
    assert meta["attributes"]["units"] == ["mL", "mm", "mm", "mL"]
    assert meta["labels"]["names"] == ["0", "1"]
    assert meta["preprocess"]["size"] == 16
    assert len(meta["history"]) == 2 and "val_total" in meta["history"][0]
    assert meta["best"]["metric"] == "val_total"
    model = AttriVAE(ModelConfig.from_dict(meta["model_config"]))
    model.load_state_dict(split_prefix(tensors, "model"))
    assert model.config.num_regularized == 4 and model.config.num_classes == 2
    lines = (run / "metrics.csv").read_text().splitlines()
    assert len(lines) == 3 and "train_ar" in lines[0] and "val_auc" in lines[0]
    assert summary["heldout"]["split"] == "test"


def test_resume_after_sigkill_matches_uninterrupted(cohort_copy: Path, tmp_path: Path) -> None:
    # The cosine schedule too: the learning rate is a function of the step, so resuming needs no state.
    config = write_config(tmp_path, {"train": {"epochs": 5}, "data": {"augmentation": {"flip": 0.5, "rot90": 0.5}},
                                     "optim": {"lr_schedule": "cosine"}})
    common = ["train", "--data", str(cohort_copy), "--config", str(config), "--quiet"]
    full = cli(*common, "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr

    run = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "AttriVAELib.cli", *common, "--out", str(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        meta = run / "last.json"
        if meta.exists() and json.loads(meta.read_text()).get("epoch", -1) >= 1:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done = json.loads((run / "last.json").read_text())["epoch"]
    assert done < 4

    again = cli("train", "--data", str(cohort_copy), "--config", str(config), "--out", str(run), "--quiet")
    assert again.returncode == 2 and "--resume" in again.stderr

    resumed = cli("train", "--resume", str(run), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    for name in ("last", "model"):
        a, meta_a = load_checkpoint(tmp_path / "full", name=name)
        b, meta_b = load_checkpoint(run, name=name)
        assert meta_a["epoch"] == meta_b["epoch"]
        for key in a:
            if key.startswith("model."):
                assert torch.equal(a[key], b[key]), f"{name}: {key} differs after resume"
    assert [r["train_total"] for r in meta_a["history"]] == [r["train_total"] for r in meta_b["history"]]


def test_ddp_two_gloo_processes(cohort_copy: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path)
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
         "AttriVAELib.cli", "train", "--data", str(cohort_copy), "--out", str(run), "--config", str(config), "--device",
         "cpu", "--quiet"], capture_output=True, encoding="utf-8", errors="replace", env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    digests = [json.loads((run / "ranks" / f"rank-{r}.json").read_text())["state_sha256"] for r in (0, 1)]
    assert digests[0] == digests[1]
    assert "identical weights" in result.stderr
    tensors, meta = load_checkpoint(run)
    model = AttriVAE(ModelConfig.from_dict(meta["model_config"]))
    model.load_state_dict(split_prefix(tensors, "model"))
    assert result.stdout.count("run folder:") == 1  # rank 0 alone reports


@pytest.mark.parametrize("overrides, match", [
    ({"model": {"num_regularized": 5}}, "num_regularized=5 is larger than the number of attributes"),
    ({"model": {"input_size": 24}}, "16"),
])
def test_config_errors_against_data(cohort_copy: Path, tmp_path: Path, overrides: dict, match: str) -> None:
    from AttriVAELib.train.config import deep_merge

    with pytest.raises(ConfigError, match=match):
        train(cohort_copy, tmp_path / "run", config=resolve_config("attri_vae", deep_merge(TINY, overrides)),
              progress=False)


def test_classifier_without_labels(cohort_copy: Path, tmp_path: Path) -> None:
    manifest = cohort_copy / "manifest.csv"
    rows = [line.split(",") for line in manifest.read_text().splitlines()]
    col = rows[0].index("label")
    manifest.write_text("\n".join(",".join(r[:col] + r[col + 1:]) for r in rows) + "\n")
    (cohort_copy / "split.json").unlink(missing_ok=True)
    result = cli("train", "--data", str(cohort_copy), "--out", str(tmp_path / "r"), "--config",
                 str(write_config(tmp_path)))
    assert result.returncode == 2
    assert "no 'label' column" in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("attrivae train: error: ")
    assert sum("error" in line for line in result.stderr.splitlines()) == 1
    ok = cli("train", "--data", str(cohort_copy), "--out", str(tmp_path / "r2"), "--config",
             str(write_config(tmp_path, {"train": {"epochs": 1}})), "--preset", "ar_vae", "--quiet")
    assert ok.returncode == 0, ok.stderr


def test_resume_errors(tmp_path: Path) -> None:
    result = cli("train", "--resume", str(tmp_path / "nothing"))
    assert result.returncode == 2 and "not a run folder" in result.stderr


def test_time_budget_stops_after_an_epoch_and_finishes_the_run(cohort_copy: Path, tmp_path: Path) -> None:
    config = resolve_config("attri_vae", {**TINY, "train": {**TINY["train"], "epochs": 50, "max_minutes": 1e-6}})
    summary = train(cohort_copy, tmp_path / "run", config=config, progress=False)
    assert summary["epochs_run"] == 1 and summary["stopped_early"]
    _, meta = load_checkpoint(tmp_path / "run")
    assert "calibration" in meta  # the run is finished as if it had reached its last epoch
    assert (tmp_path / "run" / "heldout.json").exists()


def test_selection_last_keeps_the_last_epochs_weights(cohort_copy: Path, tmp_path: Path) -> None:
    config = resolve_config("attri_vae", {**TINY, "train": {**TINY["train"], "epochs": 3, "selection_metric": "last"},
                                          "optim": {**TINY["optim"], "lr": 1e-2}})
    summary = train(cohort_copy, tmp_path / "run", config=config, progress=False)
    assert summary["best"]["epoch"] == 3 and summary["best"]["metric"] == "last"
    best, meta = load_checkpoint(tmp_path / "run")
    last, _ = load_checkpoint(tmp_path / "run", "last")
    kept, final = split_prefix(best, "model"), split_prefix(last, "model")
    assert meta["best"]["epoch"] == 3 and kept and kept.keys() == final.keys()
    assert all(torch.equal(kept[k], final[k]) for k in kept)


def test_negative_time_budget_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="max_minutes"):
        resolve_config("attri_vae", {"train": {"max_minutes": -1}})


def test_diverging_training_stops_with_one_line(cohort_copy: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, {"optim": {"lr": 1e12}, "train": {"epochs": 3}})
    result = cli("train", "--data", str(cohort_copy), "--config", str(config), "--out", str(tmp_path / "run"), "--quiet")
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "training diverged: the loss is" in last and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "heldout.json").exists()


def test_cosine_learning_rate_runs_from_lr_to_lr_min() -> None:
    optim = {"lr": 1e-3, "lr_schedule": "cosine", "lr_min": 1e-5}
    lrs = [learning_rate(optim, s, 101) for s in range(101)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-5)
    assert lrs[50] == pytest.approx((1e-3 + 1e-5) / 2)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert learning_rate({"lr": 1e-3}, 70, 101) == 1e-3  # constant by default


def test_cosine_schedule_is_applied_and_logged(cohort_copy: Path, tmp_path: Path) -> None:
    config = resolve_config("attri_vae", {**TINY, "optim": {**TINY["optim"], "lr_schedule": "cosine", "lr_min": 1e-5},
                                          "train": {**TINY["train"], "epochs": 3}})
    train(cohort_copy, tmp_path / "run", config=config, progress=False)
    _, meta = load_checkpoint(tmp_path / "run", name="last")
    lrs = [row["lr"] for row in meta["history"]]  # the lr of each epoch's last step
    assert lrs[-1] == pytest.approx(1e-5) and lrs[0] < 1e-3 and lrs[0] > lrs[1] > lrs[2]


def test_init_from_starts_at_another_runs_weights_and_reencodes(tiny_cohort: Path, tiny_run: Path,
                                                                 tmp_path: Path) -> None:
    from AttriVAELib.train.trainer import Trainer

    config = resolve_config("attri_vae", {**TINY, "loss": {"reencoded_gamma": 50.0, "linear_gamma": 20.0},
                                          "train": {**TINY["train"], "epochs": 1, "init_from": str(tiny_run)}})
    trainer = Trainer(config, tiny_cohort, tmp_path / "tuned", progress=False)
    source = split_prefix(load_checkpoint(tiny_run)[0], "model")
    start = trainer.model.state_dict()
    assert all(torch.equal(start[k].contiguous(), v) for k, v in source.items())
    assert trainer.reencode
    row = trainer.train_epoch(0, None)
    assert row["train_reencoded_ar"] > 0  # the reconstruction's codes are scored, and logged
    assert row["train_linear"] > 0  # so is the codes' departure from a straight line
    # Without the term the reconstruction is not encoded again (no cost).
    plain = Trainer(resolve_config("attri_vae", TINY), tiny_cohort, tmp_path / "plain", progress=False)
    plain_row = plain.train_epoch(0, None)
    assert not plain.reencode and plain_row["train_reencoded_ar"] == 0 and plain_row["train_linear"] == 0


def test_init_from_a_different_network_is_one_line(cohort_copy: Path, tiny_run: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, {"model": {"latent_dim": 6}})
    result = cli("train", "--data", str(cohort_copy), "--config", str(config), "--init", str(tiny_run),
                 "--out", str(tmp_path / "bad"), "--quiet")
    err = result.stderr.strip().splitlines()  # the device line, then one error line
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert err[-1].startswith("attrivae train: error: train.init_from:")
    assert "has another network configuration (differs in latent_dim" in err[-1]
    assert not (tmp_path / "bad").exists()  # refused before the run folder is made
    missing = cli("train", "--data", str(cohort_copy), "--config", str(config), "--init", str(tmp_path / "none"),
                  "--out", str(tmp_path / "bad2"), "--quiet")
    assert missing.returncode == 2 and "no model.safetensors to start from" in missing.stderr
