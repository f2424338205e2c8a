"""The one prepared check for a lent CUDA GPU: tests, fp32 parity, speed, tiled VRAM, folder rate.

Prints one JSON line per measurement (and appends them to ``--out``); a failing section prints
``{"section": ..., "error": ...}`` and the script goes on, so one run gives every figure it can.
Every section runs in its own subprocess with its own time limit; the whole script is sized for
about 7 minutes on an H100/H200 (the device budget is 15 minutes, start-up included).

Sections:
  env       torch/CUDA/cuDNN versions, GPU, TF32 and cudnn.benchmark settings, free memory
  tests     ``SINSR_TEST_DEVICE=cuda pytest tests/test_cuda.py tests/test_degradations.py``
  parity    ``python -m sinsr_cli.parity parity_small --device cuda`` (true fp32): max errors
  speed     ``benchmarks/speed.py --device cuda --size 128 --dtype fp16,bf16 --official DIR``:
            one-step 128 -> 512 against the official fp16 path (full-size, random weights)
  tiled     ``benchmarks/tiled_memory.py --device cuda --dtype fp16 --sizes 1024``: peak VRAM
            of 1024 -> 4096, at the largest tile the 32-bit index limit allows and at 256
  folder    ``run_batch`` (what ``sinsr upscale DIR`` runs) over ../shared/data/realsr with
            random full-size fp16 weights: images/s with the I/O threads on and off

Preparation, once, in the root of the checkout the device run is sent from (../shared and the
official clone do not travel; ``.gpu`` is carried, about 60 MB)::

    echo /.gpu/ >> .git/info/exclude
    mkdir -p .gpu/shared/data .gpu/shared/reference .gpu/official
    cp -r ../shared/data/realsr .gpu/shared/data/
    cp ../shared/reference/{parity_small.safetensors,parity_small.json,parity_small_conditioning.json,architecture.json} .gpu/shared/reference/
    (cd /work/official/SinSR && find models ldm utils -name '*.py' -exec install -D {} "$OLDPWD/.gpu/official/{}" \\;)

Then one device call: ``run(command="PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py
--out $OUT/gpu_check.jsonl", carry=[".gpu"], timeout_s=540)``. einops, timm, typer, rich,
safetensors, hypothesis and scikit-image are already on the H200 image (KINDS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _first(*paths: Path) -> Path | None:
    return next((p for p in paths if p.exists()), None)


class Log:
    """JSON lines to stdout and, when given, to a file."""

    def __init__(self, out: Path | None) -> None:
        self.out = out
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, section: str, **fields: Any) -> None:
        line = json.dumps({"section": section, **fields}, default=str)
        print(line, flush=True)
        if self.out is not None:
            with self.out.open("a", encoding="utf-8") as f:
                f.write(line + "\n")


def _env(shared: Path | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    env["PYTHONUNBUFFERED"] = "1"
    if shared is not None:
        env["SINSR_SHARED"] = str(shared)
    return env


def _run(cmd: list[str], timeout: float, env: dict[str, str]) -> tuple[int | None, str, str]:
    """(return code or None on timeout, stdout, stderr tail) of one subprocess."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
        return p.returncode, p.stdout, p.stderr[-2000:]
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        return None, out, err[-2000:]


def _json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for ln in text.splitlines():
        if ln.startswith("{"):
            try:
                out.append(json.loads(ln))
            except json.JSONDecodeError:
                pass
    return out


# ----------------------------------------------------------------------------------- sections


def section_env(log: Log) -> None:
    import torch

    from sinsr_cli.devices import precision_flags

    try:
        import xformers  # type: ignore[import-not-found]  # noqa: F401

        xf = True
    except ImportError:
        xf = False
    free, total = torch.cuda.mem_get_info()
    log("env", torch=torch.__version__, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
        gpu=torch.cuda.get_device_name(), capability=torch.cuda.get_device_capability(),
        precision=precision_flags(), float32_matmul_precision=torch.get_float32_matmul_precision(),
        free_gib=round(free / 2**30, 1), total_gib=round(total / 2**30, 1), xformers=xf)


