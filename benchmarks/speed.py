"""Speed of the whole SR path with the full-size ``sinsr-v1`` config (random weights).

    python benchmarks/speed.py                       # lq 64 and 128, fp32 and bf16, CPU (+CUDA)
    python benchmarks/speed.py --size 128 --dtype bf16 --repeats 5
    python benchmarks/speed.py --device cuda --dtype fp16 --size 256

Prints one JSON line per configuration, each measured in a fresh subprocess (so the peak RSS,
``/proc/self/status`` VmHWM, belongs to that configuration alone; on CUDA the peak is
``torch.cuda.max_memory_allocated``). A configuration is: build the models, move them to the
device/dtype, run the path once under ``FlopCounterMode`` (counting the work per stage), warm
up, then time ``--repeats`` calls of ``SRPipeline.__call__`` and report the median of the whole
call and of each stage inside it (bicubic+encode, UNet, decode incl. quantisation).
Achieved GFLOP/s = counted FLOPs / median stage time, reported beside the device peak
(measured here first with a large matmul in fp32 and bf16; 3x3 conv peaks too on CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

_DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


# ---------------------------------------------------------------------------------------------
# measurements that run inside a worker process


def _status_mib(field: str) -> float | None:
    """A ``VmHWM``/``VmRSS`` line of /proc/self/status in MiB (None off Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of CPU flash SDPA (torch's counter registers only the CUDA kernels)."""
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _flop_counter():
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        mapping[op] = _sdpa_cpu_flops
    return FlopCounterMode(display=False, custom_mapping=mapping)


def measure_peak(device: str, threads: int, n: int = 2048, repeats: int = 5) -> dict[str, Any]:
    """Device peak in GFLOP/s: an ``n x n`` matmul (and on CPU a 256-ch 3x3 conv, channels_last)."""
    import torch
    import torch.nn.functional as F

    from sinsr_cli.bench.resources import device_name
    from sinsr_cli.devices import synchronize

    torch.set_num_threads(threads)
    dev = torch.device(device)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    if dev.type == "cuda":
        dtypes["fp16"] = torch.float16
    out: dict[str, Any] = {"kind": "peak", "device": device, "threads": threads}
    if dev.type == "cpu":
        out["cpu"] = device_name(dev)
        # without avx512_bf16 / AMX, oneDNN emulates bf16 with fp32 FMAs plus conversions
        out["cpu_isa"] = {
            name: bool(getattr(torch.cpu, f"_is_{name}_supported", lambda: False)())
            for name in ("avx512", "avx512_bf16", "amx_tile")
        }
    elif dev.type == "cuda":
        out["gpu"] = device_name(dev)

    def best(key: str, fn: Callable[[], Any], flops: float) -> None:
        fn()
        synchronize(dev)
        times, cpus = [], []
        for _ in range(repeats):
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            synchronize(dev)
            times.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        out[f"{key}_gflops"] = round(flops / min(times) / 1e9, 1)
        if dev.type == "cpu":  # per CPU-second = per busy core: robust to other processes
            out[f"{key}_gflop_per_cpu_s"] = round(flops / min(cpus) / 1e9, 1)

    for name, dt in dtypes.items():
        a = torch.randn(n, n, device=dev, dtype=dt)
        b = torch.randn(n, n, device=dev, dtype=dt)
        best(f"matmul{n}_{name}", lambda: a @ b, 2.0 * n**3)
        if dev.type == "cpu":
            x = torch.randn(1, 256, 128, 128, dtype=dt).contiguous(memory_format=torch.channels_last)
            w = torch.randn(256, 256, 3, 3, dtype=dt).contiguous(memory_format=torch.channels_last)
            best(f"conv3x3_256c_128px_{name}", lambda: F.conv2d(x, w, padding=1), 2.0 * 256 * 256 * 9 * 128 * 128)
    return out


def _memory_fields(dev: Any, rss_built: float | None) -> dict[str, Any]:
    """Peak memory of this worker process: CUDA max allocated, or the peak RSS on CPU."""
    import torch

    if dev.type == "cuda":
        out = {"peak_mem_mib": round(torch.cuda.max_memory_allocated(dev) / 2**20, 1), "peak_mem_kind": "cuda_max_allocated"}
    else:
        out = {"peak_mem_mib": _status_mib("VmHWM"), "peak_mem_kind": "peak_rss", "rss_after_build_mib": rss_built}
    return {**out, "torch": torch.__version__}


class _StageClock:
    """Wall and CPU seconds per named stage of wrapped callables, and FLOPs while ``counter`` is set.

    ``repeat`` times whole calls (synchronised on CUDA) and keeps each call's stage split, so
    ours and the official code are timed by the same code.
    """

    def __init__(self, dev: Any) -> None:
        self.dev = dev
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.flops: dict[str, int] = {}
        self.counter: Any = None

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        from sinsr_cli.devices import synchronize

        def inner(*a: Any, **k: Any) -> Any:
            before = self.counter.get_total_flops() if self.counter is not None else 0
            synchronize(self.dev)
            c0, t0 = time.process_time(), time.perf_counter()
            r = fn(*a, **k)
            synchronize(self.dev)
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - t0
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - c0
            if self.counter is not None:
                self.flops[name] = self.flops.get(name, 0) + self.counter.get_total_flops() - before
            return r

        return inner

    def call(self, fn: Callable[[], Any]) -> tuple[float, float]:
        """``(wall, cpu)`` seconds of one whole call; the stage split restarts."""
        from sinsr_cli.devices import synchronize

        self.wall.clear()
        self.cpu.clear()
        synchronize(self.dev)
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        synchronize(self.dev)
        return time.perf_counter() - t0, time.process_time() - c0

    def repeat(self, fn: Callable[[], Any], repeats: int) -> dict[str, Any]:
        """Median/min of ``repeats`` calls, per-stage medians (wall, CPU) and CPU time per call."""
        totals, cpus, stages, stage_cpus = [], [], [], []
        for _ in range(repeats):
            wall, cpu = self.call(fn)
            totals.append(wall)
            cpus.append(cpu)
            stages.append(dict(self.wall))
            stage_cpus.append(dict(self.cpu))

        def med(xs: list[float]) -> float:
            return round(statistics.median(xs), 4)

        names = list(stages[0])
        return {
            "median_s": med(totals),
            "min_s": round(min(totals), 4),
            "stages_median_s": {k: med([s[k] for s in stages]) for k in names},
            "stages_cpu_median_s": {k: med([s[k] for s in stage_cpus]) for k in names},
            # process CPU seconds per call: about threads x median_s on an idle machine; much
            # less means other processes took the cores (the wall times are then inflated)
            "cpu_s_median": med(cpus),
        }


def run_config(args: argparse.Namespace, size: int, dtype_name: str, device: str) -> dict[str, Any]:
    """Build, count, warm up and time one configuration; returns its JSON record."""
    import torch

    from sinsr_cli.config import PRESETS, VQ_PRESETS
    from sinsr_cli.pipeline import SRPipeline, build_models

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(device)
    dtype = getattr(torch, _DTYPE_NAMES[dtype_name])
    preset = PRESETS[args.model]
    pipe = SRPipeline(*build_models(preset, VQ_PRESETS["vq-f4"]), preset).to(dev, dtype)
    if args.compile:
        pipe.unet = torch.compile(pipe.unet)
        pipe.vq.encoder = torch.compile(pipe.vq.encoder)
        pipe.vq.decoder = torch.compile(pipe.vq.decoder)
    rss_built = _status_mib("VmRSS")
    images = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(dev)

    # per-stage timers: wrap the pipeline's own stage methods on this instance
    clock = _StageClock(dev)
    encode, denoiser, decode = pipe.encode, pipe.denoiser, pipe.decode
    pipe.encode = clock.wrap("encode", encode)  # type: ignore[method-assign]
    pipe.denoiser = lambda lq: clock.wrap("unet", denoiser(lq))  # type: ignore[method-assign]
    pipe.decode = clock.wrap("decode", decode)  # type: ignore[method-assign]

    def run() -> None:
        pipe(images, steps=args.steps, seed=0)

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    if not args.compile:  # FlopCounterMode and dynamo do not mix well; count eagerly instead
        with _flop_counter() as fc:
            clock.counter = fc
            clock.call(run)
        clock.counter = None
    for _ in range(args.warmup):
        clock.call(run)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    timing = clock.repeat(run, args.repeats)

    rec: dict[str, Any] = {
        "kind": "path",
        "source": args.tag,
        "model": args.model,
        "device": device,
        "dtype": dtype_name,
        "lq": size,
        "sr": size * pipe.scale,
        "steps": args.steps,
        "threads": args.threads,
        "compile": bool(args.compile),
        "repeats": args.repeats,
        **timing,
        "loadavg_1m": [load_before, os.getloadavg()[0] if hasattr(os, "getloadavg") else None],
    }
    stage_flops = clock.flops
    if stage_flops:
        rec["gflop"] = {k: round(v / 1e9, 1) for k, v in stage_flops.items()}
        rec["achieved_gflops"] = {
            k: round(stage_flops[k] / 1e9 / rec["stages_median_s"][k], 1) for k in stage_flops
        }
        if dev.type == "cpu":  # per busy core, robust to other processes sharing the cores
            rec["gflop_per_cpu_s"] = {
                k: round(stage_flops[k] / 1e9 / rec["stages_cpu_median_s"][k], 1) for k in stage_flops
            }
    return {**rec, **_memory_fields(dev, rss_built)}


def _import_official(root: str) -> tuple[Any, Any, Any]:
    """``(UNetModelSwin, VQModelTorch, create_gaussian_diffusion)`` from a checkout of the official repo.

    Nothing of the official code is in this repository: ``--official DIR`` points at a local
    clone of github.com/wyf0912/SinSR. Its modules import ``timm`` (only for ``DropPath``,
    ``to_2tuple``, ``trunc_normal_``, unused at inference) and ``torchvision.utils.save_image``
    (unused here); where those packages are missing, minimal stand-ins are registered so the
    timed code is the official code itself.
    """
    import collections.abc
    import importlib.util
    import types

    import torch

    if importlib.util.find_spec("timm") is None:
        layers = types.ModuleType("timm.models.layers")

        class DropPath(torch.nn.Identity):  # drop_path is 0 in the SinSR configs
            def __init__(self, *a: Any, **k: Any) -> None:
                super().__init__()

        layers.DropPath = DropPath  # type: ignore[attr-defined]
        layers.to_2tuple = lambda x: tuple(x) if isinstance(x, collections.abc.Iterable) else (x, x)  # type: ignore[attr-defined]
        layers.trunc_normal_ = torch.nn.init.trunc_normal_  # type: ignore[attr-defined]
        for name in ("timm", "timm.models"):
            sys.modules[name] = types.ModuleType(name)
        sys.modules["timm.models.layers"] = layers
    if importlib.util.find_spec("torchvision") is None:
        utils = types.ModuleType("torchvision.utils")
        utils.save_image = lambda *a, **k: None  # type: ignore[attr-defined]
        sys.modules["torchvision"] = types.ModuleType("torchvision")
        sys.modules["torchvision.utils"] = utils
    sys.path.insert(0, str(Path(root).resolve()))
    from ldm.models.autoencoder import VQModelTorch  # type: ignore[import-not-found]
    from models.script_util import create_gaussian_diffusion  # type: ignore[import-not-found]
    from models.unet import UNetModelSwin  # type: ignore[import-not-found]

    return UNetModelSwin, VQModelTorch, create_gaussian_diffusion


def _official_xformers() -> dict[str, bool]:
    """Whether the imported official modules found xformers (their own module-level flags)."""
    out = {}
    for name in ("models.unet", "ldm.modules.diffusionmodules.model"):
        mod = sys.modules.get(name)
        out[name] = bool(getattr(mod, "XFORMERS_IS_AVAILBLE", False))
    return out


def run_official(args: argparse.Namespace, size: int, dtype_name: str, device: str) -> dict[str, Any]:
    """Time the official one-step path (``p_sample_loop(one_step=True)``) like :func:`run_config`.

    Configs from the official ``configs/SinSR.yaml`` (via our presets, which mirror it). fp16 is
    what the official ``inference.py`` runs: ``Sampler(use_fp16=True)`` sets the UNet's dtype to
    float16 and calls ``convert_to_fp16()`` (convs and linears of its torso in half; GroupNorm
    upcasts), and the VQ is ``.half()`` (``autoencoder.use_fp16: True``). Attention goes through
    xformers when the official modules found it (recorded), and the noise is ``randn_like`` on
    the latent's device, i.e. the CUDA RNG on a GPU. The TF32 and ``cudnn.benchmark`` settings
    in force are recorded (the official code changes neither).
    """
    import dataclasses

    import torch

    from sinsr_cli.config import PRESETS, VQ_PRESETS
    from sinsr_cli.devices import precision_flags

    unet_cls, vq_cls, make_diffusion = _import_official(args.official)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(device)
    preset, vqc = PRESETS[args.model], VQ_PRESETS["vq-f4"]
    u = preset.unet
    unet = unet_cls(
        image_size=u.image_size, in_channels=u.in_channels + u.lq_channels, model_channels=u.model_channels,
        out_channels=u.out_channels, cond_lq=u.lq_channels > 0, attention_resolutions=list(u.attention_resolutions),
        dropout=0, channel_mult=list(u.channel_mult), num_res_blocks=list(u.num_res_blocks), conv_resample=True,
        dims=2, use_fp16=False, num_head_channels=u.num_head_channels, use_scale_shift_norm=True,
        resblock_updown=False, swin_depth=u.swin_depth, swin_embed_dim=u.swin_embed_dim,
        window_size=u.window_size, mlp_ratio=u.mlp_ratio,
    ).eval().to(dev)
    vq = vq_cls(
        ddconfig=dict(double_z=False, z_channels=vqc.z_channels, resolution=256, in_channels=3, out_ch=3,
                      ch=vqc.ch, ch_mult=list(vqc.ch_mult), num_res_blocks=vqc.num_res_blocks,
                      attn_resolutions=[], dropout=0.0, padding_mode="zeros"),
        n_embed=vqc.n_embed, embed_dim=vqc.embed_dim,
    ).eval().to(dev)
    if dtype_name == "fp16":
        unet.dtype = torch.float16  # as the official Sampler.build_model with use_fp16
        unet.convert_to_fp16()
        vq = vq.half()
    elif dtype_name != "fp32":
        raise ValueError("the official code runs fp32, or fp16 (UNet convert_to_fp16, VQ .half())")
    sc = dataclasses.asdict(preset.schedule)
    diffusion = make_diffusion(
        normalize_input=True, schedule_name="exponential", sf=sc["sf"], min_noise_level=sc["min_noise_level"],
        steps=sc["steps"], kappa=sc["kappa"], etas_end=sc["etas_end"], schedule_kwargs={"power": sc["power"]},
        weighted_mse=False, predict_type="xstart", timestep_respacing=None, scale_factor=1.0, latent_flag=True,
    )
    rss_built = _status_mib("VmRSS")
    y = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(dev) * 2 - 1

    clock = _StageClock(dev)
    diffusion.encode_first_stage = clock.wrap("encode", diffusion.encode_first_stage)
    diffusion.decode_first_stage = clock.wrap("decode", diffusion.decode_first_stage)
    unet.forward = clock.wrap("unet", unet.forward)

    def run() -> None:
        with torch.no_grad():  # as the official Sampler.sample_func: reflect-pad to 64, clip only without a VQ
            ph, pw = (-size) % 64, (-size) % 64
            yp = torch.nn.functional.pad(y, (0, pw, 0, ph), mode="reflect") if ph or pw else y
            out = diffusion.p_sample_loop(y=yp, model=unet, first_stage_model=vq, noise=None, clip_denoised=False,
                                          model_kwargs={"lq": yp}, progress=False, one_step=args.steps == 1)
            out[:, :, : size * 4, : size * 4].clamp_(-1.0, 1.0)

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for _ in range(1 + args.warmup):
        clock.call(run)
    rec: dict[str, Any] = {
        "kind": "official", "source": "official", "model": args.model, "device": device, "dtype": dtype_name,
        "lq": size, "sr": size * preset.schedule.sf, "steps": args.steps, "threads": args.threads,
        "repeats": args.repeats, **clock.repeat(run, args.repeats),
        "loadavg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "official_precision": {"unet": "fp16 (convert_to_fp16)" if dtype_name == "fp16" else "fp32",
                               "vq": "fp16 (.half())" if dtype_name == "fp16" else "fp32"},
        "xformers": _official_xformers(),
        "noise": f"torch.randn_like on {dev.type} (global {'CUDA' if dev.type == 'cuda' else 'CPU'} RNG)",
    }
    if dev.type == "cuda":
        rec["precision_flags"] = precision_flags()
    return {**rec, **_memory_fields(dev, rss_built)}


# ---------------------------------------------------------------------------------------------
# the driver: one fresh subprocess per configuration


def _enable_huge_pages() -> None:
    """What ``sinsr``'s entry point does before torch is imported (checkouts without it: nothing)."""
    try:
        from sinsr_cli.hugepages import enable_huge_pages
    except ImportError:
        return
    enable_huge_pages()


def _worker_cmd(args: argparse.Namespace, extra: list[str]) -> list[str]:
    cmd = [sys.executable, os.path.abspath(__file__), "--threads", str(args.threads), "--repeats", str(args.repeats),
           "--warmup", str(args.warmup), "--steps", str(args.steps), "--model", args.model, "--tag", args.tag]
    if args.compile:
        cmd.append("--compile")
    if args.no_huge_pages:
        cmd.append("--no-huge-pages")
    if args.official:
        cmd += ["--official", args.official]
    return cmd + extra


def _spawn(cmd: list[str]) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": cmd[cmd.index("--threads") + 1]}
    root = str(Path(__file__).resolve().parents[1])
    # an existing PYTHONPATH wins, so another checkout's sinsr_cli can be timed with this script
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), root) if p)
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        err = (p.stderr.strip().splitlines() or ["no output"])[-1]
        return {"kind": "error", "cmd": " ".join(cmd[2:]), "error": err}
    return json.loads(lines[-1])


