"""3x3 convolutions by Winograd's F(4x4, 3x3): 4x fewer multiplies than the direct conv.

Each 4 x 4 block of outputs is computed from the 6 x 6 input patch around it: the patch is
transformed (``B^T d B``), multiplied channel-wise with the transformed kernel (``G w G^T``) as
36 GEMMs of ``[pixels/16, Cin] x [Cin, Cout]``, and transformed back (``A^T m A``). That is 36
instead of 144 multiply-adds per 4 x 4 outputs and channel pair; the transforms are small-integer
combinations, run as whole-band tensor ops. On a 2-core AVX2 host in float32 that measured
1.2-1.4x the direct oneDNN conv at 128 channels, 1.5-1.9x at 256 and 2.1-2.4x at 512 (F(2x2, 3x3),
used before, gave 0.8x / 1.2x / 1.5x); on an AVX-512 Zen 4 1.17x / 1.96x / 1.96x. Not for bf16:
with bf16 transforms F(4x4) loses the result (error ~1 on unit-variance maps). Rounding: with
the interpolation points 0, +-1, +-2 the error against float64 is about 4x the direct kernel's
(5e-5 vs 1.2e-5 at unit-variance maps); the parity tolerances (1e-4 latents, 1e-3 images) hold
with every block on it (tests/test_winograd.py), and docs/performance.md gives the full-size
model's figures.

Rows of 4 x 4 blocks are processed a band at a time so that the transformed band (the 36 GEMM
inputs, about ``_BAND_ELEMENTS`` floats) stays in cache between its passes.
"""

from __future__ import annotations

from fractions import Fraction

import torch
from torch import nn

from .conv import is_channels_last, records_grad

#: floats of one band's transformed input (8 MiB in float32): measured fastest at 128-512 px
_BAND_ELEMENTS = 1 << 21

#: F(4, 3) at the points 0, 1, -1, 2, -2, inf (Lavin & Gray 2016). ``B^T`` and ``A^T`` are
#: spelled out as tensor ops in ``_input_transform`` / ``_output_transform``:
#: B^T = [[4,0,-5,0,1,0],[0,-4,-4,1,1,0],[0,4,-4,-1,1,0],[0,-2,-1,2,1,0],[0,2,-1,-2,1,0],[0,4,0,-5,0,1]]
#: A^T = [[1,1,1,1,1,0],[0,1,-1,2,-2,0],[0,1,1,4,4,0],[0,1,-1,8,-8,1]]
_G = (
    (Fraction(1, 4), 0, 0),
    (Fraction(-1, 6), Fraction(-1, 6), Fraction(-1, 6)),
    (Fraction(-1, 6), Fraction(1, 6), Fraction(-1, 6)),
    (Fraction(1, 24), Fraction(1, 12), Fraction(1, 6)),
    (Fraction(1, 24), Fraction(-1, 12), Fraction(1, 6)),
    (0, 0, 1),
)
_T = 6  # input patch side
_M = 4  # output block side


def winograd_weight(weight: torch.Tensor) -> torch.Tensor:
    """``[Cout, Cin, 3, 3]`` -> ``[36, Cin, Cout]``: ``G w G^T`` per channel pair.

    One GEMM with ``G (x) G`` in the weight's dtype (1 ulp from the float64 product in float32):
    30 ms for a 512-channel conv on 2 cores, where an einsum in float64 took 130 ms, and every
    process pays it once per conv on its first call.
    """
    g = torch.tensor([[float(v) for v in row] for row in _G], dtype=torch.float64)
    k = torch.kron(g, g).to(device=weight.device, dtype=weight.dtype)  # [(a, b), (k, l)]
    co, ci = weight.shape[:2]
    flat = weight.detach().permute(1, 0, 2, 3).reshape(ci * co, 9)  # [(i, o), (k, l)]
    return torch.mm(k, flat.T).view(_T * _T, ci, co)


