"""``sinsr bench``'s engine: every run (bicubic, then each model x step count) over one dataset.

For each run and image: LR -> SR (timed), SR quantised to 8 bits exactly as a saved PNG would
be, then scored against HR (PSNR/SSIM on Y, LPIPS) and on its own (CLIPIQA, MUSIQ, NIQE). The
bicubic baseline row is always first. Models are loaded once for all their step counts; a model
that fails to load or run marks its rows failed and the others still run. Nothing here prints:
progress, messages and every SR image go to callbacks. The data it fills in is ``results.py``;
the baseline and the protocol lines are ``protocol.py``.
"""

from __future__ import annotations

import gc
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..devices import dtype_name, resolve_device, resolve_dtype
from ..engine import Engine
from ..errors import SettingError, one_line
from ..imageio import image_to_tensor, tensor_to_image, to_uint8, write_image
from ..pipeline import SRPipeline, load_pipeline
from ..plan import OneStepOnly, Tiling, check_settings, make_plan
from . import metrics as M
from .dataset import BenchDataset, ImageStore
from .protocol import BICUBIC, SCALE, bench_protocol, bicubic_upscale
from .resources import PeakMemory, Stopwatch, environment
from .results import BenchOptions, BenchReport, ImageResult, RunResult, RunSpec

__all__ = ["OnMessage", "OnOutput", "OnProgress", "run_bench"]

OnProgress = Callable[[str, int, int], None]  # (run label, images done, images total)
OnMessage = Callable[[str], None]
OnOutput = Callable[["RunResult", int, np.ndarray], None]  # (run, image index, SR uint8 [H, W, 3])


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "run"


def _model_name(model: str) -> str:
    """Zoo names as they are; checkpoint paths by file stem."""
    p = Path(model)
    return p.stem if p.suffix or p.exists() else model


class _Scorer:
    """PSNR/SSIM (paired) and the learned metrics for one SR image."""

    def __init__(self, crop_border: int, learned: dict[str, M.LearnedMetric], paired: bool) -> None:
        self.crop_border = crop_border
        self.learned = learned
        self.paired = paired
        self.names = (["psnr", "ssim"] if paired else []) + [n for n in M.LEARNED_METRICS if n in learned]

    def __call__(self, sr: np.ndarray, hr: np.ndarray | None) -> dict[str, float]:
        out: dict[str, float] = {}
        if hr is not None:
            out["psnr"] = M.psnr_y_numpy(sr, hr, self.crop_border)
            out["ssim"] = M.ssim_y_numpy(sr, hr, self.crop_border)
        if self.learned:
            x = image_to_tensor(sr.astype(np.float32) / 255)
            y = None
            if hr is not None:
                y = image_to_tensor(hr.astype(np.float32) / (65535 if hr.dtype == np.uint16 else 255))
            for name, metric in self.learned.items():
                if metric.full_reference and y is None:
                    continue
                out[name] = float(metric(x, y)[0])
        return out


def _learned(
    requested: tuple[str, ...] | None, paired: bool, device: torch.device, messages: list[str]
) -> dict[str, M.LearnedMetric]:
    if requested is None:
        names = [n for n in M.LEARNED_METRICS if paired or n not in M.FULL_REFERENCE]
    else:
        names = list(dict.fromkeys(n.lower() for n in requested))
        if not paired:
            for n in [n for n in names if n in M.FULL_REFERENCE]:
                messages.append(f"{n} needs HR images; skipped in no-reference mode")
                names.remove(n)
    loaded, notes = M.load_learned_metrics(names, device)
    messages.extend(notes)
    return loaded


