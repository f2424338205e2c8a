"""The folder engine behind `sinsr upscale` (``sinsr_cli.batch``), mostly with a stand-in model.

``FakePipe`` has the pipeline's calling convention and upsamples by pixel repetition, so these
tests check planning, pixels, metadata, failures and interruption in milliseconds; one test runs
the real tiny pipeline.
"""

from __future__ import annotations

import copy
import os
import dataclasses
import threading
import weakref
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sinsr_cli.config import tiny_preset, tiny_vq
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from sinsr_cli import imageio
from sinsr_cli.batch import run_batch, upscale_image
from sinsr_cli.jobs import SKIP_EXISTS, Job, plan_jobs
from sinsr_cli.options import UpscaleOptions, default_suffix
from sinsr_cli.postprocess import output_size, resample
from sinsr_cli.results import BatchObserver, ItemResult
from sinsr_cli.errors import SettingError
from sinsr_cli.imageio import InputItem, collect_inputs, read_image
from sinsr_cli.pipeline import SRPipeline
from sinsr_cli.tileplan import bytes_per_lr_pixel


class FakePipe:
    """``SRPipeline``'s model path: ``[B,3,H,W]`` in [-1,1] -> ``[B,3,4H,4W]`` by pixel repetition,
    driven by the real ``engine.Engine`` (tiles, retries, the fp32 copy).

    ``nan_dtypes``: dtypes in which the output is NaN (to test the fp32 fallback);
    ``raise_on``: call number (1-based) -> exception to raise; ``on_call``: hook run per call.
    ``calls`` is shared with the copies ``with_dtype`` makes; ``seed`` is the generator's.
    """

    scale = 4
    pad_multiple = 64
    max_tile = SRPipeline.max_tile
    context_pad = SRPipeline.context_pad

    def __init__(self, dtype: torch.dtype = torch.float32, *, nan_dtypes=(), raise_on=None, on_call=None):
        self.device = torch.device("cpu")
        self.dtype = dtype
        self.preset = dataclasses.replace(tiny_preset(), name="fake")
        self.vq = SimpleNamespace(cfg=tiny_vq())  # the configs `--tile auto` plans with
        self.unet = SimpleNamespace(cfg=tiny_preset().unet)
        self.nan_dtypes = tuple(nan_dtypes)
        self.raise_on = dict(raise_on or {})
        self.on_call = on_call
        self.calls: list[dict] = []
        self.dtype_history: list[torch.dtype] = []

    def max_input_pixels(self, batch=1):
        return 2**40 // batch

    def to(self, device=None, dtype=None):
        self.dtype = dtype or self.dtype
        self.dtype_history.append(self.dtype)
        return self

    def with_dtype(self, dtype):
        twin = copy.copy(self)  # shares `calls`: the test sees every call in order
        twin.dtype, twin.dtype_history = dtype, []
        return twin

    def upscale_pm1(self, lq, *, steps=None, sampler=None, generator=None):
        self.calls.append(
            dict(shape=tuple(lq.shape), dtype=self.dtype, seed=generator.initial_seed(), steps=steps, sampler=sampler)
        )
        n = len(self.calls)
        if self.on_call is not None:
            self.on_call(n)
        if n in self.raise_on:
            raise self.raise_on[n]
        y = lq.float().repeat_interleave(4, dim=-2).repeat_interleave(4, dim=-1).clone()
        if self.dtype in self.nan_dtypes:
            y[..., 0, 0] = float("nan")
        return y


class Recorder(BatchObserver):
    def __init__(self):
        self.events: list[tuple] = []

    def batch_started(self, jobs, pending):
        self.events.append(("start", pending))

    def file_started(self, job, index, pending):
        self.events.append(("file", job.item.path.name, index, pending))

    def tiles(self, done, total):
        self.events.append(("tiles", done, total))

    def warning(self, job, message):
        self.events.append(("warning", message))

    def file_finished(self, result):
        self.events.append(("finished", result.item.path.name, result.status))

    def warnings(self):
        return [e[1] for e in self.events if e[0] == "warning"]