#: the official code on an idle 2-core AMX host, fp32 (shared/reference/README.md)
OFFICIAL_README_S = {64: 5.25, 128: 30.46}


def plot(paths: list[str], out: str, host: str = "CPU 2 threads") -> None:
    """Grouped bar chart (SVG, no plotting package needed) of median seconds per configuration.

    Records of kind ``path`` are ours (labelled by ``source`` and dtype), kind ``official`` the
    official code timed on the same host; the README's idle-host official figures are drawn
    beside them. Later records of the same label and size replace earlier ones, so plot one
    host's run per chart (``host`` names it in the title).
    """
    recs = [json.loads(ln) for p in paths for ln in Path(p).read_text().splitlines() if ln.startswith("{")]
    series: dict[str, dict[int, float]] = {}
    for r in recs:
        if r.get("kind") == "official":
            label = f"official {r['dtype']}, this host"
        elif r.get("kind") == "path":
            label = f"{r.get('source', 'sinsr')} {r['dtype']}, this host"
        else:
            continue
        series.setdefault(label, {})[r["lq"]] = r["median_s"]
    sizes = sorted({s for vals in series.values() for s in vals})
    series["official fp32, README AMX host"] = {s: OFFICIAL_README_S[s] for s in sizes if s in OFFICIAL_README_S}
    colours = ["#888888", "#1f77b4", "#ff7f0e", "#2ca02c", "#bbbbbb", "#9467bd"]
    w, h, left, top, bottom = 640, 340, 50, 30, 60
    plot_h = h - top - bottom
    ymax = max(v for vals in series.values() for v in vals.values()) * 1.15
    group_w = (w - left - 10) / max(1, len(sizes))
    bar_w = group_w * 0.8 / max(1, len(series))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="10">',
             f'<text x="{w / 2}" y="16" text-anchor="middle" font-size="12">SinSR one-step x4, {host}, '
             "full-size models, random weights (s, median)</text>",
             f'<line x1="{left}" y1="{top + plot_h}" x2="{w - 10}" y2="{top + plot_h}" stroke="black"/>']
    for gi, size in enumerate(sizes):
        gx = left + gi * group_w + group_w * 0.1
        parts.append(f'<text x="{gx + group_w * 0.4}" y="{top + plot_h + 14}" text-anchor="middle">'
                     f"lq {size} -> {4 * size}</text>")
        for si, (label, vals) in enumerate(series.items()):
            if size not in vals:
                continue
            bh = vals[size] / ymax * plot_h
            x, y = gx + si * bar_w, top + plot_h - bh
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w * 0.9:.1f}" height="{bh:.1f}" '
                         f'fill="{colours[si % len(colours)]}"/>')
            parts.append(f'<text x="{x + bar_w * 0.45:.1f}" y="{y - 3:.1f}" text-anchor="middle">{vals[size]:.1f}</text>')
    for si, label in enumerate(series):
        x, y = left + (si % 3) * 200, h - 26 + (si // 3) * 13
        parts.append(f'<rect x="{x}" y="{y - 8}" width="9" height="9" fill="{colours[si % len(colours)]}"/>')
        parts.append(f'<text x="{x + 13}" y="{y}">{label}</text>')
    parts.append("</svg>")
    Path(out).write_text("\n".join(parts) + "\n", encoding="utf-8")


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="64,128", help="LR side(s), comma-separated (output is 4x)")
    ap.add_argument("--steps", type=int, default=1, help="sampling steps (1 = SinSR one-step)")
    ap.add_argument("--dtype", default="fp32,bf16", help="fp32, bf16, fp16 (comma-separated)")
    ap.add_argument("--device", default="auto", help="cpu, cuda, or auto (= cpu, and cuda if present)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (median)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs after the counting run")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--compile", action="store_true", help="torch.compile the UNet, VQ encoder and decoder")
    ap.add_argument("--model", default="sinsr-v1", help="preset name from sinsr_cli.config.PRESETS")
    ap.add_argument("--tag", default="sinsr", help="label stored as 'source' in each record (for --plot)")
    ap.add_argument("--no-peak", action="store_true", help="skip the device peak measurement")
    ap.add_argument("--plot", default=None, metavar="PNG", help="draw an SVG bar chart from --from files; run nothing")
    ap.add_argument("--host", default="CPU 2 threads", help="the host, for --plot's title")
    ap.add_argument("--from", dest="sources", nargs="+", default=[], help="JSON-lines results for --plot")
    ap.add_argument("--official", default=None, metavar="DIR",
                    help="also time the official code from this checkout of github.com/wyf0912/SinSR, "
                         "interleaved with ours (adds 'speedup' = official / ours median)")
    ap.add_argument("--no-huge-pages", action="store_true",
                    help="time ours without the CLI's huge-page CPU tensors (sinsr_cli.hugepages)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.plot:
        plot(args.sources, args.plot, args.host)
        return 0

    if args.worker:  # "peak:DEVICE", "path:DEVICE:DTYPE:SIZE" or "official:DEVICE:DTYPE:SIZE"
        kind, *rest = args.worker.split(":")
        if kind == "path" and not args.no_huge_pages:
            _enable_huge_pages()  # as the CLI does
        if kind == "peak":
            rec = measure_peak(rest[0], args.threads)
        else:
            run = run_official if kind == "official" else run_config
            rec = run(args, int(rest[2]), rest[1], rest[0])
            rec["huge_pages"] = os.environ.get("THP_MEM_ALLOC_ENABLE") == "1"  # set above, or by the user
        print(json.dumps(rec), flush=True)
        return 0

    if args.device == "auto":
        import torch

        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = _csv(args.device)
    for dt in _csv(args.dtype):
        if dt not in _DTYPE_NAMES:
            ap.error(f"unknown dtype {dt!r} (use fp32, bf16, fp16)")
    rc = 0
    for device in devices:
        peak: dict[str, Any] = {}
        if not args.no_peak:
            peak = _spawn(_worker_cmd(args, ["--worker", f"peak:{device}"]))
            print(json.dumps(peak), flush=True)
        for size in (int(s) for s in _csv(args.size)):
            for dt in _csv(args.dtype):
                if dt == "fp16" and device == "cpu":
                    continue  # no fast fp16 kernels on CPU: not a configuration anyone should run
                official = None
                if args.official and (dt == "fp32" or (dt == "fp16" and device != "cpu")):
                    official = _spawn(_worker_cmd(args, ["--worker", f"official:{device}:{dt}:{size}"]))
                    print(json.dumps(official), flush=True)
                rec = _spawn(_worker_cmd(args, ["--worker", f"path:{device}:{dt}:{size}"]))
                if official and "median_s" in official and "median_s" in rec:
                    rec["speedup_vs_official"] = round(official["median_s"] / rec["median_s"], 2)
                    rec["stage_speedup_vs_official"] = {
                        k: round(official["stages_median_s"][k] / v, 2) for k, v in rec["stages_median_s"].items()
                    }
                ref = peak.get(f"matmul2048_{dt}_gflops")
                if ref and "achieved_gflops" in rec:
                    rec["peak_matmul_gflops"] = ref
                    rec["fraction_of_peak"] = {k: round(v / ref, 3) for k, v in rec["achieved_gflops"].items()}
                ref_cpu = peak.get(f"matmul2048_{dt}_gflop_per_cpu_s")
                if ref_cpu and "gflop_per_cpu_s" in rec:
                    rec["fraction_of_peak_per_cpu_s"] = {
                        k: round(v / ref_cpu, 3) for k, v in rec["gflop_per_cpu_s"].items()
                    }
                rc |= rec.get("kind") == "error"
                print(json.dumps(rec), flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
