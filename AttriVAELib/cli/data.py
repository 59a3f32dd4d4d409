"""Data commands: ``attrivae synth``, ``synth-brain`` (generate a cohort) and ``info`` (check one)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from AttriVAELib.cli.command import Command, bounded_int, check_replaceable, positive_int, seed_int

__all__ = ["COMMANDS"]


def _add_cohort_arguments(p: argparse.ArgumentParser, size_type: Callable[[str], int], size_help: str) -> None:
    """Options every cohort generator takes; only the size's range differs."""
    p.add_argument("--out", required=True, type=Path, help="output folder (created atomically)")
    p.add_argument("--n", type=positive_int, default=200, help="number of subjects (default 200)")
    p.add_argument("--size", type=size_type, default=64, help=size_help)
    p.add_argument("--seed", type=seed_int, default=0, help="random seed, 0 .. 2^32-1 (default 0)")
    p.add_argument("--workers", type=bounded_int(1, 1024), default=None, help="processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _generate(args: argparse.Namespace, command: str, generate: Callable[..., Any],
              summarize: Callable[[Path], str]) -> int:
    """Write a cohort with ``generate`` (never over a folder it did not write) and print its summary."""
    check_replaceable(args.out, "cohort.json", command, args.overwrite)
    generate(args.out, n=args.n, size=args.size, seed=args.seed, workers=args.workers, progress=not args.quiet,
             overwrite=args.overwrite)
    print(summarize(args.out))
    return 0


def add_synth_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``attrivae synth``."""
    _add_cohort_arguments(p, bounded_int(24, 256), "voxels per axis, 24..256 (default 64)")


def add_info_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``attrivae info``."""
    p.add_argument("--data", required=True, type=Path, help="manifest CSV or a folder holding manifest.csv")
    p.add_argument("--seed", type=seed_int, default=0, help="split seed if no split is saved yet (default 0)")


def run_synth(args: argparse.Namespace) -> int:
    """``attrivae synth``: generate the phantom cohort and print its summary."""
    from AttriVAELib.cohorts.phantom.generator import generate_cohort, summarize_cohort

    return _generate(args, "synth", generate_cohort, summarize_cohort)


def run_info(args: argparse.Namespace) -> int:
    """``attrivae info``: validate a manifest, create or show its split, print its attributes."""
    import sys

    from AttriVAELib.core.errors import InputError
    from AttriVAELib.data.io import check_image_file
    from AttriVAELib.data.manifest import load_manifest, load_split

    manifest = load_manifest(args.data)
    for record in manifest.records:  # headers only: size limit, truncation, not a FIFO
        for column, path in (("image", record.image), ("mask", record.mask), ("lesion", record.lesion)):
            if path is not None:
                try:
                    check_image_file(path)
                except InputError as exc:
                    raise InputError(f"{manifest.path.name} row {record.row}: {column} {exc}") from None
    split = load_split(manifest, seed=args.seed, log=lambda m: print(m, file=sys.stderr))
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


def _brain_size(text: str) -> int:
    from AttriVAELib.cohorts.brain.generator import MAX_SIZE, MIN_SIZE

    value = positive_int(text)
    if not MIN_SIZE <= value <= MAX_SIZE:
        raise argparse.ArgumentTypeError(f"{value} is outside {MIN_SIZE}..{MAX_SIZE}")
    return value


def add_synth_brain_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``attrivae synth-brain``."""
    from AttriVAELib.cohorts.brain.generator import FOV_MM, MAX_SIZE, MIN_SIZE

    _add_cohort_arguments(parser, _brain_size, f"voxels per axis, {MIN_SIZE}..{MAX_SIZE} (default 64; field of "
                          f"view {' × '.join(f'{v:g}' for v in FOV_MM)} mm)")


def run_synth_brain(args: argparse.Namespace) -> int:
    """``attrivae synth-brain``: generate the cohort and print its summary."""
    from AttriVAELib.cohorts.brain.generator import generate_brain_cohort, summarize_brain_cohort

    return _generate(args, "synth-brain", generate_brain_cohort, summarize_brain_cohort)


COMMANDS = (
    Command("synth", "generate the synthetic phantom cohort (hollow ellipsoidal shells with lesions)",
            add_synth_arguments, run_synth),
    Command("synth-brain", "generate a brain-MRI cohort (aging/atrophy) from nilearn's MNI152 template",
            add_synth_brain_arguments, run_synth_brain),
    Command("info", "validate a dataset manifest and print its split and attributes", add_info_arguments,
            run_info),
)
