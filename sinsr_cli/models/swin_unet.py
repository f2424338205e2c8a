"""The Swin-UNet denoiser of ResShift / SinSR (official ``UNetModelSwin``), key-compatible.

The module tree mirrors the official one so official state dicts load with ``strict=True``:
``time_embed``, ``input_blocks``, ``middle_block``, ``output_blocks``, ``out``. It predicts the
clean latent x0 from a (scaled) noisy latent, the raw step index t, and the LR image in [-1, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import UNetConfig
from ..nn.embeddings import timestep_embedding
from ..nn.norm import GroupNorm32
from ..nn.resblocks import Downsample, ResBlock, TimestepSequential, Upsample
from ..nn.swin import SwinLayer


class SwinUNet(nn.Module):
    """``forward(x [B,C,h,w], t [B] int, lq [B,3,h,w] in [-1,1]) -> x0 [B,out,h,w]``."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        if len(cfg.num_res_blocks) != len(cfg.channel_mult):
            raise ValueError("num_res_blocks and channel_mult must have the same length")
        self.cfg = cfg
        mc, ted = cfg.model_channels, cfg.time_embed_dim
        self.time_embed = nn.Sequential(nn.Linear(mc, ted), nn.SiLU(), nn.Linear(ted, ted))

        def res(cin: int, cout: int, **kw: bool) -> ResBlock:
            return ResBlock(cin, ted, cout, use_scale_shift_norm=cfg.use_scale_shift_norm, **kw)

        def swin(ch: int, ds: int) -> SwinLayer:
            return SwinLayer(
                ch, cfg.swin_embed_dim, cfg.swin_heads, cfg.window_size, cfg.swin_depth, ds, cfg.mlp_ratio, cfg.patch_norm
            )

        ch = mc * cfg.channel_mult[0]
        self.input_blocks = nn.ModuleList(
            [TimestepSequential(nn.Conv2d(cfg.in_channels + cfg.lq_channels, ch, 3, padding=1))]
        )
        skip_chans = [ch]
        ds = cfg.image_size
        for level, mult in enumerate(cfg.channel_mult):
            for j in range(cfg.num_res_blocks[level]):
                layers: list[nn.Module] = [res(ch, mc * mult)]
                ch = mc * mult
                if ds in cfg.attention_resolutions and j == 0:
                    layers.append(swin(ch, ds))
                self.input_blocks.append(TimestepSequential(*layers))
                skip_chans.append(ch)
            if level != len(cfg.channel_mult) - 1:
                down = res(ch, ch, down=True) if cfg.resblock_updown else Downsample(ch, cfg.conv_resample, ch)
                self.input_blocks.append(TimestepSequential(down))
                skip_chans.append(ch)
                ds //= 2

        self.middle_block = TimestepSequential(res(ch, ch), swin(ch, ds), res(ch, ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks[level] + 1):
                layers = [res(ch + skip_chans.pop(), mc * mult)]
                ch = mc * mult
                if ds in cfg.attention_resolutions and i == 0:
                    layers.append(swin(ch, ds))
                if level and i == cfg.num_res_blocks[level]:
                    layers.append(res(ch, ch, up=True) if cfg.resblock_updown else Upsample(ch, cfg.conv_resample, ch))
                    ds *= 2
                self.output_blocks.append(TimestepSequential(*layers))

        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(), nn.Conv2d(ch, cfg.out_channels, 3, padding=1))

    @property
    def size_multiple(self) -> int:
        """Spatial sizes must be multiples of this (downsampling levels x window)."""
        return 2 ** (len(self.cfg.channel_mult) - 1) * self.cfg.window_size

    @property
    def level_ends(self) -> tuple[int, ...]:
        """Index in ``input_blocks`` of the last block of each resolution level (its downsampling
        block where there is one): the encoder's multi-scale outputs, one per level."""
        ends, i = [], 0
        for level, n in enumerate(self.cfg.num_res_blocks):
            i += n + (level != len(self.cfg.channel_mult) - 1)
            ends.append(i)
        return tuple(ends)

    def level_channels(self) -> tuple[int, ...]:
        """Channels of the :meth:`encoder_features` maps: one per level, then the middle block's."""
        mc, mult = self.cfg.model_channels, self.cfg.channel_mult
        return (*(mc * m for m in mult), mc * mult[-1])

    def encode(
        self, x: torch.Tensor, t: torch.Tensor, lq: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """The first half of :meth:`forward`: ``(middle-block output, skips, time embedding)``."""
        te = timestep_embedding(t.reshape(-1).expand(x.shape[0]), self.cfg.model_channels)
        emb = self.time_embed(te.to(self.time_embed[0].weight.dtype))
        if self.cfg.lq_channels:
            if lq is None:
                raise ValueError("this UNet is conditioned on the LR image: pass lq")
            if lq.shape[-2:] != x.shape[-2:]:  # official fallback; no released config uses it
                lq = F.pixel_unshuffle(lq, 2) if lq.shape[2] > x.shape[2] else F.interpolate(lq, scale_factor=4)
            x = torch.cat([x, lq.to(x.dtype)], dim=1)
        dtype = self.input_blocks[0][0].weight.dtype
        h = x.to(dtype)
        emb = emb.to(dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        return self.middle_block(h, emb), skips, emb

    def encoder_features(self, x: torch.Tensor, t: torch.Tensor, lq: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The encoder's multi-scale maps (the last block of each level, then the middle block),
        without running the decoder: what TAD-SR's discriminator looks at. Channels:
        :meth:`level_channels`; sizes ``h / 2^level`` (the middle block at the coarsest)."""
        h, skips, _ = self.encode(x, t, lq)
        return [skips[i] for i in self.level_ends] + [h]

    def forward(self, x: torch.Tensor, t: torch.Tensor, lq: torch.Tensor | None = None) -> torch.Tensor:
        h, skips, emb = self.encode(x, t, lq)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        out_dtype = self.out[2].weight.dtype
        return self.out(h.to(out_dtype))
