"""Fast CPU decoding: the decoder with BatchNorm folded in, run through oneDNN's fused kernels.

:func:`fold_decoder` copies the decoder with each BatchNorm folded into its convolution (exact
up to float rounding). :class:`OneDNNDecoder` runs that folded decoder on CPU through oneDNN's
fused convolution + ReLU kernels. Both are eval-only; :class:`~AttriVAELib.inference.AttriVAEModel`
uses them for slider previews and traversals and checks them against the network at build time.
"""

from __future__ import annotations

import copy
import functools

import torch
from torch import Tensor, nn

from AttriVAELib.nn.model import AttriVAE

__all__ = ["OneDNNDecoder", "fold_decoder"]


def fold_decoder(network: AttriVAE) -> nn.Module:
    """An eval-only copy of the decoder with every BatchNorm folded into its convolution.

    Exact up to float rounding; it removes six normalization passes over the large
    high-resolution maps, which are a third of the decoding time on CPU.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    decoder = copy.deepcopy(network.decoder).eval()
    for block in decoder.children():
        if hasattr(block, "bn") and isinstance(block.bn, nn.BatchNorm3d):
            block.conv = fuse_conv_bn_eval(block.conv, block.bn, transpose=isinstance(block.conv, nn.ConvTranspose3d))
            block.bn = nn.Identity()
    for p in decoder.parameters():
        p.requires_grad_(False)
    return decoder


class OneDNNDecoder(nn.Module):
    """The folded decoder on CPU through oneDNN's fused convolution + activation kernels.

    PyTorch sends batch-1 3D convolutions with small inputs (every transposed conv below the
    last one at 80³, most layers at 32³) to its native ``slow_conv3d`` kernels, 4–50× slower
    than oneDNN, and runs each ReLU as a separate pass over the large maps.
    ``torch.ops.mkldnn._convolution_pointwise`` / ``_convolution_transpose_pointwise`` (the
    kernels ``torch.compile`` uses on CPU) always use oneDNN and fuse the ReLU. The sigmoid is
    applied separately in float32: as a oneDNN post-op it cost 4–6 ms at 80³, as a torch op 0.3 ms.

    ``forward`` takes the (B, 2, n, n, n) bottleneck in the dtype to compute in (float32 or
    bfloat16) and returns the float32 sigmoid output (B, C, N, N, N).
    """

    def __init__(self, folded: nn.Module) -> None:
        super().__init__()
        self.specs: list[tuple[bool, list[int], list[int], list[int], str]] = []
        weights: dict[str, Tensor] = {}
        blocks = list(folded.children())
        for i, block in enumerate(blocks):
            conv = getattr(block, "conv", block)
            transposed = isinstance(conv, nn.ConvTranspose3d)
            attr = "relu" if hasattr(block, "conv") else "none"
            self.specs.append((transposed, list(conv.stride), list(conv.padding),
                               list(getattr(conv, "output_padding", (0, 0, 0))), attr))
            weights[f"w{i}"] = conv.weight.detach().float().contiguous(memory_format=torch.channels_last_3d)
            weights[f"b{i}"] = conv.bias.detach().float()
        self._weights = {torch.float32: weights}

    @classmethod
    def build(cls, folded: nn.Module) -> "OneDNNDecoder | None":
        """The oneDNN decoder if these kernels exist and reproduce ``folded``, else None."""
        ops = getattr(torch.ops, "mkldnn", None)
        if not torch.backends.mkldnn.is_available() or ops is None:
            return None
        try:
            decoder = cls(folded)
            first = next(iter(folded.children()))
            h = torch.randn(1, first.conv.in_channels, 2, 2, 2)
            with torch.inference_mode():
                ref = torch.sigmoid(folded(h))
                ok = torch.allclose(decoder(h), ref, atol=1e-4)
        except (RuntimeError, AttributeError, NotImplementedError, TypeError):
            return None
        return decoder if ok else None

    @staticmethod
    @functools.lru_cache(maxsize=1)
    def bf16_capable() -> bool:
        """Whether oneDNN has bf16 convolution kernels on this CPU (AVX-512 BW/VL/DQ or newer)."""
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False

    def _params(self, dtype: torch.dtype) -> dict[str, Tensor]:
        if dtype not in self._weights:
            self._weights[dtype] = {k: v.to(dtype) for k, v in self._weights[torch.float32].items()}
        return self._weights[dtype]

    def forward(self, h: Tensor) -> Tensor:
        ops = torch.ops.mkldnn
        p = self._params(h.dtype)
        h = h.contiguous(memory_format=torch.channels_last_3d)
        dilation = [1, 1, 1]
        for i, (transposed, stride, padding, output_padding, attr) in enumerate(self.specs):
            w, b = p[f"w{i}"], p[f"b{i}"]
            if transposed:
                h = ops._convolution_transpose_pointwise(h, w, b, padding, output_padding, stride, dilation, 1,
                                                         attr, [], "")
            else:
                h = ops._convolution_pointwise(h, w, b, padding, stride, dilation, 1, attr, [], "")
        return torch.sigmoid(h.float())
