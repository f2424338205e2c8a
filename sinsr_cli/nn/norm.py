"""GroupNorm with float32 statistics (the official ``GroupNorm32``), whatever the input dtype."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .conv import is_channels_last, records_grad

#: a channels_last map is shifted by the mean of about this many pixels per side (see forward)
_SHIFT_SAMPLES = 16
#: float32 elements of one block of NHWC rows in the statistics pass (1 MiB: stays in cache
#: while it is shifted, squared and summed)
_STAT_BLOCK = 1 << 18
#: maps with fewer pixels keep torch's kernel (after centring): its per-channel running sums
#: are short enough there, and the blocked pass's dozen small ops would cost more than the norm
_MIN_STAT_PIXELS = 1024


def _group_shift(x: torch.Tensor, groups: int) -> torch.Tensor:
    """``[B, C, 1, 1]``: each group's mean over a strided subsample of pixels, per channel."""
    b, c, h, w = x.shape
    sub = x[:, :, :: max(1, h // _SHIFT_SAMPLES), :: max(1, w // _SHIFT_SAMPLES)]
    s = sub.float().mean((2, 3)).view(b, groups, c // groups).mean(2, keepdim=True)
    return s.expand(b, groups, c // groups).reshape(b, c, 1, 1).to(x.dtype)


def channels_last_group_norm(
    x: torch.Tensor, groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float
) -> torch.Tensor:
    """GroupNorm of a float32 channels_last map with statistics as accurate as the NCHW kernel.

    torch's CPU channels_last kernel sums x and x^2 per channel in one running float32 sum over
    the pixels, so its error grows with H x W (2e-3 on a normalised map at 2 x 256 x 512 with one
    channel per group, 1,000x the NCHW kernel's). Here each block of NHWC rows is shifted by a
    per-channel subsample mean, squared and summed in cache (torch's pairwise sums), the block
    sums add up in float64, channels combine into groups exactly (Chan's formula), and one
    ``x * a + b`` pass applies the norm (the NCHW kernel's own form) in x's memory format.
    """
    b, c, h, w = x.shape
    n = h * w
    v = x.permute(0, 2, 3, 1).reshape(b, n, c)  # free view of a channels_last map
    shift = x[:, :, :: max(1, h // _SHIFT_SAMPLES), :: max(1, w // _SHIFT_SAMPLES)].mean((2, 3))
    rows = max(1, _STAT_BLOCK // (b * c))
    s1 = torch.zeros(b, c, dtype=torch.float64, device=x.device)
    s2 = torch.zeros_like(s1)
    buf = torch.empty(b, min(rows, n), c, dtype=x.dtype, device=x.device)
    for r in range(0, n, rows):
        blk = v[:, r : r + rows]
        d = buf[:, : blk.shape[1]]
        torch.sub(blk, shift[:, None, :], out=d)
        s1 += d.sum(1)
        s2 += d.mul_(d).sum(1)
    dm = s1 / n  # channel mean minus its shift
    mean = (dm + shift.double()).view(b, groups, -1)
    var_c = (s2 / n - dm * dm).view(b, groups, -1)  # per channel; the shift keeps this well-conditioned
    gmean = mean.mean(2, keepdim=True)
    gvar = (var_c + (mean - gmean) ** 2).mean(2, keepdim=True).clamp_min_(0)
    scale = (gvar + eps).rsqrt().expand(b, groups, c // groups)
    if weight is not None:
        scale = scale * weight.double().view(1, groups, -1)
    offset = -gmean * scale
    if bias is not None:
        offset = offset + bias.double().view(1, groups, -1)
    return torch.addcmul(offset.reshape(b, c, 1, 1).to(x.dtype), x, scale.reshape(b, c, 1, 1).to(x.dtype))


class GroupNorm32(nn.GroupNorm):
    """32-group GroupNorm with float32 statistics, returned in the input dtype.

    float32 and bfloat16 inputs go straight to ``F.group_norm``: torch's kernels accumulate
    reduced-precision inputs in float32 (and bf16 has fp32's range), so this equals the
    cast-compute-cast form without its two extra copies. float16 is cast to float32 explicitly,
    as officially: its range is what overflows in the statistics.

    torch's CPU channels_last kernel is inaccurate in float32 in two ways: it computes the
    variance as E[x^2] - E[x]^2, which cancels when a group's mean is large against its spread
    (mean/std = 20 already costs 1e-3), and it accumulates each channel's sums in one running
    float32 sum over the pixels, whose error grows with the map (2e-3 at 2 x 256 x 512). The
    official code runs NCHW, whose kernel has neither problem. So at inference float32
    channels_last maps of at least ``_MIN_STAT_PIXELS`` pixels use
    :func:`channels_last_group_norm` (blocked, shifted, float64-combined statistics); smaller
    ones and the autograd path shift each group by a subsampled mean (exact for GroupNorm) before
    torch's kernel. bf16 is left alone: its own rounding (4e-3 relative) is far above either error.
    """

    def __init__(self, channels: int, eps: float = 1e-5, groups: int = 32) -> None:
        super().__init__(groups, channels, eps=eps, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, w, b = x, self.weight, self.bias
        if x.dtype == torch.float16:
            y = x.float()
            w = w.float() if w is not None else None
            b = b.float() if b is not None else None
        if y.dtype == torch.float32 and is_channels_last(y) and y.device.type == "cpu":
            if not records_grad(y, w) and y.shape[2] * y.shape[3] >= _MIN_STAT_PIXELS:
                return channels_last_group_norm(y, self.num_groups, w, b, self.eps).to(x.dtype)
            y = y - _group_shift(y.detach(), self.num_groups)  # exact for GroupNorm: no gradient path
        return F.group_norm(y, self.num_groups, w, b, self.eps).to(x.dtype)
