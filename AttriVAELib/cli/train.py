"""``attrivae train``: train a model on a manifest, resume a run, or fine-tune from another.

The same command runs distributed: ``torchrun --nproc_per_node=N -m AttriVAELib.cli train …``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Mapping

from AttriVAELib.cli.command import Command, check_output, finite_float, positive_int, seed_int
from AttriVAELib.core.errors import ConfigError

__all__ = ["COMMANDS", "print_summary"]


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, help="manifest CSV or folder holding manifest.csv")
    p.add_argument("--out", type=Path, help="run folder")
    p.add_argument("--config", type=Path, help="YAML file overriding the preset (sections model, loss, optim, train, data)")
    p.add_argument("--preset", default="attri_vae", help="starting configuration (default attri_vae)")
    p.add_argument("--epochs", type=positive_int, help="number of epochs")
    p.add_argument("--batch-size", type=positive_int, help="batch size per process")
    p.add_argument("--lr", type=finite_float, help="Adam learning rate")
    p.add_argument("--size", type=positive_int, help="model input cube N (multiple of 16)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), help="auto uses bf16 where it is fast")
    p.add_argument("--seed", type=seed_int, help="training seed (0 .. 2^32-1)")
    p.add_argument("--max-minutes", type=finite_float,
                   help="stop after the epoch that reaches this wall time (0 = no limit)")
    p.add_argument("--resume", type=Path, metavar="RUN", help="continue an interrupted run")
    p.add_argument("--init", type=Path, metavar="RUN", help="start from the weights of RUN's best model (fine-tune; "
                   "same network configuration)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_from_args(args: argparse.Namespace) -> int:
    from AttriVAELib.nn.fastpath import tune_cpu_allocator
    from AttriVAELib.train.config import load_yaml, resolve_config
    from AttriVAELib.train.trainer import train

    if args.resume is not None:
        given = [option for option, value in (("--data", args.data), ("--out", args.out), ("--config", args.config),
                                              ("--init", args.init), ("--epochs", args.epochs),
                                              ("--batch-size", args.batch_size), ("--lr", args.lr),
                                              ("--size", args.size), ("--device", args.device),
                                              ("--precision", args.precision), ("--seed", args.seed),
                                              ("--max-minutes", args.max_minutes)) if value is not None]
        if args.preset != "attri_vae":
            given.append("--preset")
        if given:
            raise ConfigError(f"--resume continues {args.resume} with the data and configuration it was started with; "
                              f"{', '.join(given)} cannot be changed (start a new run, or --init from this one)")
    tune_cpu_allocator()  # a training process only: keeps freed activations for the next step
    if args.resume is not None:
        summary = train(None, args.resume, resume=True, progress=not args.quiet)
    else:
        if args.out is None:
            raise ConfigError("--out is required (the run folder to create)")
        if args.data is not None:
            data = args.data / "manifest.csv" if args.data.is_dir() else args.data
            check_output(args.out, [args.data, data, args.config, args.init])
        overrides: dict[str, dict] = {}
        for key, section, name in (("epochs", "train", "epochs"), ("batch_size", "optim", "batch_size"),
                                   ("lr", "optim", "lr"), ("device", "train", "device"),
                                   ("precision", "train", "precision"), ("seed", "train", "seed"),
                                   ("max_minutes", "train", "max_minutes"), ("init", "train", "init_from")):
            value = getattr(args, key)
            if isinstance(value, Path):
                value = str(value.resolve())
            if value is not None:
                overrides.setdefault(section, {})[name] = value
        if args.size is not None:
            overrides.setdefault("model", {})["input_size"] = args.size
        file_config = load_yaml(args.config) if args.config else None
        config = resolve_config(args.preset, file_config, overrides)
        summary = train(args.data, args.out, config=config, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        print_summary(summary)
    return 0


def print_summary(summary: Mapping[str, Any]) -> None:
    run = Path(summary["run_dir"])
    print(f"run folder:  {run}")
    how = "the last epoch" if summary["best"].get("metric") == "last" else "selected on the validation split"
    print(f"best model:  {run / 'model.safetensors'} (epoch {summary['best']['epoch']}, {how})")
    print(f"logs:        {run / 'metrics.csv'}, {run / 'tensorboard'}")
    held = summary.get("heldout")
    if held:
        parts = [f"{k}={v:.3f}" for k, v in held.items() if isinstance(v, float)]
        print(f"held-out ({held['split']}, n={held['n']}): " + "  ".join(parts))


COMMANDS = (
    Command("train", "train a model on a manifest (or --resume an interrupted run)", add_train_arguments,
            run_from_args),
)
