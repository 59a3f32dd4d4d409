"""``attrivae compare``: VAE, β-VAE, AR-VAE and Attri-VAE trained with one budget and seeds.

Every method uses the same network, optimizer, data and number of epochs (those of the
``base`` preset, ``fast_cpu`` by default); only the loss weights of its preset (β, γ, δ, α)
and whether it has a classifier differ, so the table compares objectives, not budgets. Each
(method, seed) is a run folder ``OUT/runs/<method>-seed<S>`` evaluated on the held-out split
(``metrics.json`` there); a rerun skips finished runs and resumes an interrupted one. The
table (mean ± sd over seeds) is written as ``comparison.md``, ``comparison.html`` and
``comparison.json``.
"""

from __future__ import annotations

import html
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from AttriVAELib.core import atomic
from AttriVAELib.core.errors import ConfigError

__all__ = ["METHODS", "compare", "method_config", "comparison_table"]

#: Methods compared, in table order, with their display names.
METHODS: dict[str, str] = {"vae": "VAE", "beta_vae": "β-VAE", "ar_vae": "AR-VAE", "attri_vae": "Attri-VAE"}

#: Columns of the table: (headline key, header).
COLUMNS: list[tuple[str, str]] = [
    ("interpretability", "Interpretability"),
    ("mig", "MIG (kNN)"),
    ("mig_binned", "MIG (binned)"),
    ("sap", "SAP"),
    ("scc", "SCC"),
    ("modularity", "Modularity"),
    ("dci_disentanglement", "DCI-D"),
    ("auc", "AUC"),
    ("fidelity_rho_min", "Fidelity ρ"),
    ("fidelity_leakage_max", "Leakage"),
    ("ssim", "SSIM"),
    ("auc_reencoded", "AUC re-encoded"),
    ("cf_valid_judge_min", "CF valid (judge)"),
    ("lesion_fidelity_rho", "Lesion traversal ρ"),
    ("lesion_gain", "Lesion gain"),
    ("lesion_gain_with_lesion", "Lesion gain (with lesion)"),
]


def method_config(method: str, seed: int, base: str = "fast_cpu", overrides: Mapping[str, Any] | None = None
                  ) -> dict[str, Any]:
    """The resolved config of ``method`` on the ``base`` preset's network and budget."""
    from AttriVAELib.train.config import deep_merge, resolve_config
    from AttriVAELib.train.presets import get_preset

    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    preset = get_preset(method)
    change: dict[str, Any] = {"loss": {k: v for k, v in preset["loss"].items()}, "train": {"seed": int(seed)}}
    if preset["model"].get("num_classes") == 0:
        change["model"] = {"num_classes": 0}
    return resolve_config(base, None, deep_merge(dict(overrides or {}), change))


def _run_one(data: Path, run: Path, config: dict[str, Any], evaluate_settings, log: Callable[[str], None]
             ) -> dict[str, Any]:
    from AttriVAELib.evaluate.evaluation import evaluate_run, headline
    from AttriVAELib.evaluate.report import write_evaluation
    from AttriVAELib.train.trainer import train

    metrics = run / "evaluation" / "metrics.json"
    if metrics.exists():
        return json.loads(metrics.read_text())
    if not (run / "heldout.json").exists():
        resume = (run / "last.safetensors").exists()
        log(f"{'resuming' if resume else 'training'} {run.name}")
        train(None if resume else data, run, config=None if resume else config, resume=resume, progress=False)
    result = evaluate_run(run, settings=evaluate_settings, log=log)
    write_evaluation(run, run / "evaluation", result, figures=False, log=log)
    return {"headline": headline(result), **result}


def _mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample sd; one value has no sd (None)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return float("nan"), None
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else None


def comparison_table(results: Mapping[str, Sequence[Mapping[str, float]]]) -> dict[str, dict[str, list]]:
    """method → column → [mean, sd] over the seeds' headline numbers (sd None for one seed)."""
    table: dict[str, dict[str, list]] = {}
    for method, heads in results.items():
        table[method] = {}
        for key, _ in COLUMNS:
            values = [h.get(key) for h in heads if h.get(key) is not None]
            if values:
                table[method][key] = list(_mean_sd(values))
    return table


