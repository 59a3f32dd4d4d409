"""The Attri-VAE network: a 3D convolutional VAE with an optional MLP classifier on z.

Published architecture (Cetin et al., CMIG 2023), input ``1×80×80×80`` in [0, 1], generalised
to any cubic input size ``N`` (a multiple of 16), channel ``width`` multiplier, latent size and
classifier head (none, binary, multiclass).

Module names (stable; Grad-CAM and checkpoints rely on them)::

    encoder.conv1 … encoder.conv5     Sequential(conv: Conv3d, bn: BatchNorm3d, act: ReLU)
    encoder_fc                        Flatten → Dropout → Linear → ReLU → Linear → ReLU
    fc_mu, fc_logvar                  Linear 96 → L
    classifier                        Sequential(fc1, bn1, act1, fc2, bn2, act2, out) or None
    decoder_fc                        Sequential(fc: Linear L → 2·(N/16)³, act: ReLU)
    decoder.conv0                     Conv3d 2 → 64w (stride 1) + BN + ReLU
    decoder.up1 … decoder.up4         ConvTranspose3d (k3 s2 p1 op1) + BN + ReLU
    decoder.conv5                     Conv3d 8w → 4w + BN + ReLU
    decoder.out                       Conv3d 4w → C  (sigmoid applied in :meth:`AttriVAE.decode`)

Every convolution is 3×3×3 with padding 1; at N=80, L=64, width 1 and a binary head this gives
exactly 340,674 parameters, the published count. The posterior is parameterised by its
log-variance everywhere: ``σ = exp(0.5·logvar)``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from AttriVAELib.core.errors import InputError
from AttriVAELib.nn.config import BOTTLENECK_CHANNELS, ModelConfig, scale_channels

__all__ = [
    "class_probabilities",
    "ModelConfig",
    "AttriVAE",
    "ConvBlock",
    "Conv3d",
    "ConvTranspose3d",
    "BatchNorm3d",
    "count_parameters",
    "to_fast_layout",
    "BOTTLENECK_CHANNELS",
    "ENCODER_LAYER_NAMES",
]

#: Names of the encoder conv blocks, in order (``model.encoder.<name>``).
ENCODER_LAYER_NAMES = ("conv1", "conv2", "conv3", "conv4", "conv5")
_FC_HIDDEN = (128, 96)
_CLS_HIDDEN = (32, 16)


# --------------------------------------------------------------------------- blocks
#: Below this many elements the layout copies cost more than the channels-last kernels lose.
_FAST_BN_MIN_NUMEL = 1 << 22


class _ChannelsLastBatchNormFn(torch.autograd.Function):
    """Training-mode batch norm of a channels_last_3d CPU tensor, computed in NCDHW.

    PyTorch's channels-last CPU batch-norm kernels vectorize over C, which is only 4–8 at
    the high-resolution layers; in bf16 their backward was the slowest op of a training step.
    The NCDHW kernels vectorize over space, so four layout copies plus the native NCDHW
    forward and backward cost less. They are also more accurate: the channels-last fp32
    training forward accumulates its statistics with ~1e-3 relative error at 80³ (NCDHW: 1e-7).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps):  # type: ignore[override]
        x = x.contiguous()  # NCDHW copy; the channels_last original is not kept
        y, mean, invstd = torch.native_batch_norm(
            x, weight, bias, running_mean, running_var, True, momentum, eps)[:3]
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.eps = eps
        return y.contiguous(memory_format=torch.channels_last_3d)

    @staticmethod
    def backward(ctx, grad_y):  # type: ignore[override]
        x, weight, mean, invstd = ctx.saved_tensors
        grad_x, grad_w, grad_b = torch.ops.aten.native_batch_norm_backward(
            grad_y.contiguous(), x, weight, None, None, mean, invstd, True, ctx.eps,
            [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]])
        if grad_x is not None:
            grad_x = grad_x.contiguous(memory_format=torch.channels_last_3d)
        return grad_x, grad_w, grad_b, None, None, None, None