def section_tests(log: Log, env: dict[str, str]) -> None:
    cmd = [sys.executable, "-m", "pytest", "tests/test_cuda.py", "tests/test_degradations.py", "-q",
           "-p", "no:cacheprovider", "-rfEs"]
    t0 = time.perf_counter()
    rc, out, err = _run(cmd, 240, {**env, "SINSR_TEST_DEVICE": "cuda"})
    lines = [ln for ln in out.splitlines() if ln.strip()]
    failures = [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))]
    log("tests", rc=rc, seconds=round(time.perf_counter() - t0, 1), summary=lines[-1] if lines else err[-300:],
        failures=failures[:20], skipped=[ln for ln in lines if ln.startswith("SKIPPED")][:10])


def section_parity(log: Log, env: dict[str, str], shared: Path | None) -> None:
    fixture = (shared / "reference" / "parity_small.safetensors") if shared else None
    if fixture is None or not fixture.is_file():
        log("parity", skipped=f"no fixture under {shared}")
        return
    rc, out, err = _run([sys.executable, "-m", "sinsr_cli.parity", str(fixture), "--device", "cuda"], 180, env)
    recs = _json_lines(out)
    if not recs:
        log("parity", rc=rc, error=err[-500:])
        return
    rep = recs[-1]
    errors = {k: v.get("max_abs_err") for k, v in rep.get("errors", {}).items() if "max_abs_err" in v}
    bad = [k for k, v in rep.get("errors", {}).items() if not v.get("ok", True)]
    log("parity", rc=rc, ok=rep.get("ok"), device=rep.get("device"), not_ok=bad, max_abs_err=errors)


def section_speed(log: Log, env: dict[str, str], official: Path | None) -> None:
    cmd = [sys.executable, "benchmarks/speed.py", "--device", "cuda", "--size", "128", "--dtype", "fp16,bf16",
           "--repeats", "5", "--warmup", "2"]
    if official is not None:
        cmd += ["--official", str(official)]
    rc, out, err = _run(cmd, 300, env)
    recs = _json_lines(out)
    off = next((r for r in recs if r.get("kind") == "official" and r.get("dtype") == "fp16"), None)
    for r in recs:
        if r.get("kind") == "path" and off and "median_s" in off and "median_s" in r:
            r["speedup_vs_official_fp16"] = round(off["median_s"] / r["median_s"], 2)
        log("speed", **r)
    if rc != 0 or not recs:
        log("speed", rc=rc, error=err[-800:])


def section_tiled(log: Log, env: dict[str, str]) -> None:
    for tile in (0, 256):  # 0: the pipeline tiles at the largest input under 2^31 elements
        cmd = [sys.executable, "benchmarks/tiled_memory.py", "--device", "cuda", "--dtype", "fp16",
               "--sizes", "1024", "--tile", str(tile), "--threads", "4"]
        rc, out, err = _run(cmd, 180, env)
        try:
            doc = json.loads(out[out.index("{\n"):]) if "{\n" in out else None
        except json.JSONDecodeError:
            doc = None
        if doc is None:
            log("tiled", tile=tile, rc=rc, error=err[-800:])
            continue
        for r in doc["results"]:
            log("tiled", requested_tile=tile, **r)


