"""The ``attrivae encode``, ``traverse`` and ``explain`` commands.

Each command is ``add_<name>_arguments(parser)`` + ``run_<name>(args) -> int``; user errors
raise :class:`~AttriVAELib.core.errors.AttriVAEError` subclasses (one line, exit code 2 through
``AttriVAELib.cli.run_guarded``). :data:`COMMANDS` registers them. The explanation itself is
:func:`AttriVAELib.explain.explain_encoding`, shared with the evaluation, the report and Slicer.

Every output volume is written on the input image's grid with its exact geometry (size,
spacing, origin, direction); output folders appear atomically (complete or not at all).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from AttriVAELib.cli.command import Command, check_output, check_replaceable
from AttriVAELib.core.errors import ConfigError, OutputError
from AttriVAELib.explain import COUNTERFACTUAL_METHODS

#: Most volumes one ``traverse`` writes (each is a file on the input's grid); ``$ATTRIVAE_MAX_STEPS`` raises it.
MAX_TRAVERSE_STEPS = 1000
#: Most latent-path segments of ``explain --ig-steps``; ``$ATTRIVAE_MAX_STEPS`` raises it too.
MAX_IG_STEPS = 4096
#: Frames of the traversal strip (PNG): at most this many, evenly spaced.
STRIP_FRAMES = 16
#: Steps decoded and mapped to the input grid at a time (memory stays flat for any --steps).
_TRAVERSE_CHUNK = 8


def _step_limit(default: int) -> int:
    import os

    text = os.environ.get("ATTRIVAE_MAX_STEPS", "").strip()
    try:
        return max(default, int(text)) if text else default
    except ValueError:
        raise ConfigError(f"ATTRIVAE_MAX_STEPS={text!r} is not a whole number") from None


def _check_steps(option: str, value: int, default_limit: int) -> None:
    """``value`` of ``option`` lies in 1 .. the limit (``$ATTRIVAE_MAX_STEPS`` raises it)."""
    limit = _step_limit(default_limit)
    if not 1 <= value <= limit:
        raise ConfigError(f"{option} must be between 1 and {limit} (got {value}); ATTRIVAE_MAX_STEPS raises the "
                          "limit")



# --------------------------------------------------------------------------- shared
def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, type=Path, metavar="RUN",
                   help="run folder (holding model.safetensors) or a model.safetensors file")
    p.add_argument("image", type=Path, metavar="IMAGE", help="3D image (NIfTI, NRRD, MHA or a DICOM folder)")
    p.add_argument("--mask", type=Path, help="optional mask on the image (needed if the model crops to one)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")


def _load(args: argparse.Namespace):
    from AttriVAELib.inference.model import AttriVAEModel

    return AttriVAEModel.load(args.model, device=args.device)


def _inputs(args: argparse.Namespace) -> list[Path | None]:
    """Every path the command reads: an output may never be, or contain, one of them."""
    from AttriVAELib.nn.checkpoint import checkpoint_paths

    weights, sidecar = checkpoint_paths(args.model)
    return [args.image, args.mask, args.model, weights, sidecar]


def _check_out_folder(args: argparse.Namespace, marker: str, command: str) -> None:
    check_output(args.out, _inputs(args))
    check_replaceable(args.out, marker, command, args.overwrite)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "map"


def _fmt(value: float) -> str:
    return f"{value:.4g}"


# --------------------------------------------------------------------------- encode
def add_encode_arguments(p: argparse.ArgumentParser) -> None:
    """``attrivae encode --model RUN IMAGE [--mask MASK] [--json OUT]``."""
    _add_model_arguments(p)
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the result as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file written by encode")


def _check_json_output(args: argparse.Namespace) -> None:
    """``--json OUT`` must not be an input, a folder, or a file encode did not write."""
    import json

    out = args.json
    check_output(out, _inputs(args), "--json")
    if out.is_dir():
        raise OutputError(f"{out}: --json is a folder; give a file name (e.g. {out / 'encoding.json'})")
    if not (out.exists() or out.is_symlink()):
        return
    if not args.overwrite:
        raise FileExistsError(None, None, str(out))
    try:
        previous = json.loads(out.read_text(encoding="utf-8"))
        ours = isinstance(previous, dict) and {"image", "model", "mu"} <= previous.keys()
    except (OSError, ValueError):
        ours = False
    if out.is_symlink() or not ours:
        raise OutputError(f"{out}: not a JSON file written by attrivae encode; --overwrite replaces only what the "
                          "command wrote")


def run_encode(args: argparse.Namespace) -> int:
    """Print μ of the regularized dims, attribute estimates with units and class probabilities."""
    from AttriVAELib.core import atomic

    if args.json is not None:
        _check_json_output(args)
    model = _load(args)
    enc = model.encode(args.image, args.mask)
    summary = {"image": str(args.image), "model": str(model.source), **enc.to_dict()}
    print(f"model: {model.describe()}")
    print(f"image: {args.image} -> model grid {model.input_size}^3 at {enc.mapping.spacing_mm:.3g} mm")
    if model.num_regularized:
        print("regularized latent dims:")
        width = max(len(n) for n in model.attribute_names)
        for item in summary["regularized"]:
            estimate = ""
            if item["estimate"] is not None:
                estimate = f"   estimate {_fmt(item['estimate'])} {item['unit']}".rstrip()
            print(f"  {item['dim']:>2d} {item['name']:<{width}s}  mu {item['mu']:+.4f} "
                  f"(sigma {item['sigma']:.3g}){estimate}")
        if model.calibration is None:
            print("  (no attribute calibration in this checkpoint: estimates unavailable)")
    if enc.probabilities is not None:
        probs = "  ".join(f"{n}: {p:.3f}" for n, p in summary["probabilities"].items())
        print(f"class probabilities: {probs}  -> {summary['predicted_label']}")
    for note in enc.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.json is not None:
        atomic.write_json(args.json, summary, clean_stale=True)
        print(f"wrote {args.json}")
    return 0


# --------------------------------------------------------------------------- traverse
def add_traverse_arguments(p: argparse.ArgumentParser) -> None:
    """``attrivae traverse --model RUN IMAGE --dim NAME --range LO HI --steps S --out DIR``."""
    _add_model_arguments(p)
    p.add_argument("--dim", required=True, help="regularized attribute name (or a latent dim index)")
    p.add_argument("--range", required=True, nargs=2, type=float, metavar=("LO", "HI"),
                   help="sweep range, in --units")
    p.add_argument("--steps", required=True, type=int,
                   help=f"number of decoded volumes, 1..{MAX_TRAVERSE_STEPS} ($ATTRIVAE_MAX_STEPS raises the limit)")
    p.add_argument("--units", choices=("latent", "attribute"), default="latent",
                   help="units of --range: raw latent values (default) or the attribute's physical unit "
                        "(converted through the stored calibration, clamped to its training range)")
    p.add_argument("--out", required=True, type=Path, help="output folder (created atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def run_traverse(args: argparse.Namespace) -> int:
    """One NIfTI per step on the input grid (input intensity range), a PNG strip and traversal.json."""
    from AttriVAELib.core import atomic
    from AttriVAELib.data.io import write_image
    from AttriVAELib.explain.montage import cube_centre_index, orthogonal_slices, save_strip

    _check_steps("--steps", args.steps, MAX_TRAVERSE_STEPS)
    lo, hi = args.range
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ConfigError("--range values must be finite numbers")
    _check_out_folder(args, "traversal.json", "traverse")
    model = _load(args)
    dim = model.dim_index(args.dim)
    values = np.linspace(lo, hi, args.steps)
    latents = model.latent_values(dim, values, args.units)  # validates units/calibration before any work
    enc = model.encode(args.image, args.mask)
    z = model.traversal_latents(enc, dim, latents, units="latent")
    attrs = model.predict_attributes(z)
    probs = model.class_probabilities(z)
    name = model.attribute_names[dim] if dim < model.num_regularized else f"dim_{dim}"
    unit = model.attribute_units[dim] if dim < model.num_regularized else ""
    shown = set(np.unique(np.linspace(0, len(values) - 1, min(len(values), STRIP_FRAMES)).round().astype(int)))
    centre = cube_centre_index(enc)
    steps: list[dict[str, Any]] = []
    slices: list[np.ndarray] = []  # the strip's frames, reduced to their three slices through the centre
    with atomic.atomic_dir(args.out, overwrite=args.overwrite) as tmp:
        for start in range(0, len(values), _TRAVERSE_CHUNK):
            frames = model.decode(z[start:start + _TRAVERSE_CHUNK])  # (chunk, N, N, N)
            for offset, frame in enumerate(frames):
                s = start + offset
                vol = model.to_input_grid(frame, enc, rescale=True)
                fname = f"step_{s:03d}.nii.gz"
                write_image(vol, tmp / fname)
                if s in shown:
                    slices.append([np.array(v, dtype=np.float32) for v in orthogonal_slices(vol.array, centre)])
                entry: dict[str, Any] = {"file": fname, "latent": float(latents[s])}
                if args.units == "attribute":
                    entry["requested"] = float(values[s])
                if attrs is not None and dim < model.num_regularized:
                    entry["estimate"] = float(attrs[s, dim])
                if probs is not None:
                    entry["probabilities"] = [float(p) for p in probs[s]]
                checked = model.read_back(frame, z[s], f"frame at {name} {_fmt(entry.get('estimate', latents[s]))}",
                                          [dim])
                entry["read_back"] = checked.to_dict(model)
                steps.append(entry)
        labels = [f"{_fmt(e.get('estimate', e['latent']))}{' ' + unit if 'estimate' in e and unit else ''}"
                  for i, e in enumerate(steps) if i in shown]
        save_strip(tmp / "strip.png", slices, labels, spacing=enc.mapping.source.spacing, title=f"traversal of {name}")
        atomic.write_json(tmp / "traversal.json", {
            "image": str(args.image), "model": str(model.source), "dim": dim, "name": name, "unit": unit,
            "units": args.units, "range": [lo, hi], "mu": float(enc.mu[dim]), "steps": steps,
            "notes": _traversal_notes(enc, steps)})
    for note in _traversal_notes(enc, steps):
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {len(steps)} volumes, strip.png and traversal.json to {args.out}")
    return 0


def _traversal_notes(enc: Any, steps: list[dict[str, Any]]) -> list[str]:
    """The input's notes, and the first read-back warning with the number of frames that have one."""
    from AttriVAELib.inference.readback import frames_note

    note = frames_note([step["read_back"]["warnings"] for step in steps])
    return list(enc.notes) + ([note] if note else [])


