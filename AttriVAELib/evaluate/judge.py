"""An independent judge of decoded images: plain 3D CNN classifiers trained on real images.

Whether a decoded counterfactual "is" in its target class cannot be asked of the model's own
encoder: a decoder trained to please that encoder can draw patterns it reads as a class
without drawing the anatomy. The judge shares nothing with the model but the training split:

    x (B, 1, N, N, N) → [Conv3d(3, stride 2) → BatchNorm → ReLU] × 4 (8, 16, 32, 32 channels)
      → concat(global mean, global max) (B, 64) → Linear → logits (B, C)

It is trained from a fixed seed on the model-grid training images with mirror flips, quarter
turns in the axial plane, a random Gaussian blur (σ up to 1 voxel) and a random brightness and
contrast per image (``x·s + b``, s in [0.8, 1.25], b in [−0.1, 0.1]), so that decoded images,
which are smoother than real ones, are judged by what they show rather than by their sharpness,
and a brightening of the whole image is not read as a lesion. Its own score on the real
held-out images is reported beside its verdicts.

The judge is an ensemble of ``M`` such networks trained from seeds ``s, s+1, …``; its verdict is
their mean probability, ``p(c | x) = (1/M) Σ_m softmax(f_m(x))_c``. One network's verdicts on
decoded images move with its seed far more than its score on real images does (on the phantom
demo model, seven single judges that each err on 0–5 % of the real held-out images passed 86–97 %
of its counterfactuals towards class 0); the members' spread is reported beside the verdict
(:meth:`Judge.member_probabilities`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Judge", "JudgeNetwork", "train_judge"]

_CHANNELS = (8, 16, 32, 32)


class JudgeNetwork(nn.Module):
    """(B, 1, N, N, N) in [0, 1] → logits (B, C) (see the module docstring for the layers)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for width in _CHANNELS:
            layers += [nn.Conv3d(channels, width, 3, stride=2, padding=1), nn.BatchNorm3d(width), nn.ReLU()]
            channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(2 * channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.features(x)
        return self.head(torch.cat([h.mean(dim=(2, 3, 4)), h.amax(dim=(2, 3, 4))], dim=1))


def _blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (B, 1, N, N, N) with standard deviation ``sigma`` voxels."""
    if sigma < 0.05:
        return x
    radius = max(1, int(round(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = kernel.numel()
        pad = [0] * 6
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        x = F.conv3d(F.pad(x, pad, mode="replicate"), kernel.view(shape))
    return x


def _augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """Random flips of each axis, a quarter turn in the axial plane and a blur, per batch; a
    brightness and contrast change per image."""
    for axis in (2, 3, 4):
        if torch.rand((), generator=generator) < 0.5:
            x = x.flip(axis)
    turns = int(torch.randint(0, 4, (), generator=generator))
    x = torch.rot90(x, turns, dims=(3, 4))
    x = _blur(x, float(torch.rand((), generator=generator)))
    shape = (x.shape[0], 1, 1, 1, 1)
    contrast = torch.exp((torch.rand(shape, generator=generator) * 2 - 1) * np.log(1.25)).to(x.dtype)
    brightness = ((torch.rand(shape, generator=generator) * 2 - 1) * 0.1).to(x.dtype)
    return x * contrast + brightness


@dataclass
class Judge:
    """Trained :class:`JudgeNetwork` members in eval mode; their mean probability is the verdict."""

    networks: list[JudgeNetwork]
    num_classes: int

    @torch.no_grad()
    def member_probabilities(self, images: np.ndarray | Tensor, batch_size: int = 32) -> np.ndarray:
        """Each member's class probabilities (M, B, C) of model-grid images (B, N, N, N) in [0, 1]."""
        x = torch.as_tensor(np.asarray(images, dtype=np.float32))
        members = []
        for network in self.networks:
            out = [torch.softmax(network(x[start:start + batch_size, None]).float(), dim=1)
                   for start in range(0, x.shape[0], batch_size)]
            members.append(torch.cat(out).numpy() if out else np.zeros((0, self.num_classes)))
        return np.stack(members)

    def probabilities(self, images: np.ndarray | Tensor, batch_size: int = 32) -> np.ndarray:
        """The verdict: the members' mean class probabilities (B, C)."""
        return self.member_probabilities(images, batch_size).mean(0)


def train_judge(images: Tensor, labels: np.ndarray, num_classes: int, *, epochs: int = 40, members: int = 3,
                batch_size: int = 32, lr: float = 2e-3, seed: int = 0,
                log: Callable[[str], None] | None = None) -> Judge:
    """Train the judge's ``members`` networks, from seeds ``seed, seed+1, …``, on real model-grid
    images (S, 1, N, N, N) with class indices ``labels`` (S,).

    Subjects without a label (−1) are left out. Deterministic for a given seed and machine.
    """
    if members < 1:
        raise ValueError(f"a judge needs at least one member (got {members})")
    networks = []
    for m in range(members):
        member_log = None if log is None else (lambda line, m=m: log(f"judge {m + 1}/{members}: {line}"))
        networks.append(_train_network(images, labels, num_classes, epochs=epochs, batch_size=batch_size, lr=lr,
                                       seed=seed + m, log=member_log))
    return Judge(networks, num_classes)


def _train_network(images: Tensor, labels: np.ndarray, num_classes: int, *, epochs: int, batch_size: int,
                   lr: float, seed: int, log: Callable[[str], None] | None) -> JudgeNetwork:
    """One member of :func:`train_judge`."""
    keep = np.flatnonzero(np.asarray(labels) >= 0)
    x_all = images[torch.as_tensor(keep)].float()
    y_all = torch.as_tensor(np.asarray(labels)[keep], dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    network = JudgeNetwork(num_classes)
    optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=1e-4)
    steps = max(1, epochs * (len(keep) // batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    network.train()
    step = 0
    for epoch in range(epochs):
        order = torch.randperm(len(keep), generator=generator)
        total = 0.0
        for start in range(0, len(keep) - batch_size + 1, batch_size):
            if step >= steps:
                break
            idx = order[start:start + batch_size]
            loss = F.cross_entropy(network(_augment(x_all[idx], generator)), y_all[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            total += float(loss.detach()) * len(idx)
        if log is not None and (epoch + 1) % 10 == 0:
            log(f"epoch {epoch + 1}/{epochs}: loss {total / max(len(keep), 1):.3f}")
    network.eval()
    return network
