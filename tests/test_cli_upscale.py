"""`sinsr upscale` end to end: the real Typer app, real files, a tiny checkpoint or a stand-in model.

The tests marked ``real`` load the tiny checkpoints through ``--model PATH --vq PATH`` and run
crops of ../shared/data through the whole model; the rest replace ``load_pipeline`` by
``FakePipe`` (pixel repetition) so flag handling, metadata and failures are checked quickly.
"""

from __future__ import annotations

import io
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms
from typer.testing import CliRunner

from sinsr_cli.cli.app import app
from sinsr_cli.cli.common import parse_tile
from test_batch import FakePipe, _save

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["upscale", *map(str, args)])


def err_lines(result, prefix="error:"):
    return [line for line in result.stderr.splitlines() if line.startswith(prefix)]


def written(result) -> list[Path]:
    return [Path(line) for line in result.stdout.splitlines() if line.strip()]


@pytest.fixture
def fake_model(monkeypatch):
    """Replace ``load_pipeline`` by a FakePipe that returns NaN in fp16; yields the pipes made."""
    made: list[FakePipe] = []

    def load(model="sinsr-v1", vq=None, *, device="auto", dtype="auto", config=None, offline=None):
        from sinsr_cli.devices import resolve_device, resolve_dtype

        dev = resolve_device(device)
        pipe = FakePipe(resolve_dtype(dtype, dev), nan_dtypes=(torch.float16,))
        made.append(pipe)
        return pipe

    monkeypatch.setattr("sinsr_cli.pipeline.load_pipeline", load)
    return made


def _crop(src: Path, box, dst: Path, mode: str | None = None, **save) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    im = Image.open(src).crop(box)
    if mode:
        im = im.convert(mode)
    im.save(dst, **save)
    return dst


def _bomb(path: Path, w: int = 100_000, h: int = 100_000) -> Path:
    """A small valid PNG whose header declares ``w`` x ``h`` pixels."""
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = struct.pack(">II", w, h) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob(".*.tmp")]