def add_explain_arguments(p: argparse.ArgumentParser) -> None:
    """``attrivae explain --model RUN IMAGE [--mask MASK] --out DIR``."""
    from AttriVAELib.nn.model import ENCODER_LAYER_NAMES

    _add_model_arguments(p)
    p.add_argument("--out", required=True, type=Path, help="output folder (created atomically)")
    p.add_argument("--layer", default="auto", choices=("auto", *ENCODER_LAYER_NAMES),
                   help="Grad-CAM layer (default auto: conv4 for inputs of 64^3 or more, i.e. the paper's conv5 "
                        "resolution with 64 channels; a finer block for smaller inputs; conv5 reproduces the paper)")
    p.add_argument("--signed", action="store_true", help="signed Grad-CAM maps (no ReLU), scaled to [-1, 1]")
    p.add_argument("--target-class", help="class the counterfactual moves towards (default: the other class)")
    p.add_argument("--counterfactual-method", choices=COUNTERFACTUAL_METHODS, default="auto",
                   help="exemplar: relevant dims from the nearest training subject of the target class that the "
                        "model draws faithfully; class_mean: relevant dims to the target class's training mean; "
                        "flip: nearest latent the classifier assigns to the target class (needs no data); auto: "
                        "exemplar, else class_mean, whichever the stored statistics or the training data allow, "
                        "else flip")
    p.add_argument("--ig-steps", type=int, default=64,
                   help=f"segments of the latent path for integrated gradients, 1..{MAX_IG_STEPS} (default 64)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def run_explain(args: argparse.Namespace) -> int:
    """NIfTI heatmaps (per attribute, classifier, counterfactual difference, IG) on the input grid + PNGs."""
    from AttriVAELib.core import atomic
    from AttriVAELib.data.io import write_image
    from AttriVAELib.explain.explain import explain_encoding
    from AttriVAELib.explain.gradcam import resolve_layer
    from AttriVAELib.explain.montage import save_montage
    from AttriVAELib.inference.readback import donor_note

    _check_steps("--ig-steps", args.ig_steps, MAX_IG_STEPS)
    _check_out_folder(args, "explain.json", "explain")
    model = _load(args)
    enc = model.encode(args.image, args.mask)
    layer = resolve_layer(model.network, args.layer)[0].split(".")[-1]
    ex = explain_encoding(model, enc, layer=layer, relu=not args.signed, ig_steps=args.ig_steps,
                          target_class=args.target_class, method=args.counterfactual_method)
    image = model.to_input_grid(enc.image, enc, rescale=True)
    spacing = enc.mapping.source.spacing
    files: dict[str, str] = {}

    def put(tmp: Path, key: str, fname: str, array: np.ndarray, rescale: bool = False) -> np.ndarray:
        vol = model.to_input_grid(array, enc, rescale=rescale)
        write_image(vol, tmp / fname)
        files[key] = fname
        return vol.array

    with atomic.atomic_dir(args.out, overwrite=args.overwrite) as tmp:
        attr_rows = []
        for name, m in ex.attribute_maps.items():
            attr_rows.append((name, put(tmp, f"gradcam_{name}", f"gradcam_{_safe_name(name)}.nii.gz", m)))
        other_rows = []
        if ex.classifier_map is not None:
            other_rows.append((f"classifier Grad-CAM ({enc.predicted_label})", put(tmp, "gradcam_classifier", "gradcam_classifier.nii.gz",
                                                          ex.classifier_map)))
        put(tmp, "reconstruction", "reconstruction.nii.gz", model.reconstruct(enc), rescale=True)
        signed_rows = []
        if ex.counterfactual is not None:
            cf = ex.counterfactual
            put(tmp, "counterfactual", "counterfactual.nii.gz", cf.counterfactual, rescale=True)
            signed_rows.append(("counterfactual - reconstruction",
                                put(tmp, "counterfactual_difference", "counterfactual_difference.nii.gz",
                                    cf.difference)))
        if ex.integrated_gradients is not None:
            signed_rows.append(("latent-path integrated gradients",
                                put(tmp, "integrated_gradients", "integrated_gradients.nii.gz",
                                    ex.integrated_gradients.attributions)))
        if attr_rows:
            save_montage(tmp / "montage_attributes.png", image.array, attr_rows, spacing, signed=args.signed,
                         title=f"attribute Grad-CAM ({layer})")
            files["montage_attributes"] = "montage_attributes.png"
        if other_rows:
            save_montage(tmp / "montage_classifier.png", image.array, other_rows, spacing, signed=args.signed,
                         title=f"classifier Grad-CAM ({layer})")
            files["montage_classifier"] = "montage_classifier.png"
        if signed_rows:
            save_montage(tmp / "montage_counterfactual.png", image.array, signed_rows, spacing, signed=True,
                         threshold=0.1, title="counterfactual")
            files["montage_counterfactual"] = "montage_counterfactual.png"
        summary: dict[str, Any] = {
            "image": str(args.image), "model": str(model.source), "layer": layer,
            "maps": "signed, scaled to [-1, 1]" if args.signed else "ReLU, scaled to [0, 1]",
            "peaks": ex.peaks, "classifier_map_class": enc.predicted_label, "files": files,
            "encoding": enc.to_dict(), "notes": ex.notes}
        summary["read_back"] = {name: checked.to_dict(model) for name, checked in ex.read_back.items()}
        if ex.counterfactual is not None:
            summary["counterfactual"] = ex.counterfactual.summary(model)
        if ex.integrated_gradients is not None:
            ig = ex.integrated_gradients
            summary["integrated_gradients"] = {"steps": ig.steps, "score_start": float(ig.scores[0]),
                                               "score_end": float(ig.scores[-1]), "sum": ig.total,
                                               "completeness_error": ig.completeness_error}
        atomic.write_json(tmp / "explain.json", summary)
    donor = ex.counterfactual.exemplar if ex.counterfactual is not None else None
    if donor:
        print(f"counterfactual: the dims that vary more within the target class {donor_note(donor)}")
    for note in ex.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {len([f for f in files.values() if f.endswith('.nii.gz')])} volumes and "
          f"{len([f for f in files.values() if f.endswith('.png')])} montages to {args.out}")
    return 0


COMMANDS = (
    Command("encode", "encode an image: regularized latents, attribute estimates, class probabilities",
            add_encode_arguments, run_encode),
    Command("traverse", "decode a sweep of one attribute's latent dim; volumes on the input grid + a PNG strip",
            add_traverse_arguments, run_traverse),
    Command("explain", "attribute-wise and classifier Grad-CAM, counterfactual and integrated gradients on the "
            "input grid", add_explain_arguments, run_explain),
)
