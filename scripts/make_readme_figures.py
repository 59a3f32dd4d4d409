"""Render the README's pictures from real outputs (not part of the test suite).

    python scripts/make_readme_figures.py --cohort demo/cohort [--report demo/report/report.html] \
        [--out Resources/Screenshots]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from AttriVAELib.io import read_image  # noqa: E402
from AttriVAELib.manifest import load_manifest  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cohort", type=Path, required=True)
    parser.add_argument("--report", type=Path, help="an evaluation report.html to take the Grad-CAM picture from")
    parser.add_argument("--out", type=Path, default=Path("Resources/Screenshots"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(phantom_montage(args.cohort, args.out))
    if args.report:
        print(report_picture(args.report, args.out))


if __name__ == "__main__":
    main()
