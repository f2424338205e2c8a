"""1x1 convolutions and memory-format helpers for NCHW / channels_last feature maps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def is_channels_last(x: torch.Tensor) -> bool:
    """True for a 4-D map stored NHWC (and not also plain-contiguous, as 1-channel maps are)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def records_grad(*tensors: torch.Tensor | None) -> bool:
    """True where autograd would record an op on ``tensors`` (the inference-only fast paths' test)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def like(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``x`` in ``ref``'s memory format (channels_last or contiguous); no copy when it already is."""
    fmt = torch.channels_last if is_channels_last(ref) else torch.contiguous_format
    return x.contiguous(memory_format=fmt)


def pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``[B, Cin, H, W]`` x ``[Cout, Cin, 1, 1]`` -> ``[B, Cout, H, W]``, in x's memory format.

    A channels_last map's NHWC view is contiguous, so there it is one GEMM with no copies
    (torch's CPU 1x1 convolution takes a slow path that also returns NCHW); NCHW maps use conv2d.
    """
    if not is_channels_last(x):
        return F.conv2d(x, weight, bias)
    y = F.linear(x.permute(0, 2, 3, 1), weight.reshape(weight.shape[0], -1), bias)
    return y.permute(0, 3, 1, 2)


class Conv1x1(nn.Conv2d):
    """``nn.Conv2d(cin, cout, 1)`` with identical ``weight``/``bias`` keys; see :func:`pointwise`."""

    def __init__(self, cin: int, cout: int, bias: bool = True) -> None:
        super().__init__(cin, cout, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pointwise(x, self.weight, self.bias)


#: elements of one band of the 4-phase conv output in ``upsample_conv3x3`` (32 MiB in float32)
_UPSAMPLE_BAND = 1 << 23


def _fold_taps(w: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """3 taps along ``dim`` seen by the two phases of a nearest x2 upsampling -> 2 taps each.

    Output row 2i reads upsampled rows 2i-1, 2i, 2i+1 = source rows i-1, i, i: taps (w0, w1+w2).
    Output row 2i+1 reads 2i, 2i+1, 2i+2 = source rows i, i, i+1: taps (w0+w1, w2).
    """
    w0, w1, w2 = w.unbind(dim)
    return torch.stack([w0, w1 + w2], dim), torch.stack([w0 + w1, w2], dim)


def upsample_conv3x3(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, band_elements: int = _UPSAMPLE_BAND
) -> torch.Tensor:
    """``conv3x3(nearest_x2(x), padding=1)`` without building the 4x larger upsampled map.

    ``[B, Cin, H, W] -> [B, Cout, 2H, 2W]``. Each of the four output phases is a 2x2 conv of the
    source with summed taps (16 instead of 36 multiply-adds per source pixel and channel pair),
    run as one conv with ``4 * Cout`` outputs, then interleaved. Equal to the two-step form up
    to float reassociation (~1e-6 relative in float32).
    """
    b, _, h, w = x.shape
    co = weight.shape[0]
    rows = _fold_taps(weight.to(torch.promote_types(weight.dtype, torch.float32)), 2)  # sums in >= fp32
    k4 = torch.cat([k for r in rows for k in _fold_taps(r, 3)]).to(weight.dtype)  # phases (0,0) (0,1) (1,0) (1,1)
    if is_channels_last(x):
        k4 = k4.contiguous(memory_format=torch.channels_last)
    xp = F.pad(x, (1, 1, 1, 1))
    b4 = None if bias is None else bias.repeat(4)
    y = torch.empty(b, h, 2, w, 2, co, dtype=x.dtype, device=x.device)  # NHWC, rows/cols split by phase
    # Bands of source rows, one conv per phase row (output row 2i + pr reads padded rows i + pr,
    # i + pr + 1): each band's phase outputs ([B, 2Co, R, W+1]) are interleaved while in cache, so
    # the whole 4-phase map (the size of y) never exists, and no row is computed twice.
    band = max(1, band_elements // max(1, b * 4 * co * (w + 1)))
    for i0 in range(0, h, band):
        r = min(band, h - i0)
        for pr in (0, 1):
            ch = slice(2 * pr * co, 2 * (pr + 1) * co)
            o = F.conv2d(xp[:, :, i0 + pr : i0 + pr + r + 1], k4[ch], None if b4 is None else b4[ch])
            for pc in (0, 1):
                y[:, i0 : i0 + r, pr, :, pc, :] = o[:, pc * co : (pc + 1) * co, :, pc : pc + w].permute(0, 2, 3, 1)
    return like(y.view(b, 2 * h, 2 * w, co).permute(0, 3, 1, 2), x)
