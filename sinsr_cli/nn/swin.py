"""Swin window attention on NCHW maps, as used inside the ResShift/SinSR UNet.

Differences from textbook Swin that the official weights depend on (see reference NOTES §5):
GroupNorm instead of LayerNorm, 1x1-conv MLP, a layer that is *not* residual at the top
(``patch_embed -> blocks -> patch_unembed`` replaces its input), window and shift fixed from the
*configured* resolution, and a shifted-window mask that only separates tokens in the last row of
windows, by column (the official ``calculate_mask`` indexes a (1,1,H,W) tensor as (1,H,W,1)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .conv import Conv1x1, like
from .norm import GroupNorm32

_MASK_VALUE = -100.0


def _cpu_arange(n: int) -> torch.Tensor:
    # always on the CPU: under a meta-device build (`sinsr convert`'s shape check), meta ops
    # route through torch._refs, whose first use imports torch._dynamo (1.2 s)
    return torch.arange(n, device="cpu")


def _at_default_device(t: torch.Tensor) -> torch.Tensor:
    """A constant computed on the CPU, moved to where factory functions put tensors now."""
    return t.to(torch.empty(0).device)


def relative_position_index(window: int) -> torch.Tensor:
    """``[N, N]`` int64 index into the ``(2w-1)^2`` bias table for tokens in row-major order (CPU)."""
    coords = torch.stack(torch.meshgrid(_cpu_arange(window), _cpu_arange(window), indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :]
    return (rel[0] + window - 1) * (2 * window - 1) + (rel[1] + window - 1)


def shifted_window_mask(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """``[nW, N, N]`` additive mask (0 / -100) reproducing the official shifted-window mask (CPU).

    Token (i, j) of window (hw, ww) gets the label R(hw*window + j), with R(p) = 0 if
    p < H - window, 1 if p < H - shift, else 2; tokens with different labels are masked.
    Only ``height`` enters the thresholds, also for non-square maps (as officially).
    """
    nh, nw = height // window, width // window
    p = _cpu_arange(nh)[:, None] * window + _cpu_arange(window)[None, :]  # [nh, window] by j
    label = (p >= height - window).long() + (p >= height - shift).long()  # [nh, window]
    # token n = i*window + j -> label depends on j only
    tok = label[:, None, :].expand(nh, window, window).reshape(nh, window * window)  # [nh, N]
    tok = tok[:, None, :].expand(nh, nw, window * window).reshape(nh * nw, window * window)
    diff = tok[:, None, :] - tok[:, :, None]
    return torch.where(diff != 0, _MASK_VALUE, 0.0).float()


def _version(t: torch.Tensor) -> int:
    """In-place modification counter (inference tensors have none: -1)."""
    return -1 if t.is_inference() else t._version


#: True while dynamo traces: the per-instance caches below are bypassed then (a traced graph
#: computes the bias and mask itself, no data_ptr/version keys, so ``torch.compile`` has no
#: graph break here; the compiled graph is specialised to the shapes anyway)
_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside ``window x window`` windows with relative-position bias."""

    def __init__(self, dim: int, window: int, heads: int) -> None:
        super().__init__()
        self.dim, self.window, self.heads = dim, window, heads
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", _at_default_device(relative_position_index(window)), persistent=True)
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        self._bias_cache: dict[tuple, torch.Tensor] = {}

    def bias(self) -> torch.Tensor:
        """``[heads, N, N]`` relative-position bias."""
        n = self.window * self.window
        idx = self.relative_position_index.reshape(-1)
        return self.relative_position_bias_table[idx].reshape(n, n, self.heads).permute(2, 0, 1)

    def attn_bias(self, mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """``[1, heads, N, N]`` or ``[nW, heads, N, N]``: bias plus mask, in ``dtype``.

        4-D on purpose: torch's CPU flash kernel takes only 4-D masks (else the math fallback).

        Gathered once per (mask, dtype) while the table needs no gradient (inference); the
        key holds the table's version counter, so loading new weights in place invalidates it.
        """
        table = self.relative_position_bias_table
        if table.requires_grad or _compiling():  # trainable: optimisers may update it in place without a version bump
            bias = self.bias().to(dtype)[None]
            return bias if mask is None else bias + mask.to(dtype)[:, None]
        key = (
            None if mask is None else (mask.data_ptr(), tuple(mask.shape), _version(mask)),
            dtype, table.data_ptr(), table.device, _version(table),
        )
        out = self._bias_cache.get(key)
        if out is None:
            with torch.inference_mode(False), torch.no_grad():  # a normal tensor, usable anywhere
                bias = self.bias().to(dtype)[None]
                out = (bias if mask is None else bias + mask.to(dtype)[:, None]).contiguous()
            if len(self._bias_cache) >= 8:
                self._bias_cache.clear()
            self._bias_cache[key] = out
        return out

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``x [B, nW, N, C]``, ``mask [nW, N, N]`` or None -> ``[B, nW, N, C]``."""
        b, nw, n, c = x.shape
        qkv = self.qkv(x).reshape(b * nw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # [B*nW, heads, N, d]: 4-D with unit last stride -> flash kernel
        bias = self.attn_bias(mask, q.dtype)
        if bias.shape[0] > 1 and b > 1:
            bias = bias.expand(b, *bias.shape).reshape(b * nw, *bias.shape[1:])
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        out = out.transpose(1, 2).reshape(b, nw, n, c)
        return self.proj(out)


class ConvMlp(nn.Module):
    """1x1 conv -> GELU -> 1x1 conv on NCHW maps."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = Conv1x1(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = Conv1x1(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _partition(x: torch.Tensor, w: int) -> torch.Tensor:
    """``[B, C, H, W] -> [B, nW, w*w, C]`` (windows row-major, tokens row-major).

    Goes through the NHWC view, which is free for channels_last inputs: one copy in all.
    """
    b, c, h, wd = x.shape
    x = x.permute(0, 2, 3, 1).reshape(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // w) * (wd // w), w * w, c)


def _reverse(x: torch.Tensor, w: int, h: int, wd: int) -> torch.Tensor:
    """Inverse of ``_partition``: a channels_last ``[B, C, H, W]`` (one copy)."""
    b, _, _, c = x.shape
    x = x.reshape(b, h // w, wd // w, w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, wd, c).permute(0, 3, 1, 2)


class SwinBlock(nn.Module):
    """``x + WMSA(GN(x))`` then ``x + MLP(GN(x))``, optionally on a cyclically shifted map."""

    def __init__(self, dim: int, resolution: int, heads: int, window: int, shift: int, mlp_ratio: float) -> None:
        super().__init__()
        if resolution <= window:  # official: the window shrinks to the map, no shift
            window, shift = resolution, 0
        self.resolution, self.window, self.shift = resolution, window, shift
        self.norm1 = GroupNorm32(dim)
        self.attn = WindowAttention(dim, window, heads)
        self.norm2 = GroupNorm32(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))
        mask = _at_default_device(shifted_window_mask(resolution, resolution, window, shift)) if shift > 0 else None
        self.register_buffer("attn_mask", mask, persistent=True)
        self._mask_cache: dict[tuple, torch.Tensor] = {}

    def _mask(self, h: int, w: int, ref: torch.Tensor) -> torch.Tensor | None:
        if self.shift == 0:
            return None
        if (h, w) == (self.resolution, self.resolution) and self.attn_mask is not None:
            return self.attn_mask
        if _compiling():
            return shifted_window_mask(h, w, self.window, self.shift).to(ref.device)
        key = (h, w, ref.device)
        m = self._mask_cache.get(key)
        if m is None:
            m = shifted_window_mask(h, w, self.window, self.shift).to(ref.device)
            self._mask_cache[key] = m
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if h % self.window or w % self.window:
            raise ValueError(f"feature map {h}x{w} is not a multiple of the window {self.window}")
        y = self.norm1(x)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(2, 3))
        y = _reverse(self.attn(_partition(y, self.window), self._mask(h, w, x)), self.window, h, w)
        y = like(y, x)  # free for channels_last maps (the fast path); NCHW maps stay NCHW
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(2, 3))
        x = x + y
        return x + self.mlp(self.norm2(x))


class PatchConv(nn.Module):
    """A 1x1 conv (``proj``) with an optional GroupNorm (``norm``): Swin's patch (un)embedding."""

    def __init__(self, cin: int, cout: int, norm: bool) -> None:
        super().__init__()
        self.proj = Conv1x1(cin, cout)
        self.norm = GroupNorm32(cout) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class SwinLayer(nn.Module):
    """``patch_embed -> depth x SwinBlock -> patch_unembed``; replaces (does not add to) its input."""

    def __init__(
        self,
        channels: int,
        embed_dim: int,
        heads: int,
        window: int,
        depth: int,
        resolution: int,
        mlp_ratio: float,
        patch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.patch_embed = PatchConv(channels, embed_dim, patch_norm)
        self.blocks = nn.ModuleList(
            SwinBlock(embed_dim, resolution, heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio)
            for i in range(depth)
        )
        self.patch_unembed = PatchConv(embed_dim, channels, patch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for blk in self.blocks:
            x = blk(x)
        return self.patch_unembed(x)
