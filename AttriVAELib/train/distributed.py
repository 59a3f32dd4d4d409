"""Distributed training (DDP through ``torchrun``): the process group, rank-0 logging, weight digests.

``torchrun --nproc_per_node=N -m AttriVAELib.cli train …`` starts N processes; each joins the
process group here (NCCL on CUDA, gloo on CPU). Only rank 0 logs and writes the run folder;
:func:`state_digest` lets every rank check at the end that all hold identical weights.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistContext", "close_distributed", "init_distributed", "log_main", "state_digest"]


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # the process group was created here, so it is destroyed here

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_request: str) -> DistContext:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    owns = not dist.is_initialized()
    if owns:
        use_cuda = device_request != "cpu" and torch.cuda.is_available()
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owns)


def close_distributed(ctx: DistContext) -> None:
    """Leave together, then destroy the process group this module created.

    Left to the interpreter's exit, gloo's teardown can race its own threads and abort the
    process ("terminate called without an active exception") after a successful run.
    """
    if ctx.enabled and dist.is_initialized():
        dist.barrier()
        if ctx.owns_group:
            dist.destroy_process_group()


def log_main(msg: str, ctx: DistContext) -> None:
    """Print to stderr on rank 0 only."""
    if ctx.is_main:
        print(msg, file=sys.stderr, flush=True)


def state_digest(model: torch.nn.Module) -> str:
    """SHA-256 over the model's parameters and buffers (to compare ranks or runs)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