def _cell(entry: Sequence[float | None] | None) -> str:
    if not entry or not np.isfinite(entry[0]):
        return "–"
    return f"{entry[0]:.2f}" if entry[1] is None else f"{entry[0]:.2f} ± {entry[1]:.2f}"


def _markdown(table: Mapping[str, Mapping[str, Sequence[float]]], header: str) -> str:
    cols = [(k, h) for k, h in COLUMNS if any(k in row for row in table.values())]
    lines = [header, "", "| method | " + " | ".join(h for _, h in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for method, row in table.items():
        lines.append(f"| {METHODS[method]} | " + " | ".join(_cell(row.get(k)) for k, _ in cols) + " |")
    return "\n".join(lines) + "\n"


def _html(table: Mapping[str, Mapping[str, Sequence[float]]], header: str) -> str:
    cols = [(k, h) for k, h in COLUMNS if any(k in row for row in table.values())]
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h in cols)
    rows = "".join(f"<tr><td>{html.escape(METHODS[m])}</td>"
                   + "".join(f"<td>{html.escape(_cell(row.get(k)))}</td>" for k, _ in cols) + "</tr>"
                   for m, row in table.items())
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Attri-VAE comparison</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:.25em .6em}th{background:#f3f3f3}</style></head><body>"
            f"<h1>Model comparison</h1><p>{html.escape(header)}</p><table><tr><th>method</th>{head}</tr>{rows}"
            "</table></body></html>")


def compare(data: str | os.PathLike, out: str | os.PathLike, *, seeds: Sequence[int] = (0, 1, 2),
            methods: Sequence[str] = tuple(METHODS), base: str = "fast_cpu", epochs: int | None = None,
            overrides: Mapping[str, Any] | None = None, evaluate_settings=None,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train and evaluate every (method, seed); write the comparison table. Returns it as a dict."""
    from AttriVAELib.evaluate.evaluation import EvaluationSettings
    from AttriVAELib.train.config import deep_merge, load_yaml

    if not seeds:
        raise ConfigError("give at least one seed")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    out = Path(out)
    budget = dict(overrides or {})
    if epochs is not None:
        budget = deep_merge(budget, {"train": {"epochs": int(epochs)}})
    settings = evaluate_settings or EvaluationSettings(traversal_subjects=8, localization_subjects=10)
    log(f"compare: {', '.join(methods)} × seeds {', '.join(map(str, seeds))} into {out / 'runs'}")
    t0 = time.perf_counter()
    heads: dict[str, list[dict[str, float]]] = {}
    per_run: dict[str, Any] = {}
    for method in methods:
        for seed in seeds:
            name = f"{method}-seed{seed}"
            config = method_config(method, seed, base, budget)
            result = _run_one(Path(data), out / "runs" / name, config, settings, log)
            heads.setdefault(method, []).append(result["headline"])
            per_run[name] = result["headline"]
            log(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in result["headline"].items()))
    table = comparison_table(heads)
    seconds = time.perf_counter() - t0
    # Reused runs keep the budget they were trained with: describe that, not this call's options.
    cfg = load_yaml(out / "runs" / f"{methods[0]}-seed{seeds[0]}" / "config.yaml")
    minutes = float(cfg["train"].get("max_minutes") or 0)
    header = (f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''} ({', '.join(map(str, seeds))}), base preset {base}: "
              f"{cfg['model']['input_size']}³ input, latent {cfg['model']['latent_dim']}, "
              f"{cfg['train']['epochs']} epochs" + (f" or {minutes:g} min per run, whichever ends first" if minutes else "")
              + f", batch {cfg['optim']['batch_size']}, lr {cfg['optim']['lr']:g}"
              + (f" (cosine to {float(cfg['optim'].get('lr_min', 0)):g})"
                 if cfg["optim"].get("lr_schedule", "constant") == "cosine" else "") + "; held-out split"
              + ("; mean ± sd over seeds." if len(seeds) > 1 else "."))
    summary = {"header": header, "table": table, "runs": per_run, "seeds": list(seeds), "methods": list(methods),
               "base": base, "seconds_this_invocation": seconds}
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(out / "comparison.json", summary)
    atomic.write_text(out / "comparison.md", _markdown(table, header))
    atomic.write_text(out / "comparison.html", _html(table, header))
    log(_markdown(table, header))
    log(f"wrote {out / 'comparison.md'} and {out / 'comparison.html'} ({seconds:.0f} s)")
    return summary
