"""Sharded `sinsr upscale` and `sinsr bench` under torchrun: 2 CPU processes (gloo) against one
process with the same seed, on the tiny checkpoints and images of a few dozen pixels.

What a sharded run promises: the same bytes as one process, every output written once (a
``sitecustomize`` in the workers logs each ``os.replace`` with its rank), rank 0 alone prints
the merged summary and carries the exit code, a restarted run resumes with --skip-existing,
and bench's merged report equals the single-process one (timings aside).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from sinsr_cli.bench.results import merge_reports as merge_bench
from sinsr_cli.jobs import plan_jobs, shard_jobs
from sinsr_cli.options import UpscaleOptions
from sinsr_cli.results import BatchReport, ItemResult, merge_reports
from sinsr_cli import distributed
from sinsr_cli.cli.app import app
from sinsr_cli.distributed import DistInfo, all_gather, broadcast, deal, from_env, local_processes
from sinsr_cli.imageio import collect_inputs

from test_bench import make_pairs

ROOT = Path(__file__).resolve().parents[1]

_HOOK = """\
import os
_log = os.environ.get("SINSR_TEST_WRITE_LOG")
if _log:
    def _logging(publish):  # an output appears by a rename, or (never replacing) by a hard link
        def logged(src, dst, *args, **kwargs):
            publish(src, dst, *args, **kwargs)
            with open(_log, "a", encoding="utf-8") as f:
                f.write(os.environ.get("RANK", "-") + "\\t" + os.fspath(dst) + "\\n")
        return logged

    os.replace, os.link = _logging(os.replace), _logging(os.link)
