"""Running a model over images: whole or tiled as the plan says, out-of-memory retry, progress.

``SRPipeline`` is the model path for one input (pad, encode, sample, decode, crop). The
:class:`Engine` drives it over an image: it resolves the plan's tiling for the image (a fixed
tile, the whole image, or ``tileplan.auto_plan`` for ``auto``), caps tiles at the 32-bit index
limit, blends tiles (``tiling.run_tiled``), halves the tile on out-of-memory
(:func:`run_tiled_with_oom_retry`) and reports progress through callbacks.

Every try starts its generator from the plan's seed: a retried image draws exactly the noise a
fresh run at the smaller tile draws. A plan asking for another dtype than the pipeline's runs on
a converted copy (``SRPipeline.with_dtype``), kept for later calls; the shared pipeline is never
switched and switched back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .devices import cudnn_autotune, is_oom_error, make_generator, release_cached_memory
from .pipeline import SRPipeline, from_model_range, to_model_range
from .plan import Plan
from .tileplan import auto_plan
from .tiling import OutputTooLarge, run_tiled

__all__ = ["Engine", "Geometry", "OnRetry", "OnTile", "geometry", "run_tiled_with_oom_retry"]

#: ``(tiles_done, tiles_total)`` after each model call; restarts from zero on a retry
OnTile = Callable[[int, int], None]
#: ``(new_tile, new_overlap)`` before a retry at a smaller tile
OnRetry = Callable[[int, int], None]
TileFn = Callable[[torch.Tensor], torch.Tensor]

#: the smallest tile an out-of-memory retry goes down to
MIN_RETRY_TILE = 32


def run_tiled_with_oom_retry(
    start_try: Callable[[], TileFn],
    x: torch.Tensor,
    *,
    tile: int,
    overlap: int,
    scale: int,
    batch_size: int = 1,
    on_tile: OnTile | None = None,
    out_device: torch.device | str | None = None,
    min_tile: int = MIN_RETRY_TILE,
    on_retry: OnRetry | None = None,
    pad: int | Callable[[int], int] = 0,
    out_channels: int | None = None,
    boxes: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
    multiple: int = 1,
) -> torch.Tensor:
    """``tiling.run_tiled`` that halves the tile and starts the image again on out-of-memory.

    ``start_try()`` is called at the start of every try and returns the function the try's tiles
    go through, so state a retry must not inherit (a generator) is made fresh for each.
    Each retry halves the tile (``tile == 0`` or a tile covering the image counts as
    ``max(H, W)``: a whole-image run that does not fit is retried in tiles too), going further
    down where the halved tile's model input (tile + context, padded to ``multiple``) would be no
    smaller than the one that failed (the context grows as the tile shrinks: 56 px tiles with
    36 px of context are the 128 px input of 112 px tiles) or would still hold the whole image,
    and lowers the overlap
    to stay below half the tile, then calls ``on_retry(new_tile, new_overlap)`` so a caller
    working through a folder can keep the size that fits. Progress restarts from zero.
    ``pad`` may be a function of the tile (the context a tile gets), so each retried tile gets
    its own. ``boxes`` (a plan's box sizes per side) holds for the first try only; a retry
    cuts equal boxes of the halved tile. When the full-size output buffers do not fit on the device (smaller tiles cannot
    help), or even ``min_tile`` fails next to them, they move to the host and the result is a
    CPU tensor. Once the tile would drop below ``min_tile`` with host buffers, the
    out-of-memory error is re-raised with a note.
    Returns what ``run_tiled`` returns.
    """
    h, w = x.shape[-2:]
    cur_tile = max(h, w) if tile == 0 else min(tile, max(h, w))
    cur_overlap = overlap
    cur_out = torch.device(out_device) if out_device is not None else x.device
    pads: dict[int, int] = {}

    def pad_for(t: int) -> int:
        """The context of tile ``t`` (asked once per tile size)."""
        if t not in pads:
            pads[t] = pad(t) if callable(pad) else pad
        return pads[t]

    while True:
        host_output = False
        try:
            return run_tiled(
                start_try(), x, tile=cur_tile, overlap=cur_overlap, scale=scale, batch_size=batch_size,
                on_tile=on_tile, out_device=cur_out, pad=pad_for(cur_tile), out_channels=out_channels,
                boxes=boxes,
            )
        except Exception as err:
            if isinstance(err, OutputTooLarge) and cur_out.type != "cpu":
                host_output = True
            elif not is_oom_error(err):
                raise
            else:
                next_tile = _smaller_tile(cur_tile, min_tile, max(h, w), pad_for, multiple)
                if next_tile < min_tile and cur_out.type != "cpu":
                    host_output = True  # the device-side output may be what leaves no room
                elif next_tile < min_tile:
                    if hasattr(err, "add_note"):
                        err.add_note(
                            f"sinsr: still out of memory with tile={cur_tile} (minimum {min_tile}); "
                            "try a smaller batch size, fp16, or a device with more memory"
                        )
                    raise
        # Outside the except block the traceback (and the partial buffers it pins) is gone.
        release_cached_memory(x.device)
        if host_output:
            cur_out = torch.device("cpu")
            continue
        cur_tile, boxes = next_tile, None
        cur_overlap = min(cur_overlap, (cur_tile - 1) // 2)
        if on_retry is not None:
            on_retry(cur_tile, cur_overlap)


def _smaller_tile(tile: int, min_tile: int, side: int, pad_for: Callable[[int], int], multiple: int) -> int:
    """The tile to retry at after ``tile`` ran out of memory: half of it, halved again while its
    box would hold the whole image (``side``), then lowered until its model input is smaller
    than the one that failed; below ``min_tile`` when no tile is left to try."""

    def model_input(t: int) -> int:
        return -(-(t + 2 * pad_for(t)) // multiple) * multiple

    t = tile // 2
    while t >= min_tile and t + 2 * pad_for(t) >= side:
        t //= 2  # its box would hold the whole image: the run that just failed
    failed = model_input(tile)
    while t >= min_tile and model_input(t) >= failed:
        t -= 1
    return t


@dataclass(frozen=True)
class Geometry:
    """How one image is cut, in LR pixels; ``tile == 0`` runs it whole."""

    tile: int
    overlap: int
    pad: int
    #: box sizes along y and x where ``auto`` cut the last box of a side to what is left
    #: (``tileplan.TilePlan.boxes``); ``None``: equal boxes of the tile and its context
    boxes: tuple[tuple[int, ...], tuple[int, ...]] | None = None


def geometry(pipe: SRPipeline, plan: Plan, batch: int, height: int, width: int) -> Geometry:
    """How ``batch`` images of ``height x width`` LR pixels are cut under ``plan.tiling``.

    ``auto`` asks ``tileplan.auto_plan`` (per image size, with its own overlap and context);
    a fixed tile covering the image, or 0, runs whole. A whole image past the 32-bit index limit
    in one piece is tiled at :meth:`SRPipeline.max_tile`, and fixed tiles are capped there.
    """
    t = plan.tiling
    tile, overlap, pad, boxes = t.tile, t.overlap, t.pad, None
    if tile is None:
        tp = auto_plan(pipe, height, width, tile_batch=t.batch, images=batch)
        tile, overlap, pad, boxes = tp.tile, tp.overlap, tp.pad, tp.boxes
        if boxes is not None:  # the plan keeps every box under the 32-bit limit
            return Geometry(tile, overlap, pad, boxes)
    # a tile whose box (tile + context) holds the image runs it whole (tiling.tile_spans)
    whole = not tile or tile + 2 * pipe.context_pad(tile, pad) >= max(height, width)
    m = pipe.pad_multiple
    if whole and (-(-height // m) * m) * (-(-width // m) * m) > pipe.max_input_pixels(batch):
        whole, tile = False, pipe.max_tile(pad, t.batch)  # past the 32-bit limit in one piece
    elif not whole:
        tile = min(tile, pipe.max_tile(pad, t.batch))
    if whole:
        return Geometry(0, overlap, pad)
    return Geometry(tile, min(overlap, tile // 2 - 1), pad)


class Engine:
    """Runs one loaded pipeline over images as plans say. Build once per run: it keeps the
    converted copies (``plan.dtype`` other than the pipeline's) for the rest of the run."""

    def __init__(self, pipe: SRPipeline) -> None:
        self.pipe = pipe
        self._copies: dict[torch.dtype, SRPipeline] = {}

    @property
    def device(self) -> torch.device:
        return self.pipe.device

    @property
    def dtype(self) -> torch.dtype:
        return self.pipe.dtype

    def pipeline(self, dtype: torch.dtype | None = None) -> SRPipeline:
        """The pipeline in ``dtype``: the shared one, or a converted copy (made once, then kept)."""
        if dtype is None or dtype == self.pipe.dtype:
            return self.pipe
        if dtype not in self._copies:
            self._copies[dtype] = self.pipe.with_dtype(dtype)
        return self._copies[dtype]

    @torch.inference_mode()
    def __call__(
        self,
        images: torch.Tensor,
        plan: Plan,
        *,
        on_tile: OnTile | None = None,
        on_retry: OnRetry | None = None,
    ) -> torch.Tensor:
        """``[B,3,H,W]`` in [0,1] -> ``[B,3,sH,sW]`` in [0,1] float32 (``s`` the model's scale).

        Tiled as :func:`geometry` says, tiles blended smoothly, so memory follows the tile. On
        out-of-memory the tile is halved (a whole image is retried in tiles) and ``on_retry``
        told; every try draws its noise from a generator started at ``plan.seed``. An output
        whose buffers do not fit on the device is blended on the host and returned on the CPU.
        On CUDA, tiled runs autotune cuDNN per tile shape (``cudnn.benchmark``).

        Runs under ``inference_mode`` and returns an inference tensor (no copy for the CLI):
        in-place ops and autograd refuse it outside inference mode, so ``.clone()`` it for
        those (``sinsr_cli.upscale`` does). Inputs are checked as ``pipeline.to_model_range`` says.
        """
        pipe = self.pipeline(plan.dtype)
        lq = to_model_range(images, pipe.device)
        b, _, h, w = lq.shape
        geo = geometry(pipe, plan, b, h, w)

        def start_try() -> TileFn:
            generator = make_generator(plan.seed, "cpu")  # fresh for every try: see the module docstring

            def run(x: torch.Tensor) -> torch.Tensor:
                return pipe.upscale_pm1(x, steps=plan.steps, sampler=plan.sampler, generator=generator)

            return run

        with cudnn_autotune(pipe.device.type == "cuda" and geo.tile > 0):
            out = run_tiled_with_oom_retry(
                start_try, lq, tile=geo.tile, overlap=geo.overlap, scale=pipe.scale,
                batch_size=b if geo.tile == 0 else plan.tiling.batch, on_tile=on_tile, on_retry=on_retry,
                pad=lambda t: pipe.context_pad(t, geo.pad), out_channels=lq.shape[1], boxes=geo.boxes,
                multiple=pipe.pad_multiple,
            )
        return from_model_range(out)
