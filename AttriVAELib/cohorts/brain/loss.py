"""Measured-thickness loss: the decoder must draw cortical thickness the way the cohort measures it.

The attribute-regularization loss orders a latent dim by its attribute in the encoder's codes;
nothing asks the decoder to draw the attribute. For a change a third of a voxel wide, such as
cortical thinning at 64³, the reconstruction error gains little from drawing it, and the
decoder renders about a third of it (``benchmarks/brain_roundtrip.py``). This term measures
cortical thickness on decoded volumes with the brain cohort's own measure in its differentiable
form (:func:`AttriVAELib.cohorts.brain.measure.cortical_thickness`, written ``m``) and asks, for each
subject ``i`` of a batch and the next one ``j``:

* of the reconstruction: ``m(x̂_i) = m(x_i)``, the thickness measured on the input;
* of the decoding of ``z_i`` with the thickness dim set to ``z_j``'s:
  ``m(x_i) + s·(a_j − a_i)``, the change a real change of the attribute makes to the measure,
  where ``a`` is the (scaled) attribute and ``s`` the least-squares slope of ``m(x)`` against it
  over training inputs (:meth:`MeasuredThicknessLoss.calibrate`).

``loss = λ · mean_i(e_rec² + e_swap²) / σ²`` with ``σ`` the standard deviation of ``m`` over those
training inputs, so that λ weighs errors in units of the cohort's own spread. The brain and cortex
masks come from the input and the white-matter level from each decoded volume (neither is
differentiated), as :func:`AttriVAELib.cohorts.brain.measure.measure_brain` finds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from AttriVAELib.cohorts.brain.measure import brain_mask, cortex_region, cortical_thickness, white_matter_level
from AttriVAELib.core.errors import ConfigError

__all__ = ["THICKNESS_ATTRIBUTE", "MeasuredThicknessLoss"]

#: The attribute the loss measures (a ``synth-brain`` manifest column).
THICKNESS_ATTRIBUTE = "cortical_thickness_mm"
#: Below this correlation between the measure and the attribute on training inputs the loss is refused.
MIN_CORRELATION = 0.5

Regions = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class MeasuredThicknessLoss:
    """The loss for one latent dim; build it with :meth:`calibrate`.

    Attributes:
        weight: λ.
        dim: the latent dim regularized by the thickness attribute (its attribute column too).
        spacing_zyx: the model grid's voxel size in mm.
        levels: CSF and GM intensities relative to white matter.
        slope: ``s``, measured mm per unit of the scaled attribute.
        spread: ``σ``, the measure's standard deviation over the calibration inputs (mm).
    """

    weight: float
    dim: int
    spacing_zyx: tuple[float, float, float]
    levels: tuple[float, float]
    slope: float
    spread: float

    @classmethod
    def calibrate(cls, weight: float, dim: int, samples: Iterable[tuple[Tensor, float]],
                  spacing_zyx: Sequence[float], levels: Sequence[float]) -> tuple["MeasuredThicknessLoss", dict]:
        """Fit ``s`` and ``σ`` on training inputs.

        Args:
            samples: (model-grid image (1, N, N, N), scaled attribute value) pairs.

        Returns:
            The loss and a summary ``{"subjects", "mean_mm", "spread_mm", "slope", "correlation"}``.

        Raises:
            ConfigError: fewer than 3 measurable inputs, or the measure does not follow the attribute.
        """
        spacing = tuple(float(h) for h in spacing_zyx)
        lvl = (float(levels[0]), float(levels[1]))
        measured, values = [], []
        for image, value in samples:
            batch = image.unsqueeze(0).float()
            regions = _regions(batch, spacing)
            if bool(regions[0].any()):
                measured.append(float(_measure(batch[:, 0], regions, spacing, lvl)[0]))
                values.append(float(value))
        m, a = np.asarray(measured), np.asarray(values)
        if len(m) < 3 or np.ptp(a) == 0 or np.ptp(m) == 0:
            raise ConfigError(f"loss.measured_gamma: cortical thickness could be measured on {len(m)} training "
                              "images with different values; at least 3 are needed")
        r = float(np.corrcoef(m, a)[0, 1])
        if not r >= MIN_CORRELATION:
            grid = "×".join(str(n) for n in image.shape[1:])
            raise ConfigError(f"loss.measured_gamma: on {len(m)} training images at {grid} the thickness measure follows "
                              f"{THICKNESS_ATTRIBUTE} at r {r:.2f} (at least {MIN_CORRELATION} is needed); "
                              "it needs a finer grid (64³ or more)")
        slope = float(np.polyfit(a, m, 1)[0])
        loss = cls(float(weight), int(dim), spacing, lvl, slope, float(m.std()))
        return loss, {"subjects": len(m), "mean_mm": float(m.mean()), "spread_mm": loss.spread, "slope": slope,
                      "correlation": r}

    def __call__(self, decode: Callable[[Tensor], Tensor], outputs: dict[str, Tensor], x: Tensor,
                 attributes: Tensor) -> Tensor:
        """λ·mean(e_rec² + e_swap²)/σ² for a batch.

        Args:
            decode: (B, L) → decoded volumes (B, 1, N, N, N) in [0, 1], with gradients.
            outputs: the model's forward outputs (``z``, ``recon``).
            x: the input batch (B, 1, N, N, N).
            attributes: (B, K) scaled attributes.
        """
        z = outputs["z"]
        if z.shape[0] < 2:
            return torch.zeros((), device=z.device)
        regions = _regions(x, self.spacing_zyx)
        partner = torch.roll(torch.arange(z.shape[0], device=z.device), 1)
        swapped = z.clone()
        swapped[:, self.dim] = z[partner, self.dim]
        with torch.no_grad():
            measured_input = _measure(x[:, 0].float(), regions, self.spacing_zyx, self.levels)
        recon = _measure(outputs["recon"][:, 0].float(), regions, self.spacing_zyx, self.levels)
        swap = _measure(decode(swapped)[:, 0].float(), regions, self.spacing_zyx, self.levels)
        a = attributes[:, self.dim].float()
        target = measured_input + self.slope * (a[partner] - a)
        # A volume without a measurable brain has no thickness (a constant NaN, outside the graph).
        keep = torch.isfinite(measured_input) & torch.isfinite(recon.detach()) & torch.isfinite(swap.detach())
        if not bool(keep.any()):
            return torch.zeros((), device=z.device)
        errors = (recon - measured_input) ** 2 + (swap - target) ** 2
        return self.weight * errors[keep].mean() / self.spread ** 2


def _regions(x: Tensor, spacing_zyx: Sequence[float]) -> Regions:
    """Brain and cortex masks (B, N, N, N) of a batch (B, 1, N, N, N), on ``x``'s device."""
    arrays = x.detach()[:, 0].float().cpu().numpy()
    brains = [brain_mask(a) for a in arrays]
    cortices = [cortex_region(b, spacing_zyx) for b in brains]
    return (torch.from_numpy(np.stack(brains)).to(x.device), torch.from_numpy(np.stack(cortices)).to(x.device))


def _measure(images: Tensor, regions: Regions, spacing_zyx: Sequence[float], levels: Sequence[float]) -> Tensor:
    """Thickness (B,) of volumes (B, N, N, N) in ``regions``; NaN where a brain is too small to measure."""
    out = []
    for image, brain, cortex in zip(images, *regions):
        values = image.detach()[brain]
        white = white_matter_level(values.cpu().numpy()) if values.numel() >= 100 else 0.0
        if white <= 0 or not bool(cortex.any()):
            out.append(torch.full((), float("nan"), device=image.device))
        else:
            out.append(cortical_thickness(image, brain, cortex, white, spacing_zyx, levels))
    return torch.stack(out)
