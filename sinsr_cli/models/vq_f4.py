"""The f4 VQ autoencoder of LDM/ResShift (official ``VQModelTorch``), key-compatible.

``encode`` does NOT quantise (encoder + ``quant_conv``); ``decode`` quantises to the nearest
codebook entry, then ``post_quant_conv`` + decoder (reference NOTES §6). The mid-block attention
is single-head attention over every latent position; ``nn.attention.global_attention`` runs it
so that the (HW)^2 score matrix is never materialised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import VQConfig
from ..devices import exact_fp32, free_memory
from ..nn.attention import global_attention
from ..nn.conv import Conv1x1, like, upsample_conv3x3
from ..nn.norm import GroupNorm32
from ..nn.winograd import Conv3x3

_EPS = 1e-6
#: CPU: latent positions quantised per chunk: the [rows, n_embed] distance block (8 MiB for
#: 8192 codes) stays in cache across its passes; chunking rows does not change any distance
_QUANT_CHUNK = 256
#: accelerators: distance elements per chunk; a launch this big already dwarfs its overhead
_QUANT_BLOCK_ELEMENTS = 1 << 26
#: torch's CUDA kernels index with 32 bits; cuDNN convolutions, norms and resampling of maps
#: with more elements fail or take slow paths, so no map (or distance block) may reach this
MAX_ELEMENTS = 2**31 - 1


def quant_chunk_rows(n_embed: int, device_type: str, free_bytes: int | None) -> int:
    """Latent positions per step of the nearest-code search on a device.

    CPU: 256 (cache-sized, measured). Elsewhere: one launch per ``2^26`` distance elements
    instead of hundreds of tiny ones, held to 1/8 of ``free_bytes`` for the two
    ``[rows, n_embed]`` float32 blocks a step makes, and under the 32-bit index limit.
    """
    if device_type == "cpu":
        return _QUANT_CHUNK
    rows = _QUANT_BLOCK_ELEMENTS // n_embed
    if free_bytes is not None:
        rows = min(rows, free_bytes // 8 // (2 * 4 * n_embed))
    return max(1, min(max(_QUANT_CHUNK, rows), MAX_ELEMENTS // n_embed))


def largest_map_per_pixel(cfg: VQConfig) -> float:
    """Elements of the autoencoder's largest feature map per pixel of its image (batch 1).

    Encoder level ``i`` works at ``1/2^i`` of the image with its input and output widths, the
    decoder likewise (its level-``i`` input is the upsampled deeper level), and the mid-block
    attention holds q, k, v (3x the deepest width) at the latent size. For vq-f4 the largest is
    the decoder's 256-channel map upsampled to full resolution: 256 elements per image pixel.
    """
    widths = [cfg.ch * m for m in cfg.ch_mult]
    n = len(widths)
    best = float(max(cfg.ch, cfg.in_channels, cfg.out_ch))
    for i in range(n):
        enc_in = cfg.ch if i == 0 else widths[i - 1]
        dec_in = widths[i + 1] if i + 1 < n else widths[-1]
        best = max(best, max(enc_in, dec_in, widths[i]) / 4**i)
    return max(best, 3 * widths[-1] / 4 ** (n - 1))


def max_image_pixels(cfg: VQConfig, batch: int = 1) -> int:
    """The most image pixels (H * W at the autoencoder's resolution) one call may have.

    The bound is :data:`MAX_ELEMENTS` on the largest feature map (``largest_map_per_pixel``),
    whatever the dtype: the limit counts elements, not bytes.
    """
    return int(MAX_ELEMENTS // (largest_map_per_pixel(cfg) * max(1, batch)))


def _norm(c: int) -> GroupNorm32:
    return GroupNorm32(c, eps=_EPS)


class ResnetBlock(nn.Module):
    """GN-swish-conv twice plus a 1x1 ``nin_shortcut`` when the width changes.

    The 3x3 convs run by Winograd at 128 channels and more in float32 on the CPU (``Conv3x3``).
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm1 = _norm(cin)
        self.conv1 = Conv3x3(cin, cout)
        self.norm2 = _norm(cout)
        self.conv2 = Conv3x3(cout, cout)
        if cin != cout:
            self.nin_shortcut = Conv1x1(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inplace = not torch.is_grad_enabled()  # reuse fresh buffers at inference (same numbers)
        h = self.conv1(F.silu(self.norm1(x), inplace=inplace))
        h = F.silu(self.norm2(h), inplace=inplace)  # conv1's output is freed before conv2 runs
        h = self.conv2(h)
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return h.add_(x) if inplace else x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all spatial positions, residual."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = _norm(c)
        self.q = Conv1x1(c, c)
        self.k = Conv1x1(c, c)
        self.v = Conv1x1(c, c)
        self.proj_out = Conv1x1(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # tokens [B, 1, HW, C] (a free view of a channels_last map); q, k, v in one GEMM
        y = self.norm(x).permute(0, 2, 3, 1).reshape(b, 1, h * w, c)
        wqkv = torch.cat([self.q.weight, self.k.weight, self.v.weight]).reshape(3 * c, c)
        bqkv = torch.cat([self.q.bias, self.k.bias, self.v.bias])
        q, k, v = F.linear(y, wqkv, bqkv).chunk(3, dim=-1)
        out = global_attention(q, k, v)  # scale c^-0.5; never the full (HW)^2 matrix
        out = F.linear(out, self.proj_out.weight.reshape(c, c), self.proj_out.bias)
        return x + like(out.reshape(b, h, w, c).permute(0, 3, 1, 2), x)


class _Down(nn.Module):
    """Asymmetric (0,1,0,1) zero pad then a stride-2 3x3 conv."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class _Up(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest x2 then ``conv``, computed without the upsampled map (see upsample_conv3x3)."""
        return upsample_conv3x3(x, self.conv.weight, self.conv.bias)


class _Mid(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(c, c)
        self.attn_1 = AttnBlock(c)
        self.block_2 = ResnetBlock(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class _Level(nn.Module):
    """One resolution: ``block`` (ResnetBlocks), ``attn`` (optional), then a resampler."""

    def __init__(self, blocks: list[ResnetBlock], attn: list[AttnBlock], resample: nn.Module | None, name: str) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attn)
        if resample is not None:
            setattr(self, name, resample)
        self._resample = name if resample is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, blk in enumerate(self.block):
            x = blk(x)
            if len(self.attn):
                x = self.attn[i](x)
        if self._resample:
            x = getattr(self, self._resample)(x)
        return x


class Encoder(nn.Module):
    def __init__(self, cfg: VQConfig) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        res = cfg.resolution
        mults = (1,) + tuple(cfg.ch_mult)
        self.down = nn.ModuleList()
        for i, m in enumerate(cfg.ch_mult):
            cin, cout = cfg.ch * mults[i], cfg.ch * m
            blocks = [ResnetBlock(cin if j == 0 else cout, cout) for j in range(cfg.num_res_blocks)]
            attn = [AttnBlock(cout) for _ in blocks] if res in cfg.attn_resolutions else []
            last = i == len(cfg.ch_mult) - 1
            self.down.append(_Level(blocks, attn, None if last else _Down(cout), "downsample"))
            if not last:
                res //= 2
        c = cfg.ch * cfg.ch_mult[-1]
        self.mid = _Mid(c)
        self.norm_out = _norm(c)
        self.conv_out = nn.Conv2d(c, cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h), inplace=not torch.is_grad_enabled()))


class Decoder(nn.Module):
    def __init__(self, cfg: VQConfig) -> None:
        super().__init__()
        n = len(cfg.ch_mult)
        c = cfg.ch * cfg.ch_mult[-1]
        res = cfg.resolution // 2 ** (n - 1)
        self.conv_in = nn.Conv2d(cfg.z_channels, c, 3, padding=1)
        self.mid = _Mid(c)
        levels: list[_Level] = []
        for i in reversed(range(n)):
            cout = cfg.ch * cfg.ch_mult[i]
            blocks = [ResnetBlock(c if j == 0 else cout, cout) for j in range(cfg.num_res_blocks + 1)]
            attn = [AttnBlock(cout) for _ in blocks] if res in cfg.attn_resolutions else []
            levels.insert(0, _Level(blocks, attn, _Up(cout) if i != 0 else None, "upsample"))
            c = cout
            if i != 0:
                res *= 2
        self.up = nn.ModuleList(levels)  # index = resolution level, run from the last
        self.norm_out = _norm(c)
        self.conv_out = nn.Conv2d(c, cfg.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h), inplace=not torch.is_grad_enabled()))


