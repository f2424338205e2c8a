"""Calibrate ``sinsr_cli.tileplan.RATES``: time whole model calls at several input sides and fit.

    python benchmarks/tile_cost.py --dtype fp32,bf16 --sides 64,128,192

One model call = what ``SRPipeline`` does for one untiled input (bicubic, VQ encode, one-step
UNet, quantised VQ decode) with the full-size ``sinsr-v1`` + VQ-f4 (random weights). For every
side it prints a JSON line (seconds, counted linear / quadratic FLOPs); then per dtype one
``fit`` line: the ``Rates(linear_gflops, attention_gflops, overhead_s)`` that minimise the
relative error of ``tileplan``'s time model over the measured sides (least squares on 1/rate).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from sinsr_cli.hugepages import enable_huge_pages

enable_huge_pages()  # as the CLI does, before torch is imported: calibrate what users run

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sinsr_cli.config import PRESETS, VQ_PRESETS  # noqa: E402
from sinsr_cli.devices import cpu_has_native_bf16, resolve_dtype, synchronize  # noqa: E402
from sinsr_cli.pipeline import SRPipeline, build_models  # noqa: E402
from sinsr_cli.tileplan import count_work  # noqa: E402

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", default="fp32,bf16")
    ap.add_argument("--sides", default="64,128,192", help="LR input sides (multiples of 64)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    preset, vq_cfg = PRESETS["sinsr-v1"], VQ_PRESETS["vq-f4"]
    work = count_work(preset.unet, vq_cfg, preset.schedule.sf)
    sides = [int(s) for s in args.sides.split(",")]
    for name in args.dtype.split(","):
        unet, vq = build_models(preset, vq_cfg)
        pipe = SRPipeline(unet, vq, preset).to(dev, resolve_dtype(name, dev))
        rows = []
        with torch.inference_mode():
            pipe(torch.rand(1, 3, 64, 64), steps=1, seed=0)  # warm-up
            for side in sides:
                x = torch.rand(1, 3, side, side)
                times = []
                for _ in range(args.repeats):
                    synchronize(dev)
                    t0 = time.perf_counter()
                    pipe(x, steps=1, seed=0)
                    synchronize(dev)
                    times.append(time.perf_counter() - t0)
                n = float(side * side)
                row = {"kind": "call", "dtype": name, "side": side, "seconds": statistics.median(times),
                       "linear_gflop": work.linear * n / 1e9, "quadratic_gflop": work.quadratic * n * n / 1e9,
                       "native_bf16": cpu_has_native_bf16(), "threads": args.threads, "device": str(dev)}
                rows.append(row)
                print(json.dumps(row), flush=True)
        # seconds = L / r_lin + Q / r_att + c, solved for (1/r_lin, 1/r_att, c), rows weighted by 1/seconds
        a = np.array([[r["linear_gflop"], r["quadratic_gflop"], 1.0] for r in rows])
        t = np.array([r["seconds"] for r in rows])
        w = 1.0 / t
        sol, *_ = np.linalg.lstsq(a * w[:, None], t * w, rcond=None)
        inv_lin, inv_att, c = (max(float(v), 1e-12) for v in sol)
        print(json.dumps({"kind": "fit", "dtype": name, "linear_gflops": round(1 / inv_lin, 1),
                          "attention_gflops": round(1 / inv_att, 1), "overhead_s": round(c, 3),
                          "sides": sides}), flush=True)
        del pipe, unet, vq


if __name__ == "__main__":
    main()
