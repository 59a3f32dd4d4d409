"""After training: held-out scores and what the best model stores for use without the data.

- :func:`latent_scores`: quick held-out scores (Spearman ρ of each regularized dim with its
  attribute, AUC and accuracy) used for validation during training and for ``heldout.json``;
- :func:`add_calibration`: the latent → attribute calibration and the per-class statistics of
  μ, fitted on the training split and stored in the best model's metadata;
- :func:`heldout_summary`: the test split encoded with the best model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from AttriVAELib.core.errors import ConfigError
from AttriVAELib.data.manifest import load_manifest, load_split, read_split_file
from AttriVAELib.nn.checkpoint import load_checkpoint, save_checkpoint, split_prefix
from AttriVAELib.nn.model import AttriVAE, ModelConfig, class_probabilities

__all__ = ["add_calibration", "encode_split", "heldout_summary", "latent_scores", "macro_auc"]


def latent_scores(mu: np.ndarray, attributes: np.ndarray, labels: np.ndarray, probs: np.ndarray | None, k: int,
                  prefix: str = "", names: Sequence[str] | None = None) -> dict[str, float]:
    """Quick held-out scores: Spearman ρ of each regularized dim with its attribute, and AUC."""
    import warnings

    from scipy.stats import spearmanr

    out: dict[str, float] = {}
    rhos = []
    for j in range(min(k, attributes.shape[1])):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a constant column (e.g. an untrained dim) has no ρ: scored 0
            rho = spearmanr(mu[:, j], attributes[:, j]).statistic if len(mu) > 2 else float("nan")
        rho = float(rho) if np.isfinite(rho) else 0.0
        rhos.append(rho)
        out[f"{prefix}spearman_{names[j] if names else j}"] = rho
    if rhos:
        out[f"{prefix}spearman_min"] = float(min(rhos))
    valid = labels >= 0
    if probs is not None and valid.any() and len(np.unique(labels[valid])) > 1:
        y, p = labels[valid], probs[valid]
        out[f"{prefix}auc"] = macro_auc(y, p)
        out[f"{prefix}accuracy"] = float((p.argmax(1) == y).mean())
    return out


def macro_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC of class probabilities (N, C): binary for C = 2, else the one-vs-rest macro average
    over the classes present in ``labels`` (a split may lack a rare class); NaN with one class."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return float("nan")
    if probs.shape[1] == 2:
        return float(roc_auc_score(labels, probs[:, 1]))
    aucs = [roc_auc_score(labels == c, probs[:, c]) for c in range(probs.shape[1])
            if 0 < int((labels == c).sum()) < len(labels)]
    return float(np.mean(aucs)) if aucs else float("nan")


def _load_best(run_dir: str | os.PathLike) -> tuple[AttriVAE, dict[str, Any], dict[str, Any]]:
    tensors, meta = load_checkpoint(run_dir, name="model")
    model = AttriVAE(ModelConfig.from_dict(meta["model_config"]))
    model.load_state_dict(split_prefix(tensors, "model"))
    return model.eval(), tensors, meta


@torch.no_grad()
def encode_split(model: AttriVAE, meta: Mapping[str, Any], split_name: str,
                 readback: bool = False) -> dict[str, np.ndarray]:
    """μ (N, L), class probabilities (N, C) or None, raw attributes (N, K_all), labels (N,) of a split;
    with ``readback`` also the class probabilities of each reconstruction encoded again (N, C)."""
    from AttriVAELib.data.dataset import CohortDataset
    from AttriVAELib.data.preprocessing import PreprocessSpec

    manifest = load_manifest(meta["data"]["manifest"], attributes=meta["attributes"]["names"])
    own = Path(meta["data"].get("split_file") or "")
    split = read_split_file(own, manifest)[0] if own.name and own.is_file() else load_split(manifest, create=False)
    data = CohortDataset(manifest, split[split_name], PreprocessSpec.from_dict(meta["preprocess"]))
    mus, probs, again = [], [], []
    for batch in torch.utils.data.DataLoader(data, batch_size=32):
        mu, _ = model.encode(batch["image"])
        mus.append(mu)
        logits = model.classify(mu)
        if logits is not None:
            probs.append(class_probabilities(logits))
            if readback:
                again.append(class_probabilities(model.classify(model.encode(model.decode(mu))[0])))
    return {"mu": torch.cat(mus).numpy(), "probs": torch.cat(probs).numpy() if probs else None,
            "readback": torch.cat(again).numpy() if again else None,
            "attributes": data.attributes.numpy().astype(np.float64), "labels": data.labels.numpy(),
            "subjects": list(split[split_name])}


def add_calibration(run_dir: str | os.PathLike) -> None:
    """Store in the best model what inference needs without the training data: the latent →
    attribute calibration and the per-class statistics of μ with their exemplars, all from the
    training split."""
    from AttriVAELib.nn.calibration import AttributeCalibration, ClassStatistics

    model, tensors, meta = _load_best(run_dir)
    k = model.config.num_regularized
    has_classes = model.config.num_classes > 0 and len((meta.get("labels") or {}).get("names") or []) > 1
    if k == 0 and not has_classes:
        return
    enc = encode_split(model, meta, "train", readback=has_classes)
    if k:
        names = meta["attributes"]["names"][:k]
        meta["calibration"] = AttributeCalibration.fit(enc["mu"][:, :k], enc["attributes"][:, :k], names).to_dict()
    if has_classes:
        try:
            stats = ClassStatistics.from_latents(enc["mu"].astype(np.float64), enc["labels"], meta["labels"]["names"],
                                                 source=f"{meta['data']['manifest']} (train split, n={len(enc['mu'])})")
            stats = stats.with_exemplars(enc["mu"], enc["labels"], enc["readback"], enc["subjects"])
            meta["class_statistics"] = stats.to_dict()
        except ConfigError:  # a training split with one class: counterfactuals need explicit targets
            pass
    save_checkpoint(run_dir, tensors, meta, name="model")


def heldout_summary(run_dir: str | os.PathLike, split_name: str = "test") -> dict[str, Any]:
    """Encode a held-out split with the best model: AUC and Spearman ρ per regularized dim (μ)."""
    model, _, meta = _load_best(run_dir)
    enc = encode_split(model, meta, split_name)
    k = model.config.num_regularized
    scores = latent_scores(enc["mu"], enc["attributes"], enc["labels"], enc["probs"], k,
                           names=meta["attributes"]["names"][:k])
    return {"split": split_name, "n": len(enc["mu"]), "best_epoch": meta["best"]["epoch"], **scores}
