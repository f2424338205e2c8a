"""`sinsr bench` without a model: discovery, pairing by stem, errors, the bicubic row against an
independent computation (numpy + scikit-image on the saved files), learned-metric wiring, and
the report formats. Model runs are in test_bench_model.py."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from sinsr_cli.bench.protocol import bicubic_upscale
from sinsr_cli.bench.results import RunSpec, plan_runs
from sinsr_cli.bench.dataset import ImageStore, find_dataset
from sinsr_cli.bench.sheet import detail_box
from sinsr_cli.cli.app import app
from sinsr_cli.imageio import SinsrIOError, to_uint8

skimage_metrics = pytest.importorskip("skimage.metrics")
ndimage = pytest.importorskip("scipy.ndimage")


def bench(tmp_path: Path, *args: str, expect: int = 0) -> tuple[object, dict]:
    """Run `sinsr bench ... --json` in-process; return (result, parsed JSON)."""
    out = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["bench", *map(str, args), "--json", str(out)])
    assert result.exit_code == expect, result.output
    return result, (json.loads(out.read_text()) if out.exists() else {})


def error_line(result: object) -> str:
    lines = [ln for ln in result.output.splitlines() if ln.startswith("error:")]  # type: ignore[attr-defined]
    assert len(lines) == 1, result.output  # type: ignore[attr-defined]
    return lines[0]


def save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def smooth_image(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth random colour image (uint8), so bicubic x4 of its downscale is close to it."""
    g = np.random.default_rng(seed)
    small = g.integers(0, 256, (max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC))