# --------------------------------------------------------------------------- the real tiny model


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, data_dir, tiny_checkpoints):
    """One CLI run over data crops plus a generated bad-input corpus, with the tiny checkpoint."""
    unet, vq = tiny_checkpoints
    d = tmp_path_factory.mktemp("real")
    inp, out = d / "in", d / "out"
    _crop(data_dir / "set5" / "lr" / "bird.png", (20, 20, 44, 40), inp / "nested" / "deeper" / "bird.png")
    rgba = Image.open(data_dir / "set5" / "lr" / "baby.png").crop((40, 40, 62, 58)).convert("RGBA")
    a = np.zeros((18, 22), np.uint8)
    a[:, 11:] = 255
    rgba.putalpha(Image.fromarray(a))
    rgba.save(inp / "photo.jpeg", format="PNG")  # a PNG named .jpeg, with transparency
    good = (inp / "nested" / "deeper" / "bird.png").read_bytes()
    (inp / "zero.png").write_bytes(b"")
    (inp / "truncated.png").write_bytes(good[: len(good) // 2])
    (inp / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(64))
    _save(inp / "one_pixel.png", size=(1, 1))  # upscaled like any image (replicate padding)
    _bomb(inp / "bomb.png")
    (inp / "notes.txt").write_text("not an image")
    result = invoke(inp, "-o", out, "--model", unet, "--vq", vq, "--seed", "0", "--device", "cpu")
    return result, inp, out


@pytest.mark.slow
def test_real_run_outputs(real_run):
    result, inp, out = real_run
    assert result.exit_code == 1, result.output
    bird = out / "nested" / "deeper" / "bird_x4.png"
    photo = out / "photo_x4.png"  # named by content: PNG
    assert sorted(written(result)) == sorted([bird, photo, out / "one_pixel_x4.png"])
    assert Image.open(out / "one_pixel_x4.png").size == (4, 4)
    im = Image.open(bird)
    assert im.size == (96, 80) and im.mode == "RGB"
    arr = np.asarray(im, dtype=np.float32)
    assert arr.std() > 2 and 5 < arr.mean() < 250  # a picture, not black or flat
    im = Image.open(photo)
    assert im.format == "PNG" and im.mode == "RGBA" and im.size == (88, 72)
    alpha = np.asarray(im)[..., 3]
    assert alpha[:, :40].max() < 10 and alpha[:, 48:].min() > 245  # transparency kept
    assert _no_temp_files(out)


@pytest.mark.slow
def test_real_run_bad_inputs_one_line_each(real_run):
    result, inp, out = real_run
    errors = err_lines(result)
    expected = {
        "zero.png": "empty", "truncated.png": "truncated", "corrupt.jpg": "", "bomb.png": "--max-pixels",
    }
    for name, reason in expected.items():
        mine = [e for e in errors if str(inp / name) in e]
        assert len(mine) == 1 and reason in mine[0], (name, errors)
    assert len(errors) == len(expected)
    assert f"skipped: {inp / 'notes.txt'} (not an image)" in result.stderr
    assert "4 input(s) failed" in result.stderr  # listed again at the end
    assert not (out / "zero_x4.png").exists() and not (out / "notes_x4.png").exists()


@pytest.mark.slow
def test_real_single_file_scale_and_format(tmp_path, data_dir, tiny_checkpoints):
    unet, vq = tiny_checkpoints
    src = _crop(data_dir / "set5" / "lr" / "head.png", (10, 10, 31, 27), tmp_path / "head.png", mode="L")
    target = tmp_path / "result.jpg"
    result = invoke(src, "-o", target, "--scale", "2.5", "--model", unet, "--vq", vq, "--seed", "1",
                    "--steps", "1", "--tile", "0", "--quality", "90")
    assert result.exit_code == 0, result.output
    im = Image.open(target)
    assert im.format == "JPEG" and im.mode == "L" and im.size == (round(2.5 * 21), round(2.5 * 17))
    assert written(result) == [target]


def test_missing_checkpoint_is_a_usage_error(tmp_path):
    _save(tmp_path / "a.png")
    result = invoke(tmp_path / "a.png", "--model", tmp_path / "nope.safetensors")
    assert result.exit_code == 2
    assert err_lines(result) and "nope.safetensors" in err_lines(result)[0]
    assert len(result.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- usage


def test_help_lists_the_flags():
    result = runner.invoke(app, ["upscale", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for flag in ("--output", "--scale", "--suffix", "--format", "--quality", "--model", "--vq", "--steps",
                 "--sampler", "--seed", "--device", "--dtype", "--tile", "--tile-overlap", "--batch",
                 "--overwrite", "--strip-metadata", "--max-pixels", "--verbose"):
        assert flag in result.stdout


def test_parse_tile():
    assert parse_tile("auto") is None and parse_tile("0") == 0 and parse_tile("256") == 256
    for bad in ("abc", "-5", "8"):
        with pytest.raises(ValueError):
            parse_tile(bad)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--tile", "big"], "--tile"), (["--scale", "0"], "--scale"), (["--format", "gif"], "--format"),
        (["--skip-existing", "--overwrite"], "together"), (["--sampler", "euler"], "--sampler"),
        (["--steps", "0"], "--steps"), (["--quality", "101"], "--quality"), (["--device", "tpu"], "device"),
        (["--dtype", "fp8"], "dtype"), (["--alpha", "blur"], "--alpha"),
    ],
)
def test_usage_errors_exit_2_with_one_line(tmp_path, fake_model, args, needle):
    _save(tmp_path / "a.png")
    result = invoke(tmp_path / "a.png", *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0]
    assert not (tmp_path / "a_x4.png").exists()


def test_output_dir_that_is_a_file_is_a_usage_error(tmp_path, fake_model):
    _save(tmp_path / "in" / "a.png")
    _save(tmp_path / "in" / "b.png")
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    for out in (blocker, blocker / "sub"):
        result = invoke(tmp_path / "in", "-o", out)
        assert result.exit_code == 2 and len(err_lines(result)) == 1 and str(out) in err_lines(result)[0]
    assert not fake_model  # the model was never loaded


def test_one_input_whose_output_cannot_be_written_is_a_usage_error_before_loading(tmp_path, fake_model):
    _save(tmp_path / "a.png")
    results = tmp_path / "results"
    results.write_text("notes")
    expected = {
        results: f"error: {results}: --output exists and is not a directory (a name without .png, .jpg, .webp or .tif is a folder)",
        results / "x.png": f"error: {results / 'x.png'}: cannot write the output (a parent path is a file, not a directory)",
        Path("/proc/x.png"): "error: /proc/x.png: cannot write the output (",  # root passes the permission check
    }
    for out, line in expected.items():
        if not out.parent.exists():
            continue
        result = invoke(tmp_path / "a.png", "-o", out)
        assert result.exit_code == 2, result.output
        (got,) = err_lines(result)
        assert got.startswith(line), got
    assert not fake_model and results.read_text() == "notes"  # never loaded; the file untouched


def test_unwritable_reason_probes_by_making_a_file(tmp_path):
    from sinsr_cli.files import unwritable_reason

    assert unwritable_reason(tmp_path / "new" / "x.png", probe=True) is None
    assert list(tmp_path.iterdir()) == []  # the probe is removed, no folder made
    if Path("/proc").is_dir():
        assert unwritable_reason("/proc/x.png", probe=True) is not None


def test_output_file_name_for_many_inputs_is_a_usage_error(tmp_path, fake_model):
    _save(tmp_path / "in" / "a.png")
    result = invoke(tmp_path / "in", "-o", tmp_path / "out.png")
    assert result.exit_code == 2 and "looks like a file name" in result.stderr


def test_output_file_against_format_is_a_usage_error_before_loading(tmp_path, fake_model):
    _save(tmp_path / "a.png")
    result = invoke(tmp_path / "a.png", "-o", tmp_path / "x.jpg", "-f", "png")
    assert result.exit_code == 2 and err_lines(result) == [f"error: {tmp_path / 'x.jpg'}: the extension of --output does not match --format png"]
    assert not fake_model and not (tmp_path / "x.jpg").exists()  # no model loaded
    assert invoke(tmp_path / "a.png", "-o", tmp_path / "x.jpg", "-f", "jpeg").exit_code == 0


def test_an_output_too_large_for_webp_fails_up_front_with_the_flag_to_use(tmp_path, fake_model):
    _save(tmp_path / "in" / "pano.webp", size=(4100, 2), format="WEBP", lossless=True)
    _save(tmp_path / "in" / "b.png")
    result = invoke(tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code == 1, result.output
    (line,) = err_lines(result)
    assert "WEBP stores at most 16383 pixels a side; use -f png or -f tif" in line
    assert len(fake_model[0].calls) == 1 and written(result) == [tmp_path / "out" / "b_x4.png"]


def test_the_format_hint_names_the_formats_without_a_size_limit():
    from sinsr_cli.cli.upscale_render import _SETTING_HINTS
    from sinsr_cli.imageio.formats import FORMATS

    unlimited = [f.extension.lstrip(".") for f in FORMATS.values() if f.max_side is None]
    assert _SETTING_HINTS["format"] == "use " + " or ".join(f"-f {name}" for name in unlimited)


def test_a_link_looping_back_to_the_input_folder_is_a_skip_and_reruns_exit_0(tmp_path, fake_model):
    _save(tmp_path / "photos" / "sub" / "a.png")
    (tmp_path / "photos" / "sub" / "up").symlink_to("..")
    for _ in range(2):
        result = invoke(tmp_path / "photos", "-o", tmp_path / "out")
        assert result.exit_code == 0, result.output
        assert not err_lines(result)
        assert f"skipped: {tmp_path / 'photos' / 'sub' / 'up'} (a link to a folder: not followed" in result.stderr
    assert (tmp_path / "out" / "sub" / "a_x4.png").is_file()


def test_a_directory_at_the_output_path_is_an_error_not_a_kept_output(tmp_path, fake_model):
    import json

    _save(tmp_path / "a.png")
    (tmp_path / "out" / "a_x4.png").mkdir(parents=True)
    result = invoke(tmp_path / "a.png", "-o", tmp_path / "out", "--json")
    assert result.exit_code == 1, result.output
    assert err_lines(result) == [f"error: {tmp_path / 'a.png'}: a directory is in the way of the output {tmp_path / 'out' / 'a_x4.png'}; move or rename it"]
    (entry,) = json.loads(result.stdout)["files"]
    assert entry["status"] == "failed" and not fake_model  # found in planning: no model loaded
    assert (tmp_path / "out" / "a_x4.png").is_dir()


def test_nothing_found(tmp_path, fake_model):
    (tmp_path / "empty").mkdir()
    result = invoke(tmp_path / "empty")
    assert result.exit_code == 1 and "no images found" in result.stderr


def test_missing_input_fails_with_exit_1(tmp_path, fake_model):
    _save(tmp_path / "a.png")
    result = invoke(tmp_path / "a.png", tmp_path / "missing.png")
    assert result.exit_code == 1
    (line,) = err_lines(result)
    assert "missing.png" in line and "no such file" in line
    assert (tmp_path / "a_x4.png").is_file()


# --------------------------------------------------------------------------- outputs


def test_folder_tree_mirrored_and_paths_on_stdout(tmp_path, fake_model):
    _save(tmp_path / "in" / "a.png")
    _save(tmp_path / "in" / "x" / "y" / "b.jpg", format="JPEG")
    _save(tmp_path / "in" / "x" / "c.webp", format="WEBP")
    result = invoke(tmp_path / "in", "-o", tmp_path / "out", "--seed", "5")
    assert result.exit_code == 0, result.output
    expect = [tmp_path / "out" / p for p in ("a_x4.png", "x/y/b_x4.jpg", "x/c_x4.webp")]
    assert sorted(written(result)) == sorted(expect) and all(p.is_file() for p in expect)
    assert "done" in result.stderr and "skipped" in result.stderr  # the summary table
    assert {c["seed"] for c in fake_model[0].calls} == {5}


def test_json_always_carries_the_exit_code(tmp_path, fake_model):
    """--json: the summary says how the command ends; an error before the run is JSON too, and
    a message is plain text (a path's "[red]" is not markup)."""
    import json

    _save(tmp_path / "in" / "a.png")
    (tmp_path / "in" / "b.png").write_bytes(b"not an image")
    result = invoke(tmp_path / "in", "-o", tmp_path / "out", "--json")
    doc = json.loads(result.stdout)
    assert result.exit_code == 1 and doc["exit_code"] == 1 and doc["counts"]["failed"] == 1
    assert json.loads(invoke(tmp_path / "in" / "a.png", "-o", tmp_path / "o2.png", "--json").stdout)["exit_code"] == 0
    empty = tmp_path / "[red]empty"
    empty.mkdir()
    result = invoke(empty, "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"error": f"no images found in {empty}", "exit_code": 1}
    assert err_lines(result) == [f"error: no images found in {empty}"]
    result = invoke(tmp_path / "in", "--json", "--tile", "-5")
    assert result.exit_code == 2 and json.loads(result.stdout)["exit_code"] == 2
    assert json.loads(result.stdout)["error"] == err_lines(result)[0][len("error: "):]


@pytest.mark.parametrize(
    "bad, needle",
    [(["--scale", "abc"], "--scale"), (["--quality", "high"], "--quality"), (["--max-pixels", "1e6"], "--max-pixels"),
     (["--qualty", "90"], "Did you mean --quality?")],
)
def test_json_usage_errors_from_parsing_are_json_too(tmp_path, fake_model, bad, needle):
    """click's own usage errors (a value of the wrong type, an unknown option) print the same
    ``{"error", "exit_code"}`` as the command's, when --json is among the arguments."""
    import json

    _save(tmp_path / "a.png")
    result = invoke(tmp_path / "a.png", "--json", *bad)
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc == {"error": err_lines(result)[0][len("error: "):], "exit_code": 2} and needle in doc["error"]
    result = invoke(tmp_path / "a.png", *bad)  # without --json, stdout stays empty
    assert result.exit_code == 2 and result.stdout == ""
    result = invoke(*bad, "--", "--json")  # after --, "--json" is an input's name
    assert result.exit_code == 2 and result.stdout == ""
    result = runner.invoke(app, ["bench", "--json", str(tmp_path / "r.json"), "--bogus"])  # bench's --json is a file
    assert result.exit_code == 2 and result.stdout == ""


def test_odd_names_exact_on_stdout_escaped_on_stderr(tmp_path, fake_model):
    """Written paths on stdout are the file system's bytes (a script can open them); messages on
    stderr show an escape sequence or an undecodable byte as an escape, never raw."""
    _save(tmp_path / "in" / "e\x1b[31mred.png")
    _save(tmp_path / "in" / os.fsdecode(b"u\xff.png"))
    (tmp_path / "in" / "bad\x1b[1m.png").write_bytes(b"not an image")
    result = invoke(tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code == 1, result.output
    out = os.fsencode(tmp_path / "out")
    assert sorted(result.stdout_bytes.splitlines()) == [out + b"/e\x1b[31mred_x4.png", out + b"/u\xff_x4.png"]
    assert all(os.path.isfile(p) for p in result.stdout_bytes.splitlines())
    assert "\x1b" not in result.stderr
    assert err_lines(result) == [f"error: {tmp_path / 'in'}/bad\\x1b[1m.png: not an image (unrecognised file format)"]


def test_an_output_file_name_sinsr_cannot_write_is_a_usage_error(tmp_path, fake_model):
    """`-o out.bmp` names a file (it made a folder `out.bmp/` holding `a_x4.png`)."""
    _save(tmp_path / "a.png")
    for ext in (".bmp", ".gif", ".ppm"):
        result = invoke(tmp_path / "a.png", "-o", tmp_path / "o" / f"out{ext}")
        assert result.exit_code == 2 and err_lines(result) == [
            f"error: {tmp_path / 'o' / f'out{ext}'}: sinsr does not write {ext} files; use .png, .jpg, .webp or .tif"
        ]
    assert not (tmp_path / "o").exists() and not fake_model
    (tmp_path / "dir.bmp").mkdir()  # an existing folder of that name is a folder
    assert invoke(tmp_path / "a.png", "-o", tmp_path / "dir.bmp").exit_code == 0
    assert (tmp_path / "dir.bmp" / "a_x4.png").is_file()


def test_an_output_name_ending_in_a_slash_is_a_folder(tmp_path, fake_model):
    """`-o out.png/` is a folder whatever its name looks like (it wrote a file `out.png`)."""
    _save(tmp_path / "a.png")
    for name in ("out.png", "out.bmp"):
        result = invoke(tmp_path / "a.png", "-o", f"{tmp_path / name}/")
        assert result.exit_code == 0, result.stderr
        assert written(result) == [tmp_path / name / "a_x4.png"] and (tmp_path / name / "a_x4.png").is_file()
    (tmp_path / "in").mkdir()
    _save(tmp_path / "in" / "b.png")
    assert invoke(tmp_path / "in", "-o", f"{tmp_path / 'many.png'}/").exit_code == 0  # no "looks like a file"
    assert (tmp_path / "many.png" / "b_x4.png").is_file()
    result = invoke(tmp_path / "a.png", "-o", f"{tmp_path / 'a.png'}/")  # an existing file is not a folder
    assert result.exit_code == 2 and err_lines(result) == [
        f"error: {tmp_path / 'a.png'}: --output exists and is not a directory (a name ending in / is a folder)"
    ]


def test_the_header_says_untiled_where_the_tile_box_holds_the_image(tmp_path, tiny_checkpoints):
    """80 x 100 at `--tile 64`: the tile with its context is a 128 px box holding the image, so
    it runs whole (as `--tile 0`); the header said "tile 64". A larger image is tiled."""
    u, v = tiny_checkpoints
    _save(tmp_path / "a.png", size=(100, 80))
    result = invoke(tmp_path / "a.png", "-o", tmp_path / "o", "-m", u, "--vq", v, "--tile", "64")
    assert result.exit_code == 0 and ", untiled, seed" in result.stderr
    _save(tmp_path / "b.png", size=(200, 80))
    result = invoke(tmp_path / "b.png", "-o", tmp_path / "o", "-m", u, "--vq", v, "--tile", "64")
    assert result.exit_code == 0 and ", tile 64, seed" in result.stderr


def test_a_usage_error_is_one_even_when_every_output_exists(tmp_path, tiny_checkpoints):
    """`--steps` a model does not take is a usage error on a rerun with nothing left to do
    too; the check reads the preset without loading (or fetching) the model."""
    _save(tmp_path / "a.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a_x4.png").write_bytes(b"done before")
    result = invoke(tmp_path / "a.png", "-o", tmp_path / "out", "--steps", "4")  # sinsr-v1: never fetched
    assert result.exit_code == 2 and "sinsr-v1 is a one-step student: it takes exactly 1 step, not 4" in result.output
    unet, vq = tiny_checkpoints
    result = invoke(tmp_path / "a.png", "-o", tmp_path / "out", "-m", unet, "--vq", vq, "--steps", "99")
    assert result.exit_code == 2 and "--steps must be in 1..15" in result.output
    result = invoke(tmp_path / "a.png", "-o", tmp_path / "out", "-m", unet, "--vq", vq, "--steps", "2")
    assert result.exit_code == 0 and (tmp_path / "out" / "a_x4.png").read_bytes() == b"done before"


def test_no_recursive_and_globs(tmp_path, fake_model):
    _save(tmp_path / "in" / "a.png")
    _save(tmp_path / "in" / "b.jpg", format="JPEG")
    _save(tmp_path / "in" / "sub" / "c.png")
    result = invoke(tmp_path / "in", "-o", tmp_path / "o1", "--no-recursive")
    assert sorted(p.name for p in written(result)) == ["a_x4.png", "b_x4.jpg"]
    result = invoke(str(tmp_path / "in") + "/**/*.png", "-o", tmp_path / "o2")
    assert result.exit_code == 0, result.output
    assert sorted(written(result)) == [tmp_path / "o2" / "a_x4.png", tmp_path / "o2" / "sub" / "c_x4.png"]


def test_format_quality_suffix_and_scale(tmp_path, fake_model):
    _save(tmp_path / "a.png", size=(10, 7))
    result = invoke(tmp_path / "a.png", "-o", tmp_path / "out", "--format", "webp", "--quality", "80",
                    "--suffix", "-big", "--scale", "2.5")
    assert result.exit_code == 0, result.output
    im = Image.open(tmp_path / "out" / "a-big.webp")
    assert im.format == "WEBP" and im.size == (25, 18)


def test_default_suffix_follows_scale_next_to_input(tmp_path, fake_model):
    _save(tmp_path / "a.png", size=(10, 8))
    result = invoke(tmp_path / "a.png", "--scale", "2")
    assert result.exit_code == 0 and Image.open(tmp_path / "a_x2.png").size == (20, 16)


def test_never_overwrites_input_and_existing_outputs(tmp_path, fake_model):
    p = _save(tmp_path / "a.png")
    before = p.read_bytes()
    result = invoke(p, "--suffix", "")
    assert result.exit_code == 1 and "overwrite the input" in err_lines(result)[0]
    assert p.read_bytes() == before

    assert invoke(p).exit_code == 0
    first = (tmp_path / "a_x4.png").read_bytes()
    result = invoke(p)  # exists: kept, the input skipped
    assert result.exit_code == 0 and not err_lines(result) and "--overwrite replaces them" in result.stderr
    assert (tmp_path / "a_x4.png").read_bytes() == first
    result = invoke(p, "--skip-existing")  # the old spelling of the default still works
    assert result.exit_code == 0 and (tmp_path / "a_x4.png").read_bytes() == first
    (tmp_path / "a_x4.png").write_bytes(b"old")
    assert invoke(p, "--overwrite").exit_code == 0
    assert Image.open(tmp_path / "a_x4.png").size == (48, 40)


def test_rerun_of_a_finished_batch_exits_0_with_skips_counted(tmp_path, fake_model):
    """Issue 15.1: a rerun reports every existing output as a skip, in one line, and exits 0."""
    for name in ("a.png", "b.png", "sub/c.png"):
        _save(tmp_path / "in" / name)
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    first = invoke(tmp_path / "in", "-o", tmp_path / "out")
    assert first.exit_code == 0, first.output
    assert len(fake_model) == 1 and "3 of 4 file(s) to upscale" in first.stderr
    again = invoke(tmp_path / "in", "-o", tmp_path / "out")
    assert again.exit_code == 0, again.output
    assert len(fake_model) == 1  # nothing to do: the model is not even loaded
    assert not err_lines(again) and not written(again)
    assert "3 output(s) already exist and were kept; --overwrite replaces them" in again.stderr
    row = [line for line in again.stderr.splitlines() if line.strip().startswith("│") and "s │" in line]
    assert [c.strip() for c in row[-1].strip("│ ").split("│")][:4] == ["0", "4", "0", "0"]  # done skipped failed not-started
    assert "skipped: " + str(tmp_path / "in" / "notes.txt") + " (not an image)" in again.stderr
    assert again.stderr.count("skipped:") == 1  # existing outputs are counted, not listed
    loud = invoke(tmp_path / "in", "-o", tmp_path / "out", "--verbose")
    assert loud.exit_code == 0 and loud.stderr.count("(output exists:") == 3


def test_tile_steps_sampler_reach_the_pipeline(tmp_path, fake_model):
    _save(tmp_path / "big.png", size=(160, 200))
    result = invoke(tmp_path / "big.png", "--tile", "64", "--steps", "4", "--sampler", "deterministic", "--batch", "2")
    assert result.exit_code == 0, result.output
    calls = fake_model[0].calls  # 4 x 2 tiles of 64 px in 128 px boxes (32 px of context), two per call
    assert [c["shape"] for c in calls] == [(2, 3, 128, 128)] * 4
    assert {(c["steps"], c["sampler"]) for c in calls} == {(4, "deterministic")}
    _save(tmp_path / "a.png")
    result = invoke(tmp_path / "a.png")  # --tile auto by default: planned per image
    assert [c["shape"] for c in fake_model[1].calls] == [(1, 3, 10, 12)] and "untiled" in result.stderr  # small: the plan tiles nothing


# --------------------------------------------------------------------------- pixels and metadata


def test_exif_orientation_icc_and_strip(tmp_path, fake_model):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    exif[0x010F] = "sinsr-test-camera"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = tmp_path / "cam.jpg"
    Image.new("RGB", (20, 12), (200, 100, 50)).save(src, exif=exif, icc_profile=icc, quality=95)
    assert invoke(src, "-o", tmp_path / "keep").exit_code == 0
    im = Image.open(tmp_path / "keep" / "cam_x4.jpg")
    assert im.size == (48, 80)  # upright: 12x20 -> 48x80
    assert im.info.get("icc_profile") == icc
    ex = im.getexif()
    assert ex.get(0x010F) == "sinsr-test-camera" and ex.get(0x0112, 1) == 1
    assert invoke(src, "-o", tmp_path / "strip", "--strip-metadata").exit_code == 0
    im = Image.open(tmp_path / "strip" / "cam_x4.jpg")
    assert "icc_profile" not in im.info and not im.getexif().get(0x010F)


@pytest.mark.parametrize(
    "make, out_mode",
    [
        (lambda p: Image.fromarray(np.arange(48, dtype=np.uint16).reshape(6, 8) * 1000).save(p), ("I;16", "I")),
        (lambda p: Image.new("LA", (8, 6), (100, 50)).save(p), ("LA",)),
        (lambda p: Image.new("L", (8, 6), 77).save(p), ("L",)),
        (lambda p: _palette_with_transparency(p), ("RGBA",)),
    ],
    ids=["gray16", "LA", "L", "palette+trns"],
)
def test_modes_are_kept(tmp_path, fake_model, make, out_mode):
    make(tmp_path / "m.png")
    result = invoke(tmp_path / "m.png")
    assert result.exit_code == 0, result.output
    im = Image.open(tmp_path / "m_x4.png")
    assert im.mode in out_mode and im.size == (32, 24)


def _palette_with_transparency(p: Path) -> None:
    im = Image.new("P", (8, 6), 1)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.paste(0, (0, 0, 4, 6))
    im.save(p, transparency=0)


def test_cmyk_jpeg(tmp_path, fake_model):
    Image.new("CMYK", (8, 6), (0, 128, 255, 0)).save(tmp_path / "c.jpg")
    result = invoke(tmp_path / "c.jpg")
    assert result.exit_code == 0, result.output
    im = Image.open(tmp_path / "c_x4.jpg")
    assert im.mode == "RGB" and im.size == (32, 24)


def test_fp16_nan_retried_in_fp32_with_a_warning(tmp_path, fake_model):
    _save(tmp_path / "a.png")
    result = invoke(tmp_path / "a.png", "--dtype", "fp16")
    assert result.exit_code == 0, result.output
    (w,) = err_lines(result, "warning:")
    assert "fp16" in w and "fp32" in w and "a.png" in w
    arr = np.asarray(Image.open(tmp_path / "a_x4.png"))
    assert arr.mean() > 20  # the input was random noise: the output is not black
    assert fake_model[0].dtype == torch.float16


# --------------------------------------------------------------------------- failures


def test_bad_inputs_each_one_line_batch_goes_on(tmp_path, fake_model):
    d = tmp_path / "in"
    good = _save(d / "a.png").read_bytes()
    (d / "b.png").write_bytes(good[:40])
    (d / "c.jpeg").write_bytes(b"")
    (d / "d.png").write_text("a text file named .png")
    _bomb(d / "e.png", 30_000, 30_000)
    _save(d / "f.gif", format="GIF")  # a valid GIF: read (first frame), written as PNG
    _save(d / "g.png", size=(1, 1))  # any size is upscaled
    result = invoke(d, "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert len(err_lines(result)) == 4 and all(str(d) in line for line in err_lines(result))
    assert "d.png: not an image" in result.stderr
    assert [line for line in err_lines(result) if "e.png" in line][0].endswith("raise it with --max-pixels (0 = no limit)")
    assert sorted(p.name for p in written(result)) == ["a_x4.png", "f_x4.png", "g_x4.png"]
    # raising the decompression-bomb limit moves the error past the size check
    result = invoke(d / "e.png", "-o", tmp_path / "out2", "--max-pixels", str(10**9))
    assert result.exit_code == 1 and "--max-pixels" not in result.stderr


def test_library_settings_are_named_as_flags(tmp_path, fake_model):
    """imageio says which setting would help (``SinsrIOError.setting``); the CLI names the flag."""
    ex = Image.Exif()
    ex[0x010E] = "x" * 70_000  # fine in a PNG, too big for one JPEG segment
    src = _save(tmp_path / "big_exif.png", exif=ex.tobytes())
    result = invoke(src, "-f", "jpg")
    assert result.exit_code == 1
    assert err_lines(result)[0].endswith("too large for JPEG (max 65533); write it without metadata; use --strip-metadata")
    assert invoke(src, "-f", "jpg", "--strip-metadata").exit_code == 0


def test_one_input_is_sniffed_once_read_once_and_its_format_decided_once(tmp_path, fake_model, opens, monkeypatch):
    """`sinsr upscale photo.jpg`: discovery opens the file once for its header (content format and
    size travel on the InputItem, so output planning opens nothing), reading opens it once more
    for the pixels, and the output format is chosen once, in output planning; the writer only
    reads the target's extension."""
    from sinsr_cli.imageio import discover, write

    photo = _save(tmp_path / "photo.jpg", format="PNG")  # a PNG named .jpg: named by content
    made = opens(photo)
    chosen, parsed = [], []

    def choose(*args, **kwargs):
        chosen.append(real_choose(*args, **kwargs))
        return chosen[-1]

    real_choose, real_parse = discover.choose_output_format, write.parse_format
    monkeypatch.setattr(discover, "choose_output_format", choose)
    monkeypatch.setattr(write, "parse_format", lambda name: parsed.append(name) or real_parse(name))
    result = invoke(photo)
    assert result.exit_code == 0, result.output
    assert written(result) == [tmp_path / "photo_x4.png"] and Image.open(tmp_path / "photo_x4.png").format == "PNG"
    assert opens(photo) - made == 2  # the header at discovery, the pixels at reading
    assert [f.name for f in chosen] == ["PNG"] and parsed == []


def test_verbose_shows_traceback(tmp_path, fake_model):
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    quiet = invoke(tmp_path / "b.png")
    loud = invoke(tmp_path / "b.png", "--verbose")
    assert quiet.exit_code == loud.exit_code == 1
    assert "Traceback" not in quiet.stderr and "Traceback" in loud.stderr


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file(tmp_path, fake_model):
    p = _save(tmp_path / "a.png")
    p.chmod(0)
    try:
        result = invoke(p)
    finally:
        p.chmod(0o644)
    assert result.exit_code == 1 and "permission denied" in err_lines(result)[0]


def test_disk_full_one_line_and_no_partial_file(tmp_path, fake_model, disk_full_once):
    _save(tmp_path / "in" / "a.png")
    _save(tmp_path / "in" / "b.png")
    result = invoke(tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code == 1
    (line,) = err_lines(result)
    assert "a_x4.png" in line and "disk full" in line
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b_x4.png"]


# --------------------------------------------------------------------------- Ctrl-C (subprocess)

_SLOW_CLI = r"""
import sys, time
from types import SimpleNamespace as NS
import torch
import sinsr_cli.pipeline as P
from sinsr_cli.config import tiny_preset, tiny_vq

DELAY = float(sys.argv[1])

class Slow:
    scale, pad_multiple = 4, 64
    max_tile, context_pad = P.SRPipeline.max_tile, P.SRPipeline.context_pad
    def __init__(self):
        self.device, self.dtype = torch.device("cpu"), torch.float32
        self.preset, self.vq, self.unet = tiny_preset("slow"), NS(cfg=tiny_vq()), NS(cfg=tiny_preset().unet)
    def to(self, device=None, dtype=None):
        return self
    def max_input_pixels(self, batch=1):
        return 2**40
    def upscale_pm1(self, x, **kw):
        time.sleep(DELAY)
        return x.repeat_interleave(4, -2).repeat_interleave(4, -1)

P.load_pipeline = lambda *a, **k: Slow()
from sinsr_cli.cli.app import app
sys.argv = ["sinsr", "upscale", *sys.argv[2:]]
app()
"""


def _start_slow(tmp_path: Path, n: int, delay: float):
    for i in range(n):
        _save(tmp_path / "in" / f"{i}.png")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_CLI, str(delay), str(tmp_path / "in"), "-o", str(out), "--seed", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    deadline = time.monotonic() + 120
    while not (out.is_dir() and list(out.glob("*.png"))):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no output appeared"
        time.sleep(0.05)
    return proc, out


def _valid_outputs(out: Path) -> list[str]:
    names = sorted(p.name for p in out.iterdir())
    for name in names:
        Image.open(out / name).load()  # complete, decodable images only
    return names


@pytest.mark.slow
def test_ctrl_c_stops_after_current_file(tmp_path):
    proc, out = _start_slow(tmp_path, n=6, delay=1.0)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    names = _valid_outputs(out)
    assert 1 <= len(names) <= 3 and len(stdout.split()) == len(names)
    assert "stopping after the current file" in stderr and "not processed" in stderr
    assert _no_temp_files(out)


@pytest.mark.slow
def test_ctrl_c_twice_abandons_current_file(tmp_path):
    proc, out = _start_slow(tmp_path, n=6, delay=2.0)
    done_before = len(list(out.glob("*.png")))
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    names = _valid_outputs(out)
    assert len(names) <= done_before + 1 and "interrupted; nothing written" in stderr
    assert _no_temp_files(out)


# --------------------------------------------------------------------------- issue 15: conventions


@pytest.mark.slow
def test_default_seed_gives_byte_identical_reruns(tmp_path, data_dir, tiny_checkpoints):
    unet, vq = tiny_checkpoints
    src = _crop(data_dir / "set5" / "lr" / "bird.png", (20, 20, 44, 40), tmp_path / "bird.png")
    runs = []
    for name in ("one.png", "two.png"):
        result = invoke(src, "-o", tmp_path / name, "--model", unet, "--vq", vq, "--device", "cpu")
        assert result.exit_code == 0, result.output
        assert "seed 12345" in result.stderr
        runs.append((tmp_path / name).read_bytes())
    assert runs[0] == runs[1]
    result = invoke(src, "-o", tmp_path / "fresh.png", "--model", unet, "--vq", vq, "--device", "cpu", "--seed", "random")
    assert result.exit_code == 0 and "seed 12345" not in result.stderr
    seed = int(result.stderr.split("seed ")[1].split(":")[0])  # the header shows it, to reproduce the run
    again = invoke(src, "-o", tmp_path / "again.png", "--model", unet, "--vq", vq, "--device", "cpu", "--seed", str(seed))
    assert again.exit_code == 0 and (tmp_path / "again.png").read_bytes() == (tmp_path / "fresh.png").read_bytes()


def test_bad_seed_is_a_usage_error(tmp_path, fake_model):
    _save(tmp_path / "a.png")
    result = invoke(tmp_path / "a.png", "--seed", "lucky")
    assert result.exit_code == 2 and "--seed" in err_lines(result)[0]


def test_real_esrgan_spellings(tmp_path, fake_model):
    """inference_realesrgan.py habits: -i, -o, -s/--outscale, -t, --tile_pad, --ext, --fp32, -n, -g."""
    _save(tmp_path / "in" / "a.png", size=(10, 8))
    result = invoke("-i", tmp_path / "in", "-o", tmp_path / "out", "--outscale", "2", "-t", "64", "--tile_pad", "12",
                    "--ext", "jpg", "--fp32", "-n", "sinsr-v1", "--suffix", "out")
    assert result.exit_code == 0, result.output
    im = Image.open(tmp_path / "out" / "a_out.jpg")  # Real-ESRGAN joins the suffix with "_"
    assert im.format == "JPEG" and im.size == (20, 16)
    assert fake_model[0].dtype == torch.float32 and fake_model[0].calls[0]["shape"] == (1, 3, 8, 10)  # -t 64 covers it
    assert invoke("-i", tmp_path / "in", "-o", tmp_path / "o2", "--ext", "auto").exit_code == 0
    assert (tmp_path / "o2" / "a_x4.png").is_file()
    # --tile_overlap works too: any long option may be written with underscores
    assert invoke("-i", tmp_path / "in", "-o", tmp_path / "o3", "--tile_overlap", "8", "--strip_metadata").exit_code == 0
    # Real-ESRGAN's -g N is --device cuda:N: here (no CUDA) a one-line usage error naming the device
    result = invoke("-i", tmp_path / "in", "-o", tmp_path / "o4", "-g", "0")
    assert result.exit_code == 2 and "cuda:0" in err_lines(result)[0]
    result = invoke("-i", tmp_path / "in", "--fp32", "--dtype", "fp16")
    assert result.exit_code == 2 and "--fp32" in err_lines(result)[0]


def test_unknown_option_suggests_the_nearest(tmp_path):
    result = runner.invoke(app, ["upscale", "x.png", "--tiel", "3"])
    assert result.exit_code == 2
    assert "Did you mean --tile?" in result.output and "--steps" not in result.output
    result = runner.invoke(app, ["upscale", "x.png", "--overwirte"])
    assert result.exit_code == 2 and "Did you mean --overwrite?" in result.output


def test_no_input_is_a_usage_error():
    result = runner.invoke(app, ["upscale"])
    assert result.exit_code == 2 and "INPUT" in err_lines(result)[0]


def test_help_has_no_python_types_for_flags_and_arguments():
    result = runner.invoke(app, ["upscale", "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    text = result.stdout
    assert "<bool>" not in text and "list[str]" not in text and "{" not in text
    assert "[INPUT]..." in text  # the usage line
    for alias in ("--outscale", "--ext", "--fp32", "-t", "-i", "--tile-pad", "--gpu-id"):
        assert alias in text
    assert "[default: 12345]" in text  # the seed is fixed unless --seed random


def test_quiet_prints_errors_only(tmp_path, fake_model):
    _save(tmp_path / "in" / "a.png")
    (tmp_path / "in" / "b.png").write_bytes(b"")
    (tmp_path / "in" / "notes.txt").write_text("x")
    result = invoke(tmp_path / "in", "-o", tmp_path / "out", "-q", "--dtype", "fp16")  # fp16 -> a NaN warning
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "b.png" in lines[0]
    assert (tmp_path / "out" / "a_x4.png").is_file()
    again = invoke(tmp_path / "in", "-o", tmp_path / "out", "-q")
    assert again.exit_code == 1 and len(again.stderr.strip().splitlines()) == 1


def test_same_name_collision_does_not_suggest_format(tmp_path, fake_model):
    _save(tmp_path / "in" / "a.png")
    _save(tmp_path / "in" / "a.jpg", format="JPEG")
    result = invoke(tmp_path / "in", "-o", tmp_path / "out", "--format", "png")
    assert result.exit_code == 1
    (line,) = err_lines(result)
    assert "also the output of" in line and "--format" not in line


def test_auto_format_writes_other_inputs_as_png_and_says_so_on_a_collision(tmp_path, fake_model):
    """-f auto keeps PNG/JPEG/WebP/TIFF; a BMP becomes PNG, so L.bmp and L.png share L_x4.png:
    the second is one error that says why (both are PNG), and --help says what auto means."""
    _save(tmp_path / "in" / "L.bmp", format="BMP")
    _save(tmp_path / "in" / "L.png")
    _save(tmp_path / "in" / "g.gif", format="GIF")
    result = invoke(tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code == 1
    out = tmp_path / "out"
    assert sorted(written(result)) == [out / "L_x4.png", out / "g_x4.png"]
    assert err_lines(result) == [
        f"error: {tmp_path / 'in' / 'L.png'}: the output {out / 'L_x4.png'} is also the output of {tmp_path / 'in' / 'L.bmp'} "
        "(outputs are named by file stem, and both are written as PNG); rename one of them or upscale them separately"
    ]
    help_text = " ".join(runner.invoke(app, ["upscale", "--help"], env={"COLUMNS": "400"}).stdout.split())
    assert "PNG for others, such as BMP, GIF, TGA, PPM or ICO" in help_text


@pytest.fixture(scope="module")
def one_step_student(tmp_path_factory, tiny_checkpoints):
    """The tiny UNet saved as a one-step student (as `sinsr distill --export` writes it)."""
    import dataclasses

    from safetensors.torch import load_file

    from sinsr_cli.config import tiny_preset
    from sinsr_cli.models.checkpoints import unet_metadata, write_safetensors

    unet, vq = tiny_checkpoints
    preset = dataclasses.replace(tiny_preset("tiny-student"), one_step=True)
    path = tmp_path_factory.mktemp("student") / "student.safetensors"
    return write_safetensors(load_file(str(unet)), path, unet_metadata(preset)), vq


@pytest.mark.parametrize("args", [["--steps", "4"], ["--sampler", "deterministic"], ["--steps", "2", "--sampler", "ancestral"]])
def test_one_step_student_refuses_other_samplings(tmp_path, one_step_student, args):
    unet, vq = one_step_student
    _save(tmp_path / "a.png")
    result = invoke(tmp_path / "a.png", "--model", unet, "--vq", vq, "--device", "cpu", *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "one-step student" in lines[0] and "tiny-student" in lines[0]
    assert not (tmp_path / "a_x4.png").exists()
    ok = invoke(tmp_path / "a.png", "--model", unet, "--vq", vq, "--device", "cpu", "--steps", "1")
    assert ok.exit_code == 0, ok.output


def _readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## `{title}`")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def test_readme_and_help_agree():
    """Every visible option of `sinsr upscale` is in the README's table and vice versa, each
    shown by --help, with the same defaults."""
    import re

    import typer.main

    help_text = runner.invoke(app, ["upscale", "--help"], env={"COLUMNS": "200"}).stdout
    cmd = typer.main.get_command(app).commands["upscale"]
    params = [p for p in cmd.params if getattr(p, "param_type_name", "") == "option" and not p.hidden]
    rows = [line for line in _readme_section("sinsr upscale").splitlines() if line.startswith("| `")]
    readme = {o: row for row in rows for o in re.findall(r"`(-[-\w]+)`", row.split("|")[1])}
    names = {o for p in params for o in (*p.opts, *p.secondary_opts)}
    assert set(readme) == names
    for name in names:
        assert name in help_text
    for p in params:
        if p.default not in (None, False, ()) and not p.multiple and p.show_default is not False:
            shown = p.default if not isinstance(p.default, bool) else p.opts[0].lstrip("-")
            cell = readme[p.opts[0]].split("|")[2].strip()
            assert cell in (str(shown), str(shown).removesuffix(".0")), p.opts[0]
            assert f"[default: {shown}]" in help_text, p.opts[0]


def test_format_and_max_pixels_errors_speak_the_flags_terms(tmp_path):
    """The refusal names the values the flag takes (`auto`, `0 = no limit`), not the library's."""
    result = invoke(tmp_path / "x.png", "-f", "bmp")
    assert result.exit_code == 2 and err_lines(result) == ["error: --format must be png, jpg, webp, tif or auto, got 'bmp'"]
    result = invoke(tmp_path / "x.png", "--max-pixels", "-1")
    assert result.exit_code == 2 and err_lines(result) == ["error: --max-pixels must be >= 0 (0 = no limit), got -1"]
