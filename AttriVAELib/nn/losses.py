"""Attri-VAE losses: reconstruction, β-weighted KL, attribute regularization, classification, L1.

All terms are computed in float32, even when the forward pass ran under bf16 autocast.

``total = reconstruction + kl + ar + linear + reencoded_ar + classification + l1`` (+ ``measured`` and
``consistency``, which the trainer adds) where

- ``reconstruction``: SSE (or summed BCE) per sample, mean over the batch, plus
  ``w_h·`` the same summed over each image's worst-reconstructed voxels (the top
  ``hard_voxel_fraction`` of them; :func:`hard_voxel_loss`; off by default). A small structure the
  decoder leaves out (a lesion of a few hundred voxels in 32³) costs the plain sum little; these
  voxels are then its worst, and the extra weight makes drawing it pay; plus ``w_l·`` the squared
  error weighted by each image's lesion mask (:func:`lesion_weighted_loss`, cohorts that save
  lesion masks; off by default), which makes drawing the lesion at its place pay;
- ``kl``: ``β_t·|KL − C|`` with ``β_t`` linearly warmed up from 0 over ``kl_warmup_steps``; with
  ``free_bits`` λ > 0 (Kingma et al. 2016), ``KL = Σ_d max(λ, KL_d)`` with ``KL_d`` dim d's KL
  averaged over the batch, so a dim carrying less than λ nats costs nothing more for carrying
  something and no dim closes while the code forms (in the phantom demo's first stage it kept
  the background's intensity in the code of each of four runs; docs/faithful-images.md). The
  logged ``kl_raw`` stays the plain KL;
- ``ar``: ``γ·Σ_k L_k``, the AR-VAE sign loss on latent dims 0..K-1 (Pati & Lerch 2020);
- ``linear``: ``γ_lin·Σ_k (1 − r_k)`` with ``r_k`` the batch's Pearson correlation of ``μ_k`` and
  ``a_k`` (:func:`linear_attribute_loss`; off by default). The sign loss asks only for the right
  order, so ``μ_k`` may follow ``a_k`` along any increasing curve; this term asks for a straight
  line, the relation the interpretability score (R² of a 1-D linear fit) and a slider's even steps
  assume;
- ``reencoded_ar``: ``γ_r·Σ_k L_k`` of the same sign loss on the *reconstruction* encoded again
  with frozen encoder weights (``recon_mu``; off by default): the decoder must draw each attribute
  so that the encoder, trained on real images only, reads it back in the right order;
- ``measured``: ``λ_m·`` the measured-thickness loss of :mod:`AttriVAELib.cohorts.brain.loss` (brain
  cohorts; off by default), added by the trainer, which holds its calibration;
- ``consistency``: the image-latent consistency terms of :mod:`AttriVAELib.nn.consistency`
  (re-encoded class, swapped codes; off by default), added by the trainer;
- ``classification``: ``α·`` BCE-with-logits (binary) or cross-entropy (multiclass);
- ``l1``: ``λ·Σ|θ|`` over the model's parameters.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from AttriVAELib.core.errors import ConfigError
from AttriVAELib.nn.config import config_from_dict

__all__ = [
    "LossConfig",
    "AttriVAELoss",
    "kl_divergence",
    "reconstruction_loss",
    "hard_voxel_loss",
    "lesion_weighted_loss",
    "attribute_regularization",
    "linear_attribute_loss",
    "classification_loss",
    "l1_penalty",
    "RECONSTRUCTION_KINDS",
    "IGNORE_LABEL",
]

RECONSTRUCTION_KINDS = ("sse", "bce")
#: Label value meaning "unknown": such samples do not enter the classification loss.
IGNORE_LABEL = -1


@dataclass
class LossConfig:
    """Weights of the Attri-VAE loss terms (defaults: the paper's γ 200, δ 10, β 2, α 1)."""

    reconstruction: str = "sse"  # "sse" or "bce", summed per sample, mean over the batch
    hard_voxel_weight: float = 0.0  # extra weight of the worst-reconstructed voxels (small structures)
    hard_voxel_fraction: float = 0.005  # share of each image's voxels that counts as worst
    lesion_weight: float = 0.0  # extra weight of the squared error inside the lesion masks (dilated)
    beta: float = 2.0
    capacity: float = 0.0  # C in β·|KL − C|
    free_bits: float = 0.0  # nats per latent dim the KL term does not charge (λ in Σ_d max(λ, KL_d))
    kl_warmup_steps: int = 0  # β ramps linearly from 0 over this many optimizer steps
    gamma: float = 200.0  # attribute regularization weight
    delta: float = 10.0  # tanh sharpness of the AR loss
    linear_gamma: float = 0.0  # 1 − Pearson r of each regularized μ_k with its attribute
    reencoded_gamma: float = 0.0  # AR loss on the reconstruction re-encoded by the frozen encoder
    measured_gamma: float = 0.0  # measured-thickness loss on decoded brains (AttriVAELib.cohorts.brain.loss)
    reencoded_alpha: float = 0.0  # class loss on the re-encoded reconstruction (AttriVAELib.nn.consistency)
    swap_alpha: float = 0.0  # class consistency of decoded codes with swapped attribute dims
    swap_gamma: float = 0.0  # AR loss on the same swapped codes, re-encoded
    alpha: float = 1.0  # classification weight
    class_weights: list[float] | None = None  # per class (binary: [w_neg, w_pos])
    l1: float = 0.0  # L1 weight penalty (reference code: 5e-5)

    def validate(self) -> "LossConfig":
        def fail(msg: str) -> None:
            raise ConfigError(f"loss.{msg}")

        if self.reconstruction not in RECONSTRUCTION_KINDS:
            fail(f"reconstruction must be one of {', '.join(RECONSTRUCTION_KINDS)}, got {self.reconstruction!r}")
        if not (0 < self.hard_voxel_fraction <= 1):
            fail(f"hard_voxel_fraction must be in (0, 1], got {self.hard_voxel_fraction}")
        for name in ("hard_voxel_weight", "lesion_weight", "beta", "capacity", "free_bits", "gamma", "linear_gamma", "reencoded_gamma",
                     "measured_gamma", "reencoded_alpha", "swap_alpha", "swap_gamma", "alpha", "l1"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                fail(f"{name} must be a non-negative number, got {value}")
        if not (math.isfinite(self.delta) and self.delta > 0):
            fail(f"delta must be a positive number, got {self.delta}")
        if self.kl_warmup_steps < 0:
            fail(f"kl_warmup_steps must be >= 0, got {self.kl_warmup_steps}")
        if self.class_weights is not None:
            if len(self.class_weights) < 2:
                fail(f"class_weights needs one weight per class (at least 2), got {self.class_weights}")
            if any(not (math.isfinite(w) and w > 0) for w in self.class_weights):
                fail(f"class_weights must be positive numbers, got {self.class_weights}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "LossConfig":
        return config_from_dict(cls, data, "loss")

    def beta_at(self, step: int) -> float:
        """β after ``step`` optimizer steps (linear warm-up from 0, then constant)."""
        if self.kl_warmup_steps <= 0:
            return self.beta
        return self.beta * min(1.0, max(0, step) / self.kl_warmup_steps)


# --------------------------------------------------------------------------- terms
def kl_divergence(mu: Tensor, logvar: Tensor, free_bits: float = 0.0) -> Tensor:
    """KL(N(mu, exp(logvar)) ‖ N(0, I)) summed over dims, mean over the batch.

    With ``free_bits`` λ > 0 each dim's batch-mean KL counts as at least λ: ``Σ_d max(λ, KL_d)``.

    mu, logvar: (B, L) → scalar, float32.
    """
    mu, logvar = mu.float(), logvar.float()
    kl = -0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp())
    if free_bits > 0:
        return kl.mean(dim=0).clamp(min=free_bits).sum()
    return kl.sum(dim=1).mean()


def reconstruction_loss(recon: Tensor, x: Tensor, kind: str = "sse", logits: Tensor | None = None) -> Tensor:
    """Per-sample sum over voxels (and channels), mean over the batch; float32 scalar.

    recon, x: (B, C, D, H, W), recon in [0, 1]. ``kind="bce"`` uses ``logits`` (pre-sigmoid
    recon, same shape) when given, which is exact and stable; otherwise clamped probabilities.
    """
    if recon.shape != x.shape:
        raise ValueError(f"reconstruction shape {tuple(recon.shape)} differs from input {tuple(x.shape)}")
    x = x.float()
    if kind == "sse":
        per_voxel = (recon.float() - x).pow(2)
    elif kind == "bce":
        if logits is not None:
            per_voxel = F.binary_cross_entropy_with_logits(logits.float(), x, reduction="none")
        else:
            eps = 1e-7
            per_voxel = F.binary_cross_entropy(recon.float().clamp(eps, 1 - eps), x, reduction="none")
    else:
        raise ConfigError(f"loss.reconstruction must be one of {', '.join(RECONSTRUCTION_KINDS)}, got {kind!r}")
    return per_voxel.reshape(per_voxel.shape[0], -1).sum(dim=1).mean()


def hard_voxel_loss(recon: Tensor, x: Tensor, fraction: float) -> Tensor:
    """Sum of the squared errors of each sample's worst ``fraction`` of voxels, mean over the batch.

    recon, x: (B, C, D, H, W) → float32 scalar (at least one voxel per sample).
    """
    err = (recon.float() - x.float()).pow(2).reshape(recon.shape[0], -1)
    k = max(1, int(round(fraction * err.shape[1])))
    return err.topk(k, dim=1, sorted=False).values.sum(dim=1).mean()


def lesion_weighted_loss(recon: Tensor, x: Tensor, lesion: Tensor) -> Tensor:
    """Σ lesion·(recon − x)² per sample, mean over the batch; float32 scalar.

    recon, x: (B, C, D, H, W); lesion: (B, 1, D, H, W) weights in [0, 1] (the lesion mask, 0
    for a subject without one).
    """
    err = (recon.float() - x.float()).pow(2) * lesion.float()
    return err.reshape(err.shape[0], -1).sum(dim=1).mean()


def attribute_regularization(z_reg: Tensor, attributes: Tensor, delta: float = 10.0) -> Tensor:
    """AR-VAE sign loss per attribute, vectorized over K.

    L_k = mean over all B×B pairs (i, j) of |tanh(δ·(z_ik − z_jk)) − sign(a_ik − a_jk)|.

    z_reg: (B, K) regularized latent dims; attributes: (B, K). Returns (K,) float32.
    A NaN attribute (missing value) removes the pairs involving it from that attribute's mean.
    """
    if z_reg.dim() != 2 or z_reg.shape != attributes.shape:
        raise ValueError(f"z_reg {tuple(z_reg.shape)} and attributes {tuple(attributes.shape)} must both be (B, K)")
    z = z_reg.float()
    a = attributes.to(device=z.device, dtype=torch.float32)
    dz = z.unsqueeze(1) - z.unsqueeze(0)  # (B, B, K): z_ik - z_jk
    valid = torch.isfinite(a)
    if bool(valid.all()):
        da = a.unsqueeze(1) - a.unsqueeze(0)
        return (torch.tanh(delta * dz) - torch.sign(da)).abs().mean(dim=(0, 1))
    a = torch.where(valid, a, torch.zeros_like(a))
    da = a.unsqueeze(1) - a.unsqueeze(0)
    pair_valid = (valid.unsqueeze(1) & valid.unsqueeze(0)).float()
    diff = (torch.tanh(delta * dz) - torch.sign(da)).abs() * pair_valid
    return diff.sum(dim=(0, 1)) / pair_valid.sum(dim=(0, 1)).clamp_min(1.0)


def linear_attribute_loss(mu_reg: Tensor, attributes: Tensor, eps: float = 1e-6) -> Tensor:
    """``1 − r_k``, with ``r_k`` the Pearson correlation over the batch of ``μ_k`` and ``a_k``.

    mu_reg: (B, K) regularized latent means; attributes: (B, K). Returns (K,) float32 in [0, 2].
    Samples whose attribute is NaN (missing) are left out of that attribute's correlation; an
    attribute with fewer than two known, distinct values in the batch gives 0 (nothing to fit).
    """
    if mu_reg.dim() != 2 or mu_reg.shape != attributes.shape:
        raise ValueError(f"mu_reg {tuple(mu_reg.shape)} and attributes {tuple(attributes.shape)} must both be (B, K)")
    mu = mu_reg.float()
    a = attributes.to(device=mu.device, dtype=torch.float32)
    valid = torch.isfinite(a).float()
    a = torch.where(valid > 0, a, torch.zeros_like(a))
    count = valid.sum(dim=0).clamp_min(1.0)
    mu_c = (mu - (mu * valid).sum(dim=0) / count) * valid
    a_c = (a - (a * valid).sum(dim=0) / count) * valid
    a_var = a_c.pow(2).sum(dim=0)
    r = (mu_c * a_c).sum(dim=0) / torch.sqrt(mu_c.pow(2).sum(dim=0) * a_var + eps)
    return torch.where(a_var > eps, 1.0 - r, torch.zeros_like(r))


def classification_loss(
    logits: Tensor, labels: Tensor, class_weights: Sequence[float] | Tensor | None = None
) -> Tensor:
    """BCE-with-logits (logits (B,) or (B, 1), labels 0/1) or cross-entropy (logits (B, C)).

    Labels equal to -1 are ignored. With ``class_weights`` w, sample i weighs w[label_i] and
    the loss is Σ w·ℓ / Σ w over kept samples (the convention of ``nn.CrossEntropyLoss``).
    Returns a float32 scalar; 0 (still attached to the graph) when every label is ignored.
    """
    logits = logits.float()
    labels = labels.to(logits.device)
    if logits.dim() == 2 and logits.shape[1] == 1:
        logits = logits.squeeze(1)
    binary = logits.dim() == 1
    num_classes = 2 if binary else logits.shape[1]
    labels = labels.reshape(-1).long()
    if labels.shape[0] != logits.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels for {logits.shape[0]} logits")
    keep = labels != IGNORE_LABEL
    if bool(((labels[keep] < 0) | (labels[keep] >= num_classes)).any()):
        raise ValueError(f"labels must be in 0..{num_classes - 1} or {IGNORE_LABEL} (unknown), got {sorted(set(labels.tolist()))}")
    weight = None
    if class_weights is not None:
        weight = torch.as_tensor(class_weights, dtype=torch.float32, device=logits.device).reshape(-1)
        if weight.numel() != num_classes:
            raise ConfigError(f"loss.class_weights has {weight.numel()} weights for {num_classes} classes")
    if not bool(keep.any()):
        return logits.sum() * 0.0
    logits, labels = logits[keep], labels[keep]
    if binary:
        per_sample = F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none")
    else:
        per_sample = F.cross_entropy(logits, labels, reduction="none")
    if weight is None:
        return per_sample.mean()
    w = weight[labels]
    return (w * per_sample).sum() / w.sum()


def l1_penalty(model: nn.Module) -> Tensor:
    """Σ|θ| over the model's trainable parameters (float32 scalar)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return torch.zeros(())
    return torch.stack([p.float().abs().sum() for p in params]).sum()


# --------------------------------------------------------------------------- combined
class AttriVAELoss:
    """The full objective; ``__call__`` returns every term separately for logging.

    Keys: ``total``, ``reconstruction``, ``kl`` (β_t·|KL − C|), ``ar`` (γ·Σ_k L_k), ``linear``
    (γ_lin·Σ_k (1 − r_k)), ``reencoded_ar``,
    ``classification`` (α·CE), ``l1`` (λ·Σ|θ|) with ``total`` their sum, plus diagnostics
    ``kl_raw`` (KL in nats), ``ar_per_attribute`` ((K,) unweighted L_k) and ``beta`` (β_t).
    Terms that are off (weight 0, or no attributes / labels / logits / model) are 0.
    """

    def __init__(self, config: LossConfig | None = None) -> None:
        self.config = (config or LossConfig()).validate()

    def __call__(
        self,
        outputs: Mapping[str, Tensor],
        x: Tensor,
        attributes: Tensor | None = None,
        labels: Tensor | None = None,
        model: nn.Module | None = None,
        step: int = 0,
        lesion: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """``lesion``: (B, 1, D, H, W) lesion masks, needed when ``lesion_weight`` > 0."""
        cfg = self.config
        device = outputs["mu"].device
        zero = torch.zeros((), device=device)
        # Autocast off: every term below is computed in float32 from up-cast inputs.
        with torch.autocast(device_type=device.type, enabled=False):
            recon = reconstruction_loss(outputs["recon"], x, cfg.reconstruction, outputs.get("recon_logits"))
            if cfg.hard_voxel_weight > 0:
                recon = recon + cfg.hard_voxel_weight * hard_voxel_loss(outputs["recon"], x, cfg.hard_voxel_fraction)
            if cfg.lesion_weight > 0:
                if lesion is None:
                    raise ConfigError("loss.lesion_weight > 0 needs the lesion masks passed to the loss")
                recon = recon + cfg.lesion_weight * lesion_weighted_loss(outputs["recon"], x, lesion)
            kl_raw = kl_divergence(outputs["mu"], outputs["logvar"])
            charged = kl_divergence(outputs["mu"], outputs["logvar"], cfg.free_bits) if cfg.free_bits > 0 else kl_raw
            beta = cfg.beta_at(step)
            kl = beta * (charged - cfg.capacity).abs() if beta > 0 else zero

            ar, ar_per, linear, reencoded = zero, torch.zeros(0, device=device), zero, zero
            if attributes is not None and attributes.numel() and attributes.shape[-1] > 0:
                z = outputs["z"]
                k = attributes.shape[1]
                if k > z.shape[1]:
                    raise ConfigError(f"{k} attributes but only {z.shape[1]} latent dimensions")
                ar_per = attribute_regularization(z[:, :k], attributes, cfg.delta)
                if cfg.gamma > 0:
                    ar = cfg.gamma * ar_per.sum()
                if cfg.linear_gamma > 0:
                    linear = cfg.linear_gamma * linear_attribute_loss(outputs["mu"][:, :k], attributes).sum()
                if cfg.reencoded_gamma > 0 and "recon_mu" in outputs:
                    reencoded = cfg.reencoded_gamma * attribute_regularization(
                        outputs["recon_mu"][:, :k].float(), attributes, cfg.delta).sum()

            cls = zero
            logits = outputs.get("logits")
            if cfg.alpha > 0 and logits is not None and labels is not None:
                cls = cfg.alpha * classification_loss(logits, labels, cfg.class_weights)

            l1 = zero
            if cfg.l1 > 0:
                if model is None:
                    raise ConfigError("loss.l1 > 0 needs the model passed to the loss")
                l1 = cfg.l1 * l1_penalty(model).to(device)

            total = recon + kl + ar + linear + reencoded + cls + l1
        return {
            "total": total,
            "reconstruction": recon,
            "kl": kl,
            "ar": ar,
            "linear": linear,
            "reencoded_ar": reencoded,
            "classification": cls,
            "l1": l1,
            "kl_raw": kl_raw,
            "ar_per_attribute": ar_per,
            "beta": torch.tensor(beta, device=device),
        }