def _input_transform(d: list[torch.Tensor], t: list[torch.Tensor], tmp: list[torch.Tensor]) -> None:
    """``t[0..5] = B^T d`` along one axis (``d``: 6 views, ``tmp``: 2 scratch tensors shaped like ``t[i]``)."""
    d0, d1, d2, d3, d4, d5 = d
    torch.add(d4, d0, alpha=4, out=t[0]).add_(d2, alpha=-5)
    torch.add(d1, d2, out=tmp[0])
    torch.add(d4, d3, out=t[1]).add_(tmp[0], alpha=-4)
    torch.sub(d1, d2, out=tmp[0])
    torch.sub(d4, d3, out=t[2]).add_(tmp[0], alpha=4)
    torch.sub(d3, d1, out=tmp[0])
    torch.sub(d4, d2, out=tmp[1])
    torch.add(tmp[1], tmp[0], alpha=2, out=t[3])
    torch.add(tmp[1], tmp[0], alpha=-2, out=t[4])
    torch.add(d5, d1, alpha=4, out=t[5]).add_(d3, alpha=-5)


def _output_transform(m: list[torch.Tensor], o: list[torch.Tensor], tmp: list[torch.Tensor]) -> None:
    """``o[0..3] = A^T m`` along one axis (``m``: 6 views, ``tmp``: 4 scratch tensors)."""
    m0, m1, m2, m3, m4, m5 = m
    s12, s34, d12, d34 = tmp
    torch.add(m1, m2, out=s12)
    torch.add(m3, m4, out=s34)
    torch.sub(m1, m2, out=d12)
    torch.sub(m3, m4, out=d34)
    torch.add(m0, s12, out=o[0]).add_(s34)
    torch.add(d12, d34, alpha=2, out=o[1])
    torch.add(s12, s34, alpha=4, out=o[2])
    torch.add(d12, d34, alpha=8, out=o[3]).add_(m5)


