"""Timestep-conditioned residual blocks and resampling layers of the ResShift UNet."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .conv import Conv1x1, upsample_conv3x3
from .norm import GroupNorm32


class Downsample(nn.Module):
    """Stride-2 3x3 conv (``op``), or 2x2 average pooling without a conv."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None) -> None:
        super().__init__()
        out = out_channels or channels
        self.op: nn.Module = nn.Conv2d(channels, out, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest x2 then an optional 3x3 conv (``conv``)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None) -> None:
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_conv:  # the same as conv(nearest_x2(x)), without the upsampled map
            return upsample_conv3x3(x, self.conv.weight, self.conv.bias)
        return F.interpolate(x, scale_factor=2, mode="nearest")


class ResBlock(nn.Module):
    """GN-SiLU-conv, timestep FiLM (scale/shift) or addition, GN-SiLU-conv, plus skip.

    The 3x3 convs stay direct: Winograd (``nn.winograd.Conv3x3``) runs them 1.5-2.7x faster, but
    its cached kernels would hold 1.3 GB for the full-size UNet, which runs once per image at a
    quarter of the VQ's resolution (6-13% of a one-step call's time at lq 256-64).
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = True,
        up: bool = False,
        down: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        out = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd: nn.Module = Upsample(channels, False)
            self.x_upd: nn.Module = Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out if use_scale_shift_norm else out))
        self.out_layers = nn.Sequential(
            GroupNorm32(out), nn.SiLU(), nn.Dropout(dropout), nn.Conv2d(out, out, 3, padding=1)
        )
        self.skip_connection: nn.Module = nn.Identity() if out == channels else Conv1x1(channels, out)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            h = self.in_layers[1](self.in_layers[0](x))
            h = self.in_layers[2](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = torch.addcmul(shift, self.out_layers[0](h), 1 + scale)
            h = self.out_layers[3](self.out_layers[2](self.out_layers[1](h)))
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class TimestepSequential(nn.Sequential):
    """A Sequential that hands the timestep embedding to the ResBlocks inside it."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x