def run_bench(
    dataset: BenchDataset,
    runs: Sequence[RunSpec],
    options: BenchOptions = BenchOptions(),
    *,
    on_progress: OnProgress | None = None,
    on_message: OnMessage | None = None,
    on_output: OnOutput | None = None,
    store: ImageStore | None = None,
    images: Sequence[int] | None = None,
) -> BenchReport:
    """Benchmark every run over ``dataset`` and return the report.

    Args:
        dataset: from :func:`~sinsr_cli.bench.dataset.find_dataset`.
        runs: from :func:`plan_runs` (bicubic first).
        options: device, sampler, seed, tiling, metrics, where to save SR images.
        on_progress: ``(run label, done, total)`` after each image.
        on_message: each warning as it happens (all are also in ``report.messages``).
        on_output: every SR image, ``[H, W, 3]`` uint8 as scored.
        store: decoded images, when the caller already has them (else decoded here).
        images: the indices of the images this process runs (a shard of a sharded run, see
            :func:`merge_reports`); None: all of them.

    Raises:
        ValueError: bad options (unknown learned metric, crop too large, ...).
        SinsrIOError: an unreadable image or a size mismatch (before any model is loaded).
    """
    t_start = time.perf_counter()
    created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    messages: list[str] = []

    def note(text: str) -> None:
        messages.append(text)
        if on_message is not None:
            on_message(text)

    if options.warmup < 0:
        raise SettingError("warmup", f"warmup must be >= 0, got {options.warmup}")
    M.check_crop_border(options.crop_border)
    Tiling(options.tile, options.tile_overlap, options.tile_pad)  # checks the tile settings
    check_settings(sampler=options.sampler)  # a bad name is a usage error, not a failed run per model
    device = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype, device)
    if store is None:
        store = ImageStore(dataset, scale=SCALE, center_crop=options.center_crop, hr_cache_bytes=options.hr_cache_bytes)
    if dataset.paired:
        smallest = min(min(store.lr_size(i)) for i in range(len(store))) * SCALE
        if smallest - 2 * options.crop_border < M.SSIM_WINDOW:
            raise SettingError(
                "crop_border", f"crop_border {options.crop_border} leaves less than {M.SSIM_WINDOW}x{M.SSIM_WINDOW} px "
                f"of the smallest SR image ({smallest} px on a side)"
            )
    pre: list[str] = []
    memory = PeakMemory(device)
    before_metrics = memory.allocated()
    learned = _learned(options.learned, dataset.paired, device, pre)
    memory.excluded = memory.allocated() - before_metrics  # metric models stay resident: not SR memory
    for m in pre:
        note(m)
    scorer = _Scorer(options.crop_border, learned, dataset.paired)
    order = list(range(len(store))) if images is None else sorted(images)
    results: list[RunResult] = []
    labels: set[str] = set()

    def unique(label: str) -> str:
        base, n = label, 2
        while label in labels:
            label, n = f"{base}-{n}", n + 1
        labels.add(label)
        return label

    def finish(run: RunResult, index: int, sr: np.ndarray, latency: float) -> None:
        w, h = store.lr_size(index)
        item = dataset.items[index]
        res = ImageResult(item.name, (w, h), (sr.shape[1], sr.shape[0]), latency, scorer(sr, store.hr(index)))
        if options.save_dir is not None:
            target = options.save_dir / _slug(run.label) / f"{item.name}.png"
            res.saved = write_image(target, sr.astype(np.float32) / 255, format="png")
        run.images.append(res)
        if on_output is not None:
            on_output(run, index, sr)
        if on_progress is not None:
            on_progress(run.label, len(run.images), len(order))

    # -- bicubic baseline ------------------------------------------------------------------
    if any(r.is_bicubic for r in runs):
        run = RunResult(unique(BICUBIC), None, None, None)
        results.append(run)
        for i in order:
            lr = store.lr(i)
            t0 = time.perf_counter()
            sr = to_uint8(bicubic_upscale(lr, SCALE))
            finish(run, i, sr, time.perf_counter() - t0)

    # -- models, each loaded once for all its step counts -----------------------------------
    models = list(dict.fromkeys(r.model for r in runs if r.model is not None))
    watch = Stopwatch(device)
    for model in models:
        specs = [r for r in runs if r.model == model]
        name = _model_name(model)
        try:
            watch.start()
            pipe = load_pipeline(
                model, options.vq, device=device, dtype=dtype, config=options.config, offline=options.offline
            )
            load_s = watch.stop()
            if pipe.scale != SCALE:
                raise ValueError(f"{model} upscales x{pipe.scale}; bench compares x{SCALE} models")
        except Exception as e:  # noqa: BLE001 - one model failing must not lose the other rows
            for spec in specs:
                run = RunResult(unique(f"{name}-{spec.steps}step" if spec.steps else name), model, spec.steps, None)
                run.error = f"cannot load {model}: {one_line(e, typed=True)}"
                results.append(run)
            note(f"{name}: cannot load: {one_line(e, typed=True)}")
            continue
        for spec in specs:
            run = _model_run(pipe, spec, name, load_s, options, store, order, memory, watch, finish, note, unique)
            if run is not None:
                results.append(run)
        del pipe
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    settings: dict[str, Any] = {
        "scale": SCALE,
        "seed": options.seed,
        "sampler": options.sampler,
        "vq": options.vq,
        "tile": "auto" if options.tile is None else options.tile,
        "tile_overlap": options.tile_overlap,
        "tile_pad": options.tile_pad,
        "warmup": options.warmup,
        "crop_border": options.crop_border,
        "center_crop": options.center_crop,
        "learned_requested": "all available" if options.learned is None else list(options.learned),
        "learned_loaded": list(learned),
        "peak_memory_kind": memory.kind,
        "save_images": str(options.save_dir) if options.save_dir is not None else None,
        "processes": 1,
    }
    return BenchReport(
        dataset=dataset,
        runs=results,
        metric_names=scorer.names,
        protocol=bench_protocol(options.crop_border, memory.kind, dataset.paired),
        environment=environment(device, dtype),
        settings=settings,
        messages=messages,
        wall_s=time.perf_counter() - t_start,
        created=created,
    )


