"""Overlapping tiles for images too large to super-resolve in one piece.

Memory is bounded by the tile, not the image: the input is cut into equal-sized overlapping
boxes (in LR pixels), each box goes through ``fn`` (which upsamples by an integer ``scale``),
and the outputs are blended back with smooth weights. The official SinSR code averages
overlaps without weights, which leaves visible seams; here each tile fades out over the overlap
with a raised-cosine ramp, and the accumulated weights are divided out, so every output pixel is
a convex combination of the tiles that cover it.

Pure geometry and blending: no model code, no file I/O, no prints. Running a model over the
tiles, with the out-of-memory retry, is ``engine``'s.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .devices import is_oom_error

__all__ = [
    "Tile",
    "tile_spans",
    "plan_tiles",
    "blend_window",
    "run_tiled",
    "OutputTooLarge",
]


@dataclass(frozen=True)
class Tile:
    """An LR box ``[y0, y1) x [x0, x1)``, half-open like slicing."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0


def tile_spans(length: int, tile: int, overlap: int, pad: int = 0) -> list[tuple[int, int]]:
    """The ``[start, end)`` spans of the tiles covering ``[0, length)`` along one side.

    Each tile is computed from a box of ``box = min(length, tile + 2 * pad)`` pixels: its span
    plus ``pad`` px of context on every side that has a neighbour. A side on the image border
    needs no context, so an end tile keeps its whole box there (``tile + pad`` px): every box has
    the same size (one shape per model call helps batching and CUDA graphs), and a photo needs up
    to one tile fewer per side than if every tile kept only ``tile`` px. Boxes are spread evenly
    from 0 to ``length - box``, so neighbouring spans overlap by at least ``overlap`` and by about
    the same amount. ``tile == 0`` or ``length <= box`` gives the one span ``[(0, length)]``.
    """
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if tile < 0 or overlap < 0 or pad < 0:
        raise ValueError(f"tile, overlap and pad must be >= 0, got tile={tile}, overlap={overlap}, pad={pad}")
    box = tile + 2 * pad
    if tile == 0 or length <= box:
        return [(0, length)]
    if overlap >= tile:
        raise ValueError(f"overlap ({overlap}) must be smaller than the tile ({tile})")
    stride = tile - overlap  # the largest step between boxes that keeps `overlap`
    span = length - box
    n = 1 + -(-span // stride)  # ceil: the fewest boxes whose steps fit
    # floor(i * span / (n - 1)): consecutive steps are <= ceil(span / (n - 1)) <= stride.
    starts = [i * span // (n - 1) for i in range(n)]
    return [(s + (pad if i else 0), s + box - (pad if i < n - 1 else 0)) for i, s in enumerate(starts)]


def plan_tiles(height: int, width: int, tile: int, overlap: int, pad: int = 0) -> list[Tile]:
    """Row-major grid of LR tiles covering a ``height x width`` image (see :func:`tile_spans`).

    Every tile's box (the tile and ``pad`` px of context, shifted inside the image) has the same
    size; a dimension no larger than ``tile + 2 * pad`` (or ``tile == 0``) is one span.
    """
    ys = tile_spans(height, tile, overlap, pad)
    xs = tile_spans(width, tile, overlap, pad)
    return [Tile(y0, y1, x0, x1) for y0, y1 in ys for x0, x1 in xs]


def _ramp_profile(
    size: int, ramp: int, fade_start: bool, fade_end: bool, dtype: torch.dtype
) -> torch.Tensor:
    """1-D weights ``[size]`` in ``(0, 1]``: raised-cosine ramps of ``ramp`` px on faded ends.

    The ramp ``sin^2(pi/2 * (i + 0.5) / ramp)`` is strictly positive (so the weight sum never
    vanishes) and meets its mirror image as a partition of unity: two neighbours overlapping by
    exactly ``ramp`` px blend to weights summing to one before any normalisation.
    """
    w = torch.ones(size, dtype=torch.float64)
    ramp = min(ramp, size)
    if ramp > 0 and (fade_start or fade_end):
        i = torch.arange(ramp, dtype=torch.float64)
        up = torch.sin(0.5 * math.pi * (i + 0.5) / ramp) ** 2
        if fade_start:
            w[:ramp] = torch.minimum(w[:ramp], up)
        if fade_end:
            w[size - ramp :] = torch.minimum(w[size - ramp :], up.flip(0))
    return w.to(dtype)


def blend_window(
    tile: Tile,
    height: int,
    width: int,
    overlap: int,
    scale: int,
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Blend weights ``[1, 1, th*scale, tw*scale]`` float32 in ``(0, 1]`` for one tile's output.

    Sides that touch a neighbour fade over ``overlap * scale`` output px (raised cosine); sides on
    the image border stay flat at 1, so the border is never darkened or mixed. The 2-D window is
    the outer product of the row and column profiles, which keeps the partition-of-unity property
    at corners where four tiles meet.
    """
    ramp = overlap * scale
    wy = _ramp_profile(tile.height * scale, ramp, tile.y0 > 0, tile.y1 < height, torch.float32)
    wx = _ramp_profile(tile.width * scale, ramp, tile.x0 > 0, tile.x1 < width, torch.float32)
    return (wy[:, None] * wx[None, :])[None, None].to(device)


class OutputTooLarge(RuntimeError):
    """The full-size output buffers do not fit on their device; smaller tiles cannot help."""


def _output_buffer(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Zeros ``shape`` float32 on ``device``, or OutputTooLarge saying how much was needed."""
    try:
        return torch.zeros(shape, dtype=torch.float32, device=device)
    except Exception as err:
        if not is_oom_error(err):
            raise
        gib = math.prod(shape) * 4 / 2**30
        raise OutputTooLarge(
            f"the {shape[-1]}x{shape[-2]} output's float32 buffers ({gib:.1f} GiB) do not fit in {device} memory"
        ) from None


def run_tiled(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    tile: int,
    overlap: int,
    scale: int,
    batch_size: int = 1,
    on_tile: Callable[[int, int], None] | None = None,
    out_device: torch.device | str | None = None,
    pad: int = 0,
    out_channels: int | None = None,
) -> torch.Tensor:
    """Apply an upsampling ``fn`` to ``x`` tile by tile and blend the outputs seamlessly.

    Args:
        fn: maps ``[n, C, th, tw]`` (x's dtype and device) to ``[n, C', th*scale, tw*scale]``.
        x: ``[B, C, H, W]`` input, any value range.
        tile: LR tile side in pixels; ``0``, or a box (``tile + 2 * pad``) covering
            ``max(H, W)``, runs each image whole. End tiles keep ``tile + pad`` px on their
            border side (:func:`tile_spans`).
        overlap: minimum LR overlap between neighbouring tiles; must be ``< tile`` when tiling.
        scale: integer upsampling factor of ``fn``.
        batch_size: tiles per ``fn`` call, stacked from the same image and across the batch.
        on_tile: progress callback ``(tiles_done, tiles_total)``, called after each ``fn`` call.
        out_device: where the float32 output is accumulated (default ``x.device``); pass
            ``"cpu"`` to keep a large output off the accelerator.
        pad: LR context added around each tile on the sides with a neighbour (the box shifted
            inside the image, so every input has the same size) and cropped from ``fn``'s
            output: operators with a receptive field (bicubic, convs) then see real neighbours
            instead of the tile's edge.
        out_channels: ``C'`` when known: the output is then allocated before the first tile,
            so a too-large image fails at once and the peak memory is reached on tile one.

    Returns:
        ``[B, C', H*scale, W*scale]`` float32 on ``out_device``: at each pixel the weighted mean
        of the tiles covering it (a convex combination: normalised weights sum to one).
    """
    if x.ndim != 4:
        raise ValueError(f"expected x as [B, C, H, W], got shape {tuple(x.shape)}")
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    b, _, h, w = x.shape
    out_device = torch.device(out_device) if out_device is not None else x.device
    pad = max(pad, 0)
    if tile + 2 * pad >= max(h, w):
        tile = 0  # one box holds the whole image: no blending, no overlap constraint
    tiles = plan_tiles(h, w, tile, overlap, pad)
    if len(tiles) == 1 and batch_size >= b:  # whole images in one call: nothing to blend
        y = fn(x)
        if y.ndim != 4 or y.shape[0] != b or tuple(y.shape[-2:]) != (h * scale, w * scale):
            raise ValueError(
                f"fn returned shape {tuple(y.shape)} for input {tuple(x.shape)}; expected "
                f"[{b}, C', {h * scale}, {w * scale}] (scale={scale}): check the scale argument"
            )
        if out_channels is not None and y.shape[1] != out_channels:
            raise ValueError(f"fn returned {y.shape[1]} channels, expected out_channels={out_channels}")
        if on_tile is not None:
            on_tile(1, 1)
        return y.to(device=out_device, dtype=torch.float32)

    # Weights depend only on which sides have neighbours: a grid has at most 9 distinct windows.
    windows: dict[tuple[int, int, bool, bool, bool, bool], torch.Tensor] = {}

    def window(t: Tile) -> torch.Tensor:
        key = (t.height, t.width, t.y0 > 0, t.y1 < h, t.x0 > 0, t.x1 < w)
        if key not in windows:
            windows[key] = blend_window(t, h, w, overlap, scale, device=out_device)
        return windows[key]

    weight_sum = _output_buffer((1, 1, h * scale, w * scale), out_device)
    for t in tiles:
        weight_sum[..., t.y0 * scale : t.y1 * scale, t.x0 * scale : t.x1 * scale] += window(t)

    # plan_tiles gives every tile a box of the same size, so any run of jobs stacks into one batch.
    jobs = [(i, t) for i in range(b) for t in tiles]
    box = tile + 2 * pad if tile else max(h, w)
    ch, cw = min(h, box), min(w, box)

    def context(t: Tile) -> tuple[int, int]:
        """Top-left of the tile's input box: the tile grown by ``pad``, shifted inside the image
        (an end tile already reaches the border on the side where it has no context)."""
        return min(max(t.y0 - pad, 0), h - ch), min(max(t.x0 - pad, 0), w - cw)

    out: torch.Tensor | None = None
    if out_channels is not None:
        out = _output_buffer((b, out_channels, h * scale, w * scale), out_device)
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        boxes = [context(t) for _, t in chunk]
        inp = torch.stack([x[i, :, cy : cy + ch, cx : cx + cw] for (i, _), (cy, cx) in zip(chunk, boxes)])
        y = fn(inp)
        if y.ndim != 4 or y.shape[0] != len(chunk) or tuple(y.shape[-2:]) != (ch * scale, cw * scale):
            raise ValueError(
                f"fn returned shape {tuple(y.shape)} for input {tuple(inp.shape)}; expected "
                f"[{len(chunk)}, C', {ch * scale}, {cw * scale}] (scale={scale}): check the scale argument"
            )
        if out_channels is not None and y.shape[1] != out_channels:
            raise ValueError(f"fn returned {y.shape[1]} channels, expected out_channels={out_channels}")
        y = y.to(device=out_device, dtype=torch.float32)
        if out is None:
            out = _output_buffer((b, y.shape[1], h * scale, w * scale), out_device)
        for k, ((i, t), (cy, cx)) in enumerate(zip(chunk, boxes)):
            ys, xs = slice(t.y0 * scale, t.y1 * scale), slice(t.x0 * scale, t.x1 * scale)
            oy, ox = (t.y0 - cy) * scale, (t.x0 - cx) * scale
            crop = y[k, :, oy : oy + t.height * scale, ox : ox + t.width * scale]
            out[i, :, ys, xs].addcmul_(crop, window(t)[0])
        del y, inp
        if on_tile is not None:
            on_tile(start + len(chunk), len(jobs))
    assert out is not None  # jobs is never empty: B >= 1 and plan_tiles returns >= 1 tile
    return out.div_(weight_sum)
