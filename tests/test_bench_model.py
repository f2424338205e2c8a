"""`sinsr bench` with models: the runner's bookkeeping with a stand-in pipeline (fast), then the
tiny checkpoint on imagenet-val32, set5 and set14 (one small central crop each: the tiny model
still costs seconds per image on a CPU)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sinsr_cli.bench import runner as R
from sinsr_cli.config import tiny_preset
from sinsr_cli.pipeline import SRPipeline
from sinsr_cli.plan import Plan

from test_bench import bench, make_pairs, read8, ref_psnr, ref_ssim


class FakePipe:
    """Quacks like SRPipeline behind an ``engine.Engine``: nearest x4, records each call's plan."""

    scale = 4
    dtype = torch.float32
    device = torch.device("cpu")
    preset = dataclasses.replace(tiny_preset(), name="fake", default_steps=4)
    resolve_sampler = SRPipeline.resolve_sampler

    def __init__(self, fail_at: int | None = None, nan: bool = False) -> None:
        self.calls: list[dict] = []
        self.fail_at, self.nan = fail_at, nan

    def run(self, x: torch.Tensor, plan: Plan, **kw: object) -> torch.Tensor:
        """What ``Engine(pipe)(x, plan, ...)`` does, in a few lines."""
        self.calls.append(dict(steps=plan.steps, sampler=plan.sampler, seed=plan.seed, tile=plan.tiling.tile))
        if self.fail_at is not None and len(self.calls) > self.fail_at:
            raise RuntimeError("CUDA out of memory (pretend)")
        y = F.interpolate(x, scale_factor=4, mode="nearest")
        return torch.full_like(y, float("nan")) if self.nan else y


@pytest.fixture
def fake_models(monkeypatch: pytest.MonkeyPatch) -> dict[str, FakePipe]:
    """--model good / nan / oom load fakes; --model missing fails to load."""
    pipes = {"good": FakePipe(), "nan": FakePipe(nan=True), "oom": FakePipe(fail_at=2)}
    loads: list[str] = []

    def load(model: str, vq: object = None, **kw: object) -> FakePipe:
        loads.append(model)
        if model not in pipes:
            raise FileNotFoundError(f"{model}: no such checkpoint file")
        return pipes[model]

    monkeypatch.setattr(R, "load_pipeline", load)
    monkeypatch.setattr(R, "Engine", lambda pipe: pipe.run)
    pipes["loads"] = loads  # type: ignore[assignment]
    return pipes


def test_each_model_loads_once_and_warms_up_per_run(tmp_path: Path, fake_models: dict) -> None:
    make_pairs(tmp_path / "d", {f"{k}.png": f"{k}.png" for k in "abc"})
    _, doc = bench(tmp_path, tmp_path / "d", "--model", "good", "--steps", "1,3", "--warmup", "2", "--seed", "7", "--tile", "16")
    assert fake_models["loads"] == ["good"]
    calls = fake_models["good"].calls
    assert len(calls) == 2 * (2 + 3)  # two step counts x (2 warm-up + 3 images)
    assert [c["steps"] for c in calls] == [1] * 5 + [3] * 5
    assert {c["seed"] for c in calls} == {7} and {c["tile"] for c in calls} == {16}
    labels = [(r["label"], r["steps"], r["sampler"]) for r in doc["runs"]]
    assert labels == [("bicubic", None, None), ("good-1step", 1, "onestep"), ("good-3step", 3, "ancestral")]
    for run in doc["runs"][1:]:
        assert run["load_s"] >= 0 and run["warmup"] == 2 and run["peak_memory_bytes"] > 0
        assert run["summary"]["images"] == 3 and run["summary"]["images_per_s"] > 0
    assert doc["settings"]["tile"] == 16 and doc["settings"]["seed"] == 7


def test_a_failing_model_keeps_the_other_rows(tmp_path: Path, fake_models: dict) -> None:
    make_pairs(tmp_path / "d", {f"{k}.png": f"{k}.png" for k in "abc"})
    result, doc = bench(
        tmp_path, tmp_path / "d", "--model", "missing,oom,good", "--warmup", "0", "--markdown", tmp_path / "r.md",
        expect=1,
    )
    runs = {r["label"]: r for r in doc["runs"]}
    assert list(runs) == ["bicubic", "missing", "oom-1step", "good-1step"]
    assert "cannot load missing" in runs["missing"]["error"]
    assert "out of memory" in runs["oom-1step"]["error"] and len(runs["oom-1step"]["images"]) == 2
    assert runs["good-1step"]["error"] is None and len(runs["good-1step"]["images"]) == 3
    assert "failed" in result.output and "Failed runs:" in (tmp_path / "r.md").read_text()


