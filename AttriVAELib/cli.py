"""The ``attrivae`` command line.

Each sub-command parses its options here and calls the engine; errors caused by the
user's input are printed as one line (no traceback unless ``--debug``) with exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import Callable, Sequence

from AttriVAELib import __version__
from AttriVAELib.cohort_files import positive_int
from AttriVAELib.errors import AttriVAEError

Handler = Callable[[argparse.Namespace], int]


def _cube_size(text: str) -> int:
    value = positive_int(text)
    if value % 16:
        raise argparse.ArgumentTypeError(f"{value} is not a multiple of 16")
    return value


def cmd_synth(args: argparse.Namespace) -> int:
    from AttriVAELib.synth import generate_cohort, summarize_cohort

    generate_cohort(args.out, n=args.n, size=args.size, seed=args.seed, workers=args.workers,
                    progress=not args.quiet, overwrite=args.overwrite)
    print(summarize_cohort(args.out))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from AttriVAELib.manifest import load_manifest, load_split

    manifest = load_manifest(args.data)
    split = load_split(manifest, seed=args.seed)
    print(f"manifest: {manifest.path}")
    print(f"subjects: {len(manifest.records)}  "
          + "  ".join(f"{name}={len(split[name])}" for name in ("train", "val", "test")))
    if manifest.label_names:
        labels = manifest.labels()
        counts = ", ".join(f"{n}: {(labels == i).sum()}" for i, n in enumerate(manifest.label_names))
        print(f"labels: {counts}")
    values = manifest.attribute_matrix()
    for k, name in enumerate(manifest.attribute_names):
        col = values[:, k]
        print(f"  {name:<28s} min {col.min():10.3f}  mean {col.mean():10.3f}  max {col.max():10.3f}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from AttriVAELib.train import run_from_args

    return run_from_args(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from AttriVAELib.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attrivae", description="Attri-VAE: interpretable 3D VAEs with attribute-wise "
                                     "latent dimensions and Grad-CAM explanations.")
    parser.add_argument("--version", action="version", version=f"attrivae {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_parser = sub.add_parser
    sub.add_parser = lambda *a, **k: _add_parser(*a, parents=[common], **k)  # every command takes --debug

    p = sub.add_parser("synth", help="generate the synthetic phantom cohort (hollow ellipsoidal shells with lesions)")
    p.add_argument("--out", required=True, type=Path, help="output folder (created atomically)")
    p.add_argument("--n", type=positive_int, default=200, help="number of subjects (default 200)")
    p.add_argument("--size", type=positive_int, default=64, help="voxels per axis (default 64)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--workers", type=positive_int, default=None, help="processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("synth-brain", help="generate a brain-MRI cohort (aging/atrophy) from nilearn's MNI152 "
                                           "template")
    from AttriVAELib.brain import add_synth_brain_arguments, run_synth_brain

    add_synth_brain_arguments(p)
    p.set_defaults(func=run_synth_brain)

    p = sub.add_parser("info", help="validate a dataset manifest and print its split and attributes")
    p.add_argument("--data", required=True, type=Path, help="manifest CSV or a folder holding manifest.csv")
    p.add_argument("--seed", type=int, default=0, help="split seed if no split is saved yet (default 0)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("train", help="train a model on a manifest (or --resume an interrupted run)")
    from AttriVAELib.train import add_train_arguments

    add_train_arguments(p)
    p.set_defaults(func=cmd_train)

    from AttriVAELib import commands_explain as explain

    for name, help_text in (("encode", "encode an image: latent values, attribute estimates, class probabilities"),
                            ("traverse", "sweep one attribute dimension and decode (NIfTI per step + PNG strip)"),
                            ("explain", "attribute-wise Grad-CAM, classifier map and counterfactual on an image")):
        p = sub.add_parser(name, help=help_text)
        getattr(explain, f"add_{name}_arguments")(p)
        p.set_defaults(func=getattr(explain, f"run_{name}"))

    from AttriVAELib import commands_evaluate as evaluate

    for name, help_text in (("evaluate", "evaluate a run on held-out data: metrics.json and a self-contained "
                                         "report.html"),
                            ("compare", "train VAE, β-VAE, AR-VAE and Attri-VAE with one budget and seeds; "
                                        "write the comparison table")):
        p = sub.add_parser(name, help=help_text)
        getattr(evaluate, f"add_{name}_arguments")(p)
        p.set_defaults(func=getattr(evaluate, f"run_{name}"))

    p = sub.add_parser("demo", help="the main job on the built-in synthetic cohort")
    p.add_argument("--out", type=Path, default=Path("demo"), help="working folder (default ./demo)")
    p.add_argument("--n", type=positive_int, default=1000, help="subjects in the synthetic cohort (default 1000)")
    p.add_argument("--size", type=positive_int, default=64, help="voxels per axis of the cohort (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
    return parser


def run_guarded(func: Handler, args: argparse.Namespace) -> int:
    """Run a command; user errors become one line on stderr and exit code 2."""
    try:
        return int(func(args) or 0)
    except AttriVAEError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"attrivae {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except FileExistsError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"attrivae {args.command}: error: {exc.filename or exc}: already exists; pass --overwrite to replace it",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"attrivae {args.command}: interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_guarded(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
