"""``attrivae evaluate`` and ``attrivae compare``: argument parsing and the calls into the engine."""

from __future__ import annotations

import argparse
from pathlib import Path

from AttriVAELib.cli.command import Command, check_output, non_negative_int, positive_int
from AttriVAELib.core.errors import ConfigError, OutputError
from AttriVAELib.explain import COUNTERFACTUAL_METHODS

__all__ = ["COMMANDS"]


def _seeds(text: str) -> list[int]:
    """``3`` → seeds 0, 1, 2; ``0,4,7`` → those seeds; ``2,`` → seed 2 alone."""
    try:
        if "," in text:
            return [int(s) for s in text.split(",") if s.strip()]
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is neither a count nor a comma-separated list of seeds") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"{n} is a number of seeds and must be ≥ 1; for seed {n} alone give a list: "
                                         f"--seeds {n},")
    return list(range(n))


def _add_settings_arguments(p: argparse.ArgumentParser, traversal: int, localization: int) -> None:
    from AttriVAELib.evaluate.evaluation import EvaluationSettings  # no torch at import

    counterfactuals = EvaluationSettings.counterfactual_subjects
    p.add_argument("--split", default="test", choices=("train", "val", "test"),
                   help="split evaluated (default test; data without a saved split is evaluated whole)")
    p.add_argument("--traversal-subjects", type=non_negative_int, default=traversal,
                   help=f"subjects traversed per attribute for traversal fidelity (default {traversal})")
    p.add_argument("--localization-subjects", type=non_negative_int, default=localization,
                   help=f"subjects with a lesion whose maps are localized (default {localization})")
    p.add_argument("--counterfactual-subjects", type=non_negative_int, default=counterfactuals,
                   help="labelled subjects whose decoded counterfactuals are judged, split between the classes "
                        f"(default {counterfactuals}; 0 = skip the image-faithfulness checks)")
    p.add_argument("--judge-epochs", type=non_negative_int, default=40,
                   help="training epochs of each network of the independent judge of decoded images "
                        "(default 40; 0 = no judge)")
    p.add_argument("--judge-members", type=positive_int, default=3,
                   help="networks in the judge, trained from successive seeds; its verdict is their mean (default 3)")
    p.add_argument("--counterfactual-method", choices=COUNTERFACTUAL_METHODS, default="auto",
                   help="how those counterfactuals are made, as in explain (default auto)")
    p.add_argument("--bootstrap", type=non_negative_int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--layer", default="auto",
                   help="Grad-CAM layer of the localization and attention maps: auto (default), conv1 … conv5")


def _settings(args: argparse.Namespace):
    from AttriVAELib.evaluate.evaluation import EvaluationSettings

    return EvaluationSettings(split=args.split, traversal_subjects=args.traversal_subjects,
                              localization_subjects=args.localization_subjects, bootstrap=args.bootstrap,
                              counterfactual_subjects=args.counterfactual_subjects, judge_epochs=args.judge_epochs,
                              judge_members=args.judge_members,
                              counterfactual_method=args.counterfactual_method, layer=args.layer)


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, type=Path, help="run folder (or model.safetensors) to evaluate")
    p.add_argument("--data", type=Path, default=None,
                   help="manifest CSV or folder (default: the data the model was trained on)")
    p.add_argument("--out", required=True, type=Path, help="folder for metrics.json and report.html")
    p.add_argument("--no-figures", action="store_true", help="metrics and tables only (faster)")
    _add_settings_arguments(p, traversal=6, localization=20)


def run_evaluate(args: argparse.Namespace) -> int:
    from AttriVAELib.evaluate.evaluation import evaluate_run, headline
    from AttriVAELib.evaluate.report import metrics_table_rows, write_evaluation
    from AttriVAELib.nn.checkpoint import checkpoint_paths

    check_output(args.out, [args.model, *checkpoint_paths(args.model), args.data])
    if args.out.exists() and not args.out.is_dir():
        raise OutputError(f"{args.out}: is a file; --out is the folder for metrics.json and report.html")
    result = evaluate_run(args.model, args.data, _settings(args), device=args.device)
    paths = write_evaluation(args.model, args.out, result, device=args.device, figures=not args.no_figures)
    for label, ours, published, target in metrics_table_rows(headline(result)):
        print(f"  {label:<42s} {ours:>7s}   published {published:>5s}   target {target}")
    print(f"report: {paths['report']}")
    return 0


def add_compare_arguments(p: argparse.ArgumentParser) -> None:
    from AttriVAELib.evaluate.compare import METHODS

    p.add_argument("--data", required=True, type=Path, help="manifest CSV or folder")
    p.add_argument("--out", required=True, type=Path, help="folder for the runs and the comparison table")
    p.add_argument("--seeds", type=_seeds, default=[0, 1, 2], help="a number N of seeds (0 … N-1) or a comma-separated list: "
                   "3 = seeds 0,1,2; 4,7 = seeds 4 and 7; 2, = seed 2 alone (default 3)")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated subset of {', '.join(METHODS)} (default: all)")
    p.add_argument("--base", default="fast_cpu", help="preset giving the network, optimizer and budget "
                   "(default fast_cpu)")
    p.add_argument("--epochs", "--budget", dest="epochs", type=int, default=None,
                   help="epochs per run (default: the base preset's)")
    p.add_argument("--config", type=Path, default=None,
                   help="YAML overrides for every run (e.g. data.attributes, data.preprocess); for the built-in "
                        "phantom cohort the demo's data settings and dropout are the default")
    _add_settings_arguments(p, traversal=8, localization=10)


def run_compare(args: argparse.Namespace) -> int:
    from AttriVAELib.cohorts.registry import cohort_for
    from AttriVAELib.data.manifest import load_manifest
    from AttriVAELib.evaluate.compare import compare
    from AttriVAELib.train.config import load_yaml

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.epochs is not None and args.epochs <= 0:
        raise ConfigError(f"--epochs must be positive (got {args.epochs})")
    if args.config is not None:
        overrides = load_yaml(args.config)
    else:
        cohort = cohort_for(load_manifest(args.data))
        overrides = dict(cohort.training_overrides)
        if overrides:
            print(f"{cohort.name} cohort: using its recommended {', '.join(overrides)} settings for every run")
    compare(args.data, args.out, seeds=args.seeds, methods=methods, base=args.base, epochs=args.epochs,
            overrides=overrides, evaluate_settings=_settings(args))
    return 0


COMMANDS = (
    Command("evaluate", "evaluate a run on held-out data: metrics.json and a self-contained report.html",
            add_evaluate_arguments, run_evaluate),
    Command("compare", "train VAE, β-VAE, AR-VAE and Attri-VAE with one budget and seeds; write the comparison "
            "table", add_compare_arguments, run_compare),
)