class Codebook(nn.Module):
    """Nearest-neighbour vector quantiser (``quantize.embedding``)."""

    def __init__(self, n_embed: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_embed, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, H, W]`` int64: argmin |z|^2 + |e|^2 - 2 z.e in true float32.

        Neither autocast nor TF32/bf16 matmul modes apply here: a rounded distance flips codes.
        """
        b, c, h, w = z.shape
        with torch.autocast(z.device.type, enabled=False), exact_fp32():
            return self._indices(z.permute(0, 2, 3, 1).reshape(-1, c).float()).reshape(b, h, w)

    def _indices(self, flat: torch.Tensor) -> torch.Tensor:
        """``[N, C]`` float32 -> ``[N]`` nearest code, in row chunks (see quant_chunk_rows)."""
        e = self.embedding.weight.float()
        e2 = (e * e).sum(1)
        out = torch.empty(flat.shape[0], dtype=torch.long, device=flat.device)
        et = e.t().contiguous()
        dev = flat.device
        rows = quant_chunk_rows(e.shape[0], dev.type, None if dev.type == "cpu" else free_memory(dev))
        for s in range(0, flat.shape[0], rows):
            f = flat[s : s + rows]
            d = (f * f).sum(1, keepdim=True) + e2
            d.sub_(f @ et, alpha=2)  # bitwise the official (|z|^2 + |e|^2) - 2 z.e: 2x is exact
            out[s : s + rows] = d.argmin(1)
        return out

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Quantise with the straight-through form ``z + (z_q - z)`` (gradient of identity)."""
        zq = self.embedding(self.indices(z)).permute(0, 3, 1, 2).to(z.dtype)
        return z + (zq - z).detach()