def _folder_worker(data: str, limit: int, io_threads: bool) -> dict[str, Any]:
    """In a fresh process: random full-size fp16 weights, run_batch over ``data``."""
    import torch

    from sinsr_cli.batch import UpscaleOptions, plan_jobs, run_batch
    from sinsr_cli.config import PRESETS, VQ_PRESETS
    from sinsr_cli.imageio import collect_inputs
    from sinsr_cli.pipeline import SRPipeline, build_models

    torch.manual_seed(0)
    preset = PRESETS["sinsr-v1"]
    pipe = SRPipeline(*build_models(preset, VQ_PRESETS["vq-f4"]), preset).to("cuda", torch.float16)
    items, rejected = collect_inputs([data])
    items = sorted(items, key=lambda i: str(i.path))[:limit]
    with tempfile.TemporaryDirectory() as tmp:
        options = UpscaleOptions(seed=0, output=Path(tmp), io_threads=io_threads)
        warm = plan_jobs(items[:2], [], options)
        run_batch(pipe, warm, options)  # cuDNN set-up and allocator growth, untimed
        for p in Path(tmp).iterdir():
            p.unlink()
        jobs = plan_jobs(items, [], options, explicit=[data])
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        report = run_batch(pipe, jobs, options)
        seconds = time.perf_counter() - t0
    done = [r for r in report.results if r.status == "done"]
    mpix = sum(r.output_size[0] * r.output_size[1] for r in done if r.output_size) / 1e6
    return {"images": len(done), "failed": [r.message for r in report.results if r.status == "failed"][:3],
            "io_threads": io_threads, "seconds": round(seconds, 2), "images_per_s": round(len(done) / seconds, 2),
            "output_mpix_per_s": round(mpix / seconds, 2), "peak_vram_mib": round(torch.cuda.max_memory_allocated() / 2**20)}


def section_folder(log: Log, env: dict[str, str], data: Path | None, limit: int) -> None:
    if data is None:
        log("folder", skipped="no realsr folder")
        return
    for io_threads in (True, False):
        code = ("import json, sys; sys.path.insert(0, 'benchmarks'); import gpu_check; "
                f"print(json.dumps(gpu_check._folder_worker({str(data)!r}, {limit}, {io_threads})))")
        rc, out, err = _run([sys.executable, "-c", code], 180, env)
        recs = _json_lines(out)
        if recs:
            log("folder", data=str(data), **recs[-1])
        else:
            log("folder", io_threads=io_threads, rc=rc, error=err[-800:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="also append the JSON lines to this file")
    ap.add_argument("--official", type=Path, default=None, help="official SinSR checkout (default .gpu/official)")
    ap.add_argument("--shared", type=Path, default=None, help="a ../shared-like folder (default .gpu/shared)")
    ap.add_argument("--only", default="env,tests,parity,speed,tiled,folder", help="sections, comma-separated")
    ap.add_argument("--folder-images", type=int, default=60, help="images of realsr per folder run")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    log = Log(args.out)

    import torch

    if not torch.cuda.is_available():
        log("env", error="CUDA is not available here")
        return 2
    shared = args.shared or _first(ROOT / ".gpu" / "shared", ROOT.parent / "shared")
    official = args.official or _first(ROOT / ".gpu" / "official", Path("/work/official/SinSR"))
    data = _first(shared / "data" / "realsr") if shared else None
    env = _env(shared)
    wanted = {s.strip() for s in args.only.split(",")}
    t_start = time.perf_counter()
    sections = [
        ("env", lambda: section_env(log)),
        ("tests", lambda: section_tests(log, env)),
        ("parity", lambda: section_parity(log, env, shared)),
        ("speed", lambda: section_speed(log, env, official)),
        ("tiled", lambda: section_tiled(log, env)),
        ("folder", lambda: section_folder(log, env, data, args.folder_images)),
    ]
    for name, fn in sections:
        if name not in wanted:
            continue
        t0 = time.perf_counter()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - one broken section must not lose the others
            log(name, error=f"{type(e).__name__}: {' '.join(str(e).split())[:400]}")
        log("timing", of=name, seconds=round(time.perf_counter() - t0, 1))
    log("done", seconds=round(time.perf_counter() - t_start, 1), official=str(official), shared=str(shared))
    return 0


if __name__ == "__main__":
    sys.exit(main())