def test_one_step_students_skip_other_step_counts_with_a_note(tmp_path: Path, fake_models: dict) -> None:
    student = FakePipe()
    student.preset = dataclasses.replace(tiny_preset(), name="student", one_step=True)
    fake_models["student"] = student
    make_pairs(tmp_path / "d", {f"{k}.png": f"{k}.png" for k in "ab"})
    result, doc = bench(
        tmp_path, tmp_path / "d", "--model", "student,good", "--steps", "1,4", "--sampler", "deterministic",
        "--warmup", "0", "--offline",
    )
    labels = [r["label"] for r in doc["runs"]]
    assert labels == ["bicubic", "student-1step", "good-1step", "good-4step"]  # no student-4step row
    assert not any(r["error"] for r in doc["runs"])  # a skip, not a failure: exit 0
    notes = [m for m in doc["messages"] if "student at 4 step(s) skipped" in m]
    assert len(notes) == 1 and "one-step student" in notes[0]
    assert "note: student at 4 step(s) skipped" in result.output
    assert {c["sampler"] for c in student.calls} == {"onestep"}  # --sampler is for multi-step runs
    assert doc["settings"]["seed"] == 12345  # the fixed default seed


def test_quiet_bench_prints_errors_only(tmp_path: Path, fake_models: dict) -> None:
    from typer.testing import CliRunner

    from sinsr_cli.cli.app import app

    make_pairs(tmp_path / "d", {f"{k}.png": f"{k}.png" for k in "ab"})
    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["bench", str(tmp_path / "d"), "--model", "missing,good", "-q", "--json", str(out)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: missing") and out.is_file()
    assert CliRunner().invoke(app, ["bench", str(tmp_path / "d"), "-s", "1"]).exit_code == 2  # -s is --scale elsewhere


def test_nan_output_is_reported(tmp_path: Path, fake_models: dict) -> None:
    make_pairs(tmp_path / "d", {"a.png": "a.png"})
    _, doc = bench(tmp_path, tmp_path / "d", "--model", "nan", "--warmup", "0")
    assert any("NaN/Inf" in m for m in doc["messages"])
    assert doc["runs"][1]["images"][0]["psnr"] < 15  # scored as saved: black


# ----------------------------------------------------------------------------- the tiny checkpoint


def test_tiny_model_on_imagenet_val32(data_dir: Path, tmp_path: Path, tiny_checkpoints: tuple[Path, Path]) -> None:
    unet, vq = tiny_checkpoints
    result, doc = bench(
        tmp_path, data_dir / "imagenet-val32", "--model", unet, "--vq", vq, "--steps", "1,2", "--limit", "1",
        "--center-crop", "32", "--warmup", "0", "--save-images", tmp_path / "sr", "--csv", tmp_path / "r.csv",
        "--markdown", tmp_path / "r.md", "--learned", "none",
    )
    assert [r["label"] for r in doc["runs"]] == ["bicubic", "tiny_unet-1step", "tiny_unet-2step"]
    assert doc["dataset"] == {
        "mode": "paired", "lr_dir": str(data_dir / "imagenet-val32" / "lr"),
        "hr_dir": str(data_dir / "imagenet-val32" / "hr"), "images": 1, "images_found": 32,
        "lr_recipe": None, "lr_recipe_description": None,
    }
    assert doc["settings"]["center_crop"] == 32
    for run in doc["runs"]:
        (img,) = run["images"]
        assert img["lr_size"] == [32, 32] and img["sr_size"] == [128, 128]
        sr = read8(img["saved"])
        hr = read8(img["hr"])[64:192, 64:192]  # the HR under the central 32x32 LR crop
        assert img["psnr"] == pytest.approx(ref_psnr(sr, hr, 0), abs=1e-9)
        assert img["ssim"] == pytest.approx(ref_ssim(sr, hr, 0), abs=1e-9)
        assert img["latency_s"] > 0
    for run in doc["runs"][1:]:
        assert run["preset"] == "tiny" and run["model"] == str(unet)
        assert run["load_s"] > 0 and run["peak_memory_bytes"] > 0
    assert doc["runs"][1]["sampler"] == "onestep" and doc["runs"][2]["sampler"] != "onestep"
    rows = list(csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text())))
    assert [r["run"] for r in rows] == ["bicubic", "tiny_unet-1step", "tiny_unet-2step"]
    md = (tmp_path / "r.md").read_text()
    assert "| tiny_unet-1step | 1 |" in md and "| tiny_unet-2step | 2 |" in md
    sheet = Image.open(tmp_path / "r.png")
    assert sheet.width >= 4 * 128  # bicubic | 1 step | 2 steps | HR
    assert "tiny_unet-2step" in result.output


