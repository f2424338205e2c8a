"""GroupNorm computed in float32 (the official ``GroupNorm32``), whatever the input dtype."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GroupNorm32(nn.GroupNorm):
    """32-group GroupNorm evaluated in float32 and cast back: fp16 statistics overflow."""

    def __init__(self, channels: int, eps: float = 1e-5, groups: int = 32) -> None:
        super().__init__(groups, channels, eps=eps, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).to(x.dtype)