class BatchNorm3d(nn.BatchNorm3d):
    """``nn.BatchNorm3d`` (same parameters and state dict), faster and more accurate in CPU
    training mode on large channels_last_3d inputs; otherwise the native implementation."""

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 (nn.Module signature)
        if not (self.training and input.device.type == "cpu" and input.dim() == 5
                and input.numel() >= _FAST_BN_MIN_NUMEL
                and input.is_contiguous(memory_format=torch.channels_last_3d)
                and not input.is_contiguous() and not torch.compiler.is_compiling()):
            return super().forward(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        running = self.track_running_stats
        return _ChannelsLastBatchNormFn.apply(
            input, self.weight, self.bias, self.running_mean if running else None,
            self.running_var if running else None, factor, self.eps)


#: A convolution whose input has a spatial side this short runs in float32 under CPU autocast.
SMALL_MAP_SIDE = 2


def _run_small_map_in_fp32(x: Tensor) -> bool:
    """Under CPU bf16 autocast, whether a 3×3×3 convolution of ``x`` should run in float32.

    oneDNN's bf16 weight-gradient kernels (torch 2.13, oneDNN 3.12) return garbage — errors of
    100 % up to inf/NaN, changing from call to call — on some x86 CPUs (seen on AMD Zen 5) when a
    spatial side of the input is 1 or 2 voxels: the 2³ bottleneck of a 32³ model. Such maps are
    tiny, so float32 costs nothing measurable there.
    """
    return (x.device.type == "cpu" and x.dim() == 5 and min(x.shape[2:]) <= SMALL_MAP_SIDE
            and torch.is_autocast_enabled("cpu"))


def _upcast(x: Tensor) -> Tensor:
    """bf16/fp16 → float32; other dtypes (float32, float64) unchanged."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` (same parameters and state dict) that runs tiny maps in float32 under CPU
    autocast (see :func:`_run_small_map_in_fp32`)."""

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 (nn.Module signature)
        if not _run_small_map_in_fp32(input):
            return super().forward(input)
        with torch.autocast("cpu", enabled=False):
            return super().forward(_upcast(input))


class ConvTranspose3d(nn.ConvTranspose3d):
    """``nn.ConvTranspose3d`` with the same float32 rule for tiny maps as :class:`Conv3d`."""

    def forward(self, input: Tensor, output_size: list[int] | None = None) -> Tensor:  # noqa: A002
        if not _run_small_map_in_fp32(input):
            return super().forward(input, output_size)
        with torch.autocast("cpu", enabled=False):
            return super().forward(_upcast(input), output_size)


class ConvBlock(nn.Sequential):
    """Conv3d (or ConvTranspose3d) k3 p1 → BatchNorm3d → ReLU; children ``conv``, ``bn``, ``act``."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, transpose: bool = False,
                 inplace: bool = True) -> None:
        if transpose:
            # k3 s2 p1 op1 exactly doubles the size: (n-1)·2 − 2 + 3 + 1 = 2n.
            conv: nn.Module = ConvTranspose3d(in_ch, out_ch, 3, stride=stride, padding=1, output_padding=1)
        else:
            conv = Conv3d(in_ch, out_ch, 3, stride=stride, padding=1)
        super().__init__(OrderedDict(conv=conv, bn=BatchNorm3d(out_ch), act=nn.ReLU(inplace=inplace)))


def _xavier_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------- model
class AttriVAE(nn.Module):
    """Attribute-regularized 3D VAE with an optional classifier on the latent code.

    Shapes: ``x`` (B, C, N, N, N) in [0, 1] → ``mu``, ``logvar``, ``z`` (B, L) →
    ``recon`` (B, C, N, N, N) in [0, 1]; ``logits`` (B,) for a binary head, (B, num_classes)
    for a multiclass head. The classifier has BatchNorm1d, so training needs B ≥ 2.
    In eval mode ``z = mu``: predictions, reconstructions and heatmaps are deterministic.
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        config = (config or ModelConfig()).validate()
        self.config = config
        c1, c2, c3, c4 = config.channels
        n_b = config.bottleneck_size
        L = config.latent_dim

        # No in-place ReLU in the encoder: Grad-CAM may put full backward hooks on any of its
        # modules, which in-place ops break (the decoder, where memory matters, keeps them).
        self.encoder = nn.Sequential(OrderedDict(
            conv1=ConvBlock(config.in_channels, c1, stride=2, inplace=False),
            conv2=ConvBlock(c1, c2, stride=2, inplace=False),
            conv3=ConvBlock(c2, c3, stride=2, inplace=False),
            conv4=ConvBlock(c3, c4, stride=2, inplace=False),
            conv5=ConvBlock(c4, config.bottleneck_channels, stride=1, inplace=False),
        ))
        self.encoder_fc = nn.Sequential(OrderedDict(
            flatten=nn.Flatten(1),
            dropout=nn.Dropout(config.dropout),
            fc1=nn.Linear(config.flat_features, _FC_HIDDEN[0]),
            act1=nn.ReLU(inplace=True),
            fc2=nn.Linear(_FC_HIDDEN[0], _FC_HIDDEN[1]),
            act2=nn.ReLU(inplace=True),
        ))
        self.fc_mu = nn.Linear(_FC_HIDDEN[1], L)
        self.fc_logvar = nn.Linear(_FC_HIDDEN[1], L)

        self.classifier: nn.Sequential | None = None
        if config.num_classes:
            h1, h2 = _CLS_HIDDEN
            self.classifier = nn.Sequential(OrderedDict(
                fc1=nn.Linear(L, h1), bn1=nn.BatchNorm1d(h1), act1=nn.ReLU(inplace=True),
                fc2=nn.Linear(h1, h2), bn2=nn.BatchNorm1d(h2), act2=nn.ReLU(inplace=True),
                out=nn.Linear(h2, 1 if config.num_classes == 2 else config.num_classes),
            ))

        self.decoder_fc = nn.Sequential(OrderedDict(
            fc=nn.Linear(L, config.flat_features), act=nn.ReLU(inplace=True)))
        self._bottleneck_shape = (config.bottleneck_channels, n_b, n_b, n_b)
        self.decoder = nn.Sequential(OrderedDict(
            conv0=ConvBlock(config.bottleneck_channels, c4),
            up1=ConvBlock(c4, c4, stride=2, transpose=True),
            up2=ConvBlock(c4, c3, stride=2, transpose=True),
            up3=ConvBlock(c3, c2, stride=2, transpose=True),
            up4=ConvBlock(c2, c1, stride=2, transpose=True),
            conv5=ConvBlock(c1, scale_channels(4, config.width)),
            out=Conv3d(scale_channels(4, config.width), config.in_channels, 3, padding=1),
        ))
        _xavier_init(self)

    # ------------------------------------------------------------------ access helpers
    @property
    def encoder_layers(self) -> "OrderedDict[str, nn.Module]":
        """``conv1``..``conv5`` blocks (Conv3d+BN+ReLU), e.g. for Grad-CAM hooks."""
        return OrderedDict((name, getattr(self.encoder, name)) for name in ENCODER_LAYER_NAMES)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def has_classifier(self) -> bool:
        return self.classifier is not None

    # ------------------------------------------------------------------ VAE parts
    def _check_input(self, x: Tensor) -> None:
        c, n = self.config.in_channels, self.config.input_size
        if x.dim() != 5 or tuple(x.shape[1:]) != (c, n, n, n):
            raise InputError(f"model expects input of shape (B, {c}, {n}, {n}, {n}), got {tuple(x.shape)}")

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, N, N, N) → ``mu``, ``logvar``, each (B, L)."""
        self._check_input(x)
        h = self.encoder_fc(self.encoder(x))
        return self.fc_mu(h), self.fc_logvar(h)

    def reparameterize(self, mu: Tensor, logvar: Tensor, sample: bool | None = None) -> Tensor:
        """``mu + exp(0.5·logvar)·ε`` when sampling (default: in training mode), else ``mu``."""
        if sample is None:
            sample = self.training
        if not sample:
            return mu
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def decode_logits(self, z: Tensor) -> Tensor:
        """(B, L) → pre-sigmoid reconstruction (B, C, N, N, N)."""
        h = self.decoder_fc(z).view(z.shape[0], *self._bottleneck_shape)
        return self.decoder(h)

    def decode(self, z: Tensor) -> Tensor:
        """(B, L) → reconstruction (B, C, N, N, N) in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z))

    def classify(self, z: Tensor) -> Tensor | None:
        """(B, L) → logits (B,) for binary, (B, num_classes) for multiclass, None without a head."""
        if self.classifier is None:
            return None
        logits = self.classifier(z)
        return logits.squeeze(1) if self.config.num_classes == 2 else logits

    def encode_mu_frozen(self, x: Tensor) -> Tensor:
        """μ (B, L) of ``x`` through the encoder with its weights and BatchNorm statistics held
        fixed: gradients reach ``x`` (e.g. a reconstruction, hence the decoder) but no encoder weight,
        and the running statistics are not updated."""
        return frozen_call(_MuPath(self), x)

    def forward(self, x: Tensor, reencode: bool = False) -> dict[str, Tensor]:
        """Returns ``mu``, ``logvar``, ``z`` (B, L), ``recon`` and ``recon_logits``
        (B, C, N, N, N) and, with a classifier, ``logits``. ``reencode=True`` adds ``recon_mu``
        (B, L): the reconstruction encoded again by :meth:`encode_mu_frozen`."""
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar)
        recon_logits = self.decode_logits(z)
        out = {"mu": mu, "logvar": logvar, "z": z, "recon": torch.sigmoid(recon_logits),
               "recon_logits": recon_logits}
        if reencode:
            out["recon_mu"] = self.encode_mu_frozen(out["recon"].to(x.dtype))
        logits = self.classify(z)
        if logits is not None:
            out["logits"] = logits
        return out


