"""Random draws for the degradation, always through the ``generator`` argument and on its device
(then moved to the image's): the one place that decides how a seed becomes numbers.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def _gen_device(generator: torch.Generator | None, fallback: torch.device) -> torch.device:
    return generator.device if generator is not None else fallback


def _rand(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """``n`` uniforms in [0, 1), float32, drawn on the generator's device, returned on ``device``."""
    u = torch.rand(n, generator=generator, device=_gen_device(generator, device))
    return u.to(device)


def _uniform(
    n: int, low: float, high: float, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    return low + (high - low) * _rand(n, generator, device)


def _uniform_scalar(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(_rand(1, generator, torch.device("cpu")))


def _bernoulli(p: float, generator: torch.Generator | None) -> bool:
    return float(_rand(1, generator, torch.device("cpu"))) < p


def _choice(probs: Sequence[float], generator: torch.Generator | None) -> int:
    """Index drawn with probabilities ``probs`` (one batch-level draw)."""
    u = float(_rand(1, generator, torch.device("cpu"))) * sum(probs)
    acc = 0.0
    for i, p in enumerate(probs):
        acc += p
        if u < acc:
            return i
    return max(i for i, p in enumerate(probs) if p > 0)


def _choice_batch(
    n: int, probs: Sequence[float], generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """``n`` indices drawn with probabilities ``probs``, int64 on ``device``."""
    gdev = _gen_device(generator, device)
    cdf = torch.tensor(probs, dtype=torch.float64).cumsum(0)
    cdf = (cdf / cdf[-1]).to(device=gdev, dtype=torch.float32)
    u = torch.rand(n, generator=generator, device=gdev)
    idx = torch.searchsorted(cdf, u, right=True).clamp_max(len(probs) - 1)
    return idx.to(device)


def _randn(shape: Sequence[int], generator: torch.Generator | None, like: Tensor) -> Tensor:
    z = torch.randn(*shape, generator=generator, device=_gen_device(generator, like.device), dtype=like.dtype)
    return z.to(like.device)


def _poisson(rate: Tensor, generator: torch.Generator | None) -> Tensor:
    dev = _gen_device(generator, rate.device)
    return torch.poisson(rate.to(dev), generator=generator).to(rate.device)


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32
