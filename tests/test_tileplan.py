"""`--tile auto`: the cost model's counts and the geometry it chooses."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sinsr_cli.tileplan import auto_plan
from sinsr_cli.config import PRESETS, VQ_PRESETS, tiny_preset, tiny_vq
from sinsr_cli.tileplan import (
    KNOWN_WORK,
    RATES,
    Rates,
    Work,
    attention_work,
    count_on_meta,
    count_work,
    plan_tiling,
    rates_for,
)
from sinsr_cli.tiling import axis_boxes, plan_tiles

SINSR = count_work(PRESETS["sinsr-v1"].unet, VQ_PRESETS["vq-f4"], 4)
BF16 = RATES[("cpu", "bf16")]


def plan(h, w, **kw):
    kw = {"work": SINSR, "rates": BF16, "bytes_per_pixel": 32768.0, "budget_bytes": 16e9, **kw}
    return plan_tiling(h, w, **kw)


def test_zoo_work_matches_a_fresh_count():
    vq = VQ_PRESETS["vq-f4"]
    fresh = count_on_meta(PRESETS["sinsr-v1"].unet, vq, 4, 64)
    for (unet_cfg, vq_cfg, scale), work in KNOWN_WORK.items():
        assert vq_cfg == vq and scale == 4
        counted = fresh if unet_cfg == PRESETS["sinsr-v1"].unet else count_on_meta(unet_cfg, vq, 4, 64)
        assert work.quadratic == counted.quadratic == 4096.0  # 2 blocks x 4 x 512 channels
        assert work.linear == pytest.approx(counted.linear, rel=1e-9)
    # the official FlopCounterMode figure of a one-step lq 64 run (reference README): 1.03 TFLOP
    assert SINSR.flops(64 * 64) == pytest.approx(1.027e12, rel=0.01)


def test_counts_of_a_tiny_config_split_linear_and_quadratic():
    p, vq = tiny_preset(), tiny_vq()
    w64, w128 = count_on_meta(p.unet, vq, 4, 64), count_on_meta(p.unet, vq, 4, 128)
    assert w64.quadratic == attention_work(vq, 4) > 0
    assert w64.linear > 0 and w64.linear == pytest.approx(w128.linear, rel=0.01)  # linear really is
    assert count_work(p.unet, vq, 4) == w64


def test_attention_work_counts_every_global_attention_block():
    vq = dataclasses.replace(tiny_vq(), attn_resolutions=())
    c = vq.ch * vq.ch_mult[-1]
    assert attention_work(vq, 4) == 2 * 4 * c  # the two mid blocks, at one token per LR pixel
    top = dataclasses.replace(vq, attn_resolutions=(vq.resolution,))  # + every block of level 0
    blocks = 2 * vq.num_res_blocks + 1
    assert attention_work(top, 4) == 2 * 4 * c + blocks * 4 * vq.ch * 16**2


def test_small_images_run_untiled():
    for side in (1, 17, 64, 100, 128):
        p = plan(side, side)
        assert p.tile == 0 and p.tiles == 1
    assert plan(40, 300).tile in (0, 48, 112)  # a strip: whatever is cheapest, never an error


@pytest.mark.parametrize("side", [200, 320, 512, 1000])
def test_large_images_tile_at_the_cheapest_geometry(side):
    p = plan(side, side)
    assert p.tile > 0 and (p.tile + 2 * p.pad) % 64 == 0 and p.overlap < p.tile // 2
    assert p.tiles == len(plan_tiles(side, side, p.tile, p.overlap, p.pad, p.boxes))
    untiled = plan(side, side, max_side=None, budget_bytes=None)
    assert p.seconds <= untiled.seconds
    # no model input side does better: force each one through the budget and compare
    for s in range(64, side + 64, 64):
        forced = plan(side, side, budget_bytes=32768.0 * s * s)
        assert forced.seconds >= p.seconds - 1e-9


def test_512_photo_costs_less_work_than_the_old_auto_geometry():
    # de5ef91's auto on a 24 GB host: tile 432 (+ 8 px context: 448 px model inputs), overlap 32
    old_tiles = len(plan_tiles(512, 512, 432, 32))
    old = old_tiles * SINSR.flops(448 * 448)
    new = plan(512, 512)
    assert new.flops < old / 2.5 and new.peak_bytes < 3 * 2**30


FP32 = RATES[("cpu", "fp32")]


def test_the_last_box_of_a_side_is_cut_to_what_is_left():
    # 256 px: two 128 px boxes and one of 64 per side (9 calls, 4 of them small) beat three of
    # 128 (9 full calls) and the untiled 256 px call, whose global attention is 16x a 64 px box's
    p = plan(256, 256, rates=FP32)
    assert p.boxes == ((128, 128, 64), (128, 128, 64)) and p.tiles == 9 and p.input_side == 128
    full, half, small = (FP32.seconds(SINSR, a) for a in (128 * 128, 128 * 64, 64 * 64))
    assert p.seconds == pytest.approx(4 * full + 4 * half + small)
    assert p.seconds < min(9 * full, FP32.seconds(SINSR, 256 * 256))
    assert p.flops == pytest.approx(4 * SINSR.flops(128 * 128) + 4 * SINSR.flops(128 * 64) + SINSR.flops(64 * 64))
    assert p.peak_bytes == 32768.0 * 128 * 128  # the largest box


@pytest.mark.parametrize("h, w", [(150, 150), (256, 256), (384, 384), (300, 1000), (640, 480), (1024, 1024), (77, 900)])
def test_every_planned_box_is_laid_out_padded_and_within_the_limits(h, w):
    for rates in (FP32, BF16):
        p = plan(h, w, rates=rates, max_side=704)
        if p.tile == 0:
            continue
        by, bx = p.boxes or (None, None)
        tiles = plan_tiles(h, w, p.tile, p.overlap, p.pad, p.boxes)
        assert p.tiles == len(tiles)
        for side, sizes in ((h, by), (w, bx)):
            if sizes is not None:
                axis_boxes(side, sizes, p.overlap, p.pad)  # a layout the tiler accepts
                assert all(b % 64 == 0 or b == side for b in sizes) and max(sizes) <= 704
        boxes = {(t.box[1] - t.box[0], t.box[3] - t.box[2]) for t in tiles}
        padded = [(-(-a // 64) * 64) * (-(-b // 64) * 64) for a, b in boxes]
        assert p.peak_bytes == pytest.approx(32768.0 * max(padded))


def test_budget_and_indexing_limit_are_respected():
    p = plan(1024, 1024, budget_bytes=32768.0 * 192**2)
    assert p.input_side <= 192 and p.peak_bytes <= 32768.0 * 192**2
    assert plan(1024, 1024, max_side=128).input_side <= 128
    starved = plan(1024, 1024, budget_bytes=1.0)  # nothing fits: the smallest input, not an error
    assert starved.input_side == 64


def test_the_untiled_run_holds_the_images_and_tiles_go_batch_to_a_call():
    """`--batch` is tiles per call: an untiled image is one call whatever it is (a 192 px image
    that fits whole at --batch 1 was cut into 9 tiles at --batch 4); several images run untiled
    together, so their memory adds up (100 of 128 px were planned as one)."""
    budget = 32768.0 * 192**2 * 1.5  # one 192 px input fits, two do not
    one = plan(192, 192, budget_bytes=budget)
    assert one.tile == 0 and plan(192, 192, budget_bytes=budget, batch=4) == one
    two = plan(192, 192, budget_bytes=budget, images=2)
    assert two.tile and two.peak_bytes <= budget
    many = plan(128, 128, budget_bytes=32768.0 * 128**2 * 10, images=100)
    assert many.tile and many.peak_bytes <= 32768.0 * 128**2 * 10
    assert plan(128, 128, images=100, budget_bytes=None).peak_bytes == pytest.approx(100 * 32768.0 * 128**2)
    tiled = plan(1024, 1024, batch=4)
    assert tiled.peak_bytes == pytest.approx(4 * 32768.0 * tiled.input_side**2)


def test_quadratic_term_drives_smaller_tiles():
    cheap_attention = Rates(BF16.linear_gflops, 1e9, BF16.overhead_s)
    assert plan(512, 512, rates=cheap_attention).input_side > plan(512, 512).input_side


def test_rates_follow_device_and_dtype():
    cpu = torch.device("cpu")
    assert rates_for(cpu, torch.bfloat16, native_bf16=True) == RATES[("cpu", "bf16")]
    assert rates_for(cpu, torch.bfloat16, native_bf16=False) == RATES[("cpu", "bf16-emulated")]
    assert rates_for(torch.device("mps"), torch.float32) == RATES[("cpu", "fp32")]
    assert rates_for(torch.device("cuda"), torch.float16) == RATES[("cuda", "fp16")]


def test_auto_plan_on_a_pipeline(tiny_pipeline):
    small = auto_plan(tiny_pipeline, 60, 60)
    assert small.tile == 0
    big = auto_plan(tiny_pipeline, 2000, 1500)
    assert big.tile > 0 and (big.tile + 2 * big.pad) % tiny_pipeline.pad_multiple == 0
    assert big.input_side**2 <= tiny_pipeline.max_input_pixels()
    assert isinstance(SINSR, Work)


def test_auto_plan_reserves_the_winograd_kernels_of_the_first_call(tiny_pipeline, monkeypatch):
    """Free memory minus the kernels Winograd will cache is the budget (0.79 GB for VQ-f4)."""
    import sinsr_cli.tileplan as tileplan

    seen = {}
    real = tileplan.plan_tiling
    monkeypatch.setattr(tileplan, "free_memory", lambda device, host=True: 10_000_000_000)
    monkeypatch.setattr(tileplan, "local_processes", lambda: 1)
    monkeypatch.setattr(tileplan, "plan_tiling", lambda *a, **k: seen.update(k) or real(*a, **k))
    monkeypatch.setattr(tileplan, "pending_cache_bytes", lambda m: 1_000_000_000 if m is tiny_pipeline.vq else 0)
    auto_plan(tiny_pipeline, 60, 60)
    assert seen["budget_bytes"] == pytest.approx(0.8 * 9_000_000_000)