def frozen_call(module: nn.Module, *inputs: Tensor) -> Tensor:
    """``module(*inputs)`` with its weights detached and its buffers copied: gradients reach the
    inputs but no weight of ``module``, and BatchNorm's running statistics are not updated."""
    state = {n: p.detach() for n, p in module.named_parameters()}
    state.update({n: b.clone() for n, b in module.named_buffers()})
    return torch.func.functional_call(module, state, inputs)


class _MuPath(nn.Module):
    """The encoder's path to μ as a module of its own (not registered: it only borrows the
    network's layers), so that ``torch.func.functional_call`` can run it with frozen weights."""

    def __init__(self, network: AttriVAE) -> None:
        super().__init__()
        self.encoder, self.encoder_fc, self.fc_mu = network.encoder, network.encoder_fc, network.fc_mu

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_mu(self.encoder_fc(self.encoder(x)))


def class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """(B,) binary logits → (B, 2) probabilities; (B, C) → softmax."""
    if logits.ndim == 1:
        p = torch.sigmoid(logits)
        return torch.stack([1 - p, p], dim=1)
    return torch.softmax(logits, dim=1)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (BatchNorm affine included, running statistics excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def to_fast_layout(model: nn.Module, x: Tensor | None = None) -> tuple[nn.Module, Tensor | None]:
    """Convert ``model`` (in place) and ``x`` to ``torch.channels_last_3d``.

    On CPU (oneDNN) and CUDA (cuDNN) the NDHWC layout avoids layout reorders around every
    3D convolution; it roughly halves the fp32 training step of the published model on CPU.
    """
    model = model.to(memory_format=torch.channels_last_3d)
    if x is not None and x.dim() == 5:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    return model, x
