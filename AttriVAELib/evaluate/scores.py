"""Classification and reconstruction scores of a held-out split.

* Classification: accuracy, balanced accuracy and AUC over the whole split, each with a
  percentile-bootstrap 95 % interval.
* Reconstruction: MSE and SSIM on the model grid; Dice of the segmented reconstruction
  against the subject's mask (the cohort's segmentation, :class:`~AttriVAELib.cohorts.CohortKind`).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from AttriVAELib.cohorts.registry import Segment
from AttriVAELib.core.errors import InputError
from AttriVAELib.data.io import Volume

if TYPE_CHECKING:
    from AttriVAELib.inference.model import AttriVAEModel, Encoding

__all__ = ["classification_scores", "reconstruction_scores"]


def _bootstrap_interval(values: np.ndarray) -> list[float]:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return [float("nan"), float("nan")]
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def classification_scores(labels: np.ndarray, probabilities: np.ndarray, n_boot: int = 1000,
                          seed: int = 0) -> dict[str, dict[str, Any]]:
    """Accuracy, balanced accuracy and AUC of class probabilities with bootstrap 95% intervals.

    Args:
        labels: (N,) class indices (−1 = unlabelled, ignored).
        probabilities: (N, C) class probabilities.

    Returns:
        ``{"accuracy": {"value", "ci95"}, "balanced_accuracy": …, "auc": …}``; the AUC is over
        the whole split (one-vs-rest macro average for C > 2).
    """
    from sklearn.metrics import balanced_accuracy_score

    keep = labels >= 0
    y, p = labels[keep], probabilities[keep]
    if len(y) == 0:
        raise InputError("no labelled subjects to score the classifier on")

    from AttriVAELib.train.heldout import macro_auc as auc  # one-vs-rest over the classes present

    def scores(yy: np.ndarray, pp: np.ndarray) -> tuple[float, float, float]:
        pred = pp.argmax(1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a resample holding one class
            bal = float(balanced_accuracy_score(yy, pred))
        return float((pred == yy).mean()), bal, auc(yy, pp)

    point = scores(y, p)
    rng = np.random.default_rng(seed)
    boots = np.array([scores(y[idx], p[idx]) for idx in rng.integers(0, len(y), (n_boot, len(y)))]).reshape(-1, 3)
    names = ("accuracy", "balanced_accuracy", "auc")
    out = {name: {"value": point[i], "ci95": _bootstrap_interval(boots[:, i])} for i, name in enumerate(names)}
    out["n"] = {"value": int(len(y))}
    return out


# --------------------------------------------------------------------------- reconstruction
def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


def reconstruction_scores(model: AttriVAEModel, encodings: Sequence[Encoding], masks: Sequence[Volume | None],
                          segment: Segment) -> dict[str, Any]:
    """MSE and SSIM of the reconstruction vs the model input (model grid); Dice of the segmented
    reconstruction vs the mask on the input image's grid (where the cohort's segmentation applies:
    the model cube may hold padding the image does not have).

    Args:
        encodings: :class:`~AttriVAELib.inference.model.Encoding` of each subject.
        masks: each subject's mask volume (None: no Dice for it).
    """
    from skimage.metrics import structural_similarity

    mse, ssim, dice = [], [], []
    for enc, mask in zip(encodings, masks):
        rec = np.clip(model.reconstruct(enc).astype(np.float64), 0, 1)
        img = enc.image.astype(np.float64)
        mse.append(float(np.mean((rec - img) ** 2)))
        ssim.append(float(structural_similarity(img, rec, data_range=1.0)))
        if mask is not None:
            on_input = model.to_input_grid(rec.astype(np.float32), enc).array
            dice.append(_dice(segment(on_input), mask.array > 0))

    def stats(v: list[float]) -> dict[str, float] | None:
        return None if not v else {"mean": float(np.mean(v)), "sd": float(np.std(v)), "n": len(v)}

    return {"mse": stats(mse), "ssim": stats(ssim), "dice": stats(dice)}