class VQModel(nn.Module):
    """``encode`` image [-1,1] -> latent (not quantised); ``decode`` latent -> image (quantised)."""

    def __init__(self, cfg: VQConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantize = Codebook(cfg.n_embed, cfg.embed_dim)
        self.quant_conv = Conv1x1(cfg.z_channels, cfg.embed_dim)
        self.post_quant_conv = Conv1x1(cfg.embed_dim, cfg.z_channels)

    @property
    def dtype(self) -> torch.dtype:
        return self.quant_conv.weight.dtype

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[B,3,H,W]`` in [-1,1] -> ``[B,embed,H/f,W/f]`` in the model's dtype cast back to x's."""
        return self.quant_conv(self.encoder(x.to(self.dtype))).to(x.dtype)

    def decode(self, z: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        """``[B,embed,h,w]`` -> ``[B,3,h*f,w*f]`` in z's dtype (not clamped).

        The nearest code is chosen from ``z`` as given (in float32 arithmetic), before the cast
        to the model dtype: a float32 latent decoded by a bf16/fp16 model picks the same codes
        as in float32 (keep ``quantize`` in float32 for that, as ``SRPipeline.to`` does).
        """
        if quantize:
            z = self.quantize(z)
        return self.decoder(self.post_quant_conv(z.to(self.dtype))).to(z.dtype)
