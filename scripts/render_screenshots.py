"""Render the extension's screenshots from a real MRML scene (slicer-core wheel, no Slicer GUI).

Builds a ``slicer.vtkMRMLScene``, loads a phantom of a synthetic cohort as a volume node, and
runs the module's logic (``AttriVAELib.slicer.AttriVAESession``): encode, attention
(Grad-CAM) and traversals. It then draws what the slice views would show, from the nodes
themselves: each view reslices the node arrays through their IJKToRAS matrices with Slicer's
view orientations (axial/Red, sagittal/Yellow, coronal/Green), and heatmaps are coloured with
their display node's colour table, window, threshold and opacity.

    python scripts/render_screenshots.py --run RUN --cohort COHORT [--subject sub-0123] [--layer auto]
                                         [--out Resources/Screenshots]

Writes ``Screenshot01.png`` (attention overlays), ``Screenshot02.png`` (traversal strips) and
``counterfactuals.png`` (counterfactuals of a held-out subject with a lesion and of one without).
The committed screenshots were made with the run of ``bash scripts/demo.sh --train-seed 2`` that
the shipped demo model comes from (``--run demo/run --cohort demo/cohort``), with ``--layer conv2`` (the 8³
feature map; at 32³ the default ``auto`` picks conv3, whose 4³ maps are coarser). Same inputs
give identical PNGs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from AttriVAELib.cohorts.phantom.loss import LESION_ATTRIBUTE  # noqa: E402

# Slicer's default slice views: (name, header colour, screen-x direction, screen-up direction) in RAS.
VIEWS = (
    ("Axial", "#f34a33", (-1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    ("Sagittal", "#edd54c", (0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
    ("Coronal", "#6ebe49", (-1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
)

#: The traversal strip: one row per attribute, in the coronal view (volume at a fixed axial
#: diameter changes the length along S, which an axial slice would not show), cropped to the shell.
#: The lesion row's coronal slice passes through the voxel its sweep brightens most.
TRAVERSED = ("volume_ml", "max_axial_diameter_mm", "wall_thickness_mm", LESION_ATTRIBUTE)
STRIP_VIEW = VIEWS[2]
STRIP_HALF_WIDTH = 36.0


# --------------------------------------------------------------------------------------
# Reading nodes
# --------------------------------------------------------------------------------------


def ijk_to_ras(node) -> np.ndarray:
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def node_array(node) -> np.ndarray:
    import slicer

    return np.asarray(slicer.util.arrayFromVolume(node), dtype=np.float32)


def reslice(node, centre_ras: np.ndarray, x_dir, y_dir, half_width: float, pixel: float) -> np.ndarray:
    """A 2D slice (rows top to bottom) through ``centre_ras`` as a slice view shows it (linear, NaN outside)."""
    from scipy.ndimage import map_coordinates

    array = node_array(node)
    n = int(round(2 * half_width / pixel)) + 1
    u = np.linspace(-half_width, half_width, n)
    v = np.linspace(half_width, -half_width, n)  # top row first
    uu, vv = np.meshgrid(u, v)
    points = centre_ras[None, None, :] + uu[..., None] * np.asarray(x_dir) + vv[..., None] * np.asarray(y_dir)
    ras_to_ijk = np.linalg.inv(ijk_to_ras(node))
    ijk = points @ ras_to_ijk[:3, :3].T + ras_to_ijk[:3, 3]
    coords = np.stack([ijk[..., 2], ijk[..., 1], ijk[..., 0]])  # array order (k, j, i)
    return map_coordinates(array, coords, order=1, mode="constant", cval=np.nan)


def colour_table(display) -> np.ndarray:
    """(n, 3) RGB of a display node's colour node."""
    table = display.GetColorNode()
    rgba = [0.0, 0.0, 0.0, 0.0]
    colours = []
    for i in range(table.GetNumberOfColors()):
        table.GetColor(i, rgba)
        colours.append(rgba[:3])
    return np.asarray(colours, dtype=np.float64)


def overlay_rgba(values: np.ndarray, display) -> np.ndarray:
    """Foreground layer as Slicer draws it: colour table over the window, threshold, node opacity."""
    table = colour_table(display)
    lo, hi = display.GetWindowLevelMin(), display.GetWindowLevelMax()
    finite = np.isfinite(values)
    v = np.where(finite, values, lo)
    index = np.clip(np.rint((v - lo) / (hi - lo) * (len(table) - 1)), 0, len(table) - 1).astype(int)
    rgba = np.zeros(values.shape + (4,))
    rgba[..., :3] = table[index]
    visible = finite
    if display.GetApplyThreshold():
        visible = visible & (v >= display.GetLowerThreshold()) & (v <= display.GetUpperThreshold())
    rgba[..., 3] = np.where(visible, display.GetOpacity(), 0.0)
    return rgba


