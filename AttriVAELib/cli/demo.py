"""The README's main job on the built-in synthetic cohort.

Steps (each skipped when its output is already complete, so a rerun resumes):
1. generate the phantom cohort (``DIR/cohort``);
2. train a small Attri-VAE on it (``DIR/base``; an interrupted run is resumed);
3. fine-tune that model so that its lesion dim draws a lesion (``DIR/run``, the model every later
   step uses; resumed the same way);
4. explain a few held-out subjects (``DIR/explain/<subject>``: Grad-CAM per attribute,
   classifier map, counterfactual, on each input image's grid, with PNG montages);
5. evaluate the model on the held-out split (``DIR/report``: ``metrics.json`` and a
   self-contained ``report.html``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from AttriVAELib.cli.command import Command, positive_int, seed_int
from AttriVAELib.cohorts.phantom.recipe import DEMO_FINETUNE_OVERRIDES, DEMO_OVERRIDES
from AttriVAELib.core.errors import ConfigError


def run_demo(args: argparse.Namespace) -> int:
    from AttriVAELib.cli.train import print_summary
    from AttriVAELib.cohorts.phantom.generator import generate_cohort, summarize_cohort
    from AttriVAELib.nn.fastpath import tune_cpu_allocator

    tune_cpu_allocator()
    out: Path = args.out
    cohort = out / "cohort"
    run = out / "run"
    t0 = time.perf_counter()
    if (cohort / "manifest.csv").exists():
        print(f"[1/5] reusing the synthetic cohort in {cohort}")
    else:
        print(f"[1/5] generating {args.n} synthetic subjects at {args.size}³ into {cohort}")
        generate_cohort(cohort, n=args.n, size=args.size, seed=args.seed, progress=True)
    print(summarize_cohort(cohort))

    base = out / "base"
    if _finished(run):
        print(f"[2-3/5] a trained model is already in {run}")
        summary = _finished_summary(run)
    else:
        first = {**DEMO_OVERRIDES, "train": {**DEMO_OVERRIDES["train"], "seed": args.train_seed}}
        if not _finished(base):
            _train_stage("[2/5]", "training a small Attri-VAE (preset fast_cpu)", cohort, base, first)
        else:
            print(f"[2/5] the first stage's model is already in {base}")
        finetune = {**DEMO_FINETUNE_OVERRIDES,
                    "train": {**DEMO_FINETUNE_OVERRIDES["train"], "seed": args.train_seed, "init_from": str(base)}}
        summary = _train_stage("[3/5]", "fine-tuning it so that the lesion dim draws a lesion", cohort, run, finetune)
    print_summary(summary)
    explain_heldout(cohort, run, out / "explain")
    report = evaluate_heldout(run, out / "report")
    print(f"main job finished in {time.perf_counter() - t0:.0f} s")
    print(f"evaluation report: {report}")
    return 0


def _finished(run: Path) -> bool:
    return (run / "model.safetensors").exists() and (run / "heldout.json").exists()


def _finished_summary(run: Path) -> dict:
    held = json.loads((run / "heldout.json").read_text())
    return {"run_dir": str(run), "best": {"epoch": held["best_epoch"]}, "heldout": held}


def _train_stage(step: str, what: str, cohort: Path, run: Path, overrides: dict) -> dict:
    """Train ``run`` on ``cohort`` with the ``fast_cpu`` preset and ``overrides``, or resume it."""
    from AttriVAELib.train.config import resolve_config
    from AttriVAELib.train.trainer import train

    if (run / "last.safetensors").exists():
        print(f"{step} resuming the interrupted training in {run}")
        return train(None, run, resume=True)
    if run.exists() and any(run.iterdir()):
        raise ConfigError(f"{run}: exists but holds no run to resume; remove it")
    print(f"{step} {what} into {run}")
    return train(cohort, run, config=resolve_config("fast_cpu", None, overrides))


def explain_heldout(cohort: Path, run: Path, out: Path, n_lesion: int = 2, n_healthy: int = 1) -> list[Path]:
    """Run ``attrivae explain`` on the first held-out (test) subjects with and without a lesion."""
    from AttriVAELib.cli import main as cli_main
    from AttriVAELib.data.manifest import load_manifest, load_split

    manifest = load_manifest(cohort)
    test = manifest.subset(load_split(manifest, create=False)["test"])
    chosen = [r for r in test if r.label == "1"][:n_lesion] + [r for r in test if r.label == "0"][:n_healthy]
    print(f"[4/5] explaining {len(chosen)} held-out subjects into {out}")
    folders = []
    for record in chosen:
        folder = out / record.subject
        if not (folder / "explain.json").exists():
            code = cli_main(["explain", "--model", str(run), str(record.image), "--out", str(folder), "--overwrite"])
            if code:
                raise ConfigError(f"explaining {record.image} failed (exit code {code})")
        folders.append(folder)
        print(f"      {record.subject} (label {record.label}): {folder}/montage_attributes.png")
    return folders


def evaluate_heldout(run: Path, out: Path) -> Path:
    """``attrivae evaluate`` on the held-out split; returns the report's path."""
    from AttriVAELib.evaluate.evaluation import evaluate_run
    from AttriVAELib.evaluate.report import write_evaluation

    report = out / "report.html"
    if report.exists() and (out / "metrics.json").exists():
        print(f"[5/5] the evaluation report is already in {out}")
        return report
    print(f"[5/5] evaluating the model on the held-out split into {out}")
    result = evaluate_run(run, log=lambda msg: print(f"      {msg}"))
    return write_evaluation(run, out, result, log=lambda msg: print(f"      {msg}"))["report"]


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``attrivae demo``."""
    p.add_argument("--out", type=Path, default=Path("demo"), help="working folder (default ./demo)")
    p.add_argument("--n", type=positive_int, default=1000, help="subjects in the synthetic cohort (default 1000)")
    p.add_argument("--size", type=positive_int, default=64, help="voxels per axis of the cohort (default 64)")
    p.add_argument("--seed", type=seed_int, default=0, help="cohort seed (default 0)")
    p.add_argument("--train-seed", type=seed_int, default=0,
                   help="training seed of both stages: weights, batches, augmentation (default 0)")


COMMANDS = (Command("demo", "the main job on the built-in synthetic cohort", add_demo_arguments, run_demo),)
