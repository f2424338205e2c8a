"""Peak memory and time of a tiled x4 upscale with the full-size SinSR-v1 model (random weights).

Each image size runs in a fresh subprocess, so one size's peak cannot hide in another's:
peak RSS is the kernel's high-water mark (``VmHWM`` in ``/proc/self/status``), peak VRAM is
``torch.cuda.max_memory_allocated``. Weights are random (``build_models``): memory and time do
not depend on their values. Prints one JSON document on stdout; progress goes to stderr.

    python benchmarks/tiled_memory.py                      # 512 and 2048, tile 256, CPU
    python benchmarks/tiled_memory.py --sizes 64 128 --tile 0   # untiled, to calibrate
    python benchmarks/tiled_memory.py --sizes 512 --device cuda --dtype fp16
    python benchmarks/tiled_memory.py --max-tiles 2   # peak memory without waiting for every tile

With ``--max-tiles K`` the run stops after K tiles, then runs the output tail on buffers of the
full output size; ``projected_seconds`` = seconds per tile x tiles. Use K >= 2: ``run_tiled``
allocates the weight sum before the first tile but the output accumulator only after it, so
from the second tile on both full-size buffers are live next to a tile's working set.
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


def _contiguous_attention() -> bool:
    """Make the VQ mid-block attention's q/k/v contiguous, if the model code does not already.

    ``AttnBlock`` hands ``scaled_dot_product_attention`` transposed (non-contiguous) q/k/v; on
    CPU that selects the math kernel, which materialises the (h*w)^2 score matrix: 42 GB for one
    320 x 320 tile. Contiguous inputs select the flash kernel (memory linear in h*w). Returns
    True when the patch was applied (reported in the JSON) -- the proposed fix for vq_f4.py.
    """
    import inspect

    import torch.nn.functional as F

    from sinsr_cli.models import vq_f4

    if ".transpose(-1, -2) for m in (self.q, self.k, self.v)" not in inspect.getsource(vq_f4.AttnBlock.forward):
        return False  # not the code this patch was written for (already fixed upstream)

    def forward(self, x):  # type: ignore[no-untyped-def]
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (m(y).reshape(b, 1, c, h * w).transpose(-1, -2).contiguous() for m in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj_out(out.transpose(-1, -2).reshape(b, c, h, w))

    vq_f4.AttnBlock.forward = forward
    return True


class _Stop(Exception):
    """Raised from the tile callback to end a run after ``--max-tiles`` tiles."""


def _tail(shape: tuple[int, ...]) -> None:
    """The output tail of a run that was stopped early, on buffers of the real output size.

    After the last tile ``SRPipeline.__call__`` maps the blended [-1, 1] output to [0, 1]
    (``(out * 0.5 + 0.5).clamp(0, 1)``) and ``sinsr upscale`` turns it into an array; the peak of
    that phase depends only on the output shape, so zeros of that shape reproduce it.
    """
    import torch

    from sinsr_cli.batch import model_to_image

    out = torch.zeros(shape)
    y = (out * 0.5 + 0.5).clamp(0, 1)
    del out
    model_to_image(y)


def run_one(
    size: int, tile: int, overlap: int, batch: int, device: str, dtype: str, threads: int,
    fix_attention: bool, max_tiles: int,
) -> dict:
    """Build the model, upscale one random ``size`` x ``size`` image, report memory and time."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sinsr_cli.batch import model_to_image
    from sinsr_cli.config import PRESETS, VQ_PRESETS
    from sinsr_cli.devices import resolve_device, resolve_dtype
    from sinsr_cli.pipeline import SRPipeline, build_models

    torch.set_num_threads(threads)
    patched = _contiguous_attention() if fix_attention else False
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
        times.append(time.perf_counter())
        n_total[0] = total
        step = times[-1] - (times[-2] if len(times) > 1 else t0)
        print(f"[{size}] tile {done}/{total} ({step:.1f} s)", file=sys.stderr, flush=True)
        if max_tiles and done >= max_tiles and done < total:
            raise _Stop

    complete = True
    try:
        y = pipe(x, seed=0, tile=tile, tile_overlap=overlap, tile_batch=batch, on_tile=on_tile)
        img = model_to_image(y)  # what `sinsr upscale` does next: [H, W, 3] float32 on the CPU
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
        "attention_patch": patched,
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
        out["peak_vram_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20)
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
    ap.add_argument("--no-fix-attention", action="store_true", help="measure the VQ attention as written")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args()
    common = [args.tile, args.tile_overlap, args.batch, args.device, args.dtype, args.threads, not args.no_fix_attention, args.max_tiles]
    if args.one:
        print(json.dumps(run_one(args.sizes[0], *common)), flush=True)
        return
    results = []
    for size in args.sizes:
        cmd = [sys.executable, __file__, "--one", "--sizes", str(size), "--tile", str(args.tile),
               "--tile-overlap", str(args.tile_overlap), "--batch", str(args.batch),
               "--device", args.device, "--dtype", args.dtype, "--threads", str(args.threads), "--max-tiles", str(args.max_tiles)]
        cmd += ["--no-fix-attention"] if args.no_fix_attention else []
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            results.append({"size": size, "error": f"exit code {proc.returncode}"})
        else:
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"model": "sinsr-v1 + vq-f4 (random weights)", "results": results}, indent=2))


if __name__ == "__main__":
    main()
