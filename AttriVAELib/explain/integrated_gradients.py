"""Latent-path integrated gradients (medXGAN) of the classifier.

With ``z_k = z_start + k/m·(z_end − z_start)``, ``x_k = decode(z_k)`` and ``f(x)`` the
classifier logit of ``encode(x)``'s μ::

    A = Σ_{k<m} ½(∇f(x_k) + ∇f(x_{k+1})) ⊙ (x_{k+1} − x_k)         (image space, N³)

is the line integral of ∇f along the decoded path (trapezoid rule), so ``ΣA ≈ f(x_m) − f(x_0)``
(completeness; :attr:`PathAttribution.completeness_error` reports the gap). For a smooth f the
gap shrinks as 1/m²; the gradient of a ReLU network is piecewise constant, so it shrinks more
slowly (on a model trained on the 32³ phantoms: ≤ 4.7 % at m = 32, ≤ 0.6 % at m = 128). The
path usually runs from the counterfactual to the encoded image, so A explains why the
reconstruction scores differently from the counterfactual (binary head: f is the
positive-class logit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from AttriVAELib.core.errors import ConfigError
from AttriVAELib.inference.model import AttriVAEModel

__all__ = ["LatentPathIntegratedGradients", "PathAttribution", "latent_path_integrated_gradients"]


@dataclass
class PathAttribution:
    """Latent-path integrated gradients (see the module docstring).

    Attributes:
        attributions: (N, N, N) on the model grid.
        scores: (m+1,) the classifier score f(x_k) along the path.
        target: the class whose logit is f (binary: the positive-class logit).
        steps: m.
    """

    attributions: np.ndarray
    scores: np.ndarray
    target: int
    steps: int

    @property
    def delta(self) -> float:
        """f(x_end) − f(x_start)."""
        return float(self.scores[-1] - self.scores[0])

    @property
    def total(self) -> float:
        """Σ attributions (≈ :attr:`delta` by completeness)."""
        return float(self.attributions.sum(dtype=np.float64))

    @property
    def completeness_error(self) -> float:
        """|total − delta| / |delta| (inf when delta is 0)."""
        return abs(self.total - self.delta) / abs(self.delta) if self.delta else float("inf")


def _score(model: AttriVAEModel, x: torch.Tensor, target: int) -> torch.Tensor:
    logits = model.network.classify(model.network.encode(x)[0])
    return logits if logits.dim() == 1 else logits[:, target]


def latent_path_integrated_gradients(model: AttriVAEModel, z_start: np.ndarray, z_end: np.ndarray,
                                     target: int | None = None, steps: int = 32,
                                     batch_size: int = 8) -> PathAttribution:
    """Integrated gradients of the classifier along the decoded latent line (image space).

    Args:
        model: the inference model (needs a classifier).
        z_start, z_end: (L,) latent endpoints (e.g. the counterfactual and the encoding).
        target: class whose logit is explained (binary: ignored, the positive logit; multiclass:
            default the class predicted at ``z_end``).
        steps: m segments (m+1 decoded points); the gap to completeness shrinks as 1/m².
        batch_size: decoded volumes per encoder pass (memory).

    Returns:
        :class:`PathAttribution` on the model grid.
    """
    if not model.has_classifier:
        raise ConfigError("integrated gradients of the classifier need a model with a classifier")
    if steps < 1:
        raise ConfigError(f"steps must be >= 1 (got {steps})")
    z_start = np.asarray(z_start, dtype=np.float64).reshape(-1)
    z_end = np.asarray(z_end, dtype=np.float64).reshape(-1)
    alphas = np.linspace(0.0, 1.0, steps + 1)[:, None]
    path = z_start[None] + alphas * (z_end - z_start)[None]  # (m+1, L)
    if target is None:
        probs = model.class_probabilities(z_end[None])
        target = int(np.argmax(probs[0])) if model.num_classes > 2 else 1
    net = model.network
    dtype = next(net.parameters()).dtype
    # Exact decoding through the network itself (no bf16 / fused fast path): the decoded points are the path.
    with torch.inference_mode():
        zt = torch.as_tensor(path, device=model.device, dtype=dtype)
        xs = torch.cat([net.decode(zt[i:i + batch_size]) for i in range(0, len(zt), batch_size)])
    grads = torch.empty_like(xs)
    scores = torch.empty(len(xs), dtype=torch.float64)
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            for i in range(0, len(xs), batch_size):
                x = xs[i:i + batch_size].clone().requires_grad_(True)
                f = _score(model, x, target)  # (b,); samples are independent in eval mode
                (g,) = torch.autograd.grad(f.sum(), x)
                grads[i:i + batch_size] = g.detach()
                scores[i:i + len(f)] = f.detach().double().cpu()
    finally:
        net.train(was_training)
    # Trapezoid rule on each segment of the decoded polyline, accumulated in float64.
    g = grads.double()
    dx = (xs[1:] - xs[:-1]).double()
    attributions = (0.5 * (g[1:] + g[:-1]) * dx).sum(dim=0)[0]
    return PathAttribution(attributions=attributions.float().cpu().numpy(), scores=scores.numpy(),
                           target=int(target), steps=int(steps))


class LatentPathIntegratedGradients:
    """Latent-path integrated gradients, captum style: one class, one verb.

    Example::

        ig = LatentPathIntegratedGradients(model, steps=64)
        result = ig.attribute(cf.z_cf, cf.z)        # from the counterfactual to the encoding
        result.attributions                         # (N, N, N) on the model grid
    """

    def __init__(self, model: AttriVAEModel, *, steps: int = 32, batch_size: int = 8) -> None:
        self.model = model
        self.steps = steps
        self.batch_size = batch_size

    def attribute(self, z_start: np.ndarray, z_end: np.ndarray, target: int | None = None) -> PathAttribution:
        """Integrated gradients of the class ``target`` logit from ``z_start`` to ``z_end`` (L,)."""
        return latent_path_integrated_gradients(self.model, z_start, z_end, target=target, steps=self.steps,
                                                batch_size=self.batch_size)
