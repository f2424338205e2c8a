"""GroupNorm with float32 statistics (the official ``GroupNorm32``), whatever the input dtype."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GroupNorm32(nn.GroupNorm):
    """32-group GroupNorm with float32 statistics, returned in the input dtype.

    float32 and bfloat16 inputs go straight to ``F.group_norm``: torch's kernels accumulate
    reduced-precision inputs in float32 (and bf16 has fp32's range), so this equals the
    cast-compute-cast form without its two extra copies. float16 is cast to float32 explicitly,
    as officially: its range is what overflows in the statistics.
    """

    def __init__(self, channels: int, eps: float = 1e-5, groups: int = 32) -> None:
        super().__init__(groups, channels, eps=eps, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float16:
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).to(x.dtype)