def _warmup_images(
    store: ImageStore, device: torch.device, warmup: int, order: Sequence[int] | None = None
) -> list[int]:
    """Indices of the untimed passes: ``warmup`` x the first image (of ``order``, the images
    this process runs), and on CUDA once more for the first image of every other LR size (cuDNN
    plans, autotuning and allocator growth happen per shape; timing them would charge one image
    for the whole run's setup). CPU keeps the first image only: its per-shape cost is small
    next to a call."""
    order = list(range(len(store))) if order is None else order
    if warmup == 0 or not order:
        return []
    out = [order[0]] * warmup
    if device.type == "cuda":
        seen = {store.lr_size(order[0])}
        for i in order[1:]:
            if store.lr_size(i) not in seen:
                seen.add(store.lr_size(i))
                out.append(i)
    return out


def _model_run(
    pipe: SRPipeline,
    spec: RunSpec,
    name: str,
    load_s: float,
    options: BenchOptions,
    store: ImageStore,
    order: Sequence[int],
    memory: PeakMemory,
    watch: Stopwatch,
    finish: Callable[[RunResult, int, np.ndarray, float], None],
    note: OnMessage,
    unique: Callable[[str], str],
) -> RunResult | None:
    """All images through one loaded pipeline at one step count; None (with a note) for a
    combination the model does not have (a one-step student at another step count)."""
    # --sampler is for multi-step runs: a one-step student's own row ignores it
    asked = None if pipe.preset.one_step and spec.steps in (None, 1) else options.sampler
    try:
        plan = make_plan(
            pipe.preset, steps=spec.steps, sampler=asked, seed=options.seed,
            tiling=Tiling(options.tile, options.tile_overlap, options.tile_pad), dtype=pipe.dtype,
        )
    except OneStepOnly as e:
        note(f"{name} at {spec.steps or 'default'} step(s) skipped: {e}")
        return None
    except ValueError as e:
        run = RunResult(unique(f"{name}-{spec.steps}step"), spec.model, spec.steps, options.sampler, pipe.preset.name)
        run.error = str(e)
        note(f"{run.label}: {e}")
        return run
    steps, sampler = plan.steps, plan.sampler
    run = RunResult(unique(f"{name}-{steps}step"), spec.model, steps, sampler, pipe.preset.name, load_s, options.warmup)
    what = run.label

    def on_retry(tile: int, overlap: int) -> None:
        note(f"{what}: out of memory; retried with {tile} px tiles")

    peak = [0]
    engine = Engine(pipe)

    def call(x: torch.Tensor) -> torch.Tensor:
        """One SR call; the peak is taken around it alone, so the metrics' work is not counted."""
        memory.reset()
        y = engine(x, plan, on_retry=on_retry).to("cpu")
        peak[0] = max(peak[0], memory.read())
        return y

    try:
        for i in _warmup_images(store, pipe.device, options.warmup, order):
            call(image_to_tensor(store.lr(i)))
        for i in order:
            x = image_to_tensor(store.lr(i))
            watch.start()
            y = call(x)
            latency = watch.stop()
            if not bool(torch.isfinite(y).all()):
                note(
                    f"{what}: {store.dataset.items[i].name} has NaN/Inf values in {dtype_name(pipe.dtype)}; "
                    "scored as saved (NaN -> 0)"
                )
            finish(run, i, to_uint8(tensor_to_image(y)), latency)
        run.peak_memory_bytes = peak[0]
    except Exception as e:  # noqa: BLE001 - keep the other rows (OOM, a bad sampler, ...)
        run.error = one_line(e, typed=True)
        note(f"{what}: failed after {len(run.images)} image(s): {run.error}")
    return run
