"""The README's main job on the built-in synthetic cohort.

Steps (each skipped when its output is already complete, so a rerun resumes):
1. generate the phantom cohort (``DIR/cohort``);
2. train a small Attri-VAE on it (``DIR/run``; an interrupted run is resumed).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from AttriVAELib.errors import ConfigError

#: Training budget of the demo: about ten minutes on a 2-core CPU.
DEMO_OVERRIDES = {
    "train": {"epochs": 100, "patience": 0},
    "data": {"attributes": ["volume_ml", "max_axial_diameter_mm", "wall_thickness_mm", "lesion_volume_ml"]},
}


def run_demo(args: argparse.Namespace) -> int:
    from AttriVAELib.config import resolve_config
    from AttriVAELib.fastpath import tune_cpu_allocator
    from AttriVAELib.synth import generate_cohort, summarize_cohort
    from AttriVAELib.train import print_summary, train

    tune_cpu_allocator()
    out: Path = args.out
    cohort = out / "cohort"
    run = out / "run"
    t0 = time.perf_counter()
    if (cohort / "manifest.csv").exists():
        print(f"[1/2] reusing the synthetic cohort in {cohort}")
    else:
        print(f"[1/2] generating {args.n} synthetic subjects at {args.size}³ into {cohort}")
        generate_cohort(cohort, n=args.n, size=args.size, seed=args.seed, progress=True)
    print(summarize_cohort(cohort))

    if (run / "model.safetensors").exists() and (run / "heldout.json").exists():
        print(f"[2/2] a trained model is already in {run}")
        import json

        summary = {"run_dir": str(run), "best": {"epoch": json.loads((run / "heldout.json").read_text())["best_epoch"]},
                   "heldout": json.loads((run / "heldout.json").read_text())}
    elif (run / "last.safetensors").exists():
        print(f"[2/2] resuming the interrupted training in {run}")
        summary = train(None, run, resume=True)
    else:
        if run.exists() and any(run.iterdir()):
            raise ConfigError(f"{run}: exists but holds no run to resume; remove it")
        print(f"[2/2] training a small Attri-VAE (preset fast_cpu) into {run}")
        config = resolve_config("fast_cpu", None, DEMO_OVERRIDES)
        summary = train(cohort, run, config=config)
    print_summary(summary)
    print(f"main job finished in {time.perf_counter() - t0:.0f} s")
    return 0
