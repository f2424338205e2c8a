"""3x3 convolutions by Winograd's F(2x2, 3x3): 2.25x fewer multiplies than the direct conv.

Each 2 x 2 block of outputs is computed from the 4 x 4 input patch around it: the patch is
transformed (``B^T d B``: additions only), multiplied channel-wise with the transformed kernel
(``G w G^T``) as 16 GEMMs of ``[pixels/4, Cin] x [Cin, Cout]``, and transformed back
(``A^T m A``: additions only). That is 16 instead of 36 multiply-adds per 2 x 2 outputs and
channel pair. The transforms are memory passes over 4x the map, so the trade pays only where
the GEMMs are large against them: on the CPU, float32, at 256 channels and more (the VQ
autoencoder's two deepest levels, about 55% of its conv work). Rounding: the transforms only
add and halve; measured against float64 the error is below the direct oneDNN kernel's own
(3e-6 vs 1.2e-5 at 512 channels).

Rows of 2 x 2 blocks are processed a band at a time so that the transformed band (the 16 GEMM
inputs, about ``_BAND_ELEMENTS`` floats) stays in cache between its passes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .conv import is_channels_last, records_grad

#: floats of one band's transformed input (8 MiB in float32): measured fastest at 128-256 px
_BAND_ELEMENTS = 1 << 21

# F(2, 3):  B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]],  A^T = [[1,1,1,0],[0,1,-1,-1]]
_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))


def winograd_weight(weight: torch.Tensor) -> torch.Tensor:
    """``[Cout, Cin, 3, 3]`` -> ``[16, Cin, Cout]``: ``G w G^T`` per channel pair, in float64 then cast."""
    g = torch.tensor(_G, dtype=torch.float64, device=weight.device)
    u = torch.einsum("ak,oikl,bl->abio", g, weight.double(), g)
    return u.reshape(16, weight.shape[1], weight.shape[0]).to(weight.dtype).contiguous()


def _transform_pair(
    x0: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor, out: torch.Tensor
) -> None:
    """``B^T`` along one axis: ``out[0..3] = x0-x2, x1+x2, x2-x1, x1-x3``."""
    torch.sub(x0, x2, out=out[0])
    torch.add(x1, x2, out=out[1])
    torch.sub(x2, x1, out=out[2])
    torch.sub(x1, x3, out=out[3])


def winograd_conv3x3(
    x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None, band_elements: int = _BAND_ELEMENTS
) -> torch.Tensor:
    """``conv2d(x, w, bias, padding=1)`` for a ``[B, Cin, H, W]`` map, ``u = winograd_weight(w)``.

    Any H and W (odd sides are computed one row/column larger and cropped); returned
    channels_last (the NHWC result is built in place).
    """
    b, c, h, w = x.shape
    co = u.shape[-1]
    he, we = h + h % 2, w + w % 2  # even output extent
    xp = F.pad(x, (1, 1 + we - w, 1, 1 + he - h)).permute(0, 2, 3, 1)  # [B, he+2, we+2, C]
    if not xp.is_contiguous():
        xp = xp.contiguous()
    th, tw = he // 2, we // 2
    rows = max(1, min(th, band_elements // (16 * b * tw * c)))
    y = torch.empty(b, th, 2, tw, 2, co, dtype=x.dtype, device=x.device)
    rbuf = torch.empty(4, b, rows, we + 2, c, dtype=x.dtype, device=x.device)
    vbuf = torch.empty(4, 4, b, rows, tw, c, dtype=x.dtype, device=x.device)
    mbuf = torch.empty(16, b * rows * tw, co, dtype=x.dtype, device=x.device)
    nbuf = torch.empty(4, 2, b, rows, tw, co, dtype=x.dtype, device=x.device)
    for i0 in range(0, th, rows):
        r = min(rows, th - i0)
        rr, vv, nb = rbuf[:, :, :r], vbuf[:, :, :, :r], nbuf[:, :, :, :r]
        _transform_pair(*(xp[:, 2 * i0 + k : 2 * (i0 + r) + k : 2] for k in range(4)), rr)  # rows
        for a in range(4):  # columns
            _transform_pair(*(rr[a][:, :, k : k + we : 2] for k in range(4)), vv[a])
        p = b * r * tw
        m = mbuf[:, :p]
        v = vbuf.view(16, p, c) if r == rows else vv.reshape(16, p, c)
        torch.bmm(v, u, out=m)
        mv = m.view(4, 4, b, r, tw, co)
        # A^T along columns, then rows, written straight into the interleaved NHWC output
        torch.add(mv[:, 0], mv[:, 1], out=nb[:, 0]).add_(mv[:, 2])
        torch.sub(mv[:, 1], mv[:, 2], out=nb[:, 1]).sub_(mv[:, 3])
        yo = y[:, i0 : i0 + r]
        for s in range(2):
            torch.add(nb[0, s], nb[1, s], out=yo[:, :, 0, :, s]).add_(nb[2, s])
            torch.sub(nb[1, s], nb[2, s], out=yo[:, :, 1, :, s]).sub_(nb[3, s])
    out = y.view(b, he, we, co)
    if bias is not None:
        out.add_(bias)
    out = out.permute(0, 3, 1, 2)
    if (he, we) != (h, w):
        out = out[:, :, :h, :w].contiguous(memory_format=torch.channels_last)
    return out


#: Winograd is used where both widths are at least this (measured on a 2-core AVX2 host in fp32:
#: 1.3-1.6x the direct conv at 512 channels, 1.15-1.3x at 256, 0.8x at 128; AVX-512 hosts,
#: whose direct conv is relatively faster, not measured)
MIN_CHANNELS = 256


class Conv3x3(nn.Conv2d):
    """``nn.Conv2d(cin, cout, 3, padding=1)`` (same keys) that runs F(2x2, 3x3) where it is faster.

    That is float32 channels_last maps on the CPU at inference, with both widths at least
    :data:`MIN_CHANNELS`; everything else (other devices and dtypes, autograd) is the plain
    conv. The transformed kernel is kept until the weight changes (in place, by its version
    counter, or replaced); writes through ``weight.data`` bypass that counter and are not seen.
    """

    def __init__(self, cin: int, cout: int, bias: bool = True) -> None:
        super().__init__(cin, cout, 3, padding=1, bias=bias)
        self._winograd: tuple[tuple[int, int, int], torch.Tensor] | None = None

    def uses_winograd(self, x: torch.Tensor) -> bool:
        """True where ``forward(x)`` takes the Winograd path."""
        return (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.weight.dtype == torch.float32
            and min(self.in_channels, self.out_channels) >= MIN_CHANNELS
            and is_channels_last(x)
            and not records_grad(x, self.weight)
        )

    def _transformed(self) -> torch.Tensor:
        w = self.weight
        try:
            key = (w.data_ptr(), w._version, id(w))
        except RuntimeError:  # inference tensors keep no version counter: transform every call
            return winograd_weight(w.detach())
        if self._winograd is None or self._winograd[0] != key:
            self._winograd = (key, winograd_weight(w.detach()))
        return self._winograd[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.uses_winograd(x):
            return winograd_conv3x3(x, self._transformed(), self.bias)
        return super().forward(x)
