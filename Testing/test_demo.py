"""The README's main job, end to end at a tiny budget (the real budget is in the demo's recipe)."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from AttriVAELib.cli import demo
from AttriVAELib.cli import main as cli_main


def test_demo_runs_every_step_and_resumes(tmp_path, monkeypatch, capsys):
    small = {"model": {"input_size": 16, "latent_dim": 8, "width": 0.5}, "optim": {"batch_size": 8}}
    tiny = {**demo.DEMO_OVERRIDES, **small, "train": {"epochs": 1, "precision": "fp32"}}
    tiny_finetune = {**demo.DEMO_FINETUNE_OVERRIDES, **small,
                     "train": {**demo.DEMO_FINETUNE_OVERRIDES["train"], "epochs": 1, "precision": "fp32"}}
    monkeypatch.setattr(demo, "DEMO_OVERRIDES", tiny)
    monkeypatch.setattr(demo, "DEMO_FINETUNE_OVERRIDES", tiny_finetune)
    out = tmp_path / "demo"
    assert cli_main(["demo", "--out", str(out), "--n", "40", "--size", "32", "--train-seed", "3"]) == 0, capsys.readouterr().err
    captured = capsys.readouterr()
    printed, logged = captured.out, captured.err
    for step in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"):
        assert step in printed
    # The second stage starts from the first stage's model and adds the measured-lesion loss.
    assert f"starting from the weights of {out / 'base' / 'model.safetensors'}" in logged
    assert "measured-lesion loss" in logged
    config = yaml.safe_load((out / "run" / "config.yaml").read_text())
    assert config["train"]["init_from"] == str(out / "base") and config["loss"]["measured_gamma"] == 20
    first_stage = yaml.safe_load((out / "base" / "config.yaml").read_text())
    assert config["train"]["seed"] == first_stage["train"]["seed"] == 3
    assert f"evaluation report: {out / 'report' / 'report.html'}" in printed
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["attributes"] == tiny["data"]["attributes"]
    assert len(list((out / "explain").glob("*/explain.json"))) == 3
    # A second run reuses every finished step.
    assert cli_main(["demo", "--out", str(out), "--n", "40", "--size", "32", "--train-seed", "3"]) == 0
    again = capsys.readouterr().out
    assert "reusing the synthetic cohort" in again and "already in" in again
    # Without the fine-tuned model, the first stage is reused and only the fine-tune runs again.
    shutil.rmtree(out / "run")
    assert cli_main(["demo", "--out", str(out), "--n", "40", "--size", "32", "--train-seed", "3"]) == 0
    third = capsys.readouterr().out
    assert f"[2/5] the first stage's model is already in {out / 'base'}" in third
    assert f"[3/5] fine-tuning it so that the lesion dim draws a lesion into {out / 'run'}" in third


def test_demo_refuses_a_bad_training_seed_in_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "demo"
    for bad, why in (("-1", "outside 0..4294967295"), ("abc", "is not a whole number"), ("nan", "is not a whole number")):
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["demo", "--out", str(out), "--train-seed", bad])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--train-seed" in err[0] and why in err[0] and "Traceback" not in err[0]
        assert not out.exists()
