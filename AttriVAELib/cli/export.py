"""The ``attrivae export`` command: a trained model in another format (a MONAI bundle).

``attrivae export --model RUN|demo --format monai-bundle --out DIR [--overwrite]`` writes
:func:`AttriVAELib.inference.monai_bundle.export_monai_bundle`'s folder atomically. ``demo``
names the shipped demo model (a folder called ``demo`` is ``./demo``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from AttriVAELib.cli.command import Command, check_output, check_replaceable

FORMATS = ("monai-bundle",)
#: The file every bundle holds; ``--overwrite`` also checks that attrivae wrote it.
_MARKER = "configs/metadata.json"
#: Who made the shipped demo model, and its licence (the project's).
_DEMO_CREDITS = {"authors": "AttriVAE developers", "copyright": "Copyright (c) AttriVAE developers",
                 "license": "Apache-2.0"}


def _text(value: str) -> str:
    """argparse type: one non-empty line of text."""
    value = value.strip()
    if not value or "\n" in value or "\r" in value:
        raise argparse.ArgumentTypeError("must be one non-empty line of text")
    return value


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``attrivae export``."""
    p.add_argument("--model", required=True, metavar="RUN",
                   help="run folder (holding model.safetensors), a model.safetensors file, or 'demo' for the "
                        "shipped demo model")
    p.add_argument("--format", choices=FORMATS, default="monai-bundle",
                   help="output format (default monai-bundle)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="bundle folder to write (its name is the bundle's name; written atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle written by export")
    p.add_argument("--name", type=_text, help="bundle name in metadata.json (default: the --out folder's name)")
    p.add_argument("--bundle-version", type=_text, default="0.1.0", metavar="V",
                   help="the bundle's version (default 0.1.0)")
    p.add_argument("--authors", type=_text, help="authors of the model (recorded in metadata.json and the README)")
    p.add_argument("--copyright", type=_text, help="copyright statement of the model")
    p.add_argument("--license", type=_text, help="licence of the weights (e.g. Apache-2.0)")
    p.add_argument("--modality", type=_text, default="n/a", help="input modality: MR, CT, ... (default n/a)")


def _model_location(text: str) -> tuple[Path, bool]:
    """(checkpoint location, whether it is the shipped demo model)."""
    if text == "demo":
        from AttriVAELib.slicer.demo_model import find_demo_model

        return find_demo_model(), True
    return Path(text), False


def run_export(args: argparse.Namespace) -> int:
    from AttriVAELib.inference.model import AttriVAEModel
    from AttriVAELib.inference.monai_bundle import export_monai_bundle
    from AttriVAELib.nn.checkpoint import checkpoint_paths

    location, is_demo = _model_location(args.model)
    weights, sidecar = checkpoint_paths(location)
    check_output(args.out, [location, weights, sidecar])
    check_replaceable(args.out, _MARKER, "export", args.overwrite)
    model = AttriVAEModel.load(location, device="cpu", fast_decode=False)
    credits = dict(_DEMO_CREDITS) if is_demo else {}
    for key in ("authors", "copyright", "license"):
        if getattr(args, key):
            credits[key] = getattr(args, key)
    out = export_monai_bundle(model, args.out, overwrite=args.overwrite, name=args.name,
                              version=args.bundle_version, modality=args.modality, **credits)
    print(f"MONAI bundle written to {out}")
    print(f"  network: configs/inference.json ('network'), weights models/model.pt; "
          f"{model.latent_size} latent dims, {model.num_regularized} tied to attributes")
    return 0


COMMANDS = (Command("export", "write a trained model as a MONAI bundle (configs, weights, docs)",
                    add_export_arguments, run_export),)
