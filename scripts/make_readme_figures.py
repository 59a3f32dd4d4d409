"""Render the README's pictures from real outputs (not part of the test suite).

    python scripts/make_readme_figures.py --cohort demo/cohort [--report demo/report/report.html] \
        [--brain-run brain/run] [--layer auto] [--out Resources/Screenshots]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from AttriVAELib.data.io import read_image  # noqa: E402
from AttriVAELib.data.manifest import load_manifest  # noqa: E402


def phantom_montage(cohort: Path, out: Path, n: int = 8) -> Path:
    manifest = load_manifest(cohort)
    records = [r for r in manifest.records if r.label == "0"][: n // 2] + [r for r in manifest.records if r.label == "1"][: n // 2]
    fig, axes = plt.subplots(1, len(records), figsize=(2.0 * len(records), 2.4), dpi=110)
    for ax, rec in zip(axes, records):
        image = read_image(rec.image)
        lesion = read_image(rec.lesion).array if rec.lesion else None
        k = image.array.shape[0] // 2
        if lesion is not None and lesion.any():
            k = int(np.argmax(lesion.sum(axis=(1, 2))))
        sx, sy, _ = image.geometry.spacing
        ax.imshow(image.array[k], cmap="gray", aspect=sy / sx, origin="lower")
        if lesion is not None and lesion[k].any():
            ax.contour(lesion[k], levels=[0.5], colors="orange", linewidths=0.8)
        a = rec.attributes
        ax.set_title(f"{rec.subject} · label {rec.label}\nV {a['volume_ml']:.0f} mL  t {a['wall_thickness_mm']:.1f} mm",
                     fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    path = out / "phantoms.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def report_picture(report: Path, out: Path, section: str = "Grad-CAM") -> Path:
    """Save the first picture of ``section`` of an evaluation report as ``report.png``."""
    import base64
    import re

    page = report.read_text(encoding="utf-8")
    start = page.index(f"<h2>{section}</h2>")
    data = re.search(r"src='data:image/png;base64,([^']+)'", page[start:]).group(1)
    path = out / "report.png"
    path.write_bytes(base64.b64decode(data))
    return path


def _held_out_subject(model):
    """The first test-split subject without lesions of the run's cohort, and the manifest."""
    from AttriVAELib.data.manifest import load_split

    manifest = load_manifest(model.meta["data"]["manifest"])
    test = manifest.subset(load_split(manifest, create=False)["test"])
    return next(r for r in test if r.label == "0"), manifest


def _save(fig, title: str, path: Path) -> Path:
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def brain_figures(run: Path, out: Path, steps: int = 5, layer: str = "auto") -> list[Path]:
    """The brain walkthrough's pictures: traversals of ventricle volume and cortical thickness
    on a held-out subject (decoded, re-measured), and every attribute's Grad-CAM (at ``layer``) over its T1."""
    from AttriVAELib.cohorts.brain.generator import TISSUE_FOLDER, TISSUE_LABELS
    from AttriVAELib.cohorts.registry import cohort_kind
    from AttriVAELib.evaluate.evaluation import attribute_map_variants
    from AttriVAELib.inference.model import AttriVAEModel

    model = AttriVAEModel.load(run, device="cpu")
    record, manifest = _held_out_subject(model)
    kind = cohort_kind(manifest)
    source = read_image(record.image)
    enc = model.encode(source)
    tissues = read_image(manifest.root / TISSUE_FOLDER / f"{record.subject}.nii.gz").array
    ventricles = tissues == TISSUE_LABELS["ventricles"]
    axial = int(np.argmax(ventricles.sum(axis=(1, 2))))
    sx, sy, _ = source.geometry.spacing
    paths: list[Path] = []

    rows = (("ventricle_volume_ml", "ventricle volume", "mL"), ("cortical_thickness_mm", "cortical thickness", "mm"))
    fig, axes = plt.subplots(len(rows) * 2, steps, figsize=(2.1 * steps, 2.2 * len(rows) * 2), dpi=100)
    for row, (name, label, unit) in enumerate(rows):
        k = model.dim_index(name)
        low, high = model.calibration.value_range(k)
        targets = np.linspace(low, high, steps)
        decoded = model.traverse(enc, k, targets, units="attribute")
        frames = [model.to_input_grid(d, enc) for d in decoded]
        middle = frames[steps // 2].array
        for j, (frame, target) in enumerate(zip(frames, targets)):
            measured = kind.measure(frame)[name]
            ax = axes[2 * row, j]
            ax.imshow(frame.array[axial], cmap="gray", origin="upper", aspect=sy / sx, vmin=0,
                      vmax=float(np.percentile(middle, 99.5)))
            ax.set_title(f"{label}\nset {target:.1f} · measured {measured:.1f} {unit}", fontsize=7)
            ax.axis("off")
            ax = axes[2 * row + 1, j]
            diff = frame.array[axial] - middle[axial]
            ax.imshow(diff, cmap="RdBu_r", vmin=-0.15 * middle.max(), vmax=0.15 * middle.max(), origin="upper",
                      aspect=sy / sx)
            ax.set_title("minus the middle frame", fontsize=7)
            ax.axis("off")
    paths.append(_save(fig, f"held-out {record.subject}: one latent dim moved, everything else fixed",
                       out / "brain_traversal.png"))

    maps = attribute_map_variants(model, enc, layer=layer)
    variants = (("Grad-CAM", maps["gradcam"]), ("|signed Grad-CAM|", maps["abs_signed_gradcam"]))
    image = source.array
    names = model.attribute_names
    fig, axes = plt.subplots(len(variants), len(names), figsize=(2.6 * len(names), 2.8 * len(variants)), dpi=100)
    for row, (title, by_name) in enumerate(variants):
        for ax, name in zip(axes[row], names):
            heat = model.to_input_grid(by_name[name] / max(float(by_name[name].max()), 1e-12), enc).array
            ax.imshow(image[axial], cmap="gray", origin="upper", aspect=sy / sx)
            ax.imshow(np.ma.masked_less(heat[axial], 0.05), cmap="jet", alpha=0.45, vmin=0, vmax=1, origin="upper",
                      aspect=sy / sx)
            ax.contour(ventricles[axial], levels=[0.5], colors="white", linewidths=0.6)
            ax.set_title(f"{title}: {name}" + ("" if np.any(heat > 0) else " (empty)"), fontsize=7)
            ax.axis("off")
    paths.append(_save(fig, f"held-out {record.subject}; white outline: ventricles", out / "brain_attention.png"))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cohort", type=Path)
    parser.add_argument("--report", type=Path, help="an evaluation report.html to take the Grad-CAM picture from")
    parser.add_argument("--brain-run", type=Path, help="a run trained on a synth-brain cohort")
    parser.add_argument("--layer", default="auto", help="Grad-CAM layer of the brain attention maps (e.g. conv2 at 64³)")
    parser.add_argument("--out", type=Path, default=Path("Resources/Screenshots"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.brain_run:
        print(*brain_figures(args.brain_run, args.out, layer=args.layer), sep="\n")
    if args.cohort:
        print(phantom_montage(args.cohort, args.out))
    if args.report:
        print(report_picture(args.report, args.out))


if __name__ == "__main__":
    main()
