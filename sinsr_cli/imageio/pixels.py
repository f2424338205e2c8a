"""Pixel arrays: float32 in [0, 1] sanitised and quantised in row blocks, luma, tensors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # Rec. 601, as Pillow's RGB -> L


def luma(rgb: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` float -> ``[H, W]`` Rec. 601 luma (how a grayscale source's result goes out)."""
    return rgb @ LUMA

#: float elements per row block when sanitising / quantising (16 MiB of float32)
_BLOCK_ELEMS = 1 << 22


def row_blocks(arr: np.ndarray) -> Iterator[slice]:
    """Slices of whole rows of about ``_BLOCK_ELEMS`` elements: full-size temporaries of an
    8192^2 output would be 0.8 GB each, blocks keep them in cache-sized pieces."""
    rows = max(1, _BLOCK_ELEMS // max(1, arr[:1].size))
    for r in range(0, arr.shape[0], rows):
        yield slice(r, r + rows)


def as_unit_float(x: np.ndarray, name: str) -> np.ndarray:
    """float32 in [0, 1] with NaN -> 0, +inf -> 1; the input itself when already so (no copy)."""
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name} must be a float array in [0, 1], got dtype {arr.dtype}")
    if arr.size == 0:
        return arr.astype(np.float32)
    if arr.dtype == np.float32 and all(arr[b].min() >= 0.0 and arr[b].max() <= 1.0 for b in row_blocks(arr)):
        return arr  # NaN fails both comparisons; the caller's array is never modified
    out = np.empty(arr.shape, np.float32)
    for b in row_blocks(arr):
        blk = np.nan_to_num(arr[b].astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        np.clip(blk, 0.0, 1.0, out=out[b])
    return out


def quantize(x: np.ndarray, scale: int, dtype: type) -> np.ndarray:
    """``rint(x * scale)`` as ``dtype``, in row blocks (float32 is exact for 16 bits)."""
    out = np.empty(x.shape, dtype)
    for b in row_blocks(x):
        blk = x[b] * np.float32(scale)
        np.rint(blk, out=blk)
        out[b] = blk
    return out


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Float in [0, 1] (any shape; NaN -> 0) -> uint8, rounded exactly as ``write_image`` does."""
    return quantize(as_unit_float(rgb, "rgb"), 255, np.uint8)


def image_to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """``[H, W, 3]`` float in [0, 1] -> ``[1, 3, H, W]`` float32 CPU tensor (a copy)."""
    import torch

    a = np.asarray(rgb, dtype=np.float32)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected an [H, W, 3] array, got shape {a.shape}")
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]


def tensor_to_image(t: torch.Tensor, *, in_place: bool = False) -> np.ndarray:
    """``[1, 3, H, W]`` or ``[3, H, W]`` (any device/dtype) -> ``[H, W, 3]`` float32 in [0, 1]
    (NaN -> 0, +inf -> 1): the one way a model's output becomes pixels.

    ``in_place``: a CPU float32 ``t`` is sanitised in its own memory and returned as a
    (non-contiguous) view, so a large output is never copied; ``t`` is then changed. Otherwise
    the result is a contiguous copy and ``t`` is untouched.
    """
    import torch

    if t.ndim == 4:
        if t.shape[0] != 1:
            raise ValueError(f"expected a batch of one image, got shape {tuple(t.shape)}")
        t = t[0]
    if t.ndim != 3 or t.shape[0] != 3:
        raise ValueError(f"expected [1, 3, H, W] or [3, H, W], got shape {tuple(t.shape)}")
    x = t.detach().to(device="cpu", dtype=torch.float32)
    if in_place:
        torch.nan_to_num_(x, nan=0.0, posinf=1.0, neginf=0.0).clamp_(0.0, 1.0)
        return x.permute(1, 2, 0).numpy()
    x = torch.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0).clamp(0.0, 1.0)
    return x.permute(1, 2, 0).contiguous().numpy()
