"""Gaussian and Poisson noise (colour or grey, per sample), and rounding to 8-bit levels.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .draws import _poisson, _randn


def _per_sample(v: Tensor | float | bool, b: int, like: Tensor) -> Tensor:
    """A scalar or ``[B]`` value (bools become 0/1) as ``[B, 1, 1, 1]`` in ``like``'s device and dtype."""
    t = torch.as_tensor(v).to(device=like.device, dtype=like.dtype).reshape(-1)
    if t.numel() not in (1, b):
        raise ValueError(f"expected a scalar or {b} per-sample values, got {t.numel()}")
    return t.view(-1, 1, 1, 1).expand(b, 1, 1, 1)


def round_to_uint8(x: Tensor) -> Tensor:
    """``clamp(round(x * 255), 0, 255) / 255``: the 8-bit grid in [0, 1]."""
    return torch.clamp(torch.round(x * 255.0), 0, 255) / 255.0


def _gray(x: Tensor) -> Tensor:
    """ITU-R 601 luma ``[B, 1, H, W]`` (weights 0.2989, 0.587, 0.114) of RGB ``[B, 3, H, W]``."""
    w = torch.tensor([0.2989, 0.587, 0.114], device=x.device, dtype=x.dtype)
    return (x * w.view(1, 3, 1, 1)).sum(1, keepdim=True)


def _levels(img: Tensor) -> Tensor:
    """Per sample, the number of distinct 8-bit values rounded up to a power of two, ``[B,1,1,1]``."""
    b = img.shape[0]
    idx = torch.round(img * 255.0).long().clamp(0, 255).reshape(b, -1)
    hist = torch.zeros(b, 256, device=img.device, dtype=img.dtype).scatter_(1, idx, 1.0)
    count = hist.sum(1)
    return torch.exp2(torch.ceil(torch.log2(count))).view(b, 1, 1, 1)


def add_gaussian_noise(
    x: Tensor,
    sigma: Tensor | float,
    gray: Tensor | bool = False,
    *,
    generator: torch.Generator | None = None,
    clip: bool = True,
) -> Tensor:
    """Add Gaussian noise with std ``sigma / 255`` (scalar or ``[B]``), grey where ``gray`` (``[B]``).

    Grey noise is one field shared by the three channels. ``[B, C, H, W]`` in [0, 1] -> same,
    clamped to [0, 1] when ``clip``.
    """
    b, c, h, w = x.shape
    s = _per_sample(sigma, b, x) / 255.0
    g = _per_sample(gray, b, x) > 0.5
    colour = _randn((b, c, h, w), generator, x)
    mono = _randn((b, 1, h, w), generator, x)
    out = x + torch.where(g, mono.expand(b, c, h, w), colour) * s
    return out.clamp(0, 1) if clip else out


def add_poisson_noise(
    x: Tensor,
    scale: Tensor | float,
    gray: Tensor | bool = False,
    *,
    generator: torch.Generator | None = None,
    clip: bool = True,
) -> Tensor:
    """Add shot noise: ``scale * (Poisson(v * r) / v - r)`` with ``r`` the 8-bit-rounded image.

    ``v`` is the number of distinct 8-bit values in the sample rounded up to a power of two (as
    scikit-image's ``random_noise``); grey samples draw the noise from the luma and share it
    across channels. ``scale`` and ``gray`` are scalars or ``[B]``. ``[B, 3, H, W]`` in [0, 1] ->
    same, clamped when ``clip``. The noise has mean zero, so the mean is kept before clamping.
    """
    b, c, h, w = x.shape
    s = _per_sample(scale, b, x)
    g = _per_sample(gray, b, x) > 0.5
    rgb = round_to_uint8(x)
    v = _levels(rgb)
    colour = _poisson(rgb * v, generator) / v - rgb
    luma = round_to_uint8(_gray(x))
    vg = _levels(luma)
    mono = _poisson(luma * vg, generator) / vg - luma
    out = x + torch.where(g, mono.expand(b, c, h, w), colour) * s
    return out.clamp(0, 1) if clip else out


__all__ = ["add_gaussian_noise", "add_poisson_noise", "round_to_uint8"]
