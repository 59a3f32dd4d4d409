"""Own-cohort commands: ``attrivae cohort`` (build a trainable cohort from images and segmentations) and
``attrivae synth-acdc`` (generate an ACDC-like cohort with known geometry to try it on)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from AttriVAELib.cli.command import Command, bounded_int, check_output, check_replaceable, positive_int, seed_int

__all__ = ["COMMANDS"]


def add_cohort_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``attrivae cohort``."""
    p.add_argument("--images", required=True, help="folder of images (searched recursively; NIfTI, NRRD, MHA or "
                   "DICOM series folders) or a glob pattern such as 'data/*/*_frame01.nii.gz'")
    p.add_argument("--labels", required=True, help="folder or glob pattern of the segmentations (label maps); may be "
                   "the images' folder when their names end in _gt, _seg, _label …")
    p.add_argument("--label", action="append", default=[], metavar="NAME=VALUE", required=True,
                   help="a label to measure, e.g. myocardium=2 or lv=2+3 (a union); repeat for each label")
    p.add_argument("--clinical", type=Path, help="clinical table (.csv, .tsv or .xlsx) merged by subject id")
    p.add_argument("--id-column", help="the clinical table's subject id column (default: one named id, subject, "
                   "patient or case)")
    p.add_argument("--class-column", help="the clinical column holding the class (the manifest's label), e.g. Group")
    p.add_argument("--attributes", nargs="+", metavar="NAME",
                   help="attribute columns or patterns (e.g. lv_cavity_volume_ml '*_thickness_mm'), in order; default: "
                   "each label's volume, each shell's thickness and the numeric clinical columns; the other columns "
                   "are kept as meta_*")
    p.add_argument("--crop-label", nargs="+", metavar="NAME", help="labels whose union is the crop mask "
                   "(default: all named labels)")
    p.add_argument("--out", required=True, type=Path, help="cohort folder; an earlier run's folder is resumed")
    p.add_argument("--workers", type=bounded_int(1, 1024), default=1, help="processes (default 1)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the train/val/test split (default 0)")
    p.add_argument("--overwrite", action="store_true", help="start again: discard the cohort folder and its cache")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_cohort(args: argparse.Namespace) -> int:
    """``attrivae cohort``: build or resume the cohort, print its summary (saved as summary.txt)."""
    from AttriVAELib.data.cohort_builder import NoUsableSubject, build_cohort

    if args.clinical is not None:
        check_output(args.out, [args.clinical])
    try:
        summary = build_cohort(args.images, args.labels, args.out, args.label, clinical=args.clinical,
                               id_column=args.id_column, class_column=args.class_column, attributes=args.attributes,
                               crop_labels=args.crop_label, workers=args.workers, overwrite=args.overwrite,
                               seed=args.seed, progress=not args.quiet)
    except NoUsableSubject as exc:
        print(exc.summary.text(), file=sys.stderr)  # every excluded subject, one line each, then the error
        raise
    print(summary.text())
    return 0


def _spacing(text: str) -> tuple[float, float, float]:
    from AttriVAELib.cohorts.acdc_like.generator import parse_spacing
    from AttriVAELib.core.errors import ConfigError

    try:
        return parse_spacing(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_synth_acdc_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``attrivae synth-acdc``."""
    p.add_argument("--out", required=True, type=Path, help="output folder (created atomically)")
    p.add_argument("--n", type=bounded_int(1, 999), default=100, help="number of patients, 1..999 (default 100); "
                   "each has an ED and an ES frame")
    p.add_argument("--spacing", type=_spacing, default=(0.7, 0.7, 5.0), metavar="X,Y,Z",
                   help="voxel spacing in mm (default 0.7,0.7,5: short-axis cine slices; 1 for isotropic 1 mm)")
    p.add_argument("--seed", type=seed_int, default=0, help="random seed, 0 .. 2^32-1 (default 0)")
    p.add_argument("--workers", type=positive_int, default=None, help="processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_synth_acdc(args: argparse.Namespace) -> int:
    """``attrivae synth-acdc``: generate the ACDC-like cohort and print what to do next."""
    from AttriVAELib.cohorts.acdc_like.generator import generate_acdc_like, summarize_acdc_like

    check_replaceable(args.out, "acdc_like.json", "synth-acdc", args.overwrite)
    generate_acdc_like(args.out, n=args.n, spacing=args.spacing, seed=args.seed, workers=args.workers,
                       progress=not args.quiet, overwrite=args.overwrite)
    print(summarize_acdc_like(args.out))
    return 0


COMMANDS = (
    Command("cohort", "build a trainable cohort from images, segmentations and a clinical table (own data)",
            add_cohort_arguments, run_cohort),
    Command("synth-acdc", "generate an ACDC-like cohort of cine frames with known geometry (to try attrivae cohort)",
            add_synth_acdc_arguments, run_synth_acdc),
)
