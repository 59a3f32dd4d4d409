"""The evaluation report: ``metrics.json`` and a self-contained ``report.html``.

The HTML file embeds every picture as a PNG data URI and uses no script, stylesheet or font
from the network, so it opens offline and can be mailed as one file. Sections: the headline
table next to the published Attri-VAE numbers (SPEC §2), latent scatter plots coloured by
class, traversal strips, Grad-CAM overlays, reconstructions, and training curves.
"""

from __future__ import annotations

import base64
import csv
import html
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from AttriVAELib.core import atomic

__all__ = ["PUBLISHED", "write_evaluation", "render_report", "metrics_table_rows"]

#: Published Attri-VAE / β-VAE / AR-VAE results (Cetin et al. 2023; EMIDEC cardiac MRI, not our cohort).
PUBLISHED: dict[str, tuple[float | None, float | None, float | None]] = {
    "interpretability": (0.91, 0.06, 0.90),
    "mig": (0.60, 0.02, 0.51),
    "sap": (0.63, 0.05, 0.55),
    "scc": (0.97, 0.46, 0.96),
    "modularity": (0.98, 0.97, 0.98),
    "accuracy": (0.93, None, None),
    "auc": (0.94, None, None),
}

#: Headline keys, their labels and the target each should meet (None: no target).
HEADLINES: list[tuple[str, str, float | None]] = [
    ("interpretability", "Interpretability (AR-VAE, kNN MI → R²)", 0.9),
    ("mig", "MIG (kNN estimator)", 0.5),
    ("mig_binned", "MIG (20-bin estimator)", None),
    ("sap", "SAP", 0.5),
    ("scc", "SCC (Spearman)", 0.95),
    ("modularity", "Modularity (20-bin MI; the paper used kNN MI)", None),
    ("dci_disentanglement", "DCI disentanglement", None),
    ("dci_completeness", "DCI completeness", None),
    ("dci_informativeness", "DCI informativeness", None),
    ("auc", "AUC", 0.95),
    ("accuracy", "Accuracy", None),
    ("fidelity_rho_min", "Traversal fidelity ρ (worst dim)", 0.9),
    ("lesion_fidelity_rho", "Lesion traversal of subjects without a lesion: drawn lesion volume ρ", 0.9),
    ("lesion_gain", "Lesion traversal of subjects without a lesion: gain", 0.5),
    ("lesion_traversal_judge", "Lesion traversal of subjects without a lesion: ends judged as the two classes", 0.9),
    ("lesion_fidelity_rho_with_lesion", "Lesion traversal of subjects with a lesion: drawn lesion volume ρ", 0.9),
    ("lesion_gain_with_lesion", "Lesion traversal of subjects with a lesion: gain", 0.5),
    ("auc_reencoded", "AUC of re-encoded reconstructions", 0.95),
    ("cf_valid_judge_min", "Counterfactuals valid for the judge (worst direction)", 0.9),
    ("cf_lesion_mass_ratio", "Counterfactual difference in lesion ÷ uniform", 5.0),
    ("fidelity_leakage_max", "Traversal leakage |ρ| (worst dim)", None),
    ("ssim", "Reconstruction SSIM", None),
    ("dice", "Dice (segmented reconstruction vs mask)", None),
]


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _members(shares: list[float] | None) -> str:
    """The range of the judge members' shares, e.g. ``0.86–0.97`` (– without members)."""
    return "–" if not shares else f"{_fmt(min(shares))}–{_fmt(max(shares))}"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if not np.isfinite(value) else f"{value:.{digits}f}"
    return html.escape(str(value))


def metrics_table_rows(headline: Mapping[str, float]) -> list[tuple[str, str, str, str]]:
    """(label, ours, published Attri-VAE, target) rows for the keys present in ``headline``."""
    rows = []
    for key, label, target in HEADLINES:
        if key not in headline:
            continue
        published = PUBLISHED.get(key, (None,))[0]
        if key == "fidelity_leakage_max":
            target_text = "≤ 0.3"
        elif key == "cf_lesion_mass_ratio":
            target_text = "≥ 5"
        else:
            target_text = "–" if target is None else f"≥ {target:g}"
        rows.append((label, _fmt(headline[key]), _fmt(published, 2), target_text))
    return rows


