"""Tiling: boxes cover every pixel, identity tiles back exactly, pointwise fns are tile-invariant,
a small conv net differs only near tile borders (the out-of-memory retry: test_engine.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from sinsr_cli.tiling import (
    OutputTooLarge,
    Tile,
    axis_boxes,
    blend_window,
    plan_tiles,
    run_tiled,
    tile_spans,
)

FAST = settings(max_examples=40, deadline=None)


def nearest_up(scale: int):
    def fn(t: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t, scale_factor=scale, mode="nearest") if scale > 1 else t.clone()

    return fn


@st.composite
def geometry(draw, max_side: int = 160):
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    tile = draw(st.integers(1, 96))
    overlap = draw(st.integers(0, tile - 1))
    return h, w, tile, overlap


# --- geometry ---------------------------------------------------------------------------------


@FAST
@given(length=st.integers(1, 500), tile=st.integers(1, 128), pad=st.integers(0, 40), data=st.data())
def test_tile_spans_cover_overlap_and_share_one_box(length, tile, pad, data):
    overlap = data.draw(st.integers(0, tile - 1))
    spans = tile_spans(length, tile, overlap, pad)
    box = min(length, tile + 2 * pad)
    assert spans[0][0] == 0 and spans[-1][1] == length  # the ends reach the image borders
    for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
        assert a0 < b0 and a1 < b1  # in order, none inside another
        assert a1 - b0 >= overlap  # neighbours overlap by at least `overlap`
    for i, (s0, s1) in enumerate(spans):
        # the box: the span and `pad` of context on each side with a neighbour, inside the image
        lo = s0 - (pad if i else 0)
        hi = s1 + (pad if i < len(spans) - 1 else 0)
        assert 0 <= lo and hi <= length and hi - lo == box
    if length <= tile + 2 * pad:
        assert spans == [(0, length)]


def test_tile_spans_small_cases():
    assert tile_spans(10, 16, 4) == [(0, 10)]
    assert tile_spans(16, 16, 4) == [(0, 16)]
    assert tile_spans(100, 0, 8) == [(0, 100)]
    assert tile_spans(20, 10, 0) == [(0, 10), (10, 20)]
    assert tile_spans(28, 16, 4) == [(0, 16), (12, 28)]
    assert tile_spans(30, 16, 4, pad=8) == [(0, 30)]  # one 32 px box holds it all
    # end tiles keep their border-side context: 5 boxes of 128 for 512 px (6 if each kept 112)
    spans = tile_spans(512, 112, 16, pad=8)
    assert len(spans) == 5 and spans[0] == (0, 120) and spans[-1] == (392, 512)
    assert len(tile_spans(512, 112, 16)) == 6
    with pytest.raises(ValueError, match="overlap"):
        tile_spans(100, 16, 16)
    with pytest.raises(ValueError):
        tile_spans(0, 16, 4)
    with pytest.raises(ValueError):
        tile_spans(100, 16, 4, pad=-1)


@FAST
@given(
    sizes=st.lists(st.integers(4, 64), min_size=1, max_size=6),
    overlap=st.integers(0, 6),
    pad=st.integers(0, 6),
    extra=st.integers(-30, 30),
)
def test_axis_boxes_of_any_sizes_cover_the_side_in_order(sizes, overlap, pad, extra):
    # a side about as long as the boxes reach: some layouts fit, some are refused
    reach = sum(b - 2 * pad - overlap for b in sizes[:-1]) + sizes[-1]
    length = max(1, reach + extra)
    try:
        laid = axis_boxes(length, sizes, overlap, pad)
    except ValueError as err:
        if not (max(sizes) > length or reach < length or (len(sizes) == 1 and sizes[0] != length)):
            assert "not advance" in str(err)  # the only other refusal: boxes piled on each other
        return
    assert [b1 - b0 for b0, b1, _, _ in laid] == sizes  # the sizes asked for, in order
    assert laid[0][0] == 0 and laid[-1][1] == length  # first at 0, last ends at the border
    for i, (b0, b1, s0, s1) in enumerate(laid):
        assert 0 <= b0 <= s0 < s1 <= b1 <= length
        assert s0 - b0 == (pad if i else 0) and b1 - s1 == (pad if i < len(laid) - 1 else 0)
    for (_, _, s0, e0), (_, _, s1, e1) in zip(laid, laid[1:]):
        assert s0 < s1 and e0 < e1 and e0 - s1 >= overlap


def test_axis_boxes_refuse_what_cannot_cover_or_would_not_advance():
    assert axis_boxes(256, (128, 128, 64), 16, 8) == [
        (0, 128, 0, 120), (96, 224, 104, 216), (192, 256, 200, 256)
    ]
    with pytest.raises(ValueError, match="cover less"):
        axis_boxes(300, (128, 128, 64), 16, 8)
    with pytest.raises(ValueError, match="not advance"):
        axis_boxes(64, (64, 64), 16, 8)  # two boxes on the same pixels
    with pytest.raises(ValueError, match="do not fit"):
        axis_boxes(100, (128, 64), 16, 8)
    with pytest.raises(ValueError, match="cannot cover"):
        axis_boxes(100, (64,), 16, 8)


@FAST
@given(g=geometry(), pad=st.integers(0, 24))
def test_plan_tiles_cover_every_pixel_in_bounds(g, pad):
    h, w, tile, overlap = g
    tiles = plan_tiles(h, w, tile, overlap, pad)
    cover = torch.zeros(h, w, dtype=torch.int32)
    for t in tiles:
        assert 0 <= t.y0 < t.y1 <= h and 0 <= t.x0 < t.x1 <= w
        cover[t.y0 : t.y1, t.x0 : t.x1] += 1
    assert bool((cover >= 1).all())
    if pad == 0:
        assert {(t.height, t.width) for t in tiles} == {(min(tile, h), min(tile, w))}


@FAST
@given(g=geometry(max_side=64), scale=st.sampled_from([1, 2, 4]), pad=st.integers(0, 12))
def test_blend_weights_normalise_to_one(g, scale, pad):
    h, w, tile, overlap = g
    tiles = plan_tiles(h, w, tile, overlap, pad)
    total = torch.zeros(1, 1, h * scale, w * scale, dtype=torch.float64)
    windows = []
    for t in tiles:
        win = blend_window(t, h, w, overlap, scale)
        assert win.shape == (1, 1, t.height * scale, t.width * scale)
        assert win.dtype == torch.float32
        assert bool((win > 0).all()) and bool((win <= 1).all())
        windows.append(win.double())
        total[..., t.y0 * scale : t.y1 * scale, t.x0 * scale : t.x1 * scale] += win
    assert bool((total > 0).all())
    norm = torch.zeros_like(total)
    for t, win in zip(tiles, windows):
        ys, xs = slice(t.y0 * scale, t.y1 * scale), slice(t.x0 * scale, t.x1 * scale)
        norm[..., ys, xs] += win / total[..., ys, xs]
    torch.testing.assert_close(norm, torch.ones_like(norm), atol=1e-12, rtol=0)


def test_blend_window_flat_on_image_borders_and_ramped_inside():
    h, w, tile, overlap, s = 40, 40, 24, 8, 2
    tiles = plan_tiles(h, w, tile, overlap)
    assert len(tiles) == 4
    tl = blend_window(tiles[0], h, w, overlap, s)[0, 0]  # top-left: neighbours right and below
    ramp = overlap * s
    assert bool((tl[: tl.shape[0] - ramp, : tl.shape[1] - ramp] == 1).all())
    assert tl[0, -1] < 0.05 and tl[-1, 0] < 0.05 and tl[-1, -1] < 0.01
    whole = blend_window(Tile(0, h, 0, w), h, w, overlap, s)
    assert bool((whole == 1).all())


def test_blend_ramps_are_a_partition_of_unity_at_exact_overlap():
    # Two tiles overlapping by exactly `overlap`: the raised-cosine ramps already sum to one.
    h, w, overlap, s = 8, 24, 4, 2
    left, right = Tile(0, 8, 0, 14), Tile(0, 8, 10, 24)
    wl, wr = (blend_window(t, h, w, overlap, s)[0, 0] for t in (left, right))
    total = torch.zeros(h * s, w * s)
    total[:, : 14 * s] += wl
    total[:, 10 * s :] += wr
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-6, rtol=0)


# --- run_tiled --------------------------------------------------------------------------------


@FAST
@given(
    b=st.integers(1, 2),
    h=st.integers(1, 72),
    w=st.integers(1, 72),
    tile=st.integers(8, 48),
    scale=st.sampled_from([1, 2, 4]),
    data=st.data(),
)
def test_nearest_upsample_tiles_back_exactly(b, h, w, tile, scale, data):
    overlap = data.draw(st.integers(0, tile // 2 - 1))
    batch_size = data.draw(st.integers(2, 5))
    pad = data.draw(st.integers(0, 10))
    x = torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(h * 100 + w))
    fn = nearest_up(scale)
    ref = fn(x)
    out1 = run_tiled(fn, x, tile=tile, overlap=overlap, scale=scale, batch_size=1, pad=pad)
    outn = run_tiled(fn, x, tile=tile, overlap=overlap, scale=scale, batch_size=batch_size, pad=pad)
    assert out1.shape == (b, 3, h * scale, w * scale) and out1.dtype == torch.float32
    torch.testing.assert_close(out1, ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(outn, out1, atol=1e-6, rtol=0)


@pytest.mark.parametrize("tile", [0, 64, 1000])
def test_untiled_paths_call_fn_on_whole_image(tile):
    x = torch.rand(2, 3, 20, 64)
    shapes = []

    def fn(t):
        shapes.append(tuple(t.shape))
        return nearest_up(4)(t)

    out = run_tiled(fn, x, tile=tile, overlap=8, scale=4, batch_size=2)
    assert shapes == [(2, 3, 20, 64)]
    torch.testing.assert_close(out, nearest_up(4)(x), atol=0, rtol=0)


@FAST
@given(h=st.integers(5, 64), w=st.integers(5, 64), tile=st.integers(8, 32), data=st.data())
def test_pointwise_fn_is_tile_invariant(h, w, tile, data):
    overlap = data.draw(st.integers(0, tile // 2 - 1))
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(7))

    def fn(t):
        return torch.sigmoid(3 * F.interpolate(t, scale_factor=2, mode="nearest")) * 2 - 0.5

    out = run_tiled(fn, x, tile=tile, overlap=overlap, scale=2, batch_size=3)
    torch.testing.assert_close(out, fn(x), atol=1e-6, rtol=0)


def test_batching_stacks_equal_tiles_across_the_batch_and_reports_progress():
    x = torch.rand(3, 1, 50, 70)
    tiles = plan_tiles(50, 70, 32, 8)
    calls, progress = [], []

    def fn(t):
        calls.append(t.shape[0])
        return t

    def on_tile(done, total):
        progress.append((done, total))

    out = run_tiled(fn, x, tile=32, overlap=8, scale=1, batch_size=4, on_tile=on_tile)
    total = 3 * len(tiles)
    assert sum(calls) == total and max(calls) == 4
    assert progress[-1] == (total, total)
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)
    torch.testing.assert_close(out, x, atol=1e-6, rtol=0)


def test_out_device_and_dtype():
    x = torch.rand(1, 3, 40, 40, dtype=torch.float64)
    out = run_tiled(lambda t: t.half(), x, tile=16, overlap=4, scale=1, out_device="cpu")
    assert out.dtype == torch.float32 and out.device == torch.device("cpu")


def test_wrong_fn_output_shape_is_reported():
    x = torch.rand(1, 3, 40, 40)
    with pytest.raises(ValueError, match="scale"):
        run_tiled(nearest_up(2), x, tile=16, overlap=4, scale=4)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        run_tiled(nearest_up(2), x[0], tile=16, overlap=4, scale=2)
    with pytest.raises(ValueError, match="overlap"):
        run_tiled(nearest_up(2), x, tile=16, overlap=16, scale=2)


@pytest.mark.parametrize("scale", [2, 4])
def test_small_conv_net_differs_only_near_tile_borders(scale):
    torch.manual_seed(0)
    # Three 3x3 convs: each LR output pixel sees r = 3 px of input on every side.
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.GELU(),
        torch.nn.Conv2d(8, 8, 3, padding=1),
        torch.nn.GELU(),
        torch.nn.Conv2d(8, 3 * scale * scale, 3, padding=1),
        torch.nn.PixelShuffle(scale),
    ).eval()
    r = 3
    h, w, tile, overlap = 45, 61, 24, 8
    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = net(x)
        out = run_tiled(net, x, tile=tile, overlap=overlap, scale=scale, batch_size=4)

    # An LR pixel is exact when every tile covering it sees its whole receptive field, i.e. it
    # lies >= r px inside each covering tile's internal (non-image-border) edges.
    ok = torch.ones(h, w, dtype=torch.bool)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    for t in plan_tiles(h, w, tile, overlap):
        inside = (yy >= t.y0) & (yy < t.y1) & (xx >= t.x0) & (xx < t.x1)
        far = torch.ones(h, w, dtype=torch.bool)
        if t.y0 > 0:
            far &= yy >= t.y0 + r
        if t.y1 < h:
            far &= yy < t.y1 - r
        if t.x0 > 0:
            far &= xx >= t.x0 + r
        if t.x1 < w:
            far &= xx < t.x1 - r
        ok &= ~inside | far
    assert 0.3 < ok.float().mean() < 1.0  # the check is not vacuous and there are seams
    mask = ok.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    diff = (out - ref).abs()
    torch.testing.assert_close(out[..., mask], ref[..., mask], atol=1e-5, rtol=0)
    # Near borders the blend still stays close: far below the output's own spread.
    assert diff.mean() < 0.05 * ref.std()
    assert diff.max() < 0.1 * (ref.max() - ref.min())


@pytest.mark.parametrize("h, w, tile", [(45, 61, 16), (64, 30, 20), (50, 50, 12)])
def test_context_of_the_receptive_field_makes_tiles_exact_up_to_the_borders(h, w, tile):
    # pad >= the net's receptive radius: every kept pixel sees what it sees untiled, the end
    # tiles' border-side pixels included (they keep their whole box there, at the image edge).
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.GELU(),
        torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.GELU(),
        torch.nn.Conv2d(8, 3 * 4, 3, padding=1), torch.nn.PixelShuffle(2),
    ).eval()
    pad, overlap = 3, 4
    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(2))
    shapes = []

    def fn(t):
        shapes.append(tuple(t.shape[-2:]))
        return net(t)

    with torch.inference_mode():
        out = run_tiled(fn, x, tile=tile, overlap=overlap, scale=2, batch_size=1, pad=pad)
        ref = net(x)
    tiles = plan_tiles(h, w, tile, overlap, pad)
    assert len(shapes) == 2 * len(tiles) > 2 and set(shapes) == {(min(h, tile + 6), min(w, tile + 6))}
    assert max(t.height for t in tiles) == min(h, tile + pad)  # an end tile kept its border side
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_boxes_of_several_sizes_are_exact_with_enough_context_and_batched_by_shape(batch_size):
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.GELU(),
        torch.nn.Conv2d(8, 3 * 4, 3, padding=1), torch.nn.PixelShuffle(2),
    ).eval()
    pad, overlap, boxes = 2, 4, ((24, 24, 12), (24, 40))  # a small box at the bottom, a large one right
    x = torch.rand(2, 3, 44, 56, generator=torch.Generator().manual_seed(3))
    calls = []

    def fn(t):
        calls.append(tuple(t.shape))
        return net(t)

    with torch.inference_mode():
        out = run_tiled(fn, x, tile=20, overlap=overlap, scale=2, batch_size=batch_size, pad=pad, boxes=boxes)
        ref = net(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    assert sum(c[0] for c in calls) == 2 * 6
    assert {c[2:] for c in calls} == {(24, 24), (24, 40), (12, 24), (12, 40)}
    assert all(c[0] <= batch_size for c in calls)
    if batch_size == 3:  # jobs per shape (x 2 images): 24x24 and 24x40 4 each (3 + 1), the 12 px row 2 each
        assert sorted(c[0] for c in calls) == [1, 1, 2, 2, 3, 3]


def test_one_box_holding_the_image_runs_it_in_one_call():
    x = torch.rand(1, 3, 40, 30)
    calls = []

    def fn(t):
        calls.append(tuple(t.shape))
        return nearest_up(2)(t)

    out = run_tiled(fn, x, tile=32, overlap=4, scale=2, pad=4)  # 40 <= 32 + 2 * 4
    assert calls == [(1, 3, 40, 30)]
    torch.testing.assert_close(out, nearest_up(2)(x), atol=0, rtol=0)


def test_an_output_that_fits_nowhere_fails_in_one_line():
    x = torch.rand(1, 1, 4, 4)
    with pytest.raises(OutputTooLarge, match=r"output's float32 buffers \(\d+\.\d GiB\) do not fit in cpu memory"):
        run_tiled(lambda t: t, x, tile=2, overlap=0, scale=2**28)  # 4 EiB


# --- auto tile size ---------------------------------------------------------------------------


def test_out_channels_allocates_up_front_and_checks_fn():
    x = torch.rand(2, 3, 40, 36)
    plain = run_tiled(nearest_up(2), x, tile=16, overlap=4, scale=2, pad=3)
    early = run_tiled(nearest_up(2), x, tile=16, overlap=4, scale=2, pad=3, out_channels=3)
    torch.testing.assert_close(early, plain, atol=0, rtol=0)
    with pytest.raises(ValueError, match="out_channels"):
        run_tiled(nearest_up(2), x, tile=16, overlap=4, scale=2, out_channels=4)