"""


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """The single-process reference runs on one thread, as each torchrun worker does."""


def torchrun(tmp_path: Path, *args: object, log: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc-per-node 2 -m sinsr_cli ARGS`` (gloo on CPU)."""
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(_HOOK)
    env = {
        **os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(hook), str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "SINSR_TEST_WRITE_LOG": str(log or tmp_path / "writes.log"), "COLUMNS": "200",
    }
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "sinsr_cli", *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def writes(log: Path, under: Path) -> list[tuple[str, str]]:
    """(rank, path relative to ``under``) of every file moved into place under ``under``."""
    out = []
    for line in log.read_text().splitlines() if log.exists() else []:
        rank, _, path = line.partition("\t")
        p = Path(path)
        if p.is_relative_to(under):
            out.append((rank, p.relative_to(under).as_posix()))
    return out


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def smooth(h: int, w: int, seed: int) -> np.ndarray:
    g = np.random.default_rng(seed)
    small = g.integers(0, 256, (max(2, h // 4), max(2, w // 4), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC))


def truncated_png(path: Path, w: int, h: int) -> Path:
    """A PNG whose header declares ``w`` x ``h`` but whose pixel data is cut short: it is found
    as an image (a pending job) and fails only when decoded."""
    raw = b"".join(b"\0" + bytes(3 * w) for _ in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    data = zlib.compress(raw)[: 8]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    """imgs/ (five images in a tree, and notes.txt: a planned skip) and bad/broken.png."""
    imgs = tmp_path / "imgs"
    sizes = {"a.png": (32, 32), "b.png": (16, 20), "sub/c.png": (20, 12), "sub/d.png": (12, 16), "e.png": (8, 8)}
    for k, (name, (h, w)) in enumerate(sizes.items()):
        (imgs / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(smooth(h, w, k)).save(imgs / name)
    (imgs / "notes.txt").write_text("not an image")
    return imgs, truncated_png(tmp_path / "bad" / "broken.png", 28, 28)


def upscale_json(*args: object, expect: int) -> dict:
    r = CliRunner().invoke(app, ["upscale", *map(str, args), "--json"])
    assert r.exit_code == expect, r.output
    return json.loads(r.stdout)


def comparable(doc: dict, out: Path) -> list[tuple]:
    """Every file's outcome with the output folder's name taken out of paths and messages."""
    def rel(text: str | None) -> str | None:
        return None if text is None else text.replace(str(out), "OUT")

    return [(f["input"], rel(f["output"]), f["status"], rel(f["message"]), f["reason"], f["input_size"], f["output_size"])
            for f in doc["files"]]


# -- the pieces, in one process ---------------------------------------------------------------------


def test_deal_balances_by_weight_and_is_round_robin_for_equal_weights():
    assert deal([1] * 5, 2) == [[0, 2, 4], [1, 3]]
    assert deal([1] * 2, 4) == [[0], [1], [], []]
    shares = deal([100, 1, 1, 1, 90, 5], 2)
    assert sorted(i for s in shares for i in s) == list(range(6))
    assert shares == [[0], [1, 2, 3, 4, 5]]  # 100 vs 90+5+1+1+1: the heaviest first, each to the least loaded
    with pytest.raises(ValueError):
        deal([1], 0)


def test_world_of_one_needs_no_process_group(monkeypatch):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    info = from_env()
    assert info == DistInfo() and info.main
    assert all_gather("x", info) == ["x"] and broadcast(7, info) == 7
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert local_processes() == 1  # alone, whatever is left in the environment
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert local_processes() == 2  # two processes on this host split its RAM for --tile auto
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        from_env()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK=2"):
        from_env()


def test_process_group_ranks_leave_together_unless_the_block_failed(monkeypatch):
    calls: list[str] = []
    rank = DistInfo(1, 2, 1)
    monkeypatch.setattr(distributed, "join", lambda device, timeout=None: (rank, device))
    monkeypatch.setattr(distributed, "barrier", lambda info: calls.append(f"barrier {info.world}"))
    monkeypatch.setattr(distributed, "leave", lambda: calls.append("leave"))
    with distributed.process_group(torch.device("cpu")) as (info, dev):
        assert info == rank and dev == torch.device("cpu")
    assert calls == ["barrier 2", "leave"]  # a normal end waits for the peers, then leaves
    calls.clear()
    with pytest.raises(RuntimeError, match="boom"):
        with distributed.process_group(torch.device("cpu")):
            raise RuntimeError("boom")
    assert calls == ["leave"]  # a failed block leaves at once (a peer's barrier then fails, not hangs)


def test_shards_cover_every_job_once_and_merge_back_in_job_order(inputs):
    imgs, broken = inputs
    items, rejected = collect_inputs([imgs, broken])
    jobs = plan_jobs(items, rejected, UpscaleOptions(output=imgs.parent / "out"))
    shares = shard_jobs(jobs, 2)
    assert sorted(shares[0] + shares[1]) == list(range(len(jobs)))
    names = [[jobs[i].item.path.name for i in s] for s in shares]
    # notes.txt (decided in planning) is reported by rank 0; the broken file runs on rank 1
    assert "notes.txt" in names[0] and "broken.png" in names[1]
    parts = [BatchReport([ItemResult(jobs[i].item, "done") for i in s], seconds=t, seed=5) for s, t in zip(shares, (1.0, 2.0))]
    merged = merge_reports(parts, shares)
    assert [r.item for r in merged.results] == [j.item for j in jobs]
    assert merged.seconds == 2.0 and merged.seed == 5
    with pytest.raises(ValueError):
        merge_reports(parts, [shares[0], shares[1][:-1]])


def test_bench_shards_merge_into_the_one_process_report(tmp_path):
    """run_bench on two halves of the images (as two ranks would), merged, = run_bench on all."""
    from sinsr_cli.bench.dataset import find_dataset
    from sinsr_cli.bench.results import BenchOptions, plan_runs
    from sinsr_cli.bench.runner import run_bench

    make_pairs(tmp_path / "d", {f"{k}.png": f"{k}.png" for k in "abcde"}, size=32)
    ds = find_dataset(tmp_path / "d")
    opts = BenchOptions(device="cpu", learned=(), warmup=0)
    whole = run_bench(ds, plan_runs([]), opts)
    shares = deal([1] * 5, 2)
    merged = merge_bench([run_bench(ds, plan_runs([]), opts, images=s) for s in shares])
    assert [r.label for r in merged.runs] == [r.label for r in whole.runs] == ["bicubic"]
    a, b = merged.runs[0], whole.runs[0]
    assert [(i.name, i.metrics) for i in a.images] == [(i.name, i.metrics) for i in b.images]
    names = whole.metric_names
    assert {k: a.summary(names)[k] for k in names} == {k: b.summary(names)[k] for k in names}
    assert merged.settings == {**whole.settings, "processes": 2} and whole.settings["processes"] == 1
    # a row some process could not run is not passed off as complete
    half = run_bench(ds, plan_runs([]), opts, images=shares[0])
    broken = merge_bench([half, run_bench(ds, [], opts, images=shares[1])])
    assert broken.runs[0].error and "3 of 5 images" in broken.runs[0].error


# -- torchrun, 2 processes ----------------------------------------------------------------------------


def test_sharded_upscale_equals_one_process_and_resumes(tmp_path, inputs, tiny_checkpoints):
    imgs, broken = inputs
    unet, vq = tiny_checkpoints
    common = ("--model", unet, "--vq", vq, "--device", "cpu", "--dtype", "fp32")
    sharded, log = tmp_path / "sharded", tmp_path / "writes.log"

    # a random seed: rank 0 draws it and every rank uses it (else rank 1's files would differ)
    proc = torchrun(tmp_path, "upscale", imgs, broken, "-o", sharded, *common, "--seed", "random", "--json", log=log)
    assert proc.returncode == 1, proc.stderr[-3000:]  # the broken file failed (on rank 1)
    doc = json.loads(proc.stdout)  # rank 0 alone wrote stdout: one JSON document
    assert doc["processes"] == 2
    assert doc["counts"] == {"done": 5, "skipped": 1, "failed": 1, "cancelled": 0}
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "broken.png" in errors[0], proc.stderr[-3000:]
    assert proc.stderr.count("sinsr upscale") == 1  # one summary table, rank 0's

    single = tmp_path / "single"
    ref = upscale_json(imgs, broken, "-o", single, *common, "--seed", doc["seed"], expect=1)
    assert tree(sharded) == tree(single)  # byte-identical outputs
    assert len(tree(single)) == 5
    assert comparable(doc, sharded) == comparable(ref, single)
    assert doc["seed"] == ref["seed"] and ref["processes"] == 1

    written = writes(log, sharded)
    assert sorted(p for _, p in written) == sorted(tree(single))  # each output written once
    expect = {"a_x4.png": "0", "sub/c_x4.png": "0", "e_x4.png": "0", "b_x4.png": "1", "sub/d_x4.png": "1"}
    assert dict((p, r) for r, p in written) == expect  # by the rank its share named

    # a restarted run: the outputs it had not written yet (one per rank) are done, the rest kept
    for name in ("a_x4.png", "sub/d_x4.png"):
        (sharded / name).unlink()
    log2 = tmp_path / "writes2.log"
    proc = torchrun(tmp_path, "upscale", imgs, "-o", sharded, *common, "--seed", doc["seed"], "--skip-existing", "--json", log=log2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads(proc.stdout)
    status = {Path(f["input"]).name: (f["status"], f["reason"]) for f in again["files"]}
    assert status["a.png"] == status["d.png"] == ("done", "")
    assert status["b.png"] == status["c.png"] == status["e.png"] == ("skipped", "output exists")
    assert sorted(p for _, p in writes(log2, sharded)) == ["a_x4.png", "sub/d_x4.png"]
    assert tree(sharded) == tree(single)


def test_sharded_bench_report_equals_one_process(tmp_path, tiny_checkpoints):
    unet, vq = tiny_checkpoints
    data = tmp_path / "d"
    make_pairs(data, {f"{k}.png": f"{k}.png" for k in "abcd"}, size=48)
    args = ("bench", data, "--model", unet, "--vq", vq, "--device", "cpu", "--dtype", "fp32", "--learned", "none",
            "--warmup", "0", "--seed", "3", "--sheet-images", "3", "--sheet-crop", "32")

    def run(where: Path, sharded: bool) -> tuple[dict, str]:
        extra = ("--json", where / "r.json", "--sheet", where / "sheet.png", "--save-images", where / "sr")
        if sharded:
            proc = torchrun(tmp_path, *args, *extra, log=tmp_path / "bench.log")
            assert proc.returncode == 0, proc.stderr[-3000:]
            out = proc.stdout
        else:
            r = CliRunner().invoke(app, [*map(str, args), *map(str, extra)])
            assert r.exit_code == 0, r.output
            out = r.stdout
        return json.loads((where / "r.json").read_text()), out

    one, _ = run(tmp_path / "one", False)
    two, stdout = run(tmp_path / "two", True)
    assert stdout.count("sinsr bench:") == 1  # one table, rank 0's

    def strip(doc: dict, where: Path) -> dict:
        runs = []
        for r in doc["runs"]:
            summary = {k: v for k, v in r["summary"].items() if not k.startswith(("latency", "images_per", "output_mpix"))}
            images = [{**{k: v for k, v in im.items() if k != "latency_s"}, "saved": im["saved"] and Path(im["saved"]).relative_to(where).as_posix()}
                      for im in r["images"]]
            runs.append({**{k: v for k, v in r.items() if k not in ("load_s", "peak_memory_bytes")}, "summary": summary, "images": images})
        settings = {k: v for k, v in doc["settings"].items() if k not in ("processes", "save_images")}
        return {"runs": runs, "settings": settings, "messages": doc["messages"], "dataset": doc["dataset"], "metrics": doc["metrics"]}

    assert two["settings"]["processes"] == 2 and one["settings"]["processes"] == 1
    assert [r["summary"]["images"] for r in two["runs"]] == [4, 4]
    assert strip(two, tmp_path / "two") == strip(one, tmp_path / "one")
    assert tree(tmp_path / "two" / "sr") == tree(tmp_path / "one" / "sr")
    saved = writes(tmp_path / "bench.log", tmp_path / "two" / "sr")
    assert sorted(p for _, p in saved) == sorted(tree(tmp_path / "one" / "sr"))  # each once, by its rank
    assert {r for r, _ in saved} == {"0", "1"}
    assert (tmp_path / "two" / "sheet.png").read_bytes() == (tmp_path / "one" / "sheet.png").read_bytes()