@pytest.mark.parametrize("name", ["set5", "set14"])
def test_tiny_model_on_set5_and_set14(data_dir: Path, tmp_path: Path, tiny_checkpoints: tuple[Path, Path], name: str) -> None:
    unet, vq = tiny_checkpoints
    _, doc = bench(
        tmp_path, data_dir / name, "--model", unet, "--vq", vq, "--limit", "1", "--center-crop", "24",
        "--warmup", "0", "--crop-border", "4", "--learned", "none",
    )
    first = sorted(p.stem for p in (data_dir / name / "lr").iterdir())[0]
    bicubic, tiny = doc["runs"]
    for run in (bicubic, tiny):
        (img,) = run["images"]
        assert img["name"] == first == Path(img["lr"]).stem == Path(img["hr"]).stem
        assert img["sr_size"] == [96, 96] and np.isfinite(img["psnr"]) and 0 < img["ssim"] <= 1
    assert tiny["steps"] == 1 and tiny["error"] is None
    assert json.dumps(doc)  # plain JSON all the way down


def test_peak_memory_is_read_around_sr_calls_only(tmp_path: Path, fake_models: dict, monkeypatch) -> None:
    """Each SR call is its own window (reset before, read after); the metrics run outside every
    window, so a learned metric's memory is never reported as the SR peak."""
    events: list[str] = []

    class Recorder:
        kind = "cuda-max-allocated"

        def __init__(self, device: object) -> None:
            self.excluded = 0

        def allocated(self) -> int:
            return 0

        def reset(self) -> None:
            events.append("reset")

        def read(self) -> int:
            events.append("read")
            return 100 + len(events)

    real_psnr = R.M.psnr_y_numpy
    monkeypatch.setattr(R, "PeakMemory", Recorder)
    monkeypatch.setattr(R.M, "psnr_y_numpy", lambda *a: events.append("metric") or real_psnr(*a))
    make_pairs(tmp_path / "d", {f"{k}.png": f"{k}.png" for k in "ab"})
    _, doc = bench(tmp_path, tmp_path / "d", "--model", "good", "--warmup", "1")
    model_events = events[events.index("reset"):]
    assert model_events == ["reset", "read"] + ["reset", "read", "metric"] * 2
    assert doc["runs"][1]["peak_memory_bytes"] == 100 + len(events) - 1  # the largest window


def test_cuda_peak_leaves_out_the_resident_metric_models(monkeypatch):
    from sinsr_cli.bench import resources

    mem = resources.PeakMemory(torch.device("cpu"))
    mem.kind = "cuda-max-allocated"
    monkeypatch.setattr(resources, "synchronize", lambda d: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d=None: 5_000)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d=None: 1_200)
    mem.excluded = 1_200
    assert mem.allocated() == 1_200 and mem.read() == 3_800
    mem.excluded = 9_000
    assert mem.read() == 0


def test_cuda_warms_up_every_lr_size_once():
    sizes = [(32, 32), (32, 32), (48, 40), (32, 32), (48, 40), (20, 30)]
    store = type("S", (), {"lr_size": lambda self, i: sizes[i], "__len__": lambda self: len(sizes)})()
    assert R._warmup_images(store, torch.device("cuda"), 2) == [0, 0, 2, 5]
    assert R._warmup_images(store, torch.device("cpu"), 2) == [0, 0]
    assert R._warmup_images(store, torch.device("cuda"), 0) == []


def test_tile_auto_and_the_whole_image_default(tmp_path: Path, fake_models: dict) -> None:
    """`--tile auto` plans as `sinsr upscale` does and is recorded as such; the default runs whole
    images (the official evaluation's protocol up to 512 px); a bad value is a usage error."""
    make_pairs(tmp_path / "d", {"a.png": "a.png"})
    _, doc = bench(tmp_path, tmp_path / "d", "--model", "good", "--warmup", "0", "--tile", "auto")
    _, whole = bench(tmp_path, tmp_path / "d", "--model", "good", "--warmup", "0")
    assert [c["tile"] for c in fake_models["good"].calls] == [None, 0]
    assert doc["settings"]["tile"] == "auto" and whole["settings"]["tile"] == 0
    result, _ = bench(tmp_path, tmp_path / "d", "--model", "good", "--tile", "big", expect=2)
    assert "--tile must be a number of LR pixels, 0 (off) or 'auto'" in result.output
    assert fake_models["loads"] == ["good", "good"]  # refused before any model is loaded


def test_unknown_sampler_is_a_usage_error_before_any_model(tmp_path: Path, fake_models: dict) -> None:
    make_pairs(tmp_path / "d", {"a.png": "a.png"})
    result, doc = bench(tmp_path, tmp_path / "d", "--model", "good", "--sampler", "foo", expect=2)
    assert "--sampler must be one of" in result.output and not doc and fake_models["loads"] == []


def test_negative_crop_border_names_the_flag_before_any_model(tmp_path: Path, fake_models: dict) -> None:
    make_pairs(tmp_path / "d", {"a.png": "a.png"})
    result, _ = bench(tmp_path, tmp_path / "d", "--model", "good", "--crop-border", "-1", expect=2)
    assert "--crop-border must be >= 0" in result.output and fake_models["loads"] == []
