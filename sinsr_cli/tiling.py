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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .devices import is_oom_error

__all__ = [
    "Tile",
    "axis_boxes",
    "uniform_boxes",
    "tile_spans",
    "plan_tiles",
    "blend_window",
    "run_tiled",
    "OutputTooLarge",
]


@dataclass(frozen=True)
class Tile:
    """An LR box ``[y0, y1) x [x0, x1)``, half-open like slicing, and the input box
    ``(by0, by1, bx0, bx1)`` it is computed from (``None``: the tile itself, no context)."""

    y0: int
    y1: int
    x0: int
    x1: int
    box: tuple[int, int, int, int] | None = None

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0


def axis_boxes(length: int, boxes: Sequence[int], overlap: int, pad: int = 0) -> list[tuple[int, int, int, int]]:
    """``(box_start, box_end, span_start, span_end)`` of input boxes of the given sizes, in order
    along ``[0, length)``: the first starts at 0, the last ends at ``length``.

    A tile's span is its box less ``pad`` px of context on each side with a neighbour; a side
    on the image border needs no context, so an end tile keeps its box up to the border.
    Neighbouring spans overlap by at least ``overlap``; the slack of boxes that more than cover
    the side is spread evenly between them. ``ValueError`` when the boxes cannot cover the side
    with that overlap, or cover it so amply that spans would not advance.
    """
    n = len(boxes)
    if length < 1 or n < 1 or min(boxes) < 1 or max(boxes) > length:
        raise ValueError(f"boxes {tuple(boxes)} do not fit a side of {length} px")
    if n == 1:
        if boxes[0] != length:
            raise ValueError(f"one box of {boxes[0]} px cannot cover {length} px")
        return [(0, length, 0, length)]
    steps = [bx - 2 * pad - overlap for bx in boxes[:-1]]  # the largest steps that keep `overlap`
    reach = [0]
    for step in steps:
        reach.append(reach[-1] + step)
    slack = reach[-1] + boxes[-1] - length
    if slack < 0:
        raise ValueError(f"boxes {tuple(boxes)} with {pad} px context and {overlap} px overlap cover less than {length} px")
    # ceil(i * slack / (n - 1)) back from the farthest reach: consecutive steps shrink evenly.
    starts = [r - -(-i * slack // (n - 1)) for i, r in enumerate(reach)]
    out = [(b0, b0 + bx, b0 + (pad if i else 0), b0 + bx - (pad if i < n - 1 else 0))
           for i, (b0, bx) in enumerate(zip(starts, boxes))]
    for (b0, _, s0, e0), (b1, _, s1, e1) in zip(out, out[1:]):
        if not (b0 < b1 and s0 < s1 and e0 < e1 and s0 < e0):
            raise ValueError(f"boxes {tuple(boxes)} more than cover {length} px: spans would not advance")
    return out


def uniform_boxes(length: int, tile: int, overlap: int, pad: int = 0) -> tuple[int, ...]:
    """The fewest equal boxes of ``tile + 2 * pad`` px (clamped to the side) that cover
    ``length`` with tiles of at least ``tile`` px overlapping by ``overlap``; ``tile == 0`` or
    a box holding the whole side gives the one box ``(length,)``."""
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if tile < 0 or overlap < 0 or pad < 0:
        raise ValueError(f"tile, overlap and pad must be >= 0, got tile={tile}, overlap={overlap}, pad={pad}")
    box = tile + 2 * pad
    if tile == 0 or length <= box:
        return (length,)
    if overlap >= tile:
        raise ValueError(f"overlap ({overlap}) must be smaller than the tile ({tile})")
    return (box,) * (1 + -(-(length - box) // (tile - overlap)))  # ceil: the fewest steps that fit


def tile_spans(length: int, tile: int, overlap: int, pad: int = 0) -> list[tuple[int, int]]:
    """The ``[start, end)`` spans of equal-box tiles covering ``[0, length)`` along one side.

    Each tile is computed from a box of ``min(length, tile + 2 * pad)`` px: its span plus
    ``pad`` px of context on every side that has a neighbour. An end tile keeps its whole box
    on its border side (``tile + pad`` px), so a side needs up to one tile fewer than if every
    tile kept only ``tile`` px; every box has the same size (one shape per model call helps
    batching and CUDA graphs). ``tile == 0`` or ``length <= tile + 2 * pad`` gives
    ``[(0, length)]``. See :func:`axis_boxes`.
    """
    return [(s0, s1) for _, _, s0, s1 in axis_boxes(length, uniform_boxes(length, tile, overlap, pad), overlap, pad)]


def plan_tiles(
    height: int,
    width: int,
    tile: int,
    overlap: int,
    pad: int = 0,
    boxes: tuple[Sequence[int], Sequence[int]] | None = None,
) -> list[Tile]:
    """Row-major grid of LR tiles covering a ``height x width`` image, each with its input box.

    ``boxes`` (sizes along y, along x) lays out boxes of several sizes (``tileplan`` puts a
    smaller one at the far border when that is cheaper); by default every box is
    ``tile + 2 * pad`` px (:func:`uniform_boxes`), and a side no larger than that is one span.
    """
    by, bx = boxes if boxes is not None else (uniform_boxes(height, tile, overlap, pad), uniform_boxes(width, tile, overlap, pad))
    ys, xs = axis_boxes(height, by, overlap, pad), axis_boxes(width, bx, overlap, pad)
    return [Tile(sy0, sy1, sx0, sx1, (y0, y1, x0, x1)) for y0, y1, sy0, sy1 in ys for x0, x1, sx0, sx1 in xs]


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
    boxes: tuple[Sequence[int], Sequence[int]] | None = None,
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
        boxes: input box sizes along y and along x (:func:`plan_tiles`) instead of equal
            boxes of ``tile + 2 * pad``; tiles with equal boxes are batched together.

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
    if boxes is None and tile + 2 * pad >= max(h, w):
        tile = 0  # one box holds the whole image: no blending, no overlap constraint
    tiles = plan_tiles(h, w, tile, overlap, pad, boxes)
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

    # Weights depend only on the tile's size and which sides have neighbours: a few windows.
    windows: dict[tuple[int, int, bool, bool, bool, bool], torch.Tensor] = {}

    def window(t: Tile) -> torch.Tensor:
        key = (t.height, t.width, t.y0 > 0, t.y1 < h, t.x0 > 0, t.x1 < w)
        if key not in windows:
            windows[key] = blend_window(t, h, w, overlap, scale, device=out_device)
        return windows[key]

    weight_sum = _output_buffer((1, 1, h * scale, w * scale), out_device)
    for t in tiles:
        weight_sum[..., t.y0 * scale : t.y1 * scale, t.x0 * scale : t.x1 * scale] += window(t)

    # Jobs with equal boxes stack into one batch: in row-major order within each box shape.
    def box_of(t: Tile) -> tuple[int, int, int, int]:
        return t.box if t.box is not None else (t.y0, t.y1, t.x0, t.x1)

    def shape_of(t: Tile) -> tuple[int, int]:
        by0, by1, bx0, bx1 = box_of(t)
        return by1 - by0, bx1 - bx0

    first = shape_of(tiles[0])
    jobs = [(i, t) for i in range(b) for t in tiles]
    jobs.sort(key=lambda job: (shape_of(job[1]) != first, shape_of(job[1])))  # stable: order kept per shape
    chunks: list[list[tuple[int, Tile]]] = []
    for job in jobs:
        if chunks and len(chunks[-1]) < batch_size and shape_of(chunks[-1][0][1]) == shape_of(job[1]):
            chunks[-1].append(job)
        else:
            chunks.append([job])

    out: torch.Tensor | None = None
    if out_channels is not None:
        out = _output_buffer((b, out_channels, h * scale, w * scale), out_device)
    done = 0
    for chunk in chunks:
        ch, cw = shape_of(chunk[0][1])
        inp = torch.stack([x[i, :, box_of(t)[0] : box_of(t)[1], box_of(t)[2] : box_of(t)[3]] for i, t in chunk])
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
        for k, (i, t) in enumerate(chunk):
            ys, xs = slice(t.y0 * scale, t.y1 * scale), slice(t.x0 * scale, t.x1 * scale)
            by0, _, bx0, _ = box_of(t)
            oy, ox = (t.y0 - by0) * scale, (t.x0 - bx0) * scale
            crop = y[k, :, oy : oy + t.height * scale, ox : ox + t.width * scale]
            out[i, :, ys, xs].addcmul_(crop, window(t)[0])
        del y, inp
        done += len(chunk)
        if on_tile is not None:
            on_tile(done, len(jobs))
    assert out is not None  # jobs is never empty: B >= 1 and plan_tiles returns >= 1 tile
    return out.div_(weight_sum)
