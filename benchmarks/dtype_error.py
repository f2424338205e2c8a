"""How far bf16 / fp16 move the one-step result from fp32, with full-size random weights.

    python benchmarks/dtype_error.py --size 64 --dtype bf16

The same LR input (a crop of a ../shared/data/realsr photo, noise where absent) goes through the
full-size ``sinsr-v1`` + VQ-f4 (random weights, seed 0) in float32 and in each low-precision
dtype. One JSON line per dtype: max / mean absolute error of ``z_y`` (VQ encode), the one-step
latent ``z0``, the share of latent positions whose nearest codebook entry differs (codebook
flips; the search itself is float32 in every dtype), and the decoded image in [0, 1] (max, mean,
PSNR against the fp32 image).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from sinsr_cli.config import PRESETS, VQ_PRESETS
from sinsr_cli.devices import resolve_dtype
from sinsr_cli.pipeline import SRPipeline, build_models, pad_to_multiple

ROOT = Path(__file__).resolve().parents[1]


def _input(size: int) -> torch.Tensor:
    from PIL import Image

    src = sorted((ROOT.parent / "shared" / "data" / "realsr").glob("*.png"))
    if src:
        a = np.asarray(Image.open(src[0]).convert("RGB"), dtype=np.float32)[:size, :size] / 255
    else:
        a = np.random.default_rng(0).random((size, size, 3), dtype=np.float32)
    return torch.from_numpy(a).permute(2, 0, 1)[None].contiguous()


def _run(pipe: SRPipeline, lq01: torch.Tensor) -> dict[str, torch.Tensor]:
    lq, _ = pad_to_multiple(lq01 * 2 - 1, pipe.pad_multiple)
    g = torch.Generator().manual_seed(0)
    z_y = pipe.encode(lq)
    z0 = pipe.sample_latent(lq, steps=1, sampler="onestep", generator=g)
    return {"z_y": z_y, "z0": z0, "idx": pipe.vq.quantize.indices(z0), "image": pipe.decode(z0) * 0.5 + 0.5}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--dtype", default="bf16", help="comma-separated: bf16, fp16")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    preset = PRESETS["sinsr-v1"]
    unet, vq = build_models(preset, VQ_PRESETS["vq-f4"])
    pipe = SRPipeline(unet, vq, preset).to("cpu", torch.float32)
    x = _input(args.size)
    with torch.inference_mode():
        ref = _run(pipe, x)
        for name in args.dtype.split(","):
            pipe.to(dtype=resolve_dtype(name, pipe.device))
            got = _run(pipe, x)
            rec: dict[str, object] = {"kind": "dtype_error", "dtype": name, "size": args.size}
            for key in ("z_y", "z0", "image"):
                d = (got[key].float() - ref[key]).abs()
                rec[f"{key}_max"], rec[f"{key}_mean"] = float(d.max()), float(d.mean())
            rec["z0_std"] = float(ref["z0"].std())
            rec["codebook_flips"] = float((got["idx"] != ref["idx"]).float().mean())
            mse = float(((got["image"].float() - ref["image"]) ** 2).mean())
            rec["image_psnr_db"] = round(10 * math.log10(1 / mse), 2) if mse > 0 else None
            print(json.dumps(rec), flush=True)
            pipe.to(dtype=torch.float32)


if __name__ == "__main__":
    main()
