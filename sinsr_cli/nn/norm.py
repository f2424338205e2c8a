"""GroupNorm with float32 statistics (the official ``GroupNorm32``), whatever the input dtype."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .conv import is_channels_last

#: a channels_last map is shifted by the mean of about this many pixels per side (see forward)
_SHIFT_SAMPLES = 16


def _group_shift(x: torch.Tensor, groups: int) -> torch.Tensor:
    """``[B, C, 1, 1]``: each group's mean over a strided subsample of pixels, per channel."""
    b, c, h, w = x.shape
    sub = x[:, :, :: max(1, h // _SHIFT_SAMPLES), :: max(1, w // _SHIFT_SAMPLES)]
    s = sub.float().mean((2, 3)).view(b, groups, c // groups).mean(2, keepdim=True)
    return s.expand(b, groups, c // groups).reshape(b, c, 1, 1).to(x.dtype)


class GroupNorm32(nn.GroupNorm):
    """32-group GroupNorm with float32 statistics, returned in the input dtype.

    float32 and bfloat16 inputs go straight to ``F.group_norm``: torch's kernels accumulate
    reduced-precision inputs in float32 (and bf16 has fp32's range), so this equals the
    cast-compute-cast form without its two extra copies. float16 is cast to float32 explicitly,
    as officially: its range is what overflows in the statistics.

    torch's CPU channels_last kernel computes the variance as E[x^2] - E[x]^2, which cancels
    badly when a group's mean is large against its spread (mean/std = 20 already costs 1e-3,
    and even mean/std = 2 costs 10x the NCHW kernel's error). GroupNorm is exactly invariant
    to a constant shift per group, so channels_last maps are first shifted by a subsampled
    group mean: the statistics then see data centred near 0 (one extra elementwise pass).
    Only float32 inputs are shifted: in bf16 the data's own rounding (4e-3 relative) is far above
    that cancellation, and there the pass costs 9x the norm itself (13 vs 1.5 ms at 128 x 256^2).
    """

    def __init__(self, channels: int, eps: float = 1e-5, groups: int = 32) -> None:
        super().__init__(groups, channels, eps=eps, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, w, b = x, self.weight, self.bias
        if x.dtype == torch.float16:
            y = x.float()
            w = w.float() if w is not None else None
            b = b.float() if b is not None else None
        if x.dtype == torch.float32 and is_channels_last(y) and y.device.type == "cpu":
            y = y - _group_shift(y.detach(), self.num_groups)  # exact for GroupNorm: no gradient path
        return F.group_norm(y, self.num_groups, w, b, self.eps).to(x.dtype)