def make_pairs(root: Path, names: dict[str, str], size: int = 64) -> None:
    """``names``: LR file name -> HR file name (same stem); LR = HR downscaled x4."""
    for k, (lr_name, hr_name) in enumerate(names.items()):
        hr = smooth_image(size, size, k)
        save(root / "hr" / hr_name, hr)
        save(root / "lr" / lr_name, np.asarray(Image.fromarray(hr).resize((size // 4, size // 4), Image.Resampling.BICUBIC)))


# ----------------------------------------------------------------------------- independent maths


def y_channel(rgb8: np.ndarray) -> np.ndarray:
    """BT.601 studio-range luma of uint8 RGB, written out by hand: [H, W] float64 in [0, 1]."""
    x = rgb8.astype(np.float64) / 255.0
    return (16.0 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255.0


def ref_psnr(sr: np.ndarray, hr: np.ndarray, border: int) -> float:
    a, b = y_channel(sr), y_channel(hr)
    if border:
        a, b = a[border:-border, border:-border], b[border:-border, border:-border]
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


def ref_ssim(sr: np.ndarray, hr: np.ndarray, border: int) -> float:
    """SSIM on the rounded Y channel with scipy filters, pyiqa's clamp of the contrast-structure
    term at 0 included; without the clamp it must equal scikit-image's Gaussian SSIM."""
    a, b = np.round(y_channel(sr) * 255), np.round(y_channel(hr) * 255)
    if border:
        a, b = a[border:-border, border:-border], b[border:-border, border:-border]
    t = np.arange(11) - 5.0
    g = np.exp(-(t * t) / (2 * 1.5**2))
    g /= g.sum()

    def filt(z: np.ndarray) -> np.ndarray:  # 11x11 Gaussian, then only the 'valid' region
        return ndimage.correlate1d(ndimage.correlate1d(z, g, axis=0), g, axis=1)[5:-5, 5:-5]

    mu1, mu2 = filt(a), filt(b)
    var1, var2, cov = filt(a * a) - mu1**2, filt(b * b) - mu2**2, filt(a * b) - mu1 * mu2
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    lum = (2 * mu1 * mu2 + c1) / (mu1**2 + mu2**2 + c1)
    cs = (2 * cov + c2) / (var1 + var2 + c2)
    unclamped = skimage_metrics.structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255.0
    )
    assert float(np.mean(lum * cs)) == pytest.approx(unclamped, abs=1e-9)
    return float(np.mean(lum * np.maximum(cs, 0.0)))


def keys_matrix(n_in: int, scale: int, a: float = -0.5) -> np.ndarray:
    """[scale*n_in, n_in] Keys cubic interpolation weights, pixel centres aligned, edge taps
    renormalised (the definition of Pillow's BICUBIC when enlarging)."""

    def k(x: np.ndarray) -> np.ndarray:
        x = np.abs(x)
        return np.where(
            x < 1, (a + 2) * x**3 - (a + 3) * x**2 + 1,
            np.where(x < 2, a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a, 0.0),
        )

    out = np.zeros((n_in * scale, n_in))
    for i in range(n_in * scale):
        centre = (i + 0.5) / scale
        lo, hi = max(int(centre - 2 + 0.5), 0), min(int(centre + 2 + 0.5), n_in)
        j = np.arange(lo, hi)
        w = k(j + 0.5 - centre)
        out[i, lo:hi] = w / w.sum()
    return out


def ref_bicubic(lr8: np.ndarray, scale: int = 4) -> np.ndarray:
    x = lr8.astype(np.float64) / 255
    wy, wx = keys_matrix(x.shape[0], scale), keys_matrix(x.shape[1], scale)
    up = np.stack([wy @ x[..., c] @ wx.T for c in range(3)], axis=-1)
    return np.rint(np.clip(up, 0, 1) * 255).astype(np.uint8)


def read8(path: str | Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


# ----------------------------------------------------------------------------- CLI basics


def test_help_lists_the_options() -> None:
    result = CliRunner().invoke(app, ["bench", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for opt in ("--hr", "--model", "--steps", "--crop-border", "--learned", "--json", "--csv", "--markdown",
                "--save-images", "--sheet", "--limit", "--center-crop", "--warmup", "--tile"):
        assert opt in result.output


def test_plan_runs_puts_bicubic_first_and_drops_repeats() -> None:
    runs = plan_runs(["a", "b", "a"], [1, 4, 1])
    assert runs[0].is_bicubic
    assert [(r.model, r.steps) for r in runs[1:]] == [("a", 1), ("a", 4), ("b", 1), ("b", 4)]
    assert plan_runs([], [None]) == [RunSpec(None)]
    with pytest.raises(ValueError, match="steps must be >= 1"):
        plan_runs(["a"], [0])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--steps", "0"], "--steps"),
        (["--steps", "two"], "--steps"),
        (["--learned", "fid"], "unknown metric"),
        (["--model", "none,sinsr-v1"], "cannot be combined"),
        (["--limit", "0"], "--limit"),
        (["--crop-border", "30"], "crop-border"),
        (["--center-crop", "1"], "center-crop"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path: Path, args: list[str], needle: str) -> None:
    make_pairs(tmp_path / "d", {"a.png": "a.png"})
    result, _ = bench(tmp_path, tmp_path / "d", "--model", "none", *args, expect=2)
    assert needle in error_line(result)


# ----------------------------------------------------------------------------- discovery and pairing


def test_layouts(tmp_path: Path) -> None:
    make_pairs(tmp_path / "d", {"a.png": "a.png", "b.png": "b.png"})
    paired = find_dataset(tmp_path / "d")
    assert paired.mode == "paired" and [i.name for i in paired.items] == ["a", "b"]
    explicit = find_dataset(tmp_path / "d" / "lr", hr=tmp_path / "d" / "hr")
    assert [(i.lr.name, i.hr.name) for i in explicit.items] == [("a.png", "a.png"), ("b.png", "b.png")]
    noref = find_dataset(tmp_path / "d" / "lr")
    assert noref.mode == "no-reference" and all(i.hr is None for i in noref.items)
    assert find_dataset(tmp_path / "d", limit=1).items == paired.items[:1]
    assert find_dataset(tmp_path / "d", limit=1).total == 2
    (tmp_path / "only_hr" / "hr").mkdir(parents=True)
    with pytest.raises(SinsrIOError, match="no lr/ folder"):
        find_dataset(tmp_path / "only_hr")


def test_pairing_is_by_stem_not_sort_order(tmp_path: Path) -> None:
    # Sorted by file name the LR folder reads [x.png, x.q.png] but the HR folder [x.q.png, x.tif]:
    # pairing by position would score x against x.q.
    make_pairs(tmp_path / "d", {"x.png": "x.tif", "x.q.png": "x.q.png"})
    assert sorted(p.name for p in (tmp_path / "d" / "hr").iterdir()) == ["x.q.png", "x.tif"]
    _, doc = bench(tmp_path, tmp_path / "d", "--model", "none", "--save-images", tmp_path / "sr")
    images = doc["runs"][0]["images"]
    assert [(Path(i["lr"]).name, Path(i["hr"]).name) for i in images] == [("x.png", "x.tif"), ("x.q.png", "x.q.png")]
    for i in images:
        sr, hr = read8(i["saved"]), read8(i["hr"])
        assert i["psnr"] == pytest.approx(ref_psnr(sr, hr, 0), abs=1e-9)
        assert i["psnr"] > 25  # the right partner: a smooth image survives x4 bicubic well


def test_unpaired_files_are_an_error_naming_them(tmp_path: Path) -> None:
    make_pairs(tmp_path / "d", {"a.png": "a.png", "b.png": "b.png"})
    (tmp_path / "d" / "hr" / "b.png").rename(tmp_path / "d" / "hr" / "c.png")
    result, _ = bench(tmp_path, tmp_path / "d", "--model", "none", expect=2)
    line = error_line(result)
    assert "b.png" in line and "c.png" in line and "paired by file name" in line


@pytest.mark.parametrize("where", ["lr", "hr", "no-reference"])
def test_a_file_named_as_an_image_that_cannot_be_read_is_an_error(tmp_path: Path, where: str) -> None:
    """As in `sinsr upscale`: ``x.png`` holding text (or nothing) is an error naming it, not a file
    quietly left out of the benchmark; other non-images (``notes.txt``) are ignored."""
    make_pairs(tmp_path / "d", {"a.png": "a.png"})
    folder = tmp_path / "d" / ("lr" if where == "no-reference" else where)
    (folder / "notes.txt").write_text("hello")
    target = tmp_path / "d" / "lr" if where == "no-reference" else tmp_path / "d"
    bench(tmp_path, target, "--model", "none", "--learned", "none")  # notes.txt alone is fine
    (folder / "x.png").write_text("not a picture")
    (tmp_path / "report.json").unlink()
    result, doc = bench(tmp_path, target, "--model", "none", "--learned", "none", expect=2)
    assert "x.png" in error_line(result) and "not an image" in error_line(result) and not doc


def test_report_paths_are_checked_before_the_run_and_never_replace_an_image(tmp_path: Path) -> None:
    """A report path that cannot be written, two reports on one path, a report (or the sheet next
    to --markdown) on one of the benchmark's images, or saved SR images inside its folders: exit 2
    before anything runs, nothing written, the images untouched."""
    make_pairs(tmp_path / "d", {"a.png": "a.png", "b.png": "b.png"})
    images = {p: p.read_bytes() for p in (tmp_path / "d").rglob("*.png")}
    (tmp_path / "afile").write_text("keep")
    d, hr = tmp_path / "d", tmp_path / "d" / "hr"
    cases = [
        (["--csv", tmp_path / "afile" / "r.csv"], "--csv", "a parent path is a file"),
        (["--csv", tmp_path / "d"], "--csv", "is a directory"),
        (["--csv", tmp_path / "report.json"], "--csv", "is also the --json file"),
        (["--markdown", hr / "a.md"], "--markdown's sheet", "is one of the benchmark's images"),
        (["--sheet", d / "lr" / "b.png"], "--sheet", "is one of the benchmark's images"),
        (["--save-images", hr / "sr"], "--save-images", "inside the benchmark's images"),
        (["--sheet", hr / "sheet.png"], "--sheet", "is inside the benchmark's images"),  # the next run's input
        (["--markdown", d / "lr" / "r.md"], "--markdown's sheet", "is inside the benchmark's images"),
        (["--save-images", tmp_path / "sr", "--sheet", tmp_path / "sr" / "none" / "a.png"], "--sheet",
         "is inside --save-images"),
        (["--save-images", tmp_path / "sr", "--csv", tmp_path / "sr" / "r.csv"], "--csv", "is inside --save-images"),
    ]
    for extra, label, needle in cases:
        result, doc = bench(tmp_path, d, "--model", "none", "--learned", "none", *extra, expect=2)
        line = error_line(result)
        assert line.startswith(f"error: {label} ") and needle in line, line
        assert not doc and "bicubic" not in result.output  # nothing ran, no report
    assert {p: p.read_bytes() for p in (tmp_path / "d").rglob("*.png")} == images
    assert not (hr / "sr").exists() and (tmp_path / "afile").read_text() == "keep"


def test_hr_not_exactly_4x_is_an_error(tmp_path: Path) -> None:
    make_pairs(tmp_path / "d", {"a.png": "a.png"})
    save(tmp_path / "d" / "hr" / "a.png", smooth_image(65, 64, 0))
    result, _ = bench(tmp_path, tmp_path / "d", "--model", "none", expect=2)
    line = error_line(result)
    assert "a.png" in line and "exactly 4x" in line and "64x64" in line


def test_center_crop_cuts_lr_and_the_hr_under_it(tmp_path: Path) -> None:
    make_pairs(tmp_path / "d", {"a.png": "a.png"}, size=128)
    ds = find_dataset(tmp_path / "d")
    store = ImageStore(ds, center_crop=10)
    full = ImageStore(ds)
    assert store.lr_size(0) == (10, 10)
    assert np.array_equal(store.lr(0), full.lr(0)[11:21, 11:21])
    assert np.array_equal(store.hr(0), full.hr(0)[44:84, 44:84])
    uncached = ImageStore(ds, center_crop=10, hr_cache_bytes=0)  # re-read on demand: same pixels
    assert np.array_equal(uncached.hr(0), store.hr(0))


# ----------------------------------------------------------------------------- the bicubic row


@pytest.mark.parametrize(("name", "border"), [("set5", 0), ("set5", 4), ("set14", 4)])
def test_bicubic_row_equals_an_independent_computation(data_dir: Path, tmp_path: Path, name: str, border: int) -> None:
    _, doc = bench(
        tmp_path, data_dir / name, "--model", "none", "--crop-border", border, "--save-images", tmp_path / "sr",
        "--learned", "none",
    )
    (run,) = doc["runs"]
    assert run["label"] == "bicubic" and doc["protocol"]["psnr"].endswith(f"crop_border={border} px removed from each side of the RGB image first")
    n = len(list((data_dir / name / "hr").iterdir()))
    assert len(run["images"]) == n == run["summary"]["images"]
    psnrs, ssims = [], []
    for img in run["images"]:
        assert Path(img["lr"]).stem == Path(img["hr"]).stem == img["name"]
        sr, hr, lr = read8(img["saved"]), read8(img["hr"]), read8(img["lr"])
        assert sr.shape == hr.shape == (lr.shape[0] * 4, lr.shape[1] * 4, 3)
        # the saved baseline is Keys a=-0.5 bicubic of the LR (computed here with numpy) ...
        assert np.abs(sr.astype(int) - ref_bicubic(lr)).max() <= 1
        # ... and the reported scores are those of the saved files
        psnrs.append(ref_psnr(sr, hr, border))
        ssims.append(ref_ssim(sr, hr, border))
        assert img["psnr"] == pytest.approx(psnrs[-1], abs=1e-9)
        assert img["ssim"] == pytest.approx(ssims[-1], abs=1e-9)
    assert run["summary"]["psnr"] == pytest.approx(np.mean(psnrs), abs=1e-9)
    assert run["summary"]["ssim"] == pytest.approx(np.mean(ssims), abs=1e-9)
    if (name, border) == ("set5", 4):
        # The SR literature's x4 bicubic row on Set5 (Y channel, 4 px border) is 28.42 dB / 0.8104
        # (MATLAB imresize; EDSR, RCAN, SwinIR tables). Pillow's a=-0.5 kernel is MATLAB's.
        assert run["summary"]["psnr"] == pytest.approx(28.42, abs=0.05)
        assert run["summary"]["ssim"] == pytest.approx(0.8104, abs=0.002)


def test_bicubic_upscale_keeps_16_bit_precision() -> None:
    ramp = np.linspace(0, 1, 8 * 8 * 3, dtype=np.float32).reshape(8, 8, 3)
    up = bicubic_upscale(ramp)
    assert up.shape == (32, 32, 3) and up.dtype == np.float32
    assert len(np.unique(up)) > 256  # not quantised on the way


def test_to_uint8_matches_what_write_image_saves(tmp_path: Path) -> None:
    from sinsr_cli.imageio import write_image

    x = np.random.default_rng(0).random((16, 16, 3), dtype=np.float32)
    x[0, 0] = [0.5 / 255, 1.5 / 255, 2.5 / 255]  # ties: round half to even, both ways
    write_image(tmp_path / "x.png", x)
    assert np.array_equal(to_uint8(x), read8(tmp_path / "x.png"))


# ----------------------------------------------------------------------------- modes and metrics


def test_no_reference_mode_has_speed_and_no_fidelity_metrics(data_dir: Path, tmp_path: Path) -> None:
    result, doc = bench(tmp_path, data_dir / "realsr", "--model", "none", "--limit", "2")
    assert doc["dataset"]["mode"] == "no-reference" and doc["dataset"]["images"] == 2
    assert doc["dataset"]["images_found"] == 100
    assert doc["metrics"] == [] and "psnr" not in doc["protocol"]
    img = doc["runs"][0]["images"][0]
    assert img["hr"] is None and img["latency_s"] > 0 and "psnr" not in img
    assert "PSNR" not in result.output


def test_missing_pyiqa_is_one_line_and_the_rest_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyiqa", None)  # import pyiqa -> ModuleNotFoundError
    make_pairs(tmp_path / "d", {"a.png": "a.png"})
    result, doc = bench(tmp_path, tmp_path / "d", "--model", "none")
    notes = [ln for ln in result.output.splitlines() if ln.startswith("note:")]
    assert len(notes) == 1 and "pip install 'sinsr-cli[metrics]'" in notes[0]
    assert doc["metrics"] == ["psnr", "ssim"] and doc["messages"] == [notes[0].removeprefix("note: ")]


def fake_pyiqa() -> types.ModuleType:
    """Stands in for pyiqa: lpips = mean |x - y|, niqe/clipiqa/musiq = mean of x."""
    mod = types.ModuleType("pyiqa")

    def create_metric(name: str, device: torch.device) -> object:
        if name == "musiq":
            raise RuntimeError("weights not found")
        if name == "lpips":
            return lambda x, y: (x - y).abs().mean(dim=(1, 2, 3))
        return lambda x: x.mean(dim=(1, 2, 3))

    mod.create_metric = create_metric  # type: ignore[attr-defined]
    return mod


def test_learned_metrics_are_scored_when_pyiqa_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyiqa", fake_pyiqa())
    make_pairs(tmp_path / "d", {"a.png": "a.png"})
    result, doc = bench(
        tmp_path, tmp_path / "d", "--model", "none", "--save-images", tmp_path / "sr", "--markdown", tmp_path / "r.md"
    )
    assert doc["metrics"] == ["psnr", "ssim", "lpips", "clipiqa", "niqe"]
    assert doc["lower_is_better"] == ["lpips", "niqe"]
    assert any("musiq" in m and "weights unavailable" in m for m in doc["messages"])
    img = doc["runs"][0]["images"][0]
    sr, hr = read8(img["saved"]).astype(np.float64) / 255, read8(img["hr"]).astype(np.float64) / 255
    assert img["lpips"] == pytest.approx(np.abs(sr - hr).mean(), abs=1e-6)
    assert img["niqe"] == pytest.approx(sr.mean(), abs=1e-6)
    md = (tmp_path / "r.md").read_text()
    assert "LPIPS ↓" in md and "NIQE ↓" in md and "CLIPIQA ↑" in md
    # no-reference mode drops the full-reference one, with a note when asked for explicitly
    _, doc = bench(tmp_path, tmp_path / "d" / "lr", "--model", "none", "--learned", "lpips,niqe")
    assert doc["metrics"] == ["niqe"] and any("lpips needs HR" in m for m in doc["messages"])


# ----------------------------------------------------------------------------- report formats


def test_reports_are_well_formed(data_dir: Path, tmp_path: Path) -> None:
    d = data_dir / "imagenet-val32"
    result, doc = bench(
        tmp_path, d, "--model", "none", "--limit", "3", "--csv", tmp_path / "r.csv", "--markdown",
        tmp_path / "out" / "r.md", "--learned", "none",
    )
    assert doc["schema"] == "sinsr-bench/1"
    assert {"dataset", "protocol", "environment", "settings", "runs", "messages", "wall_s", "metrics"} <= doc.keys()
    for key in ("device", "device_name", "dtype", "torch", "python"):
        assert doc["environment"][key]
    assert {"bicubic", "y", "psnr", "ssim", "latency", "peak_memory", "pairing"} <= doc["protocol"].keys()
    assert doc["settings"]["tile"] == 0 and doc["settings"]["crop_border"] == 0
    (run,) = doc["runs"]
    assert {"psnr", "ssim", "latency_s_mean", "latency_s_median", "images_per_s", "output_mpix_per_s"} <= run["summary"].keys()
    assert [i["name"] for i in run["images"]] == sorted(p.stem for p in (d / "lr").iterdir())[:3]
    assert all(i["sr_size"] == [256, 256] and i["lr_size"] == [64, 64] for i in run["images"])

    rows = list(csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text())))
    assert len(rows) == 3 and rows[0]["run"] == "bicubic"
    assert [float(r["psnr"]) for r in rows] == [i["psnr"] for i in run["images"]]

    md = (tmp_path / "out" / "r.md").read_text()
    assert md.startswith("# sinsr bench: imagenet-val32")
    assert "| run | steps | PSNR ↑ | SSIM ↑ |" in md and "## Protocol" in md and "## Environment" in md
    assert f"**{run['summary']['psnr']:.2f}**" in md
    assert "![comparison sheet" in md and "(r.png)" in md  # the sheet is written next to it
    sheet = Image.open(tmp_path / "out" / "r.png")
    assert sheet.mode == "RGB" and sheet.width >= 2 * 128 and sheet.height >= 3 * 128
    assert "PSNR" in result.output and "bicubic" in result.output  # the rich table


def test_sheet_zoom_and_the_images_left_out(tmp_path: Path) -> None:
    make_pairs(tmp_path / "d", {f"{k}.png": f"{k}.png" for k in "abcde"}, size=64)
    result, _ = bench(tmp_path, tmp_path / "d", "--model", "none", "--sheet", tmp_path / "s1.png",
                      "--sheet-images", "2", "--sheet-crop", "32", "--learned", "none")
    plain = Image.open(tmp_path / "s1.png")
    assert "sheet: 2 of 5 images; left out: b, c, d" in result.output
    bench(tmp_path, tmp_path / "d", "--model", "none", "--sheet", tmp_path / "s2.png", "--sheet-images", "2",
          "--sheet-crop", "32", "--sheet-zoom", "8", "--learned", "none")
    zoomed = Image.open(tmp_path / "s2.png")
    assert zoomed.width > 1.8 * plain.width  # 32 px crops: 4x (to 128 px) by default, 8x asked
    result, _ = bench(tmp_path, tmp_path / "d", "--model", "none", "--sheet", tmp_path / "s3.png", "--sheet-zoom", "0",
                      expect=2)
    assert "--sheet-zoom" in result.output
    result, _ = bench(tmp_path, tmp_path / "d", "--model", "none", "--sheet", tmp_path / "s4.png", "--sheet-images", "0",
                      expect=2)
    assert "--sheet with --sheet-images 0" in result.output and not (tmp_path / "s4.png").exists()


def test_json_has_no_infinities(tmp_path: Path) -> None:
    # LR = exact box-downscale of a flat HR: bicubic reproduces HR exactly, PSNR is inf -> null
    save(tmp_path / "d" / "hr" / "a.png", np.full((64, 64, 3), 128, np.uint8))
    save(tmp_path / "d" / "lr" / "a.png", np.full((16, 16, 3), 128, np.uint8))
    _, doc = bench(tmp_path, tmp_path / "d", "--model", "none", "--csv", tmp_path / "r.csv")
    img = doc["runs"][0]["images"][0]
    assert img["psnr"] is None and img["ssim"] == pytest.approx(1.0)
    assert "inf" in (tmp_path / "r.csv").read_text()


def test_detail_box_finds_the_textured_region() -> None:
    img = np.zeros((64, 96, 3), np.uint8)
    img[40:56, 60:76] = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    top, left, h, w = detail_box(img, 16)
    assert (h, w) == (16, 16) and abs(top - 40) <= 4 and abs(left - 60) <= 4
    assert detail_box(img, 200) == (0, 0, 64, 96)


def test_no_infinite_mean_breaks_the_table() -> None:
    from sinsr_cli.bench.report import format_metric

    assert format_metric("psnr", math.inf) == "inf" and format_metric("psnr", None) == "-"


def test_odd_file_names_keep_every_report_intact(tmp_path: Path) -> None:
    """A newline, an escape sequence or bytes that are not UTF-8 in a name: every report is
    written; Markdown and the sheet show them as escapes, the CSV keeps the file's own bytes."""
    import os

    odd = {"new\nline.png": "new\nline.png", "esc\x1b[31m.png": "esc\x1b[31m.png"}
    undecodable = os.fsdecode(b"bad\xff.png")
    odd[undecodable] = undecodable
    make_pairs(tmp_path / "d", odd, size=32)
    result, doc = bench(tmp_path, tmp_path / "d", "--model", "none", "--learned", "none", "--csv", tmp_path / "r.csv",
                        "--markdown", tmp_path / "r.md", "--sheet-crop", "16")
    stems = {n[:-4] for n in odd}
    assert {i["name"] for i in doc["runs"][0]["images"]} == stems
    assert Image.open(tmp_path / "r.png").width > 0  # the sheet next to the Markdown
    md = (tmp_path / "r.md").read_text(encoding="utf-8")  # valid UTF-8
    assert "new\\nline" in md and "esc\\x1b[31m" in md and "bad\\xff" in md
    assert "\x1b" not in md
    table = [ln for ln in md.splitlines() if "new" in ln or "esc" in ln or "bad" in ln]
    assert table and all(ln.startswith("| ") and ln.endswith(" |") for ln in table)
    rows = list(csv.reader(io.StringIO((tmp_path / "r.csv").read_bytes().decode("utf-8", "surrogateescape"))))
    assert {r[5] for r in rows[1:]} == stems
    assert b"bad\xff.png" in (tmp_path / "r.csv").read_bytes()


def test_a_report_that_cannot_be_written_leaves_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sinsr_cli.bench.sheet import SheetCollector

    def broken(self: object, path: object, report: object) -> Path:
        raise ValueError("no room for the sheet")

    monkeypatch.setattr(SheetCollector, "save", broken)
    make_pairs(tmp_path / "d", {"a.png": "a.png"}, size=32)
    result, doc = bench(tmp_path, tmp_path / "d", "--model", "none", "--learned", "none", "--csv", tmp_path / "r.csv",
                        "--sheet", tmp_path / "s.png", "--sheet-crop", "16", expect=1)
    assert doc["runs"][0]["images"] and (tmp_path / "r.csv").exists() and not (tmp_path / "s.png").exists()
    assert error_line(result) == f"error: could not write --sheet {tmp_path / 's.png'}: no room for the sheet"
