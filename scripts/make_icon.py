"""Draw the AttriVAE icon (128×128 PNG): a shell cross-section with an attribute heatmap.

A rounded dark tile holds an axial slice through a hollow ellipsoidal shell (the synthetic
phantom the engine trains on) in grey; an Inferno Grad-CAM-style heat blob lights up part of
the wall, and a short slider under it stands for a latent traversal. Rendered with numpy at
4× and box-filtered down for anti-aliasing, so the output is deterministic.

    python scripts/make_icon.py            # writes both icon locations
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SIZE = 128
SUPER = 4
ROOT = Path(__file__).resolve().parents[1]
TARGETS = (ROOT / "Resources/Icons/AttriVAE.png", ROOT / "AttriVAE/Resources/Icons/AttriVAE.png")


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def render(size: int = SIZE) -> np.ndarray:
    """RGBA float image (size, size, 4) in [0, 1]."""
    from matplotlib import colormaps

    n = size * SUPER
    y, x = (np.mgrid[0:n, 0:n] + 0.5) / n  # [0, 1], y down
    rgba = np.zeros((n, n, 4))

    # Rounded-square tile with a subtle vertical gradient.
    margin, radius = 0.03, 0.16
    qx = np.maximum(np.abs(x - 0.5) - (0.5 - margin - radius), 0)
    qy = np.maximum(np.abs(y - 0.5) - (0.5 - margin - radius), 0)
    tile = np.hypot(qx, qy) <= radius
    base = np.stack([0.07 + 0.05 * (1 - y), 0.08 + 0.06 * (1 - y), 0.14 + 0.10 * (1 - y)], axis=-1)
    rgba[tile, :3] = base[tile]
    rgba[tile, 3] = 1.0

    # Shell cross-section: ring between two ellipses, slightly tilted.
    cx, cy, angle = 0.5, 0.44, np.radians(-18)
    u = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
    v = -(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)
    outer = np.hypot(u / 0.34, v / 0.27)
    inner = np.hypot(u / 0.25, v / 0.18)
    wall = (outer <= 1.0) & (inner >= 1.0)
    shade = 0.55 + 0.35 * _smoothstep(1.0, 0.0, np.abs(outer - 1.0) * 6)
    grey = np.stack([shade * 0.86, shade * 0.90, shade * 0.95], axis=-1)
    rgba[wall & tile, :3] = grey[wall & tile]
    cavity = (inner < 1.0) & tile
    rgba[cavity, :3] = np.array([0.03, 0.03, 0.06])

    # Attribute heatmap: a Gaussian blob on the upper-right wall, Inferno, thresholded.
    heat = np.exp(-(((x - 0.73) / 0.13) ** 2 + ((y - 0.27) / 0.11) ** 2))
    heat += 0.55 * np.exp(-(((x - 0.30) / 0.08) ** 2 + ((y - 0.62) / 0.07) ** 2))
    heat = np.clip(heat, 0, 1)
    show = wall & tile & (heat > 0.2)
    colours = colormaps["inferno"](0.35 + 0.65 * heat)[..., :3]
    alpha = (_smoothstep(0.2, 0.45, heat) * 0.95)[..., None]
    rgba[show, :3] = (1 - alpha[show]) * rgba[show, :3] + alpha[show] * colours[show]

    # Latent slider: track and knob.
    track = (np.abs(y - 0.84) < 0.018) & (x > 0.18) & (x < 0.82) & tile
    rgba[track, :3] = np.array([0.45, 0.48, 0.58])
    filled = track & (x < 0.62)
    rgba[filled, :3] = colormaps["inferno"](0.78)[:3]
    knob = np.hypot(x - 0.62, y - 0.84) < 0.05
    rgba[knob, :3] = np.array([0.98, 0.95, 0.85])
    rgba[knob, 3] = 1.0

    # Box-filter down to the target size (premultiplied alpha).
    rgba[..., :3] *= rgba[..., 3:4]
    small = rgba.reshape(size, SUPER, size, SUPER, 4).mean(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        small[..., :3] = np.where(small[..., 3:4] > 0, small[..., :3] / small[..., 3:4], 0)
    return np.clip(small, 0, 1)


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, nargs="*", default=list(TARGETS), help="PNG files to write")
    args = parser.parse_args()
    image = render()
    for path in args.out:
        path.parent.mkdir(parents=True, exist_ok=True)
        plt.imsave(path, image)
        print(f"wrote {path} ({image.shape[1]}×{image.shape[0]})")


if __name__ == "__main__":
    main()
