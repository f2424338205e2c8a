"""One command as N processes under torchrun (or any launcher that sets torchrun's variables).

The one home for what ``distill``, ``upscale`` and ``bench`` share when they run sharded:

* who this process is: ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` (:func:`from_env`);
* joining and leaving the process group (``env://``: ``MASTER_ADDR``/``MASTER_PORT``; gloo on
  CPU, nccl on CUDA), and the device of a rank, ``cuda:LOCAL_RANK`` (:func:`join`,
  :func:`process_group`);
* dealing work items to ranks so that they finish together (:func:`deal`);
* collecting picklable results from every rank (:func:`all_gather`, :func:`broadcast`).

Without ``WORLD_SIZE`` (or with 1) this is the world of one: every function works without a
process group, so callers have a single code path. Nothing here knows what the items are.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = [
    "SHARD_TIMEOUT",
    "TIMEOUT_ENV",
    "DistInfo",
    "all_gather",
    "barrier",
    "broadcast",
    "deal",
    "from_env",
    "join",
    "leave",
    "local_processes",
    "process_group",
    "rank_device",
]

T = TypeVar("T")

#: seconds a collective waits for the slowest process before the run fails
TIMEOUT_ENV = "SINSR_DIST_TIMEOUT"
#: the wait of a sharded upscale/bench: its one collective after the work waits for the slowest
#: process to finish its whole share (torch's default of 10-30 min would end long runs)
SHARD_TIMEOUT = timedelta(days=1)

_joined = False  # whether this module initialised the process group (and so may destroy it)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the run: ``rank`` of ``world``, ``local_rank`` on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes shared files, prints and reports."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer (set by torchrun; unset it to run one process)") from None


def from_env() -> DistInfo:
    """This process's rank, world size and local rank from torchrun's variables (nothing joined).

    Raises ValueError for values that cannot be (a rank outside the world, say).
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistInfo()
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world or local < 0:
        raise ValueError(f"RANK={rank} / LOCAL_RANK={local} do not fit WORLD_SIZE={world}")
    return DistInfo(rank, world, local)


def local_processes() -> int:
    """How many processes of this run share this node (``LOCAL_WORLD_SIZE``, set by torchrun;
    1 alone): they share its RAM, so a memory budget planned from free RAM is split among them."""
    return max(1, _env_int("LOCAL_WORLD_SIZE", 1)) if from_env().world > 1 else 1


def rank_device(device: torch.device, info: DistInfo) -> torch.device:
    """One device per rank: any CUDA device becomes ``cuda:LOCAL_RANK`` when ``world > 1``
    (each process sees all of its node's GPUs, as under torchrun); other devices are kept."""
    if info.world <= 1 or device.type != "cuda":
        return device
    count = torch.cuda.device_count()
    if info.local_rank >= count:
        raise ValueError(f"LOCAL_RANK {info.local_rank} needs cuda:{info.local_rank}, but {count} CUDA device(s) are visible")
    return torch.device("cuda", info.local_rank)


def _timeout(default: timedelta | None) -> timedelta | None:
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return default
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        raise ValueError(f"{TIMEOUT_ENV}={raw!r} must be a number of seconds > 0")
    return timedelta(seconds=seconds)


def join(device: torch.device, *, timeout: timedelta | None = None) -> tuple[DistInfo, torch.device]:
    """Join the process group when ``WORLD_SIZE`` > 1; returns this rank and its device.

    gloo on CPU (and MPS), nccl on CUDA. ``timeout``: how long a collective waits
    (``SINSR_DIST_TIMEOUT`` seconds overrides it; None: torch's default). A group that is
    already initialised (by the caller, or an earlier call) is used as it is.
    """
    global _joined
    info = from_env()
    if info.world <= 1:
        return info, device
    device = rank_device(device, info)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {}
        wait = _timeout(timeout)
        if wait is not None:
            kwargs["timeout"] = wait
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", **kwargs)
        _joined = True
    return DistInfo(dist.get_rank(), dist.get_world_size(), info.local_rank), device


def leave() -> None:
    """Destroy the process group if :func:`join` created it (a caller's own group is kept)."""
    global _joined
    if _joined and dist.is_initialized():
        dist.destroy_process_group()
    _joined = False


@contextmanager
def process_group(device: torch.device, *, timeout: timedelta | None = None) -> Iterator[tuple[DistInfo, torch.device]]:
    """:func:`join` on entry, :func:`leave` on exit (however the block ends).

    A block that ends normally first waits for every rank: a rank that shuts its gloo
    connections down while a peer is still finishing the last collective can make that
    peer abort at exit (seen once in a torchrun test), so the ranks leave together."""
    info, dev = join(device, timeout=timeout)
    try:
        yield info, dev
        barrier(info)
    finally:
        leave()


def deal(weights: Sequence[float], world: int) -> list[list[int]]:
    """Indices ``0..len(weights)-1`` split among ``world`` ranks so they end together.

    The heaviest item first, each to the least loaded rank (ties: the lowest rank); every
    rank's indices ascending. Deterministic: every rank computes the same split from the same
    list. Equal weights give a round-robin deal.
    """
    if world < 1:
        raise ValueError(f"world must be >= 1, got {world}")
    shares: list[list[int]] = [[] for _ in range(world)]
    load = [0.0] * world
    for i in sorted(range(len(weights)), key=lambda k: (-float(weights[k]), k)):
        r = min(range(world), key=lambda q: (load[q], len(shares[q]), q))
        shares[r].append(i)
        load[r] += float(weights[i])
    return [sorted(s) for s in shares]


def all_gather(obj: T, info: DistInfo) -> list[T]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` alone."""
    if info.world <= 1:
        return [obj]
    out: list[Any] = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: T, info: DistInfo) -> T:
    """Rank 0's ``obj`` on every rank (a seed drawn at random, say); ``obj`` alone."""
    if info.world <= 1:
        return obj
    box: list[Any] = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]  # type: ignore[no-any-return]


def barrier(info: DistInfo) -> None:
    """Wait until every rank gets here (nothing to wait for alone)."""
    if info.world > 1:
        dist.barrier()
