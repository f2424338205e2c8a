"""Filtering and resizing: per-sample 2-D filtering, torch resizes, area downscaling, MATLAB's
bicubic ``imresize`` and the shortest-side centre crop.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import RESIZE_MODES
from .draws import _work_dtype


def filter2d(x: Tensor, kernel: Tensor) -> Tensor:
    """Correlate each image with its own kernel (like ``cv2.filter2D``), reflect-padded.

    ``x``: ``[B, C, H, W]``; ``kernel``: ``[k, k]``, ``[1, k, k]`` (shared) or ``[B, k, k]`` with
    odd k. Returns ``[B, C, H, W]`` in ``x``'s dtype. Images no larger than ``k // 2`` fall back to
    replicate padding (reflection needs more pixels than the pad).
    """
    if x.dim() != 4:
        raise ValueError(f"expected images [B, C, H, W], got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    if kernel.dim() == 2:
        kernel = kernel[None]
    k = kernel.shape[-1]
    if kernel.dim() != 3 or kernel.shape[-2] != k or k % 2 != 1 or kernel.shape[0] not in (1, b):
        raise ValueError(f"expected odd square kernels [1 or {b}, k, k], got shape {tuple(kernel.shape)}")
    p = k // 2
    mode = "reflect" if p < min(h, w) else "replicate"
    padded = F.pad(x.reshape(1, b * c, h, w), (p, p, p, p), mode=mode)
    weight = kernel.to(device=x.device, dtype=x.dtype)[:, None].expand(b, c, k, k).reshape(b * c, 1, k, k)
    return F.conv2d(padded, weight, groups=b * c).view(b, c, h, w)


def resize(
    x: Tensor,
    mode: str,
    size: tuple[int, int] | None = None,
    scale_factor: float | None = None,
) -> Tensor:
    """``F.interpolate`` with ``area``/``bilinear``/``bicubic`` (no antialias, half-pixel centres).

    Give either ``size`` or ``scale_factor`` (output ``floor(H * s)``; the factor itself maps
    coordinates, as the official pipeline does). ``[B, C, H, W]`` -> ``[B, C, H', W']``.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r} (use {', '.join(RESIZE_MODES)})")
    if (size is None) == (scale_factor is None):
        raise ValueError("give exactly one of size or scale_factor")
    h, w = x.shape[-2:]
    out = size if size is not None else (int(h * scale_factor), int(w * scale_factor))  # type: ignore
    if min(out) < 1:
        raise ValueError(f"resizing {h}x{w} gives an empty image ({out[0]}x{out[1]}); use larger inputs")
    align = None if mode == "area" else False
    if size is not None:
        return F.interpolate(x, size=size, mode=mode, align_corners=align)
    return F.interpolate(x, scale_factor=scale_factor, mode=mode, align_corners=align)


