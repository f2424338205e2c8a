"""One process or many (``torchrun``): DDP's knobs, gradient averaging and autocast, for the
trainer; the process group itself is ``sinsr_cli.distributed``'s (one home for upscale, bench
and distill).

Under ``torchrun --nproc-per-node N`` (``WORLD_SIZE`` > 1) each process joins the group (NCCL on
CUDA, gloo on CPU); the student is wrapped in DDP, the discriminator's gradients are averaged by
hand (:func:`all_reduce_grads`), and rank 0 logs, validates and saves.
"""

from __future__ import annotations

import contextlib
import inspect

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..devices import dtype_from_name
from ..distributed import DistInfo


def wrap_ddp(module: nn.Module, device: torch.device, info: DistInfo) -> nn.Module:
    """DDP around ``module`` when there are several processes (buffers never broadcast: the UNet's
    Swin masks and position indices are constants), else ``module`` itself."""
    if info.world <= 1:
        return module
    params = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    return nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None, **no_sync)


def all_reduce_mean(t: Tensor, info: DistInfo) -> Tensor:
    """In place: the mean of ``t`` over processes."""
    if info.world > 1:
        dist.all_reduce(t)
        t /= info.world
    return t


def all_reduce_grads(module: nn.Module, info: DistInfo) -> None:
    """Average the gradients of a module that is not DDP-wrapped (one flat all-reduce)."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if info.world > 1 and grads:
        flat = torch.cat([g.reshape(-1) for g in grads])
        all_reduce_mean(flat, info)
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view_as(g))


def no_sync(module: nn.Module, skip: bool) -> contextlib.AbstractContextManager:
    """DDP's ``no_sync`` for all but the last micro-batch of a step (a no-op without DDP)."""
    return module.no_sync() if skip and hasattr(module, "no_sync") else contextlib.nullcontext()  # type: ignore[operator]


def autocast(dev: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """``--amp bf16|fp16`` autocast on ``dev`` (``no``: a no-op)."""
    if amp == "no":
        return contextlib.nullcontext()
    return torch.autocast(dev.type, dtype=dtype_from_name(amp))


__all__ = ["wrap_ddp", "all_reduce_mean", "all_reduce_grads", "no_sync", "autocast"]