def _save(path: Path, mode: str = "RGB", size=(12, 10), **params) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(os.fsencode(path.name)))
    if mode == "I;16":
        arr = rng.integers(0, 65536, size=(size[1], size[0]), dtype=np.uint16)
        Image.fromarray(arr).save(path, **params)
        return path
    bands = len(Image.new(mode, (1, 1)).getbands())
    arr = rng.integers(0, 256, size=(size[1], size[0], bands), dtype=np.uint8)
    im = Image.fromarray(arr[..., 0] if bands == 1 else arr, mode={1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[bands])
    if mode not in ("L", "LA", "RGB", "RGBA"):
        im = im.convert(mode)
    im.save(path, **params)
    return path


def _run(tmp_path, paths, pipe=None, observer=None, stop=None, **opts):
    options = UpscaleOptions(seed=0, **opts)
    items, rejected = collect_inputs([str(p) for p in paths])
    single = len(paths) == 1 and Path(paths[0]).is_file() and len(items) == 1
    jobs = plan_jobs(items, rejected, options, explicit=[str(p) for p in paths], single_input_file=single)
    pipe = pipe or FakePipe()
    return run_batch(pipe, jobs, options, observer, stop=stop), pipe


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp")]


# --------------------------------------------------------------------------- pixels and sizes


@settings(max_examples=60, deadline=None)
@given(w=st.integers(2, 40), h=st.integers(2, 40), s=st.floats(0.05, 9.0, allow_nan=False))
def test_output_size_is_python_round(w, h, s):
    if round(s * w) < 1 or round(s * h) < 1:
        with pytest.raises(SettingError, match="^scale"):
            output_size(w, h, s)
    else:
        assert output_size(w, h, s) == (round(s * w), round(s * h))


@settings(max_examples=30, deadline=None)
@given(w=st.integers(1, 30), h=st.integers(1, 30), ow=st.integers(1, 50), oh=st.integers(1, 50), c=st.sampled_from([0, 1, 3]))
def test_resample_exact_size_and_range(w, h, ow, oh, c):
    rng = np.random.default_rng(w * 31 + h)
    a = rng.random((h, w) if c == 0 else (h, w, c), dtype=np.float32)
    out = resample(a, (ow, oh))
    assert out.shape == ((oh, ow) if c == 0 else (oh, ow, c)) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1


def test_resample_keeps_constant_and_16bit_precision():
    a = np.full((8, 8, 3), 12345 / 65535, np.float32)
    out = resample(a, (13, 5))
    assert np.allclose(out, 12345 / 65535, atol=1e-6)  # finer than one 16-bit step


def test_default_suffix():
    assert default_suffix(4) == "_x4" and default_suffix(2.0) == "_x2" and default_suffix(1.5) == "_x1.5"


def test_suffix_joins_as_in_real_esrgan_and_stays_in_the_name():
    """``out`` -> ``photo_out`` (Real-ESRGAN's ``f"{name}_{suffix}"``); punctuation first is kept
    as given; a suffix with a path separator would write outside ``-o`` and is refused."""
    got = {s: UpscaleOptions(suffix=s).file_suffix for s in ("out", "4k", "_x4", "-sr", ".up", "", None)}
    assert got == {"out": "_out", "4k": "_4k", "_x4": "_x4", "-sr": "-sr", ".up": ".up", "": "", None: "_x4"}
    for bad in ("/sub", "/../../esc", "a\\b"):
        with pytest.raises(SettingError) as e:
            UpscaleOptions(suffix=bad)
        assert e.value.setting == "suffix"


@pytest.mark.parametrize(
    "kw, setting",
    [
        (dict(scale=0), "scale"), (dict(scale=float("nan")), "scale"), (dict(steps=0), "steps"),
        (dict(sampler="euler"), "sampler"), (dict(seed=-1), "seed"), (dict(tile=-1), "tile"),
        (dict(tile=8), "tile"), (dict(tile_overlap=-1), "tile_overlap"), (dict(tile_pad=-2), "tile_pad"),
        (dict(tile_batch=0), "tile_batch"), (dict(alpha="blur"), "alpha"),
        (dict(format="gif"), "format"), (dict(quality=0), "quality"), (dict(max_pixels=0), "max_pixels"),
    ],
)
def test_options_reject_bad_values_in_library_terms(kw, setting):
    """The library names its own settings, never a flag (the CLI maps them)."""
    with pytest.raises(SettingError) as info:
        UpscaleOptions(**kw)
    assert info.value.setting == setting and str(info.value).startswith(setting) and "--" not in str(info.value)


def test_bytes_per_lr_pixel_scales_with_the_tile_batch():
    pipe = FakePipe()
    assert bytes_per_lr_pixel(pipe, 2) == 2 * bytes_per_lr_pixel(pipe, 1) > 0


# --------------------------------------------------------------------------- upscale_image


def test_rgb_scale_and_seed(tmp_path):
    src = read_image(_save(tmp_path / "a.png", size=(10, 7)))
    pipe = FakePipe()
    color, alpha = upscale_image(pipe, src, UpscaleOptions(scale=2.5, seed=7, tile=48))
    assert color.shape == (18, 25, 3) and alpha is None  # round(17.5) == 18 (half to even)
    assert pipe.calls[0]["seed"] == 7 and pipe.calls[0]["shape"] == (1, 3, 7, 10)  # whole: the tile covers it


def test_gray_stays_gray_and_16bit(tmp_path):
    src = read_image(_save(tmp_path / "g.png", mode="I;16"))
    assert src.grayscale and src.bit_depth == 16
    color, _ = upscale_image(FakePipe(), src, UpscaleOptions())
    assert color.ndim == 2 and color.shape == (40, 48)
    out = imageio.write_image(tmp_path / "g_x4.png", color, like=src)
    back = read_image(out)
    assert back.grayscale and back.bit_depth == 16
    # pixel repetition: each output pixel is its source pixel, exactly, at 16 bits
    assert np.array_equal(np.rint(back.rgb[::4, ::4, 0] * 65535), np.rint(src.rgb[..., 0] * 65535))


@pytest.mark.parametrize("mode", ["resize", "model"])
def test_alpha_upscaled_separately(tmp_path, mode):
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[4:12, 4:12, 3] = 255  # an opaque square on transparent
    p = tmp_path / "a.png"
    Image.fromarray(rgba).save(p)
    src = read_image(p)
    pipe = FakePipe()
    color, alpha = upscale_image(pipe, src, UpscaleOptions(alpha=mode))
    assert alpha.shape == (64, 64) and color.shape == (64, 64, 3)
    assert alpha[32, 32] == pytest.approx(1, abs=1e-2) and alpha[2, 2] == pytest.approx(0, abs=1e-2)
    assert 0 <= alpha.min() and alpha.max() <= 1
    assert len(pipe.calls) == (2 if mode == "model" else 1)


def test_opaque_alpha_costs_nothing(tmp_path):
    p = tmp_path / "o.png"
    Image.new("RGBA", (6, 5), (1, 2, 3, 255)).save(p)
    pipe = FakePipe()
    _, alpha = upscale_image(pipe, read_image(p), UpscaleOptions(alpha="model"))
    assert alpha.shape == (20, 24) and alpha.min() == 1 and len(pipe.calls) == 1


def test_fp16_nan_retried_in_fp32(tmp_path):
    src = read_image(_save(tmp_path / "a.png"))
    pipe = FakePipe(torch.float16, nan_dtypes=(torch.float16,))
    warnings: list[str] = []
    color, _ = upscale_image(pipe, src, UpscaleOptions(seed=3), warn=warnings.append)
    assert np.isfinite(color).all() and color.max() > 0
    assert [c["dtype"] for c in pipe.calls] == [torch.float16, torch.float32]
    assert pipe.calls[0]["seed"] == pipe.calls[1]["seed"] == 3  # same noise on the retry
    assert pipe.dtype == torch.float16 and pipe.dtype_history == []  # a copy ran fp32: the shared one never switched
    assert len(warnings) == 1 and "fp16" in warnings[0] and "fp32" in warnings[0]


def test_the_fp32_copy_is_made_once_per_run(tmp_path):
    for n in "ab":
        _save(tmp_path / f"{n}.png")
    pipe = FakePipe(torch.float16, nan_dtypes=(torch.float16,))
    made: list[torch.dtype] = []
    real = pipe.with_dtype
    pipe.with_dtype = lambda dtype: made.append(dtype) or real(dtype)
    report, _ = _run(tmp_path, [tmp_path], pipe=pipe)
    assert [r.status for r in report.results] == ["done", "done"] and made == [torch.float32]
    assert [c["dtype"] for c in pipe.calls] == [torch.float16, torch.float32] * 2  # each file tries fp16 first
    assert pipe.dtype == torch.float16 and pipe.dtype_history == []


def test_nan_in_fp32_fails_instead_of_writing_black(tmp_path):
    _save(tmp_path / "a.png")
    report, _ = _run(tmp_path, [tmp_path / "a.png"], pipe=FakePipe(nan_dtypes=(torch.float32,)))
    (r,) = report.results
    assert r.status == "failed" and "NaN/Inf" in r.message and str(tmp_path / "a.png") in r.message
    assert not (tmp_path / "a_x4.png").exists()


# --------------------------------------------------------------------------- planning


def test_plan_mirrors_tree_and_suffix(tmp_path):
    src = tmp_path / "in"
    _save(src / "a.png")
    _save(src / "sub" / "deep" / "b.jpg", format="JPEG")
    out = tmp_path / "out"
    report, _ = _run(tmp_path, [src], output=out)
    assert [r.status for r in report.results] == ["done", "done"]
    assert (out / "a_x4.png").is_file() and (out / "sub" / "deep" / "b_x4.jpg").is_file()
    assert Image.open(out / "sub" / "deep" / "b_x4.jpg").format == "JPEG"


def test_never_overwrites_an_input(tmp_path):
    _save(tmp_path / "a.png")
    before = (tmp_path / "a.png").read_bytes()
    report, _ = _run(tmp_path, [tmp_path], suffix="")
    (r,) = report.results
    assert r.status == "failed" and "overwrite the input" in r.message
    assert (tmp_path / "a.png").read_bytes() == before


def test_overwrite_in_place_replaces_the_previous_results(tmp_path):
    """A rerun with ``overwrite`` over a folder holding its previous outputs replaces them: no
    failure on ``a.png``, no ``a_x4_x4.png``; the other inputs are never replaced."""
    _save(tmp_path / "a.png")
    _save(tmp_path / "b.png")
    _save(tmp_path / "a_x4.png", size=(5, 5))  # a previous result (of another size, to tell)
    before = (tmp_path / "b.png").read_bytes()
    report, pipe = _run(tmp_path, [tmp_path], overwrite=True)
    by_name = {r.item.path.name: r for r in report.results}
    assert by_name["a.png"].status == "done" and by_name["b.png"].status == "done" and len(pipe.calls) == 2
    assert by_name["a_x4.png"].status == "skipped" and "the output of" in by_name["a_x4.png"].message
    assert Image.open(tmp_path / "a_x4.png").size == (48, 40) and not (tmp_path / "a_x4_x4.png").exists()
    assert (tmp_path / "b.png").read_bytes() == before


def test_an_input_named_like_no_output_is_never_replaced_even_with_overwrite(tmp_path):
    _save(tmp_path / "a.png")
    before = (tmp_path / "a.png").read_bytes()
    report, _ = _run(tmp_path, [tmp_path], suffix="", overwrite=True)
    (r,) = report.results
    assert r.status == "failed" and "overwrite the input" in r.message
    assert (tmp_path / "a.png").read_bytes() == before


def test_rerun_beside_the_inputs_does_nothing(tmp_path):
    """Outputs written next to their inputs are met again by a rerun over the same folder: they
    are the previous run's results, not new inputs (no ``a_x4_x4.png``, no failure)."""
    _save(tmp_path / "d" / "a.png")
    _save(tmp_path / "d" / "sub" / "b.png")
    report, pipe = _run(tmp_path, [tmp_path / "d"])
    assert [r.status for r in report.results] == ["done", "done"] and len(pipe.calls) == 2
    before = {p: p.read_bytes() for p in (tmp_path / "d").rglob("*_x4.png")}
    assert len(before) == 2
    report, pipe = _run(tmp_path, [tmp_path / "d"])
    by_name = {r.item.path.name: r for r in report.results}
    assert not pipe.calls and not report.failed
    assert by_name["a.png"].reason == SKIP_EXISTS and by_name["b.png"].reason == SKIP_EXISTS
    assert by_name["a_x4.png"].status == "skipped" and "the output of" in by_name["a_x4.png"].message
    assert {p: p.read_bytes() for p in (tmp_path / "d").rglob("*_x4*.png")} == before
    report, pipe = _run(tmp_path, [tmp_path / "d" / "a.png", tmp_path / "d" / "a_x4.png"])  # as `*.png` expands
    assert not pipe.calls and not report.failed


def test_existing_output_is_skipped_or_replaced(tmp_path):
    _save(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_x4.png").write_bytes(b"old")
    report, pipe = _run(tmp_path, [tmp_path / "in"], output=out)
    assert report.results[0].status == "skipped" and report.results[0].reason == SKIP_EXISTS
    assert report.existing == 1 and not report.failed and not pipe.calls
    assert (out / "a_x4.png").read_bytes() == b"old"
    report, pipe = _run(tmp_path, [tmp_path / "in"], output=out, overwrite=True)
    assert report.results[0].status == "done" and Image.open(out / "a_x4.png").size == (48, 40)


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_directory_at_the_output_path_fails_the_item_and_is_left_alone(tmp_path, overwrite):
    _save(tmp_path / "a.png")
    _save(tmp_path / "b.png")
    (tmp_path / "out" / "a_x4.png").mkdir(parents=True)
    (tmp_path / "out" / "a_x4.png" / "mine.txt").write_text("the user's")
    report, pipe = _run(tmp_path, [tmp_path / "a.png", tmp_path / "b.png"], output=tmp_path / "out", overwrite=overwrite)
    a, b = report.results
    assert a.status == "failed" and a.message == (
        f"{tmp_path / 'a.png'}: a directory is in the way of the output {tmp_path / 'out' / 'a_x4.png'}; move or rename it"
    )
    assert b.status == "done" and len(pipe.calls) == 1  # the model ran for b only
    assert (tmp_path / "out" / "a_x4.png" / "mine.txt").read_text() == "the user's"


def test_an_output_another_run_wrote_meanwhile_is_kept(tmp_path):
    """Two runs into one folder at once: the file the other run wrote while this one was on the
    model is kept (skipped, output exists) unless --overwrite; no temporary file is left."""
    _save(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    theirs = out / "a_x4.png"

    def other_run(n):
        out.mkdir(exist_ok=True)
        theirs.write_bytes(b"theirs")

    report, _ = _run(tmp_path, [tmp_path / "in"], pipe=FakePipe(on_call=other_run), output=out)
    r = report.results[0]
    assert (r.status, r.reason) == ("skipped", SKIP_EXISTS) and not report.failed
    assert "written by another run meanwhile" in r.message
    assert theirs.read_bytes() == b"theirs" and not _leftovers(out)
    report, _ = _run(tmp_path, [tmp_path / "in"], pipe=FakePipe(on_call=other_run), output=out, overwrite=True)
    assert report.results[0].status == "done" and Image.open(theirs).size == (48, 40)


def test_files_another_run_finished_are_not_upscaled_again(tmp_path):
    """Two runs into one folder share the work: a file whose output appeared since the plan
    is skipped before it is read."""
    for name in "abc":
        _save(tmp_path / "in" / f"{name}.png")
    out = tmp_path / "out"

    def other_run(n):
        if n == 1:
            out.mkdir(exist_ok=True)
            (out / "c_x4.png").write_bytes(b"theirs")

    report, pipe = _run(tmp_path, [tmp_path / "in"], pipe=FakePipe(on_call=other_run), output=out, io_threads=True)
    assert [(r.item.path.name, r.status) for r in report.results] == [("a.png", "done"), ("b.png", "done"), ("c.png", "skipped")]
    assert len(pipe.calls) == 2 and (out / "c_x4.png").read_bytes() == b"theirs"
    assert report.results[2].reason == SKIP_EXISTS and "another run" in report.results[2].message


def test_atomic_path_without_replace_never_replaces(tmp_path, monkeypatch):
    from sinsr_cli.files import OutputExists, atomic_path

    target = tmp_path / "f.txt"
    with atomic_path(target, replace=False) as tmp:
        tmp.write_text("first")
    with pytest.raises(OutputExists):
        with atomic_path(target, replace=False) as tmp:
            tmp.write_text("second")
    assert target.read_text() == "first" and sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]

    def no_links(src, dst):
        raise PermissionError(1, "Operation not permitted")  # FAT, some network shares

    monkeypatch.setattr("os.link", no_links)
    with pytest.raises(OutputExists):
        with atomic_path(target, replace=False) as tmp:
            tmp.write_text("third")
    with atomic_path(tmp_path / "g.txt", replace=False) as tmp:
        tmp.write_text("fourth")
    assert target.read_text() == "first" and (tmp_path / "g.txt").read_text() == "fourth"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt", "g.txt"]


def test_two_inputs_one_output_is_refused(tmp_path):
    _save(tmp_path / "in" / "a.png")
    _save(tmp_path / "in" / "a.webp", format="WEBP")
    report, _ = _run(tmp_path, [tmp_path / "in"], output=tmp_path / "out", format="png")
    statuses = sorted(r.status for r in report.results)
    assert statuses == ["done", "failed"]
    assert "also the output of" in report.failed[0].message


def test_output_dir_inside_input_dir_is_not_reprocessed(tmp_path):
    _save(tmp_path / "a.png")
    _save(tmp_path / "results" / "a_x4.png")  # a previous run's output
    report, pipe = _run(tmp_path, [tmp_path], output=tmp_path / "results", overwrite=True)
    by_name = {r.item.path.name: r.status for r in report.results}
    assert by_name == {"a.png": "done", "a_x4.png": "skipped"}
    assert len(pipe.calls) == 1


def test_rejected_files_fail_or_skip(tmp_path):
    d = tmp_path / "in"
    _save(d / "good.png")
    (d / "notes.txt").write_text("hello")
    (d / "empty.png").write_bytes(b"")
    (d / "bad.jpg").write_bytes(b"this is not a jpeg at all")
    report, _ = _run(tmp_path, [d, tmp_path / "missing.png"], output=tmp_path / "out")
    by_name = {r.item.path.name: r for r in report.results}
    assert by_name["good.png"].status == "done"
    assert by_name["notes.txt"].status == "skipped" and "not an image" in by_name["notes.txt"].message
    for name, reason in [("empty.png", "empty"), ("bad.jpg", "not an image"), ("missing.png", "no such file")]:
        r = by_name[name]
        assert r.status == "failed" and reason in r.message and name in r.message, r.message


def test_a_folder_link_met_while_walking_is_skipped_even_when_it_leads_to_an_input(tmp_path):
    """``photos/sub/up -> ..`` resolves to the folder given, but the link was met while walking,
    not named: a skip with a note, so the run (and every rerun) succeeds. The same for a link in
    one input folder to another input folder."""
    _save(tmp_path / "photos" / "sub" / "a.png")
    _save(tmp_path / "other" / "b.png")
    (tmp_path / "photos" / "sub" / "up").symlink_to("..")
    (tmp_path / "photos" / "to_other").symlink_to(tmp_path / "other")
    for _ in range(2):  # the run, then the rerun of the finished batch
        report, _ = _run(tmp_path, [tmp_path / "photos", tmp_path / "other"], output=tmp_path / "out")
        assert not report.failed
        by_name = {r.item.path.name: r for r in report.results}
        assert by_name["up"].status == by_name["to_other"].status == "skipped"
        assert "not followed" in by_name["up"].message
    assert (tmp_path / "out" / "sub" / "a_x4.png").is_file() and (tmp_path / "out" / "b_x4.png").is_file()


def test_explicit_non_image_fails(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    report, _ = _run(tmp_path, [tmp_path / "notes.txt"])
    assert report.results[0].status == "failed" and "not an image" in report.results[0].message


def test_single_file_to_exact_output_file(tmp_path):
    _save(tmp_path / "a.png", size=(10, 6))
    report, _ = _run(tmp_path, [tmp_path / "a.png"], output=tmp_path / "result.webp", scale=1.5)
    assert report.results[0].status == "done"
    im = Image.open(tmp_path / "result.webp")
    assert im.format == "WEBP" and im.size == (15, 9)


def test_an_output_too_large_for_its_format_fails_before_the_model(tmp_path):
    """A 4100 px wide WebP at x4 is 16400 px: more than WebP stores, known from the header, so the
    item fails in planning (naming the limit) and the batch goes on; PNG has no such limit."""
    _save(tmp_path / "in" / "pano.webp", size=(4100, 2), format="WEBP", lossless=True)
    _save(tmp_path / "in" / "small.webp", size=(40, 2), format="WEBP", lossless=True)
    report, pipe = _run(tmp_path, [tmp_path / "in"], output=tmp_path / "out")
    by_name = {r.item.path.name: r for r in report.results}
    pano = by_name["pano.webp"]
    assert pano.status == "failed" and pano.error.setting == "format"
    assert pano.message == (
        f"{tmp_path / 'in' / 'pano.webp'}: the output {tmp_path / 'out' / 'pano_x4.webp'} would be "
        "16400x8 pixels, and WEBP stores at most 16383 pixels a side"
    )
    assert by_name["small.webp"].status == "done" and len(pipe.calls) == 1  # the model never saw pano
    report, pipe = _run(tmp_path, [tmp_path / "in" / "pano.webp"], output=tmp_path / "out", format="png")
    assert report.results[0].status == "done" and Image.open(tmp_path / "out" / "pano_x4.png").size == (16400, 8)


def test_a_jpeg_past_65500_pixels_fails_in_planning_and_in_the_writer(tmp_path):
    _save(tmp_path / "strip.png", size=(500, 1))
    report, pipe = _run(tmp_path, [tmp_path / "strip.png"], output=tmp_path / "wide.jpg", scale=140)
    (r,) = report.results
    assert r.status == "failed" and "70000x140 pixels, and JPEG stores at most 65500 pixels a side" in r.message
    assert not pipe.calls and not (tmp_path / "wide.jpg").exists()
    with pytest.raises(imageio.ImageWriteError, match="JPEG stores at most 65500 pixels a side") as e:
        imageio.write_image(tmp_path / "w.jpg", np.zeros((1, 65501, 3), np.float32))  # the library's own callers
    assert e.value.setting == "format" and not list(tmp_path.glob("*w.jpg*"))
    assert imageio.size_refusal(imageio.format_named("jpg"), 65500, 65500) is None


# --------------------------------------------------------------------------- failures and the run


def test_bad_files_fail_and_the_batch_goes_on(tmp_path):
    d = tmp_path / "in"
    good = _save(d / "a_good.png")
    png = good.read_bytes()
    (d / "b_truncated.png").write_bytes(png[: len(png) // 2])
    (d / "c_text.png").write_text("not an image")  # an image name: an error, not a skip
    _save(d / "d_big.png", size=(300, 300))
    _save(d / "e_good.png")
    rec = Recorder()
    report, pipe = _run(tmp_path, [d], output=tmp_path / "out", observer=rec, max_pixels=200 * 200)
    by_name = {r.item.path.name: r for r in report.results}
    assert by_name["a_good.png"].status == by_name["e_good.png"].status == "done"
    assert "truncated" in by_name["b_truncated.png"].message
    assert by_name["c_text.png"].status == "failed" and "not an image" in by_name["c_text.png"].message
    big = by_name["d_big.png"]
    assert "exceeds the limit" in big.message and big.error.setting == "max_pixels"  # the CLI names the flag
    for r in report.failed:
        assert "\n" not in r.message and str(r.item.path) in r.message
    assert len(pipe.calls) == 2
    assert ("finished", "e_good.png", "done") in rec.events
    assert not _leftovers(tmp_path)


def test_disk_full_leaves_no_partial_file(tmp_path, disk_full_once):
    _save(tmp_path / "in" / "a.png")
    _save(tmp_path / "in" / "b.png")
    out = tmp_path / "out"
    report, _ = _run(tmp_path, [tmp_path / "in"], output=out)
    a, b = report.results
    assert a.status == "failed" and "disk full" in a.message and "a_x4.png" in a.message
    assert b.status == "done"
    assert sorted(p.name for p in out.iterdir()) == ["b_x4.png"]  # no partial a_x4.png, no temp file


def test_options_plan_tiles_as_the_cli_by_default(tmp_path, monkeypatch):
    """``UpscaleOptions()`` means ``--tile auto`` (the CLI's default): each image is planned by
    the cost model; ``tile=0`` runs it whole without planning."""
    import sinsr_cli.engine as engine

    planned = []
    real = engine.auto_plan

    def recording(pipe, height, width, **kw):
        planned.append((height, width))
        return real(pipe, height, width, **kw)

    monkeypatch.setattr(engine, "auto_plan", recording)
    assert UpscaleOptions().tile is None
    _save(tmp_path / "in" / "a.png", size=(14, 10))
    report, _ = _run(tmp_path, [tmp_path / "in"], output=tmp_path / "auto")
    assert [r.status for r in report.results] == ["done"] and planned == [(10, 14)]
    report, _ = _run(tmp_path, [tmp_path / "in"], output=tmp_path / "whole", tile=0)
    assert [r.status for r in report.results] == ["done"] and planned == [(10, 14)]


def test_out_of_memory_message_suggests_a_tile(tmp_path):
    _save(tmp_path / "a.png")
    pipe = FakePipe(raise_on={1: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")})
    report, _ = _run(tmp_path, [tmp_path / "a.png"], pipe=pipe)
    (r,) = report.results
    assert r.status == "failed" and "out of cpu memory" in r.message and r.setting == "tile"  # the CLI names the flag
    assert "--" not in r.message


def test_unexpected_error_is_one_line_with_traceback_kept(tmp_path):
    _save(tmp_path / "a.png")
    _save(tmp_path / "b.png")
    pipe = FakePipe(raise_on={1: RuntimeError("boom\nsecond line")})
    report, _ = _run(tmp_path, [tmp_path], pipe=pipe)
    a, b = report.results
    assert a.status == "failed" and a.message.endswith("RuntimeError: boom second line")
    assert isinstance(a.error, RuntimeError) and b.status == "done"


def test_failed_file_frees_its_tensors_before_the_next_file(tmp_path):
    """The error is kept as text and a frame-less exception: the failing call's tensors (on a
    GPU, the gigabytes an out-of-memory file held) are freed before the next file starts."""
    _save(tmp_path / "a.png")
    _save(tmp_path / "b.png")
    refs: list = []
    alive_at_next_file: list[bool] = []

    def on_call(n: int) -> None:
        if n == 1:
            held = torch.zeros(1 << 16)  # stands for the activations of the failed file
            refs.append(weakref.ref(held))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        alive_at_next_file.append(refs[0]() is not None)

    report, _ = _run(tmp_path, [tmp_path], pipe=FakePipe(on_call=on_call))
    a, b = report.results
    assert a.status == "failed" and b.status == "done"
    assert alive_at_next_file == [False] and refs[0]() is None
    assert a.error is not None and a.error.__traceback__ is None
    assert a.traceback.startswith("Traceback") and "on_call" in a.traceback and "OutOfMemoryError" in a.traceback


def test_stop_event_ends_after_current_file(tmp_path):
    for n in "abcd":
        _save(tmp_path / f"{n}.png")
    stop = threading.Event()
    pipe = FakePipe(on_call=lambda n: stop.set() if n == 2 else None)
    report, _ = _run(tmp_path, [tmp_path], pipe=pipe, stop=stop)
    assert [r.status for r in report.results] == ["done", "done", "cancelled", "cancelled"]
    assert report.interrupted and (tmp_path / "b_x4.png").is_file() and not (tmp_path / "c_x4.png").exists()


def test_keyboard_interrupt_abandons_current_file(tmp_path):
    for n in "abc":
        _save(tmp_path / f"{n}.png")
    pipe = FakePipe(raise_on={2: KeyboardInterrupt()})
    report, _ = _run(tmp_path, [tmp_path], pipe=pipe)
    assert [r.status for r in report.results] == ["done", "cancelled", "cancelled"]
    assert report.interrupted and not (tmp_path / "b_x4.png").exists() and not _leftovers(tmp_path)


def test_interrupt_during_write_leaves_nothing(tmp_path, monkeypatch):
    _save(tmp_path / "a.png")

    def encode(f, *args, **kwargs):
        f.write(b"half an image")
        raise KeyboardInterrupt

    monkeypatch.setattr(imageio.write, "_encode_pillow", encode)
    report, _ = _run(tmp_path, [tmp_path / "a.png"])
    assert report.interrupted and report.results[0].status == "cancelled"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_events_and_seed_shared_by_files(tmp_path):
    _save(tmp_path / "a.png")
    _save(tmp_path / "b.png")
    (tmp_path / "c.txt").write_text("x")
    rec = Recorder()
    report, pipe = _run(tmp_path, [tmp_path], observer=rec)
    kinds = [e[0] for e in rec.events]
    assert kinds[0] == "start" and rec.events[0] == ("start", 2)
    assert kinds.count("file") == 2 and kinds.count("finished") == 3 and "tiles" in kinds
    assert {c["seed"] for c in pipe.calls} == {report.seed} == {0}


def test_jpeg_output_drops_alpha_with_a_warning(tmp_path):
    p = tmp_path / "a.png"
    Image.new("RGBA", (6, 6), (10, 20, 30, 128)).save(p)
    rec = Recorder()
    report, _ = _run(tmp_path, [p], observer=rec, format="jpg")
    assert report.results[0].status == "done" and Image.open(tmp_path / "a_x4.jpg").mode == "RGB"
    assert any("JPEG has no alpha" in w for w in rec.warnings())


def test_an_animated_input_warns_that_only_its_first_frame_is_upscaled(tmp_path):
    frames = [Image.new("RGB", (6, 6), (40 * k, 20, 30)) for k in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "still.gif")
    rec = Recorder()
    report, _ = _run(tmp_path, [tmp_path], observer=rec, output=tmp_path / "out")
    assert [r.status for r in report.results] == ["done", "done"]
    by_name = {r.item.path.name: r.warnings for r in report.results}
    assert by_name == {"anim.gif": [f"{tmp_path / 'anim.gif'}: 3 frames (animated or multi-page); only the first is upscaled"],
                       "still.gif": []}


def test_run_without_pending_needs_no_pipeline(tmp_path):
    (tmp_path / "x.txt").write_text("x")
    options = UpscaleOptions()
    items, rejected = collect_inputs([tmp_path])
    report = run_batch(None, plan_jobs(items, rejected, options), options)
    assert [r.status for r in report.results] == ["skipped"]


def test_result_types():
    r = ItemResult(InputItem(Path("a.png"), Path("a.png")), "done")
    assert r.warnings == [] and isinstance(Job(r.item, None).status, str)


# --------------------------------------------------------------------------- the real tiny model


def test_real_tiny_pipeline_with_alpha(tiny_pipeline, tmp_path):
    rgba = np.random.default_rng(0).integers(0, 256, (20, 18, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    src = read_image(tmp_path / "a.png")
    color, alpha = upscale_image(tiny_pipeline, src, UpscaleOptions(seed=0, tile=0, scale=3))
    assert color.shape == (60, 54, 3) and alpha.shape == (60, 54)
    assert np.isfinite(color).all() and 0 <= color.min() and color.max() <= 1
    assert float(color.std()) > 0.01  # not a flat (black) image


def test_writes_and_reads_overlap_the_model(tmp_path, monkeypatch):
    """File a's output is written while the model runs on b, and c is decoded meanwhile; the
    results and file_finished calls stay in job order."""
    import sinsr_cli.batch as batch

    for n in "abc":
        _save(tmp_path / f"{n}.png")
    model_on_b = threading.Event()
    real_write, real_read = batch.write_image, batch.read_image
    overlapped: list[bool] = []
    threads: dict[str, str] = {}

    def write_image(target, *a, **k):
        threads["write " + target.name] = threading.current_thread().name
        if target.name == "a_x4.png":
            overlapped.append(model_on_b.wait(timeout=10))  # held until the model runs on b
        return real_write(target, *a, **k)

    def read_image(path, **k):
        threads["read " + path.name] = threading.current_thread().name
        return real_read(path, **k)

    monkeypatch.setattr(batch, "write_image", write_image)
    monkeypatch.setattr(batch, "read_image", read_image)
    rec = Recorder()
    pipe = FakePipe(on_call=lambda n: model_on_b.set() if n == 2 else None)
    report, _ = _run(tmp_path, [tmp_path], pipe=pipe, observer=rec)
    assert overlapped == [True] and [r.status for r in report.results] == ["done"] * 3
    assert [e[1] for e in rec.events if e[0] == "finished"] == ["a.png", "b.png", "c.png"]
    assert threads.pop("read a.png") == "MainThread"  # the first file has nothing to overlap
    assert sorted(threads) == ["read b.png", "read c.png", "write a_x4.png", "write b_x4.png", "write c_x4.png"]
    assert all(name.startswith("sinsr-io") for name in threads.values())
    assert all((tmp_path / f"{n}_x4.png").is_file() for n in "abc")


def test_io_threads_off_runs_everything_inline(tmp_path, monkeypatch):
    import sinsr_cli.batch as batch

    for n in "ab":
        _save(tmp_path / f"{n}.png")
    names: set[str] = set()
    real = batch.write_image
    monkeypatch.setattr(batch, "write_image", lambda *a, **k: names.add(threading.current_thread().name) or real(*a, **k))
    report, _ = _run(tmp_path, [tmp_path], io_threads=False)
    assert [r.status for r in report.results] == ["done", "done"] and names == {"MainThread"}


def test_output_size_refuses_an_absurd_scale():
    from sinsr_cli.postprocess import MAX_OUTPUT_PIXELS

    assert output_size(24, 16, 4.0) == (96, 64)
    with pytest.raises(SettingError, match=r"scale 1e\+09 would make a 24x16 image 24000000000x16000000000 pixels"):
        output_size(24, 16, 1e9)
    side = int(MAX_OUTPUT_PIXELS**0.5)
    assert output_size(side, side, 1.0) == (side, side)  # the limit itself is allowed