# --------------------------------------------------------------------------- figures
def _scatter_png(mu: np.ndarray, attributes: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> bytes:
    from AttriVAELib.explain.montage import figure_png, new_figure

    k = len(names)
    fig = new_figure(3.2 * k, 3.0)
    axes = fig.subplots(1, k, squeeze=False)[0]
    for j, name in enumerate(names):
        ax = axes[j]
        for cls, colour in ((0, "#1f77b4"), (1, "#d62728"), (-1, "#7f7f7f")):
            sel = labels == cls if cls >= 0 else labels < 0
            if (sel.any() and cls != 1) or (cls == 1 and sel.any()):
                ax.scatter(mu[sel, j], attributes[sel, j], s=8, c=colour, alpha=0.7,
                           label={0: "class 0", 1: "class 1", -1: "unlabelled"}[cls])
        ax.set_xlabel(f"μ[{j}]", fontsize=8)
        ax.set_ylabel(name, fontsize=8)
        ax.tick_params(labelsize=7)
    if (labels >= 0).any():
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    return figure_png(fig)


def _curves_png(metrics_csv: Path) -> bytes | None:
    from AttriVAELib.explain.montage import figure_png, new_figure

    if not metrics_csv.exists():
        return None
    with open(metrics_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return None

    def column(name: str) -> np.ndarray | None:
        if name not in rows[0]:
            return None
        return np.array([float(r[name]) if r.get(name) not in (None, "") else np.nan for r in rows])

    epoch = column("epoch")
    fig = new_figure(9.0, 3.0)
    a1, a2 = fig.subplots(1, 2)
    for name in ("train_total", "val_total"):
        col = column(name)
        if col is not None:
            a1.plot(epoch, col, label=name)
    a1.set_yscale("log")
    a1.set_xlabel("epoch")
    a1.legend(fontsize=8)
    for name in ("val_auc", "val_spearman_min"):
        col = column(name)
        if col is not None:
            a2.plot(epoch, col, label=name)
    a2.set_ylim(0, 1)
    a2.set_xlabel("epoch")
    a2.legend(fontsize=8)
    fig.tight_layout()
    return figure_png(fig)


def _reconstruction_png(pairs: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> bytes:
    from AttriVAELib.explain.montage import figure_png, new_figure

    fig = new_figure(2.4 * 2 * len(pairs), 2.6)
    axes = fig.subplots(1, 2 * len(pairs), squeeze=False)[0]
    for i, (name, image, rec) in enumerate(pairs):
        mid = image.shape[0] // 2
        for j, (arr, what) in enumerate(((image, "input"), (rec, "reconstruction"))):
            ax = axes[2 * i + j]
            ax.imshow(arr[mid], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"{name}\n{what}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return figure_png(fig)


# --------------------------------------------------------------------------- the report
def _figures(run: Path, data_manifest: str, result: Mapping[str, Any], device: str) -> list[tuple[str, str, bytes]]:
    """(section title, caption, PNG) of every picture of the report."""
    from AttriVAELib.data.manifest import load_manifest, load_split
    from AttriVAELib.explain.explain import explain_encoding
    from AttriVAELib.explain.montage import montage_png, strip_png
    from AttriVAELib.inference.model import AttriVAEModel

    model = AttriVAEModel.load(run, device=device)
    manifest = load_manifest(data_manifest)
    split = result.get("split", "test")
    records = manifest.records if split == "all" else manifest.subset(load_split(manifest, create=False)[split])
    names = model.attribute_names
    encodings = model.encode_batch([r.image for r in records],
                                   [r.mask for r in records] if model.spec.needs_mask else None)
    mu = np.stack([e.mu for e in encodings])
    figures: list[tuple[str, str, bytes]] = []
    if names:
        attrs = manifest.attribute_matrix(records)[:, [manifest.attribute_names.index(n) for n in names]]
        figures.append(("Latent space", f"Each regularized dim μ[k] against its attribute on the {split} split "
                        f"(n = {len(records)}), coloured by class.",
                        _scatter_png(mu, attrs, manifest.labels(records), names)))
        healthy = next((i for i, r in enumerate(records) if r.label in (None, "0")), 0)
        enc = encodings[healthy]
        for k, name in enumerate(names):
            lo, hi = np.percentile(mu[:, k], [5, 95])
            values = np.linspace(lo, hi, 7)
            frames = model.traverse(enc, k, values)
            labels = [f"{v:+.2f}" for v in values]
            estimates = model.predict_attributes(_with_dim(enc.mu, k, values))
            if estimates is not None:
                unit = model.attribute_units[k]
                est = estimates[:, k]
                labels = [f"{e:.3g} {unit}" for e in est]
            figures.append(("Traversals", f"{name}: μ[{k}] swept over its 5th–95th percentile on subject "
                            f"{records[healthy].subject}, other dims fixed (model grid).",
                            strip_png(list(frames), labels, spacing=(enc.mapping.spacing_mm,) * 3, title=name)))
    lesion_idx = next((i for i, r in enumerate(records) if r.label not in (None, "0")), None)
    if lesion_idx is not None:
        enc = encodings[lesion_idx]
        ex = explain_encoding(model, enc, ig_steps=8)
        rows = [(n, m) for n, m in ex.attribute_maps.items()]
        if ex.classifier_map is not None:
            rows.append(("classifier", ex.classifier_map))
        if rows:
            figures.append(("Grad-CAM", f"Attribute-wise and classifier Grad-CAM of subject "
                            f"{records[lesion_idx].subject} (label {records[lesion_idx].label}), slices through each "
                            "map's peak.", montage_png(enc.image, rows, spacing=(enc.mapping.spacing_mm,) * 3)))
        if ex.counterfactual is not None:
            figures.append(("Counterfactual", "Counterfactual difference (toward the other class) minus the "
                            "reconstruction; red brighter, blue darker.",
                            montage_png(enc.image, [("difference", ex.counterfactual.difference)],
                                        spacing=(enc.mapping.spacing_mm,) * 3, signed=True)))
    picks = list(range(min(3, len(encodings))))
    figures.append(("Reconstructions", "Middle axial slice of the model input and its reconstruction.",
                    _reconstruction_png([(records[i].subject, encodings[i].image, model.reconstruct(encodings[i]))
                                         for i in picks])))
    curves = _curves_png(run / "metrics.csv")
    if curves is not None:
        figures.append(("Training curves", "Losses (log scale) and validation AUC / worst Spearman ρ per epoch.",
                        curves))
    return figures


def _with_dim(mu: np.ndarray, k: int, values: np.ndarray) -> np.ndarray:
    z = np.tile(mu, (len(values), 1))
    z[:, k] = values
    return z


def _table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An HTML table under an ``<h3>`` title; cells are escaped."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<h3>{html.escape(title)}</h3><table><tr>{head}</tr>{body}</table>"


def _layer(result: Mapping[str, Any]) -> str:
    """The Grad-CAM layer the maps came from (``encoder.conv4`` → ``conv4``; older results: auto)."""
    return str(result.get("gradcam_layer") or "auto").removeprefix("encoder.")


def _per_class(shares: Mapping[str, float] | None) -> str:
    """``{"0": 0.95, "1": 0.9}`` → ``"0: 0.950, 1: 0.900"`` (– when absent)."""
    return "–" if not shares else ", ".join(f"{name}: {_fmt(share)}" for name, share in shares.items())


def _detail_tables(result: Mapping[str, Any]) -> str:
    parts = []
    fid = result.get("traversal_fidelity") or {}
    if fid:
        parts.append("<h3>Traversal fidelity</h3><p>All traversed subjects' steps pooled; within one subject any "
                     "monotone side effect, however small, has |ρ| = 1 (last two columns).</p><table><tr>"
                     "<th>traversed attribute</th><th>ρ measured vs latent</th><th>largest leak |ρ|</th>"
                     "<th>ρ within a subject (median, worst)</th><th>largest leak within a subject (median |ρ|)</th>"
                     "<th>change across the sweep (median; ÷ the attribute's 5–95 % spread)</th>"
                     "<th>subjects</th></tr>")
        for name, v in fid.items():
            within = v.get("leakage_within") or {}
            worst_within = max(within.items(), key=lambda kv: kv[1]) if within else ("–", None)
            parts.append(f"<tr><td>{html.escape(name)}</td><td>{_fmt(v['rho'])}</td>"
                         f"<td>{html.escape(str(v['leakage_max_attribute']))} {_fmt(v['leakage_max'])}</td>"
                         f"<td>{_fmt(v['rho_within_median'])}, {_fmt(v['rho_within_min'])}</td>"
                         f"<td>{html.escape(str(worst_within[0]))} {_fmt(worst_within[1])}</td>"
                         f"<td>{_fmt(v.get('change_median'))} ({_fmt(v.get('gain'))})</td>"
                         f"<td>{v['subjects']}</td></tr>")
        parts.append("</table>")
    decoded = result.get("decoded_attributes") or {}
    if decoded:
        parts.append(_table("Attributes re-measured on the input and on its reconstruction (subjects without a "
                            "lesion; Spearman ρ vs the true values)",
                            ("attribute", "ρ input", "ρ reconstruction", "measurable inputs",
                             "measurable reconstructions", "n"),
                            [(name, _fmt(v["rho_input"]), _fmt(v["rho_reconstruction"]), v["subjects_input"],
                              v["subjects_reconstruction"], v["subjects"]) for name, v in decoded.items()]))
    faith = result.get("faithfulness") or {}
    rc = faith.get("reconstruction_class") or {}
    if rc:
        parts.append(_table("Class of the reconstructions (the model's classifier on the re-encoded reconstruction; "
                            "the independent judge on the images)",
                            ("AUC inputs", "AUC re-encoded", "agreement", "judge AUC inputs",
                             "judge AUC reconstructions", "judged as their class: inputs",
                             "judged as their class: reconstructions", "n"),
                            [(_fmt(rc.get("auc_input")), _fmt(rc.get("auc_reencoded")), _fmt(rc.get("agreement")),
                              _fmt(rc.get("judge_auc_input")), _fmt(rc.get("judge_auc_reconstruction")),
                              _per_class(rc.get("judge_recall_input")),
                              _per_class(rc.get("judge_recall_reconstruction")), rc.get("subjects"))]))
    cf = faith.get("counterfactual") or {}
    if cf:
        parts.append(_table("Decoded counterfactuals (share valid; medians)",
                            ("direction", "method", "judge", "judge's members, each alone",
                             "judge on reconstructions of the target class",
                             "own encoder", "lesion measure",
                             "mass in lesion ÷ uniform", "added intensity in one lesion-sized ball",
                             "L1 change outside the lesion", "n"),
                            [(d, v.get("method", "–"), _fmt(v.get("valid_judge")), _members(v.get("valid_judge_members")),
                              _fmt(v.get("judge_recall_reconstruction_target")), _fmt(v.get("valid_encoder")),
                              _fmt(v.get("valid_measure")),
                              _fmt(v.get("lesion_mass_ratio_median"), 2), _fmt(v.get("drawn_compactness_median")),
                              _fmt(v.get("proximity_l1_median")), v["subjects"]) for d, v in cf.items()]))
    loc = result.get("localization") or {}
    if loc:
        parts.append(_table(f"Localization (subjects with a lesion; Grad-CAM layer {_layer(result)})",
                            ("map", "mass in dilated lesion ÷ uniform (median)", "subjects above uniform",
                             "pointing game", "NCC", "n"),
                            [(name, _fmt(v["mass_ratio_median"], 2), f"{v['share_above_uniform']:.0%}",
                              f"{v['pointing_game']:.0%}", _fmt(v["ncc_mean"]), v["subjects"])
                             for name, v in loc.items()]))
    att = result.get("attribute_attention") or {}
    if att:
        parts.append(_table(f"Attribute attention (where each attribute lives; Grad-CAM layer {_layer(result)})",
                            ("attribute", "map", "mass in region ÷ uniform (median)", "÷ uniform within the brain",
                             "subjects above uniform", "empty maps", "n"),
                            [(name, variant, _fmt(v["ratio_vs_uniform_median"], 2),
                              _fmt(v["ratio_vs_uniform_in_foreground_median"], 2), f"{v['share_above_uniform']:.0%}",
                              v["empty_maps"], v["subjects"])
                             for name, variants in att.items() for variant, v in variants.items()]))
    cls = result.get("classification")
    if cls:
        parts.append("<h3>Classification</h3><table><tr><th>metric</th><th>value</th><th>95% bootstrap CI</th></tr>")
        for key in ("accuracy", "balanced_accuracy", "auc"):
            lo, hi = cls[key]["ci95"]
            parts.append(f"<tr><td>{key}</td><td>{_fmt(cls[key]['value'])}</td><td>{_fmt(lo)} – {_fmt(hi)}</td></tr>")
        parts.append("</table>")
    interp = (result.get("disentanglement") or {}).get("interpretability") or {}
    per = interp.get("per_attribute")
    if per:
        parts.append("<h3>Interpretability per attribute</h3><table><tr><th>attribute</th><th>R²</th>"
                     "<th>most informative dim</th><th>intended dim?</th></tr>")
        best, ok = interp.get("best_dims") or {}, interp.get("intended_ok") or {}
        for name, r2 in per.items():
            parts.append(f"<tr><td>{html.escape(name)}</td><td>{_fmt(r2)}</td><td>{best.get(name, '–')}</td>"
                         f"<td>{'yes' if ok.get(name) else 'no'}</td></tr>")
        parts.append("</table>")
    return "\n".join(parts)


_STYLE = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
color:#222;padding:0 1em}table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:left;font-size:.92em}th{background:#f3f3f3}img{max-width:100%;border:1px solid #ddd}figure{margin:1em 0}
figcaption{font-size:.85em;color:#555}.fail{color:#b00}.note{font-size:.85em;color:#555}"""


def render_report(result: Mapping[str, Any], headline: Mapping[str, float],
                  figures: Sequence[tuple[str, str, bytes]]) -> str:
    """The self-contained HTML page."""
    rows = []
    for label, ours, published, target in metrics_table_rows(headline):
        rows.append(f"<tr><td>{html.escape(label)}</td><td>{ours}</td><td>{published}</td><td>{target}</td></tr>")
    body = [f"<h1>Attri-VAE evaluation</h1><p class='note'>model {html.escape(str(result['run']))}<br>data "
            f"{html.escape(str(result['data']))} — {result['split']} split, n = {result['n']}, cohort kind "
            f"{html.escape(str(result['cohort_kind']))}, preset {html.escape(str(result.get('preset')))}</p>",
            "<h2>Summary</h2><table><tr><th>metric</th><th>this model</th><th>published Attri-VAE*</th>"
            "<th>target</th></tr>" + "".join(rows) + "</table>",
            "<p class='note'>* Cetin et al. 2023 on EMIDEC cardiac MRI (radiomics/shape attributes) — a different "
            "dataset; shown for scale, not as a like-for-like comparison. Disentanglement metrics are computed on μ "
            "of the held-out subjects.</p>",
            _detail_tables(result)]
    section = None
    for title, caption, png in figures:
        if title != section:
            body.append(f"<h2>{html.escape(title)}</h2>")
            section = title
        body.append(f"<figure><img src='{_png_uri(png)}' alt='{html.escape(title)}'>"
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Attri-VAE evaluation</title>"
            f"<style>{_STYLE}</style></head><body>" + "\n".join(body) + "</body></html>")


def write_evaluation(run: str | os.PathLike, out: str | os.PathLike, result: Mapping[str, Any],
                     device: str = "auto", figures: bool = True,
                     log: Callable[[str], None] = print) -> dict[str, Path]:
    """Write ``OUT/metrics.json`` and ``OUT/report.html`` (atomically); returns their paths."""
    from AttriVAELib.evaluate.evaluation import headline as headline_of

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic.remove_stale(out)  # temporaries of an evaluation that was killed
    head = headline_of(result)
    payload = {"headline": head, **result}
    atomic.write_json(out / "metrics.json", payload)
    pictures = _figures(Path(run), result["data"], result, device) if figures else []
    atomic.write_text(out / "report.html", render_report(result, head, pictures))
    log(f"wrote {out / 'metrics.json'} and {out / 'report.html'}")
    return {"metrics": out / "metrics.json", "report": out / "report.html"}