def grey(values: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    lo, hi = window
    g = np.clip((np.nan_to_num(values, nan=lo) - lo) / (hi - lo), 0, 1)
    return np.repeat(g[..., None], 3, axis=-1)


def composite(background: np.ndarray, window, foreground: np.ndarray | None, display) -> np.ndarray:
    rgb = grey(background, window)
    if foreground is not None:
        layer = overlay_rgba(foreground, display)
        alpha = layer[..., 3:4]
        rgb = rgb * (1 - alpha) + layer[..., :3] * alpha
    return rgb


# --------------------------------------------------------------------------------------
# Scene and logic
# --------------------------------------------------------------------------------------


def pick_subject(cohort: Path, subject: str | None) -> dict:
    import csv

    rows = list(csv.DictReader((cohort / "manifest.csv").open()))
    by_id = {r["subject"]: r for r in rows}
    if subject:
        return by_id[subject]
    split = json.loads((cohort / "split.json").read_text())["subjects"]["test"]
    # a held-out subject with a sizeable lesion, so the lesion attribute has something to show
    candidates = [by_id[s] for s in split if by_id[s]["label"] == "1"]
    candidates.sort(key=lambda r: -float(r["lesion_volume_ml"]))
    return candidates[len(candidates) // 4]


def centroid_ras(node, mask: np.ndarray) -> np.ndarray:
    k, j, i = np.nonzero(mask)
    ijk = np.array([i.mean(), j.mean(), k.mean(), 1.0])
    return (ijk_to_ras(node) @ ijk)[:3]


def brightest_change(first, last, centre: np.ndarray) -> np.ndarray:
    """``centre`` moved along the coronal view's normal (A) to the voxel that brightens most from ``first`` to ``last``."""
    change = node_array(last) - node_array(first)
    k, j, i = np.unravel_index(int(np.argmax(change)), change.shape)
    peak = (ijk_to_ras(last) @ np.array([i, j, k, 1.0]))[:3]
    return np.array([centre[0], peak[1], centre[2]])


def half_extent(node) -> float:
    """Half of the largest physical side of a volume (mm)."""
    dims = np.asarray(node.GetImageData().GetDimensions(), dtype=np.float64)
    return float(0.5 * np.max((dims - 1) * np.asarray(node.GetSpacing())))


def run_logic(run: Path, cohort: Path, subject: str | None, steps: int, layer: str = "auto"):
    import slicer

    from AttriVAELib.slicer import AttriVAESession, mrml

    scene = slicer.vtkMRMLScene()
    row = pick_subject(cohort, subject)
    volume = mrml.load_volume_node(scene, cohort / row["image"], name=row["subject"])
    wall = mrml.load_volume_node(scene, cohort / row["mask"], name="wall", labelmap=True)
    session = AttriVAESession(scene)
    print(session.load_model(run, "cpu"))
    summary = session.encode(volume)
    maps = session.attention(layer=layer, threshold=0.25, opacity=0.6)
    centre = centroid_ras(volume, node_array(wall) > 0)  # the shell's centre
    strips = {}
    for name in TRAVERSED:
        k = session.model.attribute_names.index(name)
        lo, hi = session.model.calibration.value_range(k)
        values = np.linspace(lo + 0.05 * (hi - lo), hi - 0.05 * (hi - lo), steps)
        sequence = session.traversal(name, values[0], values[-1], steps, units="attribute")
        items = [sequence.GetNthDataNode(i) for i in range(sequence.GetNumberOfDataNodes())]
        # estimated attribute of each decoded frame, from its latent code
        z = session.model.traversal_latents(session.latent, k, values, units="attribute")
        estimates = session.model.predict_attributes(z)[:, k]
        through = brightest_change(items[0], items[-1], centre) if name == LESION_ATTRIBUTE else centre
        strips[name] = [(float(v), float(e), reslice(item, through, *STRIP_VIEW[2:], half_width=STRIP_HALF_WIDTH,
                                                     pixel=0.4))
                        for v, e, item in zip(values, estimates, items)]
    return scene, row, volume, summary, maps, centre, strips, session


# --------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------


def pretty(name: str, unit: str = "") -> str:
    text = name.replace("_ml", "").replace("_mm", "").replace("_", " ")
    return f"{text} ({unit})" if unit else text


def input_window(volume) -> tuple[float, float]:
    values = node_array(volume)
    return tuple(float(v) for v in np.percentile(values, [0.5, 99.8]))


def screenshot_overlays(path: Path, row, volume, summary, maps, centre, session, layer: str = "auto") -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    half = half_extent(volume)
    extent = (-half, half, -half, half)
    background = {view: reslice(volume, centre, x, y, half, 0.5) for view, _, x, y in VIEWS}
    window = input_window(volume)
    units = dict(zip(session.model.attribute_names, session.model.attribute_units))
    shown = [("volume_ml", "volume"), ("max_axial_diameter_mm", "max. axial diameter"),
             (LESION_ATTRIBUTE, "lesion volume")]
    fig, axes = plt.subplots(len(shown), 3, figsize=(10.5, 3.6 * len(shown) + 0.7), facecolor="black")
    for r, (name, title) in enumerate(shown):
        node = maps[name]
        display = node.GetDisplayNode()
        for c, (view, colour, x, y) in enumerate(VIEWS):
            ax = axes[r, c]
            fg = reslice(node, centre, x, y, half, 0.5)
            ax.imshow(composite(background[view], window, fg, display), extent=extent)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_color(colour)
                spine.set_linewidth(3)
            ax.set_title(f"{view}", color=colour, fontsize=10, loc="left", pad=3)
            if c == 0:
                if name == "classifier":
                    label = title
                else:
                    est = next(a for a in summary["attributes"] if a["name"] == name)["estimate"]
                    truth = float(row[name])
                    label = f"{title}: est. {est:.1f} {units[name]} (true {truth:.1f})"
                ax.set_ylabel(label, color="white", fontsize=10)
    from AttriVAELib.explain.gradcam import resolve_layer

    used = resolve_layer(session.model.network, layer)[0].split(".")[-1]
    used = f"layer {used}, the default" if layer == "auto" else f"layer {used}"
    probs = summary["probabilities"]
    p1 = probs.get("1", max(probs.values()))
    fig.suptitle(f"AttriVAE attribute-wise Grad-CAM ({used}, Inferno, threshold {display.GetLowerThreshold():.2f}, "
                 f"opacity {display.GetOpacity():.1f})\non {row['subject']} (held out), p(lesion) = {p1:.2f}",
                 color="white", fontsize=11)
    sm = plt.cm.ScalarMappable(cmap=matplotlib.colors.ListedColormap(colour_table(display)),
                               norm=matplotlib.colors.Normalize(0, 1))
    bar = fig.colorbar(sm, ax=axes, fraction=0.025, pad=0.02)
    bar.ax.tick_params(colors="white", labelsize=8)
    bar.outline.set_edgecolor("white")
    fig.savefig(path, dpi=100, facecolor="black")
    plt.close(fig)


def screenshot_traversal(path: Path, strips, session, volume) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    units = dict(zip(session.model.attribute_names, session.model.attribute_units))
    every = np.concatenate([s[np.isfinite(s)] for frames in strips.values() for _, _, s in frames])
    window = (float(every.min()), float(every.max()))
    half = STRIP_HALF_WIDTH
    extent = (-half, half, -half, half)
    names = list(strips)
    steps = len(strips[names[0]])
    fig, axes = plt.subplots(len(names), steps, figsize=(1.55 * steps + 1.2, 1.9 * len(names) + 0.6),
                             facecolor="black", squeeze=False)
    for r, name in enumerate(names):
        middle = strips[name][len(strips[name]) // 2][2]
        finite = middle[np.isfinite(middle)]
        level = 0.5 * (np.percentile(finite, 5) + np.percentile(finite, 99))  # outer edge of the shell
        for c, (value, _estimate, image) in enumerate(strips[name]):
            ax = axes[r, c]
            ax.imshow(grey(image, window), extent=extent)
            # the middle frame's outline, so that changes across the row are easy to see
            ax.contour(np.nan_to_num(middle, nan=0.0), levels=[level], colors="#39c6f4", linewidths=0.8,
                       linestyles="dashed", extent=(-half, half, half, -half))
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_color(STRIP_VIEW[1])
            ax.set_title(f"{value:.1f} {units[name]}", color="white", fontsize=9, pad=2)
            if c == 0:
                ax.set_ylabel(pretty(name), color="white", fontsize=10)
    fig.suptitle(f"Latent traversals (sequence 'AttriVAE traversal', {STRIP_VIEW[0].lower()} view): one regularized "
                 "dimension swept in attribute units, the others fixed; dashed: outline of the middle frame",
                 color="white", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=100, facecolor="black")
    plt.close(fig)


def counterfactual_rows(scene, session, cohort: Path, row) -> list[dict]:
    """For the shown subject and a held-out subject of the other class: input, reconstruction,
    counterfactual and its difference resliced (axial) through the lesion, or where the difference peaks."""
    import csv

    from AttriVAELib.slicer import mrml

    rows = list(csv.DictReader((cohort / "manifest.csv").open()))
    split = set(json.loads((cohort / "split.json").read_text())["subjects"]["test"])
    other = next(r for r in rows if r["subject"] in split and r["label"] != row["label"])
    out = []
    for subject in (row, other):
        volume = mrml.load_volume_node(scene, cohort / subject["image"], name=subject["subject"])
        session.encode(volume)
        session.counterfactual("other_class")
        nodes = {role: session.output_node(role) for role in ("reconstruction", "counterfactual", "difference")}
        difference = node_array(nodes["difference"])
        focus = np.abs(difference) >= 0.5 * np.abs(difference).max()
        if subject["label"] == "1":
            lesion = mrml.load_volume_node(scene, cohort / subject["lesion"], name="lesion", labelmap=True)
            focus = node_array(lesion) > 0
        wall = mrml.load_volume_node(scene, cohort / subject["mask"], name="wall", labelmap=True)
        centre = centroid_ras(volume, node_array(wall) > 0)  # the shell in the middle of the picture,
        centre[2] = centroid_ras(volume, focus)[2]  # on the axial slice through the lesion
        pictures = {"input": reslice(volume, centre, *VIEWS[0][2:], half_width=STRIP_HALF_WIDTH, pixel=0.4)}
        for role, node in nodes.items():
            pictures[role] = reslice(node, centre, *VIEWS[0][2:], half_width=STRIP_HALF_WIDTH, pixel=0.4)
        summary = session.last_counterfactual
        out.append({"subject": subject["subject"], "label": subject["label"], "pictures": pictures,
                    "p": summary["probabilities"], "p_cf": summary["probabilities_counterfactual"],
                    "shown": summary["read_back"].get("probabilities_image"),
                    "donor": (summary.get("exemplar") or {}).get("subject"),
                    "display": nodes["difference"].GetDisplayNode()})
    return out


def screenshot_counterfactuals(path: Path, rows: list[dict], volume) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    window = input_window(volume)
    half = STRIP_HALF_WIDTH
    extent = (-half, half, -half, half)
    titles = ("input", "reconstruction", "counterfactual", "counterfactual − reconstruction")
    fig, axes = plt.subplots(len(rows), 4, figsize=(10.0, 2.6 * len(rows) + 0.8), facecolor="black", squeeze=False)
    for r, row in enumerate(rows):
        pics = row["pictures"]
        difference = pics["difference"]
        strong = np.abs(np.nan_to_num(difference)) >= 0.15 * np.nanmax(np.abs(difference))
        images = (grey(pics["input"], window), grey(pics["reconstruction"], window),
                  grey(pics["counterfactual"], window),
                  composite(pics["input"], window, np.where(strong, difference, np.nan), row["display"]))
        for c, image in enumerate(images):
            ax = axes[r, c]
            ax.imshow(image, extent=extent)
            ax.set_xticks([])
            ax.set_yticks([])
            title = titles[c]
            if c == 0:
                title = f"{row['subject']} (class {row['label']}, p(1) {row['p'][1]:.2f})"
            if c == 2:
                shown = f"\nits image read back: {row['shown'][1]:.2f}" if row["shown"] else ""
                donor = f" (lesion of {row['donor']})" if row["donor"] else ""
                title = f"counterfactual{donor}: p(1) {row['p_cf'][1]:.2f}{shown}"
            ax.set_title(title, color="white", fontsize=8, pad=2)
    fig.suptitle("Counterfactuals (axial view through the lesion): the class-relevant dims moved to the other class\n"
                 "(towards a lesion: a donor's lesion) and decoded; differences above 15 % of the largest overlaid on the "
                 "input (red: brighter)",
                 color="white", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    fig.savefig(path, dpi=100, facecolor="black")
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="trained run folder (model.safetensors)")
    parser.add_argument("--cohort", type=Path, required=True, help="synthetic cohort (manifest.csv, split.json)")
    parser.add_argument("--subject", help="subject to show (default: a held-out subject with a lesion)")
    parser.add_argument("--steps", type=int, default=7, help="traversal steps")
    parser.add_argument("--layer", default="auto", help="Grad-CAM layer (auto, conv1 ... conv5)")
    parser.add_argument("--out", type=Path, default=ROOT / "Resources" / "Screenshots")
    args = parser.parse_args(argv)
    scene, row, volume, summary, maps, centre, strips, session = run_logic(args.run, args.cohort, args.subject,
                                                                           args.steps, args.layer)
    args.out.mkdir(parents=True, exist_ok=True)
    screenshot_overlays(args.out / "Screenshot01.png", row, volume, summary, maps, centre, session, args.layer)
    screenshot_traversal(args.out / "Screenshot02.png", strips, session, volume)
    screenshot_counterfactuals(args.out / "counterfactuals.png", counterfactual_rows(scene, session, args.cohort, row),
                               volume)
    print(f"subject {row['subject']}: {json.dumps(summary['probabilities'])}")
    print(f"wrote Screenshot01.png, Screenshot02.png and counterfactuals.png to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