def _area_matrix(n_in: int, n_out: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``[n_out, n_in]`` weights of an exact box (pixel-area) downscale, rows summing to 1."""
    s = n_in / n_out
    edges = torch.arange(n_out + 1, device=device, dtype=torch.float64) * s
    lo, hi = edges[:-1, None], edges[1:, None]
    j = torch.arange(n_in, device=device, dtype=torch.float64)[None]
    overlap = (torch.minimum(hi, j + 1) - torch.maximum(lo, j)).clamp_min(0)
    return (overlap / s).to(dtype)


def area_downscale(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Exact pixel-area downscale (``cv2.INTER_AREA`` for shrinking), ``[..., H, W]`` -> ``[..., h, w]``."""
    h, w = x.shape[-2:]
    if size[0] > h or size[1] > w or min(size) < 1:
        raise ValueError(f"area_downscale only shrinks: {h}x{w} -> {size[0]}x{size[1]}")
    rows = _area_matrix(h, size[0], x.device, x.dtype)
    cols = _area_matrix(w, size[1], x.device, x.dtype)
    return rows @ x @ cols.T


def _cubic(x: Tensor) -> Tensor:
    """Keys cubic with a = -0.5 (MATLAB ``imresize``'s bicubic kernel), support [-2, 2]."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    near = 1.5 * ax3 - 2.5 * ax2 + 1
    far = -0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2
    return torch.where(ax <= 1, near, torch.where(ax <= 2, far, torch.zeros_like(ax)))


def _matlab_bicubic_matrix(n_in: int, n_out: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``[n_out, n_in]`` weights of MATLAB ``imresize(..., 'bicubic')`` along one axis.

    Output pixel ``i`` (1-based) samples input coordinate ``u = i / s + (1 - 1 / s) / 2`` with
    ``s = n_out / n_in``; when shrinking the kernel is stretched by ``1 / s`` (antialiasing).
    Taps are normalised to sum to 1, then taps outside the image are folded back onto it by
    symmetric reflection (edge repeated), as MATLAB's ``contributions`` does. Built in float64.
    """
    s = n_out / n_in
    width = 4.0 / s if s < 1 else 4.0
    u = torch.arange(1, n_out + 1, dtype=torch.float64) / s + 0.5 * (1 - 1 / s)
    left = torch.floor(u - width / 2)
    taps = left[:, None] + torch.arange(math.ceil(width) + 2, dtype=torch.float64)[None]
    dist = u[:, None] - taps
    weights = s * _cubic(s * dist) if s < 1 else _cubic(dist)
    weights = weights / weights.sum(1, keepdim=True)
    idx = (taps.long() - 1) % (2 * n_in)  # 0-based, then mirror [0..n-1, n-1..0]
    idx = torch.where(idx < n_in, idx, 2 * n_in - 1 - idx)
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    m.scatter_add_(1, idx, weights)
    return m.to(device=device, dtype=dtype)


def matlab_bicubic_resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """MATLAB ``imresize(x, [h w], 'bicubic')`` (antialiased when shrinking), before ``im2uint8``.

    The classic bicubic SR benchmarks (Set5, Set14, DIV2K ``X4``) are made this way from
    mod-cropped HR images. ``[..., H, W]`` -> ``[..., h, w]``, not clamped or rounded; the maths
    runs in float32 (float64 for float64 input) and comes back in the input's dtype.
    """
    h, w = x.shape[-2:]
    if min(size) < 1:
        raise ValueError(f"resizing {h}x{w} to {size[0]}x{size[1]} gives an empty image")
    xw = x.to(_work_dtype(x.dtype))
    rows = _matlab_bicubic_matrix(h, size[0], xw.device, xw.dtype)
    cols = _matlab_bicubic_matrix(w, size[1], xw.device, xw.dtype)
    return (rows @ xw @ cols.T).to(x.dtype)


def shortest_side_center_crop(img: Tensor, size: int) -> Tensor:
    """Scale the shorter side to ``size`` (bilinear, as ``cv2.INTER_LINEAR``) and cut the central square.

    The ResShift ImageNet-Test preprocessing of an HR image (albumentations ``SmallestMaxSize`` +
    ``CenterCrop``): the longer side becomes ``round(L * size / S)``. ``[B, C, H, W]`` ->
    ``[B, C, size, size]``.
    """
    h, w = img.shape[-2:]
    if min(h, w) < 2:
        raise ValueError(f"image is {w}x{h}; it needs at least 2 pixels on each side")
    if min(h, w) != size:
        k = size / min(h, w)
        nh, nw = (size, max(size, round(w * k))) if h <= w else (max(size, round(h * k)), size)
        img = resize(img.to(_work_dtype(img.dtype)), "bilinear", size=(nh, nw)).to(img.dtype)
        h, w = nh, nw
    top, left = (h - size) // 2, (w - size) // 2
    return img[..., top:top + size, left:left + size]


__all__ = ["filter2d", "resize", "area_downscale", "matlab_bicubic_resize", "shortest_side_center_crop"]
