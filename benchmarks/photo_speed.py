"""``sinsr upscale photo.png`` with default flags at real photo sizes, this checkout against another.

    python benchmarks/photo_speed.py --sizes 256,512 --against /path/to/old/checkout
    python benchmarks/photo_speed.py --sizes 256 --skip against:512

Runs the CLI exactly as a user does (``python -m sinsr_cli upscale photo.png -o out.png``, no
flags but the model files), in a fresh process per run, on an LR photo of each size (a photo
from ../shared/data/realsr resized with Lanczos; random noise where that folder is absent),
with full-size ``sinsr-v1`` + VQ-f4 random weights written once as safetensors. One JSON line
per run: wall seconds, peak RSS of the process (``wait4``'s ``ru_maxrss``), the tile geometry
that checkout's ``--tile auto`` picks for the image, tiles, and the counted FLOPs of that
geometry (``tileplan.Work`` of this checkout; the architecture is the same). ``--skip
which:size`` leaves a run out (a de5ef91 default at 512 takes hours on 2 cores) but still
prints its geometry and work.
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

ROOT = Path(__file__).resolve().parents[1]

# Prints the geometry `--tile auto` picks in the checkout on sys.path, for an h x w image:
# the per-image plan (tileplan) where it exists, else the run-wide tile of older checkouts.
_GEOMETRY = r"""
import json, sys, torch
from types import SimpleNamespace as NS
from sinsr_cli.config import PRESETS, VQ_PRESETS
import sinsr_cli.batch as B
try:
    from sinsr_cli.tileplan import auto_plan  # its home since the engine split
except ImportError:
    auto_plan = getattr(B, "auto_plan", None)  # older checkouts: batch's, or none (auto_tile)
from sinsr_cli.devices import resolve_dtype
h, w = int(sys.argv[1]), int(sys.argv[2])
p = PRESETS["sinsr-v1"]
dev = torch.device("cpu")
pipe = NS(scale=4, pad_multiple=64, device=dev, dtype=resolve_dtype("auto", dev), preset=p,
          unet=NS(cfg=p.unet), vq=NS(cfg=VQ_PRESETS["vq-f4"]))
if auto_plan is not None:
    from sinsr_cli.pipeline import SRPipeline
    pipe.max_input_pixels = lambda batch=1: SRPipeline.max_input_pixels(pipe, batch)
    g = auto_plan(pipe, h, w)
    out = {"tile": g.tile, "overlap": g.overlap, "pad": g.pad}
    if getattr(g, "boxes", None) is not None:  # box sizes per side (since 2026-12-03)
        out["boxes"] = [list(b) for b in g.boxes]
else:
    tile = B.auto_tile(pipe, tile_pad=8)
    out = {"tile": 0 if tile >= max(h, w) else tile, "overlap": 32, "pad": 8}
out["dtype"] = str(pipe.dtype).removeprefix("torch.")
# tiles as this checkout's tiling cuts them (end tiles keep their border-side context since 2026-12-03)
import inspect
from sinsr_cli.tiling import plan_tiles
t = out["tile"]
if "boxes" in out:
    out["tiles"], out["context"] = len(out["boxes"][0]) * len(out["boxes"][1]), out["pad"]
elif t and t < max(h, w):
    ctx = out["pad"] + ((-(t + 2 * out["pad"])) % 64) // 2  # SRPipeline.context_pad
    ov = min(out["overlap"], t // 2 - 1)
    kw = {"pad": ctx} if "pad" in inspect.signature(plan_tiles).parameters else {}
    out["tiles"], out["context"] = len(plan_tiles(h, w, t, ov, **kw)), ctx
else:
    out["tiles"], out["context"] = 1, 0
print(json.dumps(out))
"""


def _env(checkout: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(checkout)}


def _checkpoints(work: Path) -> tuple[Path, Path]:
    """Full-size random-weight checkpoints (written once, reused)."""
    u, v = work / "sinsr-v1-random.safetensors", work / "vq-f4-random.safetensors"
    if not (u.exists() and v.exists()):
        import torch

        from sinsr_cli.config import PRESETS, VQ_PRESETS
        from sinsr_cli.models.checkpoints import unet_metadata, vq_metadata, write_safetensors
        from sinsr_cli.pipeline import build_models

        torch.manual_seed(0)
        unet, vq = build_models(PRESETS["sinsr-v1"], VQ_PRESETS["vq-f4"])
        write_safetensors(unet.state_dict(), u, unet_metadata(PRESETS["sinsr-v1"]))
        write_safetensors(vq.state_dict(), v, vq_metadata(VQ_PRESETS["vq-f4"]))
    return u, v


def _photo(work: Path, size: int) -> Path:
    import numpy as np
    from PIL import Image

    out = work / f"photo{size}.png"
    if not out.exists():
        src = sorted((ROOT.parent / "shared" / "data" / "realsr").glob("*.png"))
        if src:
            im = Image.open(src[0]).convert("RGB").resize((size, size), Image.LANCZOS)
        else:
            im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8))
        im.save(out)
    return out


def _geometry(checkout: Path, size: int) -> dict:
    out = subprocess.run([sys.executable, "-c", _GEOMETRY, str(size), str(size)], env=_env(checkout),
                         cwd=checkout, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _work(size: int, geom: dict) -> float:
    """Counted FLOPs of a geometry (its checkout's tiles), with this checkout's cost model."""
    sys.path.insert(0, str(ROOT))
    from sinsr_cli.config import PRESETS, VQ_PRESETS
    from sinsr_cli.tileplan import count_work

    work = count_work(PRESETS["sinsr-v1"].unet, VQ_PRESETS["vq-f4"], 4)
    if "boxes" in geom:
        by, bx = ([-(-b // 64) * 64 for b in sizes] for sizes in geom["boxes"])
        return sum(work.flops(a * b) for a in by for b in bx)
    tile, n = geom["tile"], geom["tiles"]
    extent = size if n == 1 else min(size, tile + 2 * geom["context"])
    side = -(-extent // 64) * 64
    return n * work.flops(side * side)


def _run(checkout: Path, photo: Path, ckpt: tuple[Path, Path], out: Path) -> tuple[float, float, int]:
    cmd = [sys.executable, "-m", "sinsr_cli", "upscale", str(photo), "-o", str(out),
           "--model", str(ckpt[0]), "--vq", str(ckpt[1]), "--overwrite"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=_env(checkout), cwd=checkout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{checkout}: exit {code}: {err.strip().splitlines()[-1:]}")
    return wall, usage.ru_maxrss / 1024, code


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="256,512", help="LR photo sides")
    ap.add_argument("--against", default=None, metavar="DIR", help="another checkout (e.g. git worktree of de5ef91)")
    ap.add_argument("--skip", default="", help="comma list of which:size to leave out, which = this|against")
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "sinsr-photo-bench"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ckpt = _checkpoints(work)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    checkouts = [("this", ROOT)] + ([("against", Path(args.against).resolve())] if args.against else [])
    for size in (int(s) for s in args.sizes.split(",")):
        photo = _photo(work, size)
        for which, checkout in checkouts:  # interleaved: both checkouts see the same machine state
            geom = _geometry(checkout, size)
            rec = {"kind": "photo", "which": which, "checkout": str(checkout), "lr": size, **geom,
                   "tflop": round(_work(size, geom) / 1e12, 2), "load_before": os.getloadavg()[0]}
            if f"{which}:{size}" not in skip:
                wall, rss, _ = _run(checkout, photo, ckpt, work / f"out-{which}-{size}.png")
                rec.update(seconds=round(wall, 2), peak_rss_mib=round(rss))
            print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
