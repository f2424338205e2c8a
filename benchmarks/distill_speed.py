"""Seconds per iteration of ``sinsr distill`` at the full ``sinsr-v1`` size (random weights).

    python benchmarks/distill_speed.py                    # CPU, 2 threads, fp32, batch 1, 256 px
    python benchmarks/distill_speed.py --iters 5 --amp bf16
    python benchmarks/distill_speed.py --device cuda --batch 8 --amp bf16

One iteration is one optimiser step of the real loop (``distill.trainer.train``): load an HR crop
(256 px; the LR made by the Real-ESRGAN degradation on the device), VQ-encode the bicubic-x4 LR
and the HR (64x64 latents), the teacher's 15 deterministic steps, the student's four calls (three
with gradients) and backward, AdamW and the EMA update. Full-size models: UNet 118.6M parameters
(teacher, student, EMA), VQ-f4 55.3M. The first ``--warmup`` iterations are dropped; the median
of the others is reported (from ``log.jsonl``, one record per step), with a per-stage breakdown
measured separately on the same models (``--no-breakdown`` to skip it).

A busy machine inflates every number, so the machine's speed is measured right before and after
(one no-grad UNet forward at 64x64 and a 2048^2 matmul) and the iteration is also expressed in
UNet forwards; on CPU/2 threads/fp32, ``s_per_it_at_reference_unet_speed`` rescales the median to
the reference README's unloaded 0.534 s per forward. Prints one JSON line at the end.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
#: ../shared/reference/README.md: "UNet only, one forward at latent 64x64, t=14", 2 threads, fp32
REFERENCE_UNET_FWD_S = 0.534
sys.path.insert(0, str(ROOT))

from sinsr_cli.config import PRESETS, VQ_PRESETS  # noqa: E402
from sinsr_cli.diffusion.sampler import prior_sample  # noqa: E402
from sinsr_cli.distill.degradations import degrade  # noqa: E402
from sinsr_cli.distill.losses import LossWeights, distill_terms, encode_latents, teacher_x0  # noqa: E402
from sinsr_cli.distill.trainer import DistillConfig, ema_update, train  # noqa: E402
from sinsr_cli.models.swin_unet import SwinUNet  # noqa: E402
from sinsr_cli.models.vq_f4 import VQModel  # noqa: E402
from sinsr_cli.pipeline import SRPipeline  # noqa: E402


def _rss_peak_mib() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _timed(fn, dev: torch.device) -> float:
    _sync(dev)
    t = time.perf_counter()
    fn()
    _sync(dev)
    return time.perf_counter() - t


def calibrate(teacher: SwinUNet, dev: torch.device) -> dict[str, float]:
    """How fast this machine is right now: one no-grad UNet forward at 64x64, t=14 (the
    reference README's 0.534 s on this machine type, unloaded) and a 2048^2 fp32 matmul."""
    x = torch.randn(1, 3, 64, 64, device=dev)
    t = torch.tensor([14], device=dev)
    with torch.no_grad():
        teacher(x, t, x)
        fwd = statistics.median(_timed(lambda: teacher(x, t, x), dev) for _ in range(2))
    a = torch.randn(2048, 2048, device=dev)
    a @ a
    mm = statistics.median(_timed(lambda: a @ a, dev) for _ in range(3))
    return {"unet_forward_s": round(fwd, 3), "matmul_gflops": round(2 * 2048**3 / mm / 1e9, 1)}


def breakdown(teacher: SwinUNet, vq: VQModel, preset, batch: int, crop: int, dev: torch.device) -> dict[str, float]:
    """One iteration's stages, each timed once (after the loop has warmed everything up)."""
    pipe = SRPipeline(teacher, vq, preset)
    sched = pipe.schedule
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    ema = copy.deepcopy(teacher)
    opt = torch.optim.AdamW(student.parameters(), lr=5e-5)
    g = torch.Generator(device=dev).manual_seed(0)
    hr = torch.rand(batch, 3, crop, crop, device=dev, generator=g)
    out: dict[str, float] = {}
    box: dict[str, torch.Tensor] = {}
    out["degradation"] = _timed(lambda: box.__setitem__("lq", degrade(hr, None, g) * 2 - 1), dev)
    lq, gt = box["lq"], hr * 2 - 1
    out["vq_encode_lq_and_hr"] = _timed(lambda: box.update(zip(("z_y", "z_gt"), encode_latents(pipe, lq, gt))), dev)
    noise = torch.randn(box["z_y"].shape, device=dev, generator=g)
    out["teacher_15_steps"] = _timed(lambda: box.__setitem__("x0", teacher_x0(pipe, box["z_y"], lq, noise)), dev)
    z_t = prior_sample(box["z_y"], sched, noise)

    def student_fwd_bwd() -> None:
        terms, _ = distill_terms(student, box["x0"], z_t, box["z_gt"], lq, sched)
        terms["loss"].mean().backward()

    out["student_4_calls_and_backward"] = _timed(student_fwd_bwd, dev)

    def step() -> None:
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema_update(ema, student, 0.999)

    out["adamw_and_ema"] = _timed(step, dev)
    return {k: round(v, 3) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=3, help="timed iterations (after the warm-up)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", default="no", choices=("no", "bf16", "fp16"))
    ap.add_argument("--tad", action="store_true", help="TAD-SR's objective (HSD + time-aware discriminator)")
    ap.add_argument("--no-breakdown", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)

    preset = PRESETS["resshift-v1"]  # the teacher; the student exported as sinsr-v1's architecture
    torch.manual_seed(0)
    teacher, vq = SwinUNet(preset.unet), VQModel(VQ_PRESETS["vq-f4"])
    n_params = sum(p.numel() for p in teacher.parameters())
    before = calibrate(teacher.to(dev), dev)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "hr"
        data.mkdir()
        rng = np.random.default_rng(0)
        for i in range(4):
            Image.fromarray((rng.random((args.crop + 64, args.crop + 32, 3)) * 255).astype(np.uint8)).save(data / f"{i}.png")
        steps = args.warmup + args.iters
        cfg = DistillConfig(teacher="random", data=str(data), batch=args.batch, crop=args.crop, steps=steps,
                            workers=0, log_every=1, ckpt_every=10**9, amp=args.amp,
                            weights=LossWeights.tad() if args.tad else LossWeights())
        t0 = time.perf_counter()
        res = train(cfg, teacher, vq, preset, Path(tmp) / "run", device=dev)
        wall = time.perf_counter() - t0
        per_it = [r["s_per_it"] for r in res.records][args.warmup:]
        stages = {} if args.no_breakdown else breakdown(teacher, vq, preset, args.batch, args.crop, dev)
    after = calibrate(teacher, dev)
    fwd_now = (before["unet_forward_s"] + after["unet_forward_s"]) / 2
    median = statistics.median(per_it)
    out = {
        "what": "sinsr distill, one optimiser step" + (" (TAD-SR)" if args.tad else ""), "device": str(dev), "threads": args.threads, "amp": args.amp,
        "batch": args.batch, "hr_crop": args.crop, "latent": args.crop // 4, "unet_params": n_params,
        "median_s_per_it": round(median, 3), "s_per_it": [round(x, 3) for x in per_it],
        "unet_forwards_per_it": round(median / fwd_now, 1),
        "calibration_before": before, "calibration_after": after,
        # the same work on an unloaded machine, where one UNet forward takes 0.534 s (README)
        "s_per_it_at_reference_unet_speed": round(median / fwd_now * REFERENCE_UNET_FWD_S, 1)
        if args.device == "cpu" and args.threads == 2 and args.amp == "no" else None,
        "wall_s_incl_setup": round(wall, 1), "stages_s": stages, "peak_rss_mib": _rss_peak_mib(),
        "loadavg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None, "torch": torch.__version__,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
