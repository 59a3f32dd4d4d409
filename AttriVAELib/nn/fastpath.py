"""Device selection and the default fast path: channels_last_3d + bf16 autocast.

The published model is small-channel and large-map, so it is bound by memory traffic and
layout reorders rather than arithmetic. On CPU (oneDNN) the NDHWC layout and bf16 autocast
(on CPUs with AVX-512-bf16 or AMX) together give ~3.5× the published fp32 NCDHW step; on
CUDA bf16 autocast uses tensor cores. Nothing here depends on ``torch.compile``.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import platform
from typing import ContextManager

import torch
from torch import Tensor, nn

from AttriVAELib.core.errors import ConfigError

__all__ = [
    "select_device",
    "describe_device",
    "cpu_bf16_flags",
    "bf16_supported",
    "autocast_context",
    "to_channels_last",
    "channels_last_input",
    "tune_cpu_allocator",
]

log = logging.getLogger(__name__)


def describe_device(device: torch.device) -> str:
    """One human line: what will run the model and whether bf16 is used."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return (f"GPU cuda:{index} ({props.name}, {props.total_memory / 2**30:.0f} GiB); "
                f"bf16 autocast {'available' if bf16_supported(device) else 'unavailable'}")
    if device.type == "cpu":
        flags = cpu_bf16_flags()
        bf16 = f"bf16 autocast available ({', '.join(flags)})" if flags else "no native bf16: fp32"
        return f"CPU ({torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}); {bf16}"
    return f"{device}"


def select_device(requested: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → first CUDA GPU if usable else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``.

    Raises ConfigError when the requested accelerator is not available. The choice is
    logged at INFO level with :func:`describe_device`'s line.
    """
    text = str(requested).strip().lower()
    if text == "auto":
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    else:
        try:
            device = torch.device(text)
        except (RuntimeError, ValueError):
            raise ConfigError(f"unknown device {requested!r}; use auto, cpu, cuda or cuda:N") from None
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise ConfigError(f"device {requested!r} requested but no CUDA GPU is available "
                                  "(this torch build or driver sees none); use --device cpu")
            if device.index is not None and device.index >= torch.cuda.device_count():
                raise ConfigError(f"device {requested!r} requested but only "
                                  f"{torch.cuda.device_count()} CUDA GPU(s) are visible")
        elif device.type == "mps":
            if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
                raise ConfigError(f"device {requested!r} requested but MPS is not available; use cpu")
        elif device.type != "cpu":
            raise ConfigError(f"unsupported device {requested!r}; use auto, cpu, cuda or cuda:N")
    log.info("device: %s", describe_device(device))
    return device


@functools.lru_cache(maxsize=1)
def cpu_bf16_flags() -> tuple[str, ...]:
    """CPU features giving native bf16 matmul/conv (``avx512_bf16``, ``amx_bf16``), if any."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags.update(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    found = tuple(f for f in ("avx512_bf16", "amx_bf16") if f in flags)
    if not found and not flags:
        # No /proc/cpuinfo (macOS, Windows): ask oneDNN whether it has a bf16 kernel path.
        try:
            if torch.ops.mkldnn._is_mkldnn_bf16_supported():
                found = ("onednn_bf16",)
        except (AttributeError, RuntimeError):
            pass
    return found


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast is native (fast) on ``device``."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(cpu_bf16_flags())
    return False


def autocast_context(device: torch.device, enabled: bool | None = None) -> ContextManager:
    """bf16 autocast on ``device`` (``enabled=None``: only where bf16 is native), else a no-op.

    ``enabled=True`` forces bf16 (emulated and slow on CPUs without bf16 support); it raises
    ConfigError on a CUDA GPU without bf16. Losses must be computed in float32 (AttriVAELoss
    does so itself).
    """
    if enabled is None:
        enabled = bf16_supported(device)
    if not enabled:
        return contextlib.nullcontext()
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("bf16 precision requested but this GPU does not support bfloat16; use fp32")
    if device.type not in ("cuda", "cpu"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def to_channels_last(model: nn.Module) -> nn.Module:
    """Convert 5-D parameters (conv weights) to ``channels_last_3d`` in place."""
    return model.to(memory_format=torch.channels_last_3d)


def channels_last_input(x: Tensor) -> Tensor:
    """``x`` (B, C, D, H, W) as a ``channels_last_3d`` tensor (no-op for other ranks)."""
    return x.contiguous(memory_format=torch.channels_last_3d) if x.dim() == 5 else x


_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


@functools.lru_cache(maxsize=1)
def tune_cpu_allocator() -> bool:
    """Keep freed memory in the process (glibc only); returns whether it was applied.

    glibc serves every allocation above 32 MiB with a fresh ``mmap`` and unmaps it on free,
    so each training step at 80³ page-faults and zero-fills gigabytes of activations again;
    in a VM that costs as much as the convolutions. Disabling mmap allocation and heap
    trimming lets the step reuse its memory (the RSS then stays at the step's peak). Call it
    once in a training or benchmark process; not inside a host application such as Slicer.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 40))
    except (OSError, AttributeError):
        return False
    if ok:
        log.debug("glibc malloc: mmap and trimming disabled for large tensors")
    return ok
