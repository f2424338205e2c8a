"""Baseline JPEG round trip in torch, per-sample quality (what the official pipeline's ``DiffJPEG``
does): YCbCr, 4:2:0 chroma, 8x8 DCT, the Annex K tables scaled as libjpeg scales them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import JpegPad
from .draws import _work_dtype


# ITU-T T.81 Annex K quantisation tables, natural order: row = vertical frequency.
_LUMA_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
_CHROMA_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
) + ((99,) * 8,) * 4
# JFIF full-range RGB <-> YCbCr (Cb, Cr offset by 128). Row 0 is imageio.LUMA (Rec. 601): kept
# here as part of JFIF's one matrix, applied to torch tensors on the training device.
_RGB_TO_YCC = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
_YCC_TO_RGB = ((1.0, 0.0, 1.402), (1.0, -0.344136, -0.714136), (1.0, 1.772, 0.0))


def jpeg_quality_to_factor(quality: Tensor) -> Tensor:
    """libjpeg's table scaling as a factor: ``50 / q`` below 50, ``2 - q / 50`` from 50 on."""
    if bool((quality <= 0).any()) or bool((quality > 100).any()):
        raise ValueError("JPEG quality must be in (0, 100]")
    return torch.where(quality < 50, 50.0 / quality, 2.0 - quality / 50.0)


def _dct_matrix(device: torch.device, dtype: torch.dtype) -> Tensor:
    """Orthonormal 8-point DCT-II ``A[u, x]``: the JPEG FDCT of a block ``f`` is ``A f A^T``."""
    x = torch.arange(8, dtype=torch.float64)
    u = x[:, None]
    a = torch.cos((2 * x[None] + 1) * u * math.pi / 16) * math.sqrt(2 / 8)
    a[0] = math.sqrt(1 / 8)
    return a.to(device=device, dtype=dtype)


def _jpeg_plane(plane: Tensor, table: Tensor, dct: Tensor) -> Tensor:
    """Level-shift, 8x8 DCT, quantise with ``table`` ``[B, 8, 8]``, dequantise and invert.

    ``plane``: ``[B, C, H, W]`` in 0-255 with H, W multiples of 8.
    """
    b, c, h, w = plane.shape
    blocks = plane.reshape(b, c, h // 8, 8, w // 8, 8).transpose(3, 4)  # [B, C, h/8, w/8, 8, 8]
    coef = dct @ (blocks - 128.0) @ dct.T
    q = table.view(b, 1, 1, 1, 8, 8)
    coef = torch.round(coef / q) * q
    rec = dct.T @ coef @ dct + 128.0
    return rec.transpose(3, 4).reshape(b, c, h, w)


def jpeg_compress(x: Tensor, quality: Tensor | float, *, pad_mode: JpegPad = "constant") -> Tensor:
    """Baseline JPEG round trip in torch (4:2:0, standard tables), per-sample ``quality`` in (0, 100].

    RGB -> YCbCr, 2x2 average chroma subsampling, 8x8 DCT, quantisation by the Annex K tables
    times ``jpeg_quality_to_factor(quality)`` (kept in [1, 255] as libjpeg does, but not rounded:
    qualities may be fractional), rounding, then the inverse with nearest-neighbour chroma
    upsampling. Images are padded to a multiple of 16 with ``pad_mode``. ``[B, 3, H, W]`` in [0, 1]
    -> same shape in [0, 1] (not rounded to 8 bits).
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected RGB images [B, 3, H, W], got shape {tuple(x.shape)}")
    if pad_mode not in ("constant", "replicate"):
        raise ValueError(f"pad_mode must be 'constant' or 'replicate', got {pad_mode!r}")
    b, _, h, w = x.shape
    in_dtype = x.dtype
    x = x.to(_work_dtype(in_dtype))
    dev, dt = x.device, x.dtype
    q = torch.as_tensor(quality, dtype=dt).to(dev).reshape(-1).expand(b)
    factor = jpeg_quality_to_factor(q).view(b, 1, 1)
    luma_table = (torch.tensor(_LUMA_TABLE, device=dev, dtype=dt) * factor).clamp(1, 255)
    chroma_table = (torch.tensor(_CHROMA_TABLE, device=dev, dtype=dt) * factor).clamp(1, 255)
    dct = _dct_matrix(dev, dt)

    ph, pw = (-h) % 16, (-w) % 16
    x = F.pad(x, (0, pw, 0, ph), mode=pad_mode)
    to_ycc = torch.tensor(_RGB_TO_YCC, device=dev, dtype=dt)
    shift = torch.tensor([0.0, 128.0, 128.0], device=dev, dtype=dt).view(1, 3, 1, 1)
    ycc = torch.einsum("ij,bjhw->bihw", to_ycc, x * 255.0) + shift
    y = _jpeg_plane(ycc[:, :1], luma_table, dct)
    cbcr = _jpeg_plane(F.avg_pool2d(ycc[:, 1:], 2), chroma_table, dct)
    cbcr = cbcr.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
    to_rgb = torch.tensor(_YCC_TO_RGB, device=dev, dtype=dt)
    rgb = torch.einsum("ij,bjhw->bihw", to_rgb, torch.cat([y, cbcr], 1) - shift)
    return (rgb.clamp(0, 255) / 255.0)[..., :h, :w].to(in_dtype)


__all__ = ["jpeg_quality_to_factor", "jpeg_compress"]
