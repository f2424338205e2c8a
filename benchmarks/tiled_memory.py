"""Peak memory and time of a tiled x4 upscale with the full-size SinSR-v1 model (random weights).

Each image size runs in a fresh subprocess, so one size's peak cannot hide in another's:
peak RSS is the kernel's high-water mark (``VmHWM`` in ``/proc/self/status``), peak VRAM is
``torch.cuda.max_memory_allocated``. Weights are random (``build_models``): memory and time do
not depend on their values. Prints one JSON document on stdout; progress goes to stderr.

    python benchmarks/tiled_memory.py                      # 512 and 2048, tile 256, CPU
    python benchmarks/tiled_memory.py --sizes 64 128 --tile 0   # untiled, to calibrate
    python benchmarks/tiled_memory.py --sizes 512 --device cuda --dtype fp16
    python benchmarks/tiled_memory.py --max-tiles 1   # peak memory without waiting for every tile

With ``--max-tiles K`` the run stops after K tiles, then runs the output tail on buffers of the
full output size; ``projected_seconds`` = seconds per tile x tiles. K = 1 suffices: the
pipeline has ``run_tiled`` allocate both full-size buffers (weight sum and output accumulator)
before the first tile, so the first tile already runs next to everything the image needs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _status_kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


class _Stop(Exception):
    """Raised from the tile callback to end a run after ``--max-tiles`` tiles."""


def _tail(shape: tuple[int, ...]) -> None:
    """The output tail of a run that was stopped early, on buffers of the real output size.

    After the last tile ``engine.Engine`` maps the blended [-1, 1] output to [0, 1]
    (``(out * 0.5 + 0.5).clamp(0, 1)``) and ``sinsr upscale`` turns it into an array; the peak of
    that phase depends only on the output shape, so zeros of that shape reproduce it.
    """
    import torch

    from sinsr_cli.imageio import tensor_to_image

    out = torch.zeros(shape)
    y = (out * 0.5 + 0.5).clamp(0, 1)
    del out
    tensor_to_image(y, in_place=True)


def _upscale(pipe, x, tile: int, overlap: int, batch: int, on_tile):  # noqa: ANN001 - either checkout's pipeline
    """One tiled run: through ``engine.Engine`` where the checkout has one, else the pipeline's
    own tiling keywords (checkouts before the engine took them over)."""
    try:
        from sinsr_cli.engine import Engine
        from sinsr_cli.plan import Tiling, make_plan
    except ImportError:
        return pipe(x, seed=0, tile=tile, tile_overlap=overlap, tile_batch=batch, on_tile=on_tile)
    plan = make_plan(pipe.preset, seed=0, tiling=Tiling(tile, overlap, 8, batch))
    return Engine(pipe)(x, plan, on_tile=on_tile)


def run_one(
    size: int, tile: int, overlap: int, batch: int, device: str, dtype: str, threads: int,
    max_tiles: int,
) -> dict:
    """Build the model, upscale one random ``size`` x ``size`` image, report memory and time."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sinsr_cli.imageio import tensor_to_image
    from sinsr_cli.config import PRESETS, VQ_PRESETS
    from sinsr_cli.devices import resolve_device, resolve_dtype, synchronize
    from sinsr_cli.pipeline import SRPipeline, build_models

    torch.set_num_threads(threads)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    preset = PRESETS["sinsr-v1"]
    pipe = SRPipeline(*build_models(preset, VQ_PRESETS["vq-f4"]), preset).to(dev, dt)
    rss_model_mb = _status_kb("VmRSS") / 1024
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    times: list[float] = []
    n_total = [0]

    def on_tile(done: int, total: int) -> None:
        synchronize(dev)  # CUDA runs ahead of the host: a tile is done when its kernels are
        times.append(time.perf_counter())
        n_total[0] = total
        step = times[-1] - (times[-2] if len(times) > 1 else t0)
        print(f"[{size}] tile {done}/{total} ({step:.1f} s)", file=sys.stderr, flush=True)
        if max_tiles and done >= max_tiles and done < total:
            raise _Stop

    complete = True
    try:
        y = _upscale(pipe, x, tile, overlap, batch, on_tile)
        img = tensor_to_image(y, in_place=True)  # what `sinsr upscale` does next: [H, W, 3] float32 on the CPU
        synchronize(dev)
        shape = list(img.shape)
    except _Stop:
        complete = False
    if not complete:  # outside the except block: the traceback no longer pins the tile buffers
        _tail((1, 3, size * pipe.scale, size * pipe.scale))
        shape = [size * pipe.scale, size * pipe.scale, 3]
    seconds = time.perf_counter() - t0
    per_tile = (times[-1] - t0) / len(times)
    out = {
        "size": size,
        "tile": tile,
        "tile_overlap": overlap,
        "tile_batch": batch,
        "device": str(dev),
        "dtype": str(dt).removeprefix("torch."),
        "threads": threads,
        "output": shape,
        "tiles_total": n_total[0],
        "tiles_run": len(times),
        "complete": complete,
        "seconds": round(seconds, 1),
        "seconds_per_tile": round(per_tile, 1),
        "projected_seconds": round(per_tile * n_total[0], 1),
        "rss_after_model_build_mb": round(rss_model_mb),
        "peak_rss_mb": round(_status_kb("VmHWM") / 1024),
    }
    if dev.type == "cuda":
        from sinsr_cli.devices import precision_flags

        out["peak_vram_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20)
        out["gpu"] = torch.cuda.get_device_name(dev)
        out["precision"] = precision_flags()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--tile-overlap", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--max-tiles", type=int, default=0,
                    help="stop after this many tiles (0 = all); the output tail still runs at full size")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args()
    common = [args.tile, args.tile_overlap, args.batch, args.device, args.dtype, args.threads, args.max_tiles]
    if args.one:
        print(json.dumps(run_one(args.sizes[0], *common)), flush=True)
        return
    results = []
    for size in args.sizes:
        cmd = [sys.executable, __file__, "--one", "--sizes", str(size), "--tile", str(args.tile),
               "--tile-overlap", str(args.tile_overlap), "--batch", str(args.batch),
               "--device", args.device, "--dtype", args.dtype, "--threads", str(args.threads), "--max-tiles", str(args.max_tiles)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            results.append({"size": size, "error": f"exit code {proc.returncode}"})
        else:
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"model": "sinsr-v1 + vq-f4 (random weights)", "results": results}, indent=2))


if __name__ == "__main__":
    main()