def winograd_conv3x3(
    x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None, band_elements: int = _BAND_ELEMENTS
) -> torch.Tensor:
    """``conv2d(x, w, bias, padding=1)`` for a ``[B, Cin, H, W]`` map, ``u = winograd_weight(w)``.

    Any H and W (sides that are not multiples of 4 are computed up to the next one and cropped);
    returned channels_last (the NHWC result is built in place).
    """
    b, c, h, w = x.shape
    co = u.shape[-1]
    he, we = -(-h // _M) * _M, -(-w // _M) * _M  # output extent in whole blocks
    xv = x.permute(0, 2, 3, 1)  # NHWC: a free view of a channels_last map
    th, tw = he // _M, we // _M
    rows = max(1, min(th, band_elements // (_T * _T * b * tw * c)))
    new = lambda *shape: torch.empty(*shape, dtype=x.dtype, device=x.device)  # noqa: E731
    y = new(b, th, _M, tw, _M, co)
    # The zero-padded input rows of one band (4 per block row + 2 shared with the next band),
    # copied in just before its transform: no padded copy of the whole map, which would be one
    # more input-sized map alive at the conv (the peak of a VQ decode is such a conv).
    span = _M * rows + 2
    pbuf = new(b, span, we + 2, c)
    pbuf[:, :, 0].zero_()
    pbuf[:, :, w + 1 :].zero_()
    rbuf, rtmp = new(_T, b, rows, we + 2, c), new(2, b, rows, we + 2, c)
    vbuf, vtmp = new(_T, _T, b, rows, tw, c), new(2, _T, b, rows, tw, c)
    mbuf = new(_T * _T, b * rows * tw, co)
    nbuf, ntmp = new(_M, _T, b, rows, tw, co), new(4, _T, b, rows, tw, co)
    otmp = new(4, b, rows, tw, _M, co)
    for i0 in range(0, th, rows):
        r = min(rows, th - i0)
        rr, vv, nb = rbuf[:, :, :r], vbuf[:, :, :, :r], nbuf[:, :, :, :r]
        top, n = _M * i0 - 1, _M * r + 2  # x row of the band's first padded row; rows it needs
        j0, j1 = max(0, -top), min(n, h - top)
        pbuf[:, j0:j1, 1 : w + 1].copy_(xv[:, top + j0 : top + j1])
        pbuf[:, :j0].zero_()
        pbuf[:, j1:n].zero_()
        # B^T along rows (6 strided row views of the band), then along columns for all 6 at once
        _input_transform([pbuf[:, k::_M][:, :r] for k in range(_T)], list(rr), list(rtmp[:, :, :r]))
        _input_transform([rr[..., k : k + _M * tw : _M, :] for k in range(_T)], list(vv.unbind(1)),
                         list(vtmp[:, :, :, :r]))
        p = b * r * tw
        m = mbuf[:, :p]
        v = vbuf.view(_T * _T, p, c) if r == rows else vv.reshape(_T * _T, p, c)
        torch.bmm(v, u, out=m)
        if bias is not None:  # A^T's column for the point 1 is all ones: bias there is bias everywhere
            m[_T + 1].add_(bias)
        mv = m.view(_T, _T, b, r, tw, co)
        # A^T along columns (for all 6 rows at once), then along rows straight into the NHWC output
        _output_transform(list(mv.unbind(1)), list(nb), list(ntmp[:, :, :, :r]))
        yo = y[:, i0 : i0 + r]  # [B, r, 4 (row in block), tw, 4 (column in block), Co]
        _output_transform([nb[:, a].permute(1, 2, 3, 0, 4) for a in range(_T)], list(yo.unbind(2)),
                          list(otmp[:, :, :r]))
    out = y.view(b, he, we, co).permute(0, 3, 1, 2)
    if (he, we) != (h, w):
        out = out[:, :, :h, :w].contiguous(memory_format=torch.channels_last)
    return out


#: Winograd is used where both widths are at least this (measured in fp32 at 128 channels: 1.2-1.4x
#: the direct conv on a 2-core AVX2 host, 1.17x on an AVX-512 Zen 4, 2026-12-07)
MIN_CHANNELS = 128


class Conv3x3(nn.Conv2d):
    """``nn.Conv2d(cin, cout, 3, padding=1)`` (same keys) that runs F(4x4, 3x3) where it is faster.

    That is float32 channels_last maps on the CPU at inference, with both widths at least
    :data:`MIN_CHANNELS`; everything else (other devices and dtypes, autograd) is the plain
    conv. The transformed kernel is kept until the weight changes (in place, by its version
    counter, or replaced); writes through ``weight.data`` bypass that counter and are not seen.
    """

    def __init__(self, cin: int, cout: int, bias: bool = True) -> None:
        super().__init__(cin, cout, 3, padding=1, bias=bias)
        self._winograd: tuple[tuple[int, int, int], torch.Tensor] | None = None

    def _weight_qualifies(self) -> bool:
        w = self.weight
        return (
            w.device.type == "cpu"
            and w.dtype == torch.float32
            and min(self.in_channels, self.out_channels) >= MIN_CHANNELS
        )

    def uses_winograd(self, x: torch.Tensor) -> bool:
        """True where ``forward(x)`` takes the Winograd path."""
        return (
            self._weight_qualifies()
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and is_channels_last(x)
            and not records_grad(x, self.weight)
        )

    def _cache_key(self) -> tuple[int, int, int] | None:
        w = self.weight
        try:
            return (w.data_ptr(), w._version, id(w))
        except RuntimeError:  # inference tensors keep no version counter
            return None

    def _holds(self, key: tuple[int, int, int]) -> bool:
        """True where the cached kernel was made from the weight as ``key`` identifies it."""
        return self._winograd is not None and self._winograd[0] == key

    def pending_cache_bytes(self) -> int:
        """Bytes the next Winograd call will allocate for its cached kernel (0 once it is held,
        or where this conv stays direct): ``36 * Cin * Cout`` floats, 4x the weight."""
        if not self._weight_qualifies():
            return 0
        key = self._cache_key()
        if key is not None and self._holds(key):
            return 0
        return _T * _T * self.in_channels * self.out_channels * self.weight.element_size()

    def _transformed(self) -> torch.Tensor:
        w = self.weight
        key = self._cache_key()
        if key is None:  # transform every call
            return winograd_weight(w.detach())
        if not self._holds(key):
            self._winograd = (key, winograd_weight(w.detach()))
        return self._winograd[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.uses_winograd(x):
            return winograd_conv3x3(x, self._transformed(), self.bias)
        return super().forward(x)


def pending_cache_bytes(module: nn.Module) -> int:
    """Memory a run of ``module`` will add for Winograd kernels not yet cached (float32 CPU
    inference): a memory budget counts it before the first call, when it is not yet in the RSS.
    For VQ-f4 that is 0.79 GB."""
    return sum(m.pending_cache_bytes() for m in module.modules() if isinstance(m, Conv3x3))
