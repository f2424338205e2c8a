"""The engine: tiles as the plan says, out-of-memory retries (each from a fresh generator),
converted copies for another dtype; on tiny random models and stand-in functions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sinsr_cli import tiling
from sinsr_cli.devices import is_oom_error
from sinsr_cli.engine import Engine, geometry, run_tiled_with_oom_retry
from sinsr_cli.pipeline import SRPipeline
from sinsr_cli.plan import Tiling, make_plan
from sinsr_cli.tiling import OutputTooLarge


def nearest_up(scale: int):
    def fn(t: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t, scale_factor=scale, mode="nearest") if scale > 1 else t.clone()

    return fn


def run(p: SRPipeline, x: torch.Tensor, *, seed: int = 0, steps=None, tile: int | None = 0, overlap: int = 32,
        pad: int = 8, batch: int = 1, **kw) -> torch.Tensor:
    plan = make_plan(p.preset, steps=steps, seed=seed, tiling=Tiling(tile, overlap, pad, batch))
    return Engine(p)(x, plan, **kw)


# --- the retry loop on stand-in functions ------------------------------------------------------


def fake_oom_fn(limit: int, scale: int, *, typed: bool = True):
    """Nearest upsample that 'runs out of memory' when a tile side exceeds ``limit``."""
    seen = []

    def fn(t):
        seen.append(max(t.shape[-2:]))
        if max(t.shape[-2:]) > limit:
            if typed:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
            raise RuntimeError("CUDA error: out of memory")
        return nearest_up(scale)(t)

    return fn, seen


@pytest.mark.parametrize("typed", [True, False])
def test_oom_retry_halves_tile_until_it_fits(typed):
    x = torch.rand(1, 3, 150, 200, generator=torch.Generator().manual_seed(3))
    fn, seen = fake_oom_fn(60, 2, typed=typed)
    retries = []
    out = run_tiled_with_oom_retry(
        lambda: fn, x, tile=256, overlap=40, scale=2, on_retry=lambda t, o: retries.append((t, o))
    )
    torch.testing.assert_close(out, nearest_up(2)(x), atol=1e-6, rtol=0)
    # whole image (200) -> 100 -> 50, overlap held below half the tile
    assert retries == [(100, 40), (50, 24)]
    assert seen[-1] <= 60


def test_oom_retry_skips_tiles_whose_box_still_holds_the_whole_image():
    x = torch.rand(1, 3, 100, 100, generator=torch.Generator().manual_seed(4))
    fn, seen = fake_oom_fn(80, 2)
    retries = []
    out = run_tiled_with_oom_retry(
        lambda: fn, x, tile=0, overlap=4, scale=2, pad=lambda t: 30, min_tile=8,
        on_retry=lambda t, o: retries.append(t),
    )
    torch.testing.assert_close(out, nearest_up(2)(x), atol=1e-6, rtol=0)
    # whole (100) fails; 50 px tiles would be 110 px boxes (the whole image again): skipped;
    # 25 px tiles (85 px boxes) fail too; 12 px tiles (72 px boxes) fit
    assert retries == [25, 12] and seen.count(100) == 1 and 85 in seen and seen[-1] == 72


def test_oom_retry_shrinks_the_model_input_when_the_context_grows_back():
    """112 px tiles with 8 px of context are 128 px model inputs; so are 56 px tiles, whose
    context grows to 36 px to fill the 64 px multiple: the retry goes on to 48 px (64 px inputs)
    instead of running the failed size again and giving up."""
    x = torch.rand(1, 3, 300, 300, generator=torch.Generator().manual_seed(6))
    fn, seen = fake_oom_fn(64, 1)
    retries = []

    def context(t: int) -> int:  # SRPipeline.context_pad's rule with 8 px asked and 64 px padding
        return 8 + ((-(t + 16)) % 64) // 2

    out = run_tiled_with_oom_retry(
        lambda: fn, x, tile=112, overlap=16, scale=1, pad=context, multiple=64,
        on_retry=lambda t, o: retries.append(t),
    )
    torch.testing.assert_close(out, x, atol=1e-6, rtol=0)
    assert retries == [48] and sorted(set(seen)) == [64, 128]


def test_oom_retry_reraises_below_minimum():
    x = torch.rand(1, 3, 64, 64)
    fn, seen = fake_oom_fn(20, 2)
    with pytest.raises(torch.cuda.OutOfMemoryError) as info:
        run_tiled_with_oom_retry(lambda: fn, x, tile=64, overlap=8, scale=2, min_tile=32)
    assert seen == [64, 32]  # tried whole, then 32; 16 is below the minimum
    if hasattr(info.value, "add_note"):  # Python >= 3.11 carries the hint as a note
        assert any("tile=32" in n for n in info.value.__notes__)


def test_oom_retry_leaves_other_errors_alone():
    calls = []

    def fn(t):
        calls.append(1)
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_tiled_with_oom_retry(lambda: fn, torch.rand(1, 3, 64, 64), tile=32, overlap=4, scale=1)
    assert len(calls) == 1
    assert is_oom_error(RuntimeError("CUDA out of memory"))
    assert not is_oom_error(ValueError("out of memory"))


def test_whole_image_that_runs_out_of_memory_is_retried_in_tiles():
    """tile=0 (or a tile covering the image) is retried too, each tile with its own context."""
    x = torch.rand(1, 3, 96, 80, generator=torch.Generator().manual_seed(4))
    fn, seen = fake_oom_fn(70, 2)
    pads: list[int] = []

    def pad_for(t: int) -> int:
        pads.append(t)
        return 4

    out = run_tiled_with_oom_retry(lambda: fn, x, tile=0, overlap=8, scale=2, pad=pad_for)
    torch.testing.assert_close(out, nearest_up(2)(x), atol=1e-6, rtol=0)
    assert seen[0] == 96 and max(seen[1:]) <= 70  # whole, then tiles of 48 + 2 x 4 context
    assert pads == [96, 48]


def test_output_buffers_too_large_for_the_device_move_to_the_host(monkeypatch):
    """Halving cannot help when the full-size output itself does not fit: blend on the host."""
    real = tiling._output_buffer
    asked: list[str] = []

    def buffer(shape, device):
        asked.append(torch.device(device).type)
        if torch.device(device).type == "meta":  # stands for a GPU without room for the output
            raise OutputTooLarge("the output's float32 buffers do not fit in meta memory")
        return real(shape, device)

    monkeypatch.setattr(tiling, "_output_buffer", buffer)
    x = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(5))
    retries: list = []
    out = run_tiled_with_oom_retry(
        lambda: nearest_up(2), x, tile=16, overlap=4, scale=2, out_device="meta", out_channels=3,
        on_retry=lambda t, o: retries.append(t),
    )
    assert out.device.type == "cpu" and retries == []  # same tile, host buffers
    assert asked[0] == "meta" and set(asked[1:]) == {"cpu"}
    torch.testing.assert_close(out, nearest_up(2)(x), atol=1e-6, rtol=0)


def test_every_try_gets_its_own_function():
    """``start_try`` runs once per try, so per-try state (a generator) never carries over."""
    x = torch.rand(1, 3, 64, 48)
    fn, _seen = fake_oom_fn(40, 2)
    starts: list[int] = []

    def start_try():
        starts.append(len(starts))
        return fn

    run_tiled_with_oom_retry(start_try, x, tile=0, overlap=8, scale=2)
    assert starts == [0, 1]  # whole (64) out of memory, then tiles of 32


# --- the engine on the tiny pipeline -----------------------------------------------------------


def _oom_first_denoiser_call(p: SRPipeline, monkeypatch) -> list[tuple[int, ...]]:
    """The first denoiser call runs out of memory: after the try has drawn its noise."""
    real = p.denoiser
    failed: list[tuple[int, ...]] = []

    def denoiser(lq):
        fn = real(lq)

        def once(x_t, t):
            if not failed:
                failed.append(tuple(x_t.shape))
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
            return fn(x_t, t)

        return once

    monkeypatch.setattr(p, "denoiser", denoiser)
    return failed


@pytest.mark.parametrize("steps", [None, 3])  # one step; ancestral (noise drawn at every step)
def test_a_retried_image_equals_a_fresh_run_at_the_smaller_tile(tiny_pipeline, monkeypatch, steps):
    """The out-of-memory retry starts its generator from the seed again: the retried image is
    bit for bit the image a fresh run at the smaller tile gives (it used to draw its noise
    from the state the failed try left behind)."""
    p = tiny_pipeline
    x = torch.rand(1, 3, 128, 96, generator=torch.Generator().manual_seed(0))  # one 128 px model input
    fresh_whole = run(p, x, seed=5, steps=steps)
    failed = _oom_first_denoiser_call(p, monkeypatch)
    retries: list[tuple[int, int]] = []
    retried = run(p, x, seed=5, steps=steps, on_retry=lambda t, o: retries.append((t, o)))
    # the whole image failed; 64 px tiles (128 px boxes with context: the whole image again)
    # are skipped, then 32 px tiles in 64 px boxes
    assert failed and retries == [(32, 15)]
    (tile, overlap), = retries
    fresh = run(p, x, seed=5, steps=steps, tile=tile, overlap=overlap)
    assert torch.equal(retried, fresh)
    assert not torch.equal(fresh, fresh_whole)  # the retry did tile: the check is not vacuous


def test_another_dtype_runs_on_a_kept_copy_and_the_shared_pipeline_is_untouched(tiny_pipeline):
    p = tiny_pipeline.to(dtype=torch.bfloat16)
    engine = Engine(p)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    plan = make_plan(p.preset, seed=1, dtype=torch.float32)
    y = engine(x, plan)
    assert torch.isfinite(y).all() and y.dtype == torch.float32
    assert p.dtype == torch.bfloat16 and {t.dtype for t in p.unet.parameters()} == {torch.bfloat16}
    copy = engine.pipeline(torch.float32)
    assert copy is engine.pipeline(torch.float32) and copy is not p and engine.pipeline(None) is p
    assert copy.dtype == torch.float32 and {t.dtype for t in copy.unet.parameters()} == {torch.float32}
    ours = {t.data_ptr() for m in (p.unet, p.vq) for t in [*m.parameters(), *m.buffers()]}
    theirs = {t.data_ptr() for m in (copy.unet, copy.vq) for t in [*m.parameters(), *m.buffers()]}
    assert not ours & theirs  # nothing shared: the copy cannot change the shared pipeline
    assert torch.equal(engine(x, plan), y)


def test_tiled_matches_untiled_when_denoiser_returns_its_conditioning(tiny_pipeline, monkeypatch):
    """With x0 := z_y the path is encode->decode; tiling must not add seams away from borders."""
    p = tiny_pipeline
    # a pointwise "VQ": encode = 4x4 average pooling, decode = nearest x4 (no codebook)
    monkeypatch.setattr(p.vq, "encode", lambda x: torch.nn.functional.avg_pool2d(x, 4))
    monkeypatch.setattr(p.vq, "decode", lambda z, quantize=True: torch.nn.functional.interpolate(z, scale_factor=4))
    monkeypatch.setattr(p, "denoiser", lambda lq: (lambda x, t: x))
    from sinsr_cli.diffusion import sampler as smp

    monkeypatch.setitem(smp.SAMPLERS, "onestep", lambda den, z_y, sched, noise, gen=None, cb=None: z_y)
    x = torch.rand(1, 3, 96, 80)
    full = run(p, x)
    tiled = run(p, x, tile=32, overlap=8, batch=3)
    border = 4 * 4  # bicubic support near the image border differs by padding
    diff = (full - tiled).abs()[..., border:-border, border:-border]
    assert diff.max() < 1e-3, diff.max()


def _oom_above(p: SRPipeline, monkeypatch, limit: int) -> list[int]:
    """Make the model run out of memory on inputs larger than ``limit`` px; returns input sides."""
    seen: list[int] = []
    real = p.upscale_pm1

    def upscale_pm1(x, **kw):
        seen.append(max(x.shape[-2:]))
        if max(x.shape[-2:]) > limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        return real(x, **kw)

    monkeypatch.setattr(p, "upscale_pm1", upscale_pm1)
    return seen


def test_a_whole_image_out_of_memory_is_retried_in_tiles(tiny_pipeline, monkeypatch):
    seen = _oom_above(tiny_pipeline, monkeypatch, 64)
    retries: list[int] = []
    out = run(tiny_pipeline, torch.rand(1, 3, 80, 72), on_retry=lambda t, o: retries.append(t))
    assert out.shape == (1, 3, 320, 288) and torch.isfinite(out).all()
    assert seen[0] == 80 and retries == [40] and max(seen[1:]) == 64  # 40 px + 12 px context


def test_tiles_are_capped_at_the_32_bit_index_limit(tiny_pipeline, monkeypatch):
    """An image (or a tile) whose model input would pass 2^31 elements in a feature map is tiled
    at the largest input that stays under it (here the limit is lowered to a 64 px input)."""
    p = tiny_pipeline
    monkeypatch.setattr(p, "max_input_pixels", lambda batch=1: 64 * 64)
    assert p.max_tile(8) == 48 and p.max_tile(0) == 64
    seen = _oom_above(p, monkeypatch, 10**6)
    for tile in (0, 200, 100):
        seen.clear()
        out = run(p, torch.rand(1, 3, 100, 90), tile=tile)
        assert out.shape == (1, 3, 400, 360)
        assert seen and max(seen) == 64  # 48 px tiles + 8 px of context each side


@pytest.mark.parametrize("h,w", [(1, 1), (1, 40), (3, 1)])
def test_one_pixel_sides_are_upscaled_tiled_or_not(tiny_pipeline, h, w):
    x = torch.rand(1, 3, h, w)
    whole = run(tiny_pipeline, x)
    tiled = run(tiny_pipeline, x, tile=16, overlap=4)
    assert whole.shape == tiled.shape == (1, 3, 4 * h, 4 * w)
    assert torch.isfinite(tiled).all()


def test_the_engine_equals_one_pipeline_call_for_a_whole_image(tiny_pipeline):
    x = torch.rand(2, 3, 24, 40)
    assert torch.equal(run(tiny_pipeline, x, seed=3), tiny_pipeline(x, seed=3))


def test_auto_tiling_and_progress(tiny_pipeline):
    ticks: list[tuple[int, int]] = []
    out = run(tiny_pipeline, torch.rand(1, 3, 20, 24), tile=None, on_tile=lambda d, t: ticks.append((d, t)))
    assert out.shape == (1, 3, 80, 96) and ticks and ticks[-1][0] == ticks[-1][1]


def test_rejects_bad_shapes(tiny_pipeline):
    with pytest.raises(ValueError):
        run(tiny_pipeline, torch.rand(3, 16, 16))


def test_a_fixed_tile_whose_box_holds_the_image_runs_it_whole(tiny_pipeline):
    def geo(tile, h, w):
        return geometry(tiny_pipeline, make_plan(tiny_pipeline.preset, tiling=Tiling(tile, 32, 8, 1)), 1, h, w)

    # 64 px tiles get 32 px of context (128 px boxes): an image up to 128 px is one box
    assert geo(64, 100, 80).tile == 0 and geo(64, 128, 128).tile == 0
    tiled = geo(64, 129, 80)
    assert (tiled.tile, tiled.overlap, tiled.pad) == (64, 31, 8)
    assert geo(0, 500, 500).tile == 0


def test_auto_geometry_hands_its_boxes_to_the_tiler_and_a_retry_drops_them(tiny_pipeline, monkeypatch):
    import sinsr_cli.engine as engine
    from sinsr_cli.tileplan import TilePlan

    boxes = ((128, 128), (128, 64))  # 200 x 160: two rows of 128 px boxes, a 64 px column at the right
    monkeypatch.setattr(engine, "auto_plan", lambda *a, **k: TilePlan(112, 16, 8, 4, 128, 1.0, 1.0, 1.0, boxes))
    plan = make_plan(tiny_pipeline.preset, tiling=Tiling(None, 32, 8, 1))
    geo = geometry(tiny_pipeline, plan, 1, 200, 160)
    assert geo.boxes == boxes and geo.tile == 112
    shapes = []
    real = tiny_pipeline.upscale_pm1
    monkeypatch.setattr(tiny_pipeline, "upscale_pm1", lambda x, **kw: shapes.append(tuple(x.shape[-2:])) or real(x, **kw))
    out = Engine(tiny_pipeline)(torch.rand(1, 3, 200, 160), plan)
    assert out.shape == (1, 3, 800, 640) and sorted(shapes) == [(128, 64), (128, 64), (128, 128), (128, 128)]
    # an out-of-memory retry cuts equal boxes of a smaller model input: 48 px + 8 px context = 64
    # (the halved tile, 56 px, would be 128 px again with the 36 px context that fills the multiple)
    shapes.clear()
    _oom_first_denoiser_call(tiny_pipeline, monkeypatch)
    retries = []
    out = Engine(tiny_pipeline)(torch.rand(1, 3, 200, 160), plan, on_retry=lambda t, o: retries.append(t))
    assert retries == [48] and out.shape == (1, 3, 800, 640)
    assert shapes[0] == (128, 128) and set(shapes[1:]) == {(64, 64)} and len(shapes) > 5
