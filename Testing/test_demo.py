"""The README's main job, end to end at a tiny budget (the real budget is in DEMO_OVERRIDES)."""

from __future__ import annotations

import json

from AttriVAELib.cli import demo
from AttriVAELib.cli import main as cli_main


def test_demo_runs_every_step_and_resumes(tmp_path, monkeypatch, capsys):
    tiny = {**demo.DEMO_OVERRIDES, "model": {"input_size": 16, "latent_dim": 8, "width": 0.5},
            "train": {"epochs": 1, "precision": "fp32"}, "optim": {"batch_size": 8}}
    monkeypatch.setattr(demo, "DEMO_OVERRIDES", tiny)
    out = tmp_path / "demo"
    assert cli_main(["demo", "--out", str(out), "--n", "40", "--size", "32"]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    for step in ("[1/4]", "[2/4]", "[3/4]", "[4/4]"):
        assert step in printed
    assert f"evaluation report: {out / 'report' / 'report.html'}" in printed
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["attributes"] == tiny["data"]["attributes"]
    assert len(list((out / "explain").glob("*/explain.json"))) == 3
    # A second run reuses every finished step.
    assert cli_main(["demo", "--out", str(out), "--n", "40", "--size", "32"]) == 0
    again = capsys.readouterr().out
    assert "reusing the synthetic cohort" in again and "already in" in again
