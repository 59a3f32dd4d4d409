"""Measured-lesion loss: the lesion-volume dim must draw the lesion volume it says.

The attribute-regularization loss orders a latent dim by lesion volume in the encoder's codes;
nothing asks the decoder to draw a lesion from that dim. A phantom's lesion is a small bright
blob whose place the code carries in other dims, and the decoder takes the lesion from those:
moving the lesion dim alone changes almost nothing in the image. This term measures the lesion
a decoded volume draws beyond the same code with the lesion dim at its "no lesion" value ``h``,
and asks it to follow the attribute. For subject ``i`` of a batch and the next one ``j``::

    R_i = dec(z_i with z[d] = h)            the subject without its lesion
    m(V) = dv · Σ_{body(R_i) ∩ ball} σ((V − R_i − t) / (t/5))     mL drawn as lesion

    reconstruction:  m(dec(z_i)) = v_i
    swapped:         m(dec(z_i with z[d] = z_j[d])) = v_j

where ``v`` is the lesion volume (mL), ``h`` the mean of ``z[d]`` over the batch's subjects without
a lesion, and σ the logistic function. A voxel counts as lesion where the decoding exceeds ``R_i``
by ``t``, half the median contrast of the training lesions against the wall around them: a
faint brightening spread over the shell draws nothing. Only the phantom of ``R_i`` (its body,
:func:`~AttriVAELib.cohorts.phantom.cohort.segment_body`, dilated by one voxel) counts, within a ball
around the peak of the added intensity (found without gradients; radius 1.25 × that of a sphere
of the 95th-percentile training lesion). A subject without a lesion, given a lesion subject's
value, must therefore draw one lesion; one with a lesion, given the "no lesion" value, must
lose it.

``loss = λ · mean_i(e_rec² + e_swap²) / σ_v² + mean_i Σ_{outside the ball} (dec(z_i with z[d] = z_j[d]) − R_i)²``
with ``σ_v`` the standard deviation of the lesion volume over the calibration subjects. The last
sum, a squared error in the reconstruction's units, keeps the lesion dim from changing anything
but the lesion. Gradients reach ``R_i`` through the reconstruction's term only (a subject with a
lesion must lose it there); the swapped term treats ``R_i`` as fixed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from torch import Tensor

from AttriVAELib.core.errors import ConfigError
from AttriVAELib.data.attributes import sphere_radius_mm

__all__ = ["LESION_ATTRIBUTE", "MeasuredLesionLoss", "lesion_contrast"]

#: The attribute the loss measures (an ``attrivae synth`` manifest column).
LESION_ATTRIBUTE = "lesion_volume_ml"
#: Share of the median lesion contrast above which a decoded voxel counts as lesion.
THRESHOLD_SHARE = 0.5


def lesion_contrast(image: np.ndarray, cover: np.ndarray, wall: np.ndarray) -> float:
    """Median intensity of a real lesion (its cover ≥ 0.5) minus that of the wall within two voxels of it."""
    core = cover >= 0.5
    ring = ndi.binary_dilation(core, iterations=3) & ~ndi.binary_dilation(core, iterations=1) & wall
    if not core.any() or not ring.any():
        return float("nan")
    return float(np.median(image[core]) - np.median(image[ring]))


@dataclass(frozen=True)
class MeasuredLesionLoss:
    """The loss for one latent dim; build it with :meth:`calibrate`.

    Attributes:
        weight: λ.
        dim: the latent dim regularized by the lesion volume (its attribute column too).
        ml_per_unit: mL of lesion per unit of the scaled attribute (the scaled value 0 is no lesion).
        spread: ``σ_v`` (mL).
        threshold: ``t``, added intensity from which a voxel counts as lesion.
        radius_voxels: the radius of the ball a drawn lesion is read in, in model voxels.
        voxel_ml: a model voxel's volume (mL).
    """

    weight: float
    dim: int
    ml_per_unit: float
    spread: float
    threshold: float
    radius_voxels: float
    voxel_ml: float

    @classmethod
    def calibrate(cls, weight: float, dim: int, samples: Iterable[tuple[np.ndarray, np.ndarray | None, float, float]],
                  spacing_mm: float) -> tuple["MeasuredLesionLoss", dict]:
        """Fit the volume scale, ``σ_v``, ``t`` and the ball on training inputs.

        Args:
            samples: (model-grid image (N, N, N), lesion cover (N, N, N) or None, scaled attribute,
                lesion volume in mL) per subject.
            spacing_mm: the model grid's (isotropic) voxel size.

        Returns:
            The loss and a summary ``{"subjects", "lesions", "contrast", "threshold", "radius_mm"}``.

        Raises:
            ConfigError: fewer than 3 subjects with a visible lesion or none without, or a scaled
                attribute that is not proportional to the volume.
        """
        from AttriVAELib.cohorts.phantom.cohort import segment_shell

        scaled, volumes, contrasts = [], [], []
        for image, cover, value, volume in samples:
            scaled.append(float(value))
            volumes.append(float(volume))
            if volume > 0 and cover is not None:
                image = np.asarray(image)
                c = lesion_contrast(image, np.asarray(cover), segment_shell(image))
                if np.isfinite(c) and c > 0:
                    contrasts.append(c)
        a, v = np.asarray(scaled), np.asarray(volumes)
        if len(contrasts) < 3 or not (v == 0).any():
            raise ConfigError(f"loss.measured_gamma: the measured-lesion loss needs training subjects without a lesion "
                              f"and at least 3 with a visible lesion in their mask; found {int((v == 0).sum())} and "
                              f"{len(contrasts)}")
        ml_per_unit = float((a * v).sum() / max(float((a * a).sum()), 1e-12))
        if not (ml_per_unit > 0 and np.allclose(a * ml_per_unit, v, rtol=1e-3, atol=1e-3 * float(v.max()))):
            raise ConfigError(f"loss.measured_gamma: the scaled {LESION_ATTRIBUTE} is not proportional to the lesion "
                              "volume (0 must mean no lesion)")
        contrast = float(np.median(contrasts))
        radius_mm = 1.25 * sphere_radius_mm(float(np.percentile(v[v > 0], 95)))
        loss = cls(float(weight), int(dim), ml_per_unit, float(v.std()), THRESHOLD_SHARE * contrast,
                   radius_mm / float(spacing_mm), float(spacing_mm) ** 3 / 1000.0)
        return loss, {"subjects": len(v), "lesions": len(contrasts), "contrast": contrast,
                      "threshold": loss.threshold, "radius_mm": radius_mm}

    def __call__(self, decode: Callable[[Tensor], Tensor], outputs: dict[str, Tensor], x: Tensor,
                 attributes: Tensor) -> Tensor:
        """The loss (module docstring) for a batch; 0 for a batch without a subject free of lesion.

        Args:
            decode: (B, L) → decoded volumes (B, 1, N, N, N), with gradients.
            outputs: the model's forward outputs (``z``, ``recon``).
            x: the input batch (B, 1, N, N, N) (unused: the measure compares decodings).
            attributes: (B, K) scaled attributes.
        """
        z = outputs["z"]
        volume = attributes[:, self.dim].float() * self.ml_per_unit
        free = volume <= 1e-6
        if z.shape[0] < 2 or not bool(free.any()):
            return torch.zeros((), device=z.device)
        partner = torch.roll(torch.arange(z.shape[0], device=z.device), 1)
        without, swapped = z.clone(), z.clone()
        without[:, self.dim] = z.detach()[free, self.dim].mean()
        swapped[:, self.dim] = z[partner, self.dim]
        decoded = decode(torch.cat([without, swapped]))[:, 0].float()
        reference, moved = decoded[:len(z)], decoded[len(z):]
        bodies = self._bodies(reference)
        drawn_recon, _ = self.drawn(outputs["recon"][:, 0].float() - reference, bodies)
        # The swap compares with the reference as it is: were it trained here too, darkening it would
        # pay as well as drawing a lesion, and the "no lesion" end of a traversal would dent the shell.
        change = moved - reference.detach()
        drawn_swap, ball = self.drawn(change, bodies)
        errors = (drawn_recon - volume) ** 2 + (drawn_swap - volume[partner]) ** 2
        elsewhere = (change ** 2 * (1.0 - ball)).flatten(1).sum(1)
        return self.weight * errors.mean() / self.spread ** 2 + elsewhere.mean()

    @staticmethod
    def _bodies(reference: Tensor) -> Tensor:
        """The body of each reference decoding, dilated by one voxel, (B, N, N, N) float, without gradients."""
        from AttriVAELib.cohorts.phantom.cohort import segment_body

        arrays = reference.detach().cpu().numpy()
        bodies = np.stack([ndi.binary_dilation(segment_body(a), iterations=1) for a in arrays])
        return torch.from_numpy(bodies).to(device=reference.device, dtype=reference.dtype)

    def drawn(self, difference: Tensor, regions: Tensor) -> tuple[Tensor, Tensor]:
        """mL drawn as lesion (B,) by differences (B, N, N, N) in the given regions (B, N, N, N) of the
        references, and the balls (B, N, N, N) they are read in."""
        lesion = torch.sigmoid((difference - self.threshold) / (self.threshold / 5.0)) * regions
        with torch.no_grad():
            smooth = F.avg_pool3d((F.relu(difference) * regions)[:, None], 3, stride=1, padding=1)[:, 0]
            peak = torch.stack(torch.unravel_index(smooth.flatten(1).argmax(1), smooth.shape[1:]), 1)  # (B, 3)
            grids = torch.meshgrid(*(torch.arange(n, device=lesion.device) for n in lesion.shape[1:]), indexing="ij")
            distance = sum((g[None] - peak[:, k, None, None, None]) ** 2 for k, g in enumerate(grids))
            ball = (distance <= self.radius_voxels ** 2).to(lesion.dtype)
        return (lesion * ball).flatten(1).sum(1) * self.voxel_ml, ball


def measured_lesion_loss(weight: float, dim: int, train_set, volumes: Sequence[float], count: int,
                         log: Callable[[str], None]) -> MeasuredLesionLoss:
    """The loss calibrated on the first ``count`` subjects of ``train_set`` (a :class:`CohortDataset`)."""
    spacing = float(train_set.mapping(0).model.spacing[0])
    samples = ((train_set.image(i)[0].numpy(), train_set.lesion(i, "linear"), float(train_set.attributes[i, dim]),
                float(volumes[i])) for i in range(count))
    loss, summary = MeasuredLesionLoss.calibrate(weight, dim, samples, spacing)
    log(f"measured-lesion loss (λ {weight:g}): {summary['lesions']} training lesions stand {summary['contrast']:.2f} "
        f"above their wall; a decoded voxel {summary['threshold']:.2f} above the image without the lesion counts as "
        f"lesion, within {summary['radius_mm']:.1f} mm of the peak")
    return loss
