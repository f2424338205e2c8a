"""``tile`` auto: the tile geometry that makes an image fastest, from a cost model of the model.

One model call on a padded input of ``N`` LR pixels costs (SinSR / ResShift + VQ-f4):

* ``linear * N`` FLOPs: every convolution, GEMM and windowed attention scales with the area;
* ``quadratic * N^2`` FLOPs: the VQ encoder's and decoder's global attention over every latent
  position (the mid block; levels in ``attn_resolutions`` too). At lq 128 that is 1.1 of 4.9
  TFLOP, at lq 256 more than half, and it is why one big tile is slower than several small ones;
* a fixed ``overhead`` per call (Python, kernel set-up, small layers), in seconds.

Time per call = ``linear * N / linear_rate + quadratic * N^2 / attention_rate + overhead``, with
rates calibrated per device and dtype by ``benchmarks/tile_cost.py`` (table ``RATES`` below).
Tiling pays for context and overlap per tile and for the model's padding to 64 px, so the best
tile balances the quadratic term against those; :func:`plan_tiling` tries every model input side
(multiples of the padding) and the untiled run, drops those over the memory budget or the
32-bit indexing limit (``SRPipeline.max_input_pixels``), and keeps the fastest. Pure arithmetic: no model is run here.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from dataclasses import dataclass

from typing import TYPE_CHECKING

import torch

from .config import PRESETS, VQ_PRESETS, UNetConfig, VQConfig
from .devices import cpu_has_native_bf16, dtype_name, free_memory
from .distributed import local_processes
from .nn.winograd import pending_cache_bytes
from .tiling import axis_boxes, uniform_boxes

if TYPE_CHECKING:
    from .pipeline import SRPipeline

__all__ = [
    "LIVE_ACTIVATIONS",
    "RATES",
    "Rates",
    "TilePlan",
    "Work",
    "attention_work",
    "auto_plan",
    "bytes_per_lr_pixel",
    "count_on_meta",
    "count_work",
    "plan_tiling",
    "rates_for",
]


@dataclass(frozen=True)
class Work:
    """FLOPs of one model call (bicubic + VQ encode + UNet + VQ decode) on ``N`` padded LR pixels."""

    linear: float  # FLOPs per LR pixel
    quadratic: float  # FLOPs per LR pixel squared

    def flops(self, pixels: float) -> float:
        return self.linear * pixels + self.quadratic * pixels * pixels


@dataclass(frozen=True)
class Rates:
    """Achieved throughput of a device/dtype, from ``benchmarks/tile_cost.py``."""

    linear_gflops: float  # convolutions and GEMMs
    attention_gflops: float  # the global attention kernel
    overhead_s: float  # fixed cost per model call

    def seconds(self, work: Work, pixels: float) -> float:
        return (
            work.linear * pixels / (self.linear_gflops * 1e9)
            + work.quadratic * pixels * pixels / (self.attention_gflops * 1e9)
            + self.overhead_s
        )


#: Calibrated with ``benchmarks/tile_cost.py`` (torch 2.13, 2 threads, full-size sinsr-v1 + VQ-f4,
#: see docs/performance.md): fp32 on a 2-core AMD EPYC Zen 3 (AVX2) with the CLI's huge pages and
#: the Winograd convolutions, bf16 on a 2-core Zen 4 (AVX512-BF16, no AMX; 2026-12-07, where fp32
#: fitted 257.0 / 143.3 / 0.64 and picks the same geometry as the AVX2 row). Only the ratios between
#: the terms steer the choice, so hosts of other speeds pick the same geometry.
#: "bf16-emulated": no native bf16.
RATES: dict[tuple[str, str], Rates] = {
    ("cpu", "fp32"): Rates(221.6, 173.9, 0.0),  # fit of lq 64 / 128 / 192 calls: 4.41, 23.31, 70.61 s
    ("cpu", "bf16"): Rates(360.7, 308.0, 0.1),  # fit of 2.98, 14.29, 42.06 s (2026-12-01: 320.2 / 275.1 / 0.05)
    ("cpu", "bf16-emulated"): Rates(50.0, 45.0, 0.3),
    ("cpu", "fp16"): Rates(40.0, 40.0, 0.3),
    # CUDA: not yet measured on this project's GPUs (benchmarks/gpu_check.py does); an H100-class
    # guess whose attention/conv ratio follows the memory-efficient SDPA kernel at head dim 512.
    ("cuda", "fp16"): Rates(150_000.0, 60_000.0, 0.01),
    ("cuda", "bf16"): Rates(150_000.0, 60_000.0, 0.01),
    ("cuda", "fp32"): Rates(40_000.0, 20_000.0, 0.01),
}


def rates_for(device: torch.device, dtype: torch.dtype, native_bf16: bool = True) -> Rates:
    """The calibrated rates for ``device``/``dtype`` (CPU fp32's shape for unknown devices)."""
    name = dtype_name(dtype)
    if device.type == "cpu" and name == "bf16" and not native_bf16:
        name = "bf16-emulated"
    kind = device.type if device.type in ("cpu", "cuda") else "cpu"
    return RATES.get((kind, name), RATES[(kind, "fp32")])


@dataclass(frozen=True)
class TilePlan:
    """``tile == 0``: run untiled. Seconds and bytes are the model's estimates for the image."""

    tile: int
    overlap: int
    pad: int
    tiles: int
    input_side: int  # model input side of one tile (after padding), or of the untiled image
    seconds: float
    peak_bytes: float
    flops: float
    #: input box sizes along y and x when they differ (a smaller or larger box at the far
    #: border); ``None``: every box is ``tile + 2 * pad`` (``tiling.uniform_boxes``)
    boxes: tuple[tuple[int, ...], tuple[int, ...]] | None = None


# -- counting the work ---------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def count_work(unet_cfg: UNetConfig, vq_cfg: VQConfig, scale: int, side: int = 64) -> Work:
    """``Work`` of a config pair: the zoo's pairs from ``KNOWN_WORK``, others counted on meta."""
    return KNOWN_WORK.get((unet_cfg, vq_cfg, scale)) or count_on_meta(unet_cfg, vq_cfg, scale, side)


def attention_work(vq_cfg: VQConfig, scale: int) -> float:
    """The quadratic term, exactly: ``4 C n^2`` FLOPs per global attention block over ``n`` tokens.

    The encoder and decoder mid blocks attend over every latent position; levels listed in
    ``attn_resolutions`` add ``num_res_blocks`` (encoder) and ``num_res_blocks + 1`` (decoder)
    blocks at their own resolution. Tokens per LR pixel at level ``i`` are ``(scale / 2^i)^2``.
    """
    levels = len(vq_cfg.ch_mult)
    total = 0.0
    for i, mult in enumerate(vq_cfg.ch_mult):
        c, tokens = vq_cfg.ch * mult, (scale / 2**i) ** 2
        blocks = 2 if i == levels - 1 else 0  # the two mid blocks sit at the last level
        if vq_cfg.resolution // 2**i in vq_cfg.attn_resolutions:
            blocks += 2 * vq_cfg.num_res_blocks + 1
        total += blocks * 4 * c * tokens * tokens
    return total


def count_on_meta(unet_cfg: UNetConfig, vq_cfg: VQConfig, scale: int, side: int) -> Work:
    """Count ``Work`` by running the models on the meta device (shapes only, no arithmetic).

    The quadratic term is :func:`attention_work`; the rest of the count at ``side`` x ``side``
    LR pixels (a multiple of the model padding) is the linear term. About 2 s for the full-size
    models, which is why the zoo's pairs are precounted.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from .models.swin_unet import SwinUNet
    from .models.vq_f4 import VQModel

    with torch.device("meta"):
        unet, vq = SwinUNet(unet_cfg), VQModel(vq_cfg)
        lq = torch.zeros(1, 3, side, side)
        up = torch.zeros(1, 3, side * scale, side * scale)
        t = torch.zeros(1, dtype=torch.long)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        z = vq.encode(up)
        unet(z, t, lq)
        vq.decoder(vq.post_quant_conv(z))
    n = float(side * side)
    quad = attention_work(vq_cfg, scale)
    return Work(linear=(counter.get_total_flops() - quad * n * n) / n, quadratic=quad)


#: ``count_on_meta(..., side=64).linear`` of each zoo preset with VQ-f4 (test_tileplan re-counts)
_ZOO_LINEAR = {
    "sinsr-v1": 233_715_602.0,
    "sinsr-v2": 233_715_602.0,
    "resshift-v1": 233_715_602.0,
    "resshift-v2": 233_715_602.0,
    "resshift-v3": 233_715_602.0,
}


def _zoo_work() -> dict[tuple[UNetConfig, VQConfig, int], Work]:
    vq = VQ_PRESETS["vq-f4"]
    return {
        (p.unet, vq, p.schedule.sf): Work(_ZOO_LINEAR[name], attention_work(vq, p.schedule.sf))
        for name, p in PRESETS.items()
        if name in _ZOO_LINEAR
    }


# -- geometry ------------------------------------------------------------


def _padded(extent: int, multiple: int) -> int:
    """The model input extent of a box: padded up to the model's multiple."""
    return -(-extent // multiple) * multiple


def _axis_layouts(length: int, tile: int, overlap: int, pad: int, multiple: int) -> list[tuple[int, ...]]:
    """Box layouts along one side for tiles of ``tile`` px: the equal boxes, and ``k`` of them
    followed by the one box (a multiple of the padding) that just reaches the far border, for
    every shorter ``k``; only layouts ``tiling.axis_boxes`` accepts."""
    uniform = uniform_boxes(length, tile, overlap, pad)
    layouts = [uniform]
    box = tile + 2 * pad
    for k in range(max(1, len(uniform) - 3), len(uniform)):  # a last box up to ~3 boxes long
        last = _padded(max(length - k * (tile - overlap), multiple), multiple)
        if last == box or last > length:
            continue
        boxes = (box,) * k + (last,)
        try:
            axis_boxes(length, boxes, overlap, pad)
        except ValueError:
            continue
        layouts.append(boxes)
    return layouts


# -- the plan ------------------------------------------------------------------------------


def plan_tiling(
    height: int,
    width: int,
    *,
    work: Work,
    rates: Rates,
    bytes_per_pixel: float,
    budget_bytes: float | None,
    multiple: int = 64,
    overlap: int = 16,
    min_pad: int = 8,
    max_side: int | None = None,
    batch: int = 1,
    images: int = 1,
) -> TilePlan:
    """The fastest geometry for ``images`` LR images of ``height x width`` within ``budget_bytes``.

    Candidates: untiled, and for each model input side ``P`` (a multiple of ``multiple``) the
    tile ``P - 2 * min_pad`` (the context then fills the input exactly), in equal boxes or with
    the last box along a side (at the far border) cut to what is left: a 256 px side in two
    128 px boxes and one of 64 costs less than three of 128 (the global attention is quadratic
    in a box's area). ``bytes_per_pixel`` is
    the working set per model-input LR pixel in the run's dtype; ``max_side`` caps ``P`` (32-bit
    indexing). The untiled run takes every image in one model call; tiles go ``batch`` to a call
    (``--batch``). When nothing fits, the smallest input is returned (its run may still fit,
    and the out-of-memory retry goes on to smaller tiles).
    """
    if height < 1 or width < 1:
        raise ValueError(f"image must be at least 1x1, got {height}x{width}")
    longest = max(height, width)

    def evaluate(tile: int, pad: int, by: tuple[int, ...], bx: tuple[int, ...], ov: int) -> TilePlan:
        cy, cx = Counter(_padded(e, multiple) for e in by), Counter(_padded(e, multiple) for e in bx)
        areas = [(float(a * b), na * nb) for a, na in cy.items() for b, nb in cx.items()]  # <= 4 shapes
        tiles = len(by) * len(bx)
        per_call = images if tile == 0 else min(batch, tiles * images)  # boxes in one model call
        return TilePlan(
            tile=tile, overlap=ov, pad=pad, tiles=tiles, input_side=max(*cy, *cx),
            seconds=images * sum(n * rates.seconds(work, a) for a, n in areas),
            peak_bytes=bytes_per_pixel * max(a for a, _ in areas) * per_call,
            flops=images * sum(n * work.flops(a) for a, n in areas),
            boxes=(by, bx) if len(set(by)) > 1 or len(set(bx)) > 1 else None,
        )

    plans = [evaluate(0, 0, (height,), (width,), 0)]
    side = multiple
    while side < longest:  # a box of `longest` or more is the untiled run
        tile = side - 2 * min_pad
        if tile >= 2 * max(overlap, 1) + 2:
            ov = min(overlap, tile // 2 - 1)
            for by in _axis_layouts(height, tile, ov, min_pad, multiple):
                for bx in _axis_layouts(width, tile, ov, min_pad, multiple):
                    plans.append(evaluate(tile, min_pad, by, bx, ov))
        side += multiple

    def fits(p: TilePlan) -> bool:
        if max_side is not None and p.input_side > max_side:
            return False
        return budget_bytes is None or p.peak_bytes <= budget_bytes

    ok = [p for p in plans if fits(p)]
    if not ok:
        return min(plans[1:] or plans, key=lambda p: p.peak_bytes)
    return min(ok, key=lambda p: p.seconds)  # ties keep the earlier: untiled, then larger tiles


KNOWN_WORK: dict[tuple[UNetConfig, VQConfig, int], Work] = _zoo_work()


# -- a loaded pipeline's plan ----------------------------------------------------------------

#: Peak working set of one tile, counted in full-resolution (x4) float32 feature maps of
#: ``vq.cfg.ch`` channels (the VQ decoder's top level dominates: its input, GroupNorm/SiLU and
#: conv outputs, the residual, plus oneDNN's reordered copies on CPU). Measured with
#: ``benchmarks/tiled_memory.py`` (sinsr-v1 + vq-f4, CPU, fp32, VQ attention on contiguous
#: q/k/v), peak RSS minus the loaded model per LR pixel of the model input: 133 KB at 64x64,
#: 104 KB at 128x128, 66 KB at 320x320 (a 256 px tile) = 8.0 maps, fitted where the maps
#: dominate. At the 128 px boxes ``auto`` picks on a CPU the fixed part makes the real peak
#: ~1.6x this estimate (~1.7 GB against 1.07 GB in fp32): far below a host's RAM, and an
#: estimate that falls short is caught by the out-of-memory retry.
LIVE_ACTIVATIONS = 8.0


def bytes_per_lr_pixel(pipe: SRPipeline, tile_batch: int = 1) -> float:
    """Estimated peak float32 bytes per LR pixel of a tile: ``scale^2 * vq.ch * 4 * LIVE_ACTIVATIONS``.

    For sinsr-v1 + vq-f4 that is 16 * 128 * 4 * 8 = 65,536 B, i.e. about 6.7 GB for a tile
    whose model input is 320 x 320 (a 256 px tile plus context, padded to 64), half in fp16.
    """
    ch = getattr(getattr(pipe.vq, "cfg", None), "ch", 128)
    return float(pipe.scale**2 * ch * 4 * LIVE_ACTIVATIONS * max(1, tile_batch))


def auto_plan(pipe: SRPipeline, height: int, width: int, *, tile_batch: int = 1, images: int = 1) -> TilePlan:
    """``tile`` auto for ``images`` LR images of ``height x width`` (run together, as the engine
    runs a batch): the fastest geometry that fits.

    Untiled, or tiles whose model input (tile + context) is exactly a multiple of the model
    padding, chosen by this module's cost model of this architecture on this device and dtype,
    within 80% of the free memory (CUDA's, or this process's share of the RAM: the processes of a
    sharded run on one host split it), less the Winograd kernels the first call will cache, and
    under CUDA's 32-bit indexing limit.
    """
    free = free_memory(pipe.device, host=True)
    if free is not None and pipe.device.type != "cuda":  # a sharded run's processes share the host's RAM
        free //= local_processes()
    if free is not None:  # the Winograd kernels the first call caches are not in the RSS yet
        models = [m for m in (pipe.vq, pipe.unet) if isinstance(m, torch.nn.Module)]
        free = max(0, free - sum(pending_cache_bytes(m) for m in models))
    itemsize = torch.empty((), dtype=pipe.dtype).element_size()
    vq_cfg = pipe.vq.cfg
    return plan_tiling(
        height, width,
        work=count_work(pipe.unet.cfg, vq_cfg, pipe.scale),
        rates=rates_for(pipe.device, pipe.dtype, cpu_has_native_bf16()),
        bytes_per_pixel=bytes_per_lr_pixel(pipe) * itemsize / 4.0,
        budget_bytes=None if free is None else 0.8 * free,
        multiple=pipe.pad_multiple,
        max_side=math.isqrt(pipe.max_input_pixels(tile_batch)),
        batch=tile_batch,
        images=images,
    )
