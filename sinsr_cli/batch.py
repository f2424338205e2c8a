"""Upscale many image files with one loaded pipeline: plan, read, model, resample, write.

This is the engine behind ``sinsr upscale``; it knows nothing about terminals. Progress and
warnings go to a :class:`BatchObserver`; every outcome is an :class:`ItemResult` whose
``message`` is one line naming the file. Nothing here prints.

Policies:
  * Outputs: ``imageio.output_path`` places them (next to the input, under ``-o DIR`` mirroring
    the input tree, or exactly ``-o FILE`` for one input). An output that is any input of the
    run, or that two inputs would share, fails that item. An existing output is kept and its
    input skipped (reason :data:`SKIP_EXISTS`, so a rerun of a finished batch does nothing and
    succeeds), unless ``overwrite`` (replaced). Files found inside the
    output directory while walking an input directory that contains it are skipped, so a rerun
    never upscales its own results. Writes are atomic (``imageio.write_image``).
  * Inputs that ``collect_inputs`` rejected: named explicitly, missing, or carrying an image
    extension (``broken.png``, a zero-byte ``x.jpg``) -> failed, with ``read_image``'s reason;
    other non-images met while walking a folder (``notes.txt``) -> skipped with a note. So a
    file whose name or content says "image" is an image: if it cannot be read, that is an error.
  * Scale: the model's native x4, then, when ``scale != 4``, a Lanczos resample (Pillow, float32
    per channel, clipped to [0, 1]) to exactly ``round(scale * w) x round(scale * h)`` (Python's
    ``round``).
  * Alpha: ``"resize"`` (default) Lanczos-resamples the source alpha straight to the output
    size: masks stay clean and it costs nothing; ``"model"`` runs the alpha replicated to three
    channels through the model (like Real-ESRGAN's default) and keeps the channel mean. An
    all-opaque alpha is kept as all-opaque without work. JPEG drops alpha (a warning says so).
  * Grayscale: the model sees the gray replicated to RGB; the result is turned back into
    Rec. 601 luma before resampling, so gray stays gray (and 16-bit stays 16-bit via ``like``).
  * fp16/bf16: an output with NaN/Inf is computed again in fp32 (same seed) with a warning; the
    pipeline returns to its dtype for the next file. Non-finite output in fp32 fails the item.
    Nothing non-finite is ever written (it would come out black).
  * Tiles: ``tile`` LR pixels (0 = whole image). On out-of-memory the pipeline halves the tile;
    the smaller tile is then kept for the rest of the run.
  * Seeds: one seed for the run (``plan.resolve_seed``: ``DEFAULT_SEED`` when not given; reported in
    :class:`BatchReport`), used for every file, so a file's result does not depend on its
    position in the batch and a rerun gives identical pixels.
  * Interruption: when ``stop`` is set the run ends after the current file; a KeyboardInterrupt
    raised inside a file abandons that file (nothing is written: writes are atomic) and ends
    the run. Either way the report lists what was done and what was never started.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from PIL import Image

from .config import ModelPreset
from .imageio import (
    DEFAULT_MAX_PIXELS,
    InputItem,
    LoadedImage,
    SinsrIOError,
    format_named,
    format_of,
    image_to_tensor,
    luma,
    output_path,
    read_image,
    tensor_to_image,
    write_image,
)
from .devices import dtype_name, is_oom_error, release_cached_memory
from .distributed import deal
from .errors import SettingError
from .engine import Engine
from .plan import Plan, Tiling, check_settings, make_plan, resolve_seed
from .tileplan import LIVE_ACTIVATIONS, auto_plan, bytes_per_lr_pixel
from .tiling import OutputTooLarge

if TYPE_CHECKING:
    from .pipeline import SRPipeline

__all__ = [
    "ALPHA_MODES",
    "IMAGE_EXTENSIONS",
    "SKIP_EXISTS",
    "BatchObserver",
    "BatchReport",
    "ItemResult",
    "Job",
    "LIVE_ACTIVATIONS",
    "NonFiniteOutput",
    "UpscaleOptions",
    "auto_plan",
    "bytes_per_lr_pixel",
    "default_suffix",
    "output_size",
    "merge_reports",
    "plan_jobs",
    "plan_key",
    "resample",
    "run_batch",
    "sendable",
    "shard_jobs",
    "upscale_image",
]

Status = Literal["pending", "done", "skipped", "failed", "cancelled"]
ALPHA_MODES = ("resize", "model")
#: extensions that make a file "meant to be an image": unreadable ones fail instead of skipping
IMAGE_EXTENSIONS = frozenset(
    ".png .jpg .jpeg .jpe .jfif .webp .tif .tiff .bmp .gif .ppm .pgm .pbm .pnm .tga .ico "
    ".heic .heif .avif .jp2 .j2k .dds .psd".split()
)
#: ``Job.reason`` / ``ItemResult.reason`` of an input skipped because its output exists
SKIP_EXISTS = "output exists"

# --------------------------------------------------------------------------- options, jobs


def default_suffix(scale: float) -> str:
    """``_x4``, ``_x2``, ``_x1.5``: the file-name suffix used when none is given."""
    return f"_x{scale:g}"


@dataclass(frozen=True)
class UpscaleOptions:
    """Everything ``run_batch`` needs besides the pipeline and the inputs.

    ``tile``: LR pixels, 0 = whole image, None = ``auto`` (planned per image by
    :func:`auto_plan`). ``suffix`` None means :func:`default_suffix`. ``max_pixels`` None
    disables the decompression-bomb check.
    """

    scale: float = 4.0
    steps: int | None = None
    sampler: str | None = None
    seed: int | None = None
    tile: int | None = 0
    tile_overlap: int = 32
    tile_pad: int = 8
    tile_batch: int = 1
    alpha: str = "resize"
    output: Path | None = None
    suffix: str | None = None
    format: str | None = None
    quality: int = 95
    strip_metadata: bool = False
    overwrite: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    fp32_fallback: bool = True
    io_threads: bool = True  # decode the next file and write the last one while the model runs

    def __post_init__(self) -> None:
        """Refuse bad values before any model is loaded; model settings by ``plan``'s rules."""
        if not (isinstance(self.scale, (int, float)) and math.isfinite(self.scale) and self.scale > 0):
            raise SettingError("scale", f"scale must be a number > 0, got {self.scale!r}")
        check_settings(self.steps, self.sampler)
        self.tiling  # noqa: B018 - Tiling checks tile, tile_overlap, tile_pad and tile_batch
        if self.seed is not None:
            resolve_seed(self.seed)
        if self.alpha not in ALPHA_MODES:
            raise SettingError("alpha", f"alpha must be one of {', '.join(ALPHA_MODES)}, got {self.alpha!r}")
        if self.format is not None and format_named(self.format) is None:
            raise SettingError("format", f"format must be png, jpg, webp or tif, got {self.format!r}")
        if not 1 <= self.quality <= 100:
            raise SettingError("quality", f"quality must be in 1..100, got {self.quality}")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise SettingError("max_pixels", f"max_pixels must be >= 1 (or None for no limit), got {self.max_pixels}")

    @property
    def tiling(self) -> Tiling:
        """The tile settings as ``plan.Tiling`` (checked on construction)."""
        return Tiling(self.tile, self.tile_overlap, self.tile_pad, self.tile_batch)

    def plan_for(self, preset: ModelPreset, dtype: torch.dtype | None = None) -> Plan:
        """The run's :class:`plan.Plan` for a model: ``plan.make_plan`` of these settings
        (SettingError / OneStepOnly when the model does not take them)."""
        return make_plan(
            preset, steps=self.steps, sampler=self.sampler, seed=self.seed, tiling=self.tiling, dtype=dtype
        )

    @property
    def file_suffix(self) -> str:
        return default_suffix(self.scale) if self.suffix is None else self.suffix


@dataclass(frozen=True)
class Job:
    """One input and where its result goes. ``status`` is "pending" unless decided in planning."""

    item: InputItem
    target: Path | None
    status: Status = "pending"
    message: str = ""  # one line naming the file, for jobs decided in planning
    error: BaseException | None = None  # what made a planned failure, for --verbose
    reason: str = ""  # why a planned skip was skipped (e.g. SKIP_EXISTS)


@dataclass
class ItemResult:
    """What happened to one input. ``message`` is one line naming the file (empty when done)."""

    item: InputItem
    status: Status
    target: Path | None = None
    message: str = ""
    seconds: float = 0.0
    input_size: tuple[int, int] | None = None  # (width, height)
    output_size: tuple[int, int] | None = None
    warnings: list[str] = field(default_factory=list)
    error: BaseException | None = None  # the exception, without its frames (see _keep_error)
    traceback: str = ""  # the formatted traceback, for --verbose
    reason: str = ""  # see Job.reason


@dataclass
class BatchReport:
    """All results in job order (see :func:`plan_jobs`), plus how the run ended."""

    results: list[ItemResult]
    seconds: float
    seed: int
    interrupted: bool = False
    tile: int | None = 0  # the tile in force at the end (None: auto; fixed after an out-of-memory retry)

    def count(self, status: Status) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def existing(self) -> int:
        """Inputs skipped because their output already exists (see ``overwrite``)."""
        return sum(r.status == "skipped" and r.reason == SKIP_EXISTS for r in self.results)

    @property
    def failed(self) -> list[ItemResult]:
        return [r for r in self.results if r.status == "failed"]


class BatchObserver:
    """Receives progress from :func:`run_batch`. Every method is a no-op; override what you need."""

    def batch_started(self, jobs: Sequence[Job], pending: int) -> None:
        """Before the first file; ``pending`` files will go through the model."""

    def file_started(self, job: Job, index: int, pending: int) -> None:
        """Before file ``index`` (1-based) of the ``pending`` ones is read."""

    def tiles(self, done: int, total: int) -> None:
        """Model progress inside the current file (tiles, or 1/1 untiled); restarts on a retry."""

    def warning(self, job: Job, message: str) -> None:
        """Something worth telling that did not stop the file (one line, names the file)."""

    def file_finished(self, result: ItemResult) -> None:
        """After every input, including those decided in planning and those never started."""


# --------------------------------------------------------------------------- planning


def _resolved(p: Path) -> str:
    return os.path.normcase(os.path.realpath(p))


def _root_of(item: InputItem) -> Path:
    """The directory (or glob prefix) the item was found under: ``path`` minus ``rel``."""
    n = len(item.rel.parts)
    return Path(*item.path.parts[: len(item.path.parts) - n]) if n < len(item.path.parts) else Path(".")


def _is_under(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip(os.sep) + os.sep)


def plan_jobs(
    items: Sequence[InputItem],
    rejected: Sequence[tuple[Path, str]],
    options: UpscaleOptions,
    *,
    explicit: Sequence[str | os.PathLike[str]] = (),
    single_input_file: bool = False,
) -> list[Job]:
    """Decide each input's output path and whether it runs, is skipped or has already failed.

    ``items`` and ``rejected`` come from ``imageio.collect_inputs``; ``explicit`` are the input
    arguments as the user typed them (a rejected file named there fails rather than skips).
    Returns one job per input: rejected files first (their errors show at once), then the images
    in input order.
    """
    explicit_paths = {_resolved(Path(os.path.expanduser(os.fspath(p)))) for p in explicit}
    out_dir = None
    if options.output is not None and not single_input_file:
        out_dir = _resolved(options.output)

    def in_output_dir(item: InputItem) -> bool:
        """Found by walking an input folder that contains the output folder (a previous result)."""
        root = _resolved(_root_of(item))
        return (
            out_dir is not None and out_dir != root and _is_under(out_dir, root)
            and _is_under(_resolved(item.path), out_dir)
        )

    jobs: list[Job] = []
    for path, reason in rejected:
        item = InputItem(path=path, rel=Path(path.name))
        named = _resolved(path) in explicit_paths
        if named or not os.path.lexists(path) or path.suffix.lower() in IMAGE_EXTENSIONS:
            message, error = _read_failure(path, reason)
            jobs.append(Job(item, None, "failed", message, error))
        else:
            jobs.append(Job(item, None, "skipped", f"{path} ({reason})", reason=reason))

    inputs: list[InputItem] = []
    for item in items:
        if in_output_dir(item):
            jobs.append(Job(item, None, "skipped", f"{item.path} (inside the output directory)"))
        else:
            inputs.append(item)
    input_paths = {_resolved(i.path): i.path for i in inputs}
    claimed: dict[str, Path] = {}
    for item in inputs:
        try:
            target = output_path(
                item, output=options.output, suffix=options.file_suffix, format=options.format,
                single_input_file=single_input_file,
            )
        except SinsrIOError as e:
            jobs.append(Job(item, None, "failed", _with_path(item.path, e), e))
            continue
        key = _resolved(target)
        if key in input_paths:
            msg = f"{item.path}: the output {target} is an input of this run; refusing to overwrite it"
            jobs.append(Job(item, target, "failed", msg))
        elif key in claimed:
            msg = (
                f"{item.path}: the output {target} is also the output of {claimed[key]} "
                "(outputs are named by file stem); rename one of them or upscale them separately"
            )
            jobs.append(Job(item, target, "failed", msg))
        elif os.path.lexists(target) and not options.overwrite:
            jobs.append(Job(item, target, "skipped", f"{item.path} (output exists: {target})", reason=SKIP_EXISTS))
        else:
            jobs.append(Job(item, target))
        claimed.setdefault(key, item.path)
    return jobs


def _read_failure(path: Path, reason: str) -> tuple[str, BaseException | None]:
    """The precise one-line reason ``read_image`` gives for a file ``collect_inputs`` rejected."""
    if os.path.lexists(path) and not path.is_dir():
        try:
            read_image(path)
        except SinsrIOError as e:
            return str(e), e
        except Exception:  # noqa: BLE001 - fall back to the sniffing reason
            pass
    return f"{path}: {reason}", None


def _with_path(path: Path, err: BaseException) -> str:
    """One line naming ``path``: SinsrIOError messages already start with a path."""
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, SinsrIOError) and err.path is not None:
        return text
    return f"{path}: {text}"


# --------------------------------------------------------------------------- sharded runs


def plan_key(jobs: Sequence[Job]) -> str:
    """A digest of a plan (each job's input, output and status): processes that plan the same
    run from the same files get the same key, so they can check that they agree before sharding."""
    h = hashlib.sha256()
    for j in jobs:
        h.update(f"{j.item.path}\0{j.target}\0{j.status}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def shard_jobs(jobs: Sequence[Job], world: int) -> list[list[int]]:
    """Which jobs each of ``world`` processes runs: ``shares[rank]``, indices into ``jobs``.

    The pending jobs are dealt by LR pixel count so the processes end together
    (``distributed.deal``); the jobs already decided in planning (skips, failures) go to rank
    0, so every input is reported exactly once. The same plan gives the same split everywhere.
    """
    pending = [i for i, j in enumerate(jobs) if j.status == "pending"]
    weights = [max(1, j.item.size[0] * j.item.size[1]) if j.item.size else 1 for j in (jobs[i] for i in pending)]
    shares = [[pending[k] for k in share] for share in deal(weights, world)]
    shares[0] = sorted(shares[0] + [i for i, j in enumerate(jobs) if j.status != "pending"])
    return shares


def sendable(report: BatchReport) -> BatchReport:
    """``report`` ready to be pickled to another process: an exception that does not survive
    pickling is replaced by a RuntimeError with its text (the traceback text is kept)."""
    results = []
    for r in report.results:
        if r.error is not None:
            try:
                pickle.loads(pickle.dumps(r.error))
            except Exception:  # noqa: BLE001 - any exception type may refuse
                r = replace(r, error=RuntimeError(f"{type(r.error).__name__}: {r.error}"))
        results.append(r)
    return replace(report, results=results)


def merge_reports(parts: Sequence[BatchReport], shares: Sequence[Sequence[int]]) -> BatchReport:
    """One report of a sharded run: ``parts[rank]`` ran the jobs ``shares[rank]`` (see
    :func:`shard_jobs`). Results in job order, as one process running them all gives them;
    the time is the slowest process's, the tile rank 0's."""
    n = sum(len(s) for s in shares)
    results: list[ItemResult | None] = [None] * n
    for part, share in zip(parts, shares, strict=True):
        if len(part.results) != len(share):
            raise ValueError(f"a process reported {len(part.results)} results for {len(share)} jobs")
        for i, r in zip(share, part.results):
            results[i] = r
    if any(r is None for r in results):
        raise ValueError("the shares do not cover every job exactly once")
    return BatchReport(
        [r for r in results if r is not None],
        max(p.seconds for p in parts),
        parts[0].seed,
        any(p.interrupted for p in parts),
        parts[0].tile,
    )


# --------------------------------------------------------------------------- pixels


def output_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """``(round(scale * width), round(scale * height))``; ValueError when a side would be 0."""
    w, h = round(scale * width), round(scale * height)
    if w < 1 or h < 1:
        raise ValueError(f"--scale {scale:g} would make a {width}x{height} image {w}x{h} pixels")
    return w, h


def resample(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Lanczos resize of float ``[H, W]`` or ``[H, W, C]`` to ``size`` = (width, height), in [0, 1].

    Each channel is resized as a Pillow mode "F" (float32) image, so 16-bit precision survives;
    the Lanczos overshoot is clipped.
    """
    w, h = size
    if a.shape[1] == w and a.shape[0] == h:
        return np.asarray(a, dtype=np.float32)
    planes = a[..., None] if a.ndim == 2 else a
    out = np.empty((h, w, planes.shape[2]), dtype=np.float32)
    for c in range(planes.shape[2]):
        im = Image.fromarray(np.ascontiguousarray(planes[..., c], dtype=np.float32))  # mode "F"
        out[..., c] = np.asarray(im.resize((w, h), Image.Resampling.LANCZOS))
    np.clip(out, 0.0, 1.0, out=out)
    return out[..., 0] if a.ndim == 2 else out


class NonFiniteOutput(RuntimeError):
    """The model produced NaN/Inf."""


_HALF = (torch.float16, torch.bfloat16)


@dataclass
class _RunState:
    """Mutable run-wide state: the plan, whose tiling shrinks after an out-of-memory retry (the
    tile that fitted is kept for the rest of the run)."""

    plan: Plan


def _engine(pipe: SRPipeline | Engine) -> Engine:
    return pipe if isinstance(pipe, Engine) else Engine(pipe)


def _run_model(
    engine: Engine,
    x: torch.Tensor,
    options: UpscaleOptions,
    state: _RunState,
    *,
    warn: Callable[[str], None],
    on_tile: Callable[[int, int], None],
    what: str,
) -> np.ndarray:
    """``[1, 3, h, w]`` in [0, 1] -> ``[4h, 4w, 3]`` float32 array, with the fp32 fallback.

    The fallback runs on the engine's fp32 copy of the pipeline (made on the first NaN, kept for
    the rest of the run); the shared pipeline keeps its dtype throughout."""

    def on_retry(tile: int, overlap: int) -> None:
        warn(f"{what}: out of memory; retrying with tile {tile}")
        state.plan = replace(state.plan, tiling=Tiling(tile, overlap, options.tile_pad, options.tile_batch))

    y = engine(x, state.plan, on_tile=on_tile, on_retry=on_retry)
    if not bool(torch.isfinite(y).all()):
        dtype = state.plan.dtype or engine.dtype
        if dtype not in _HALF or not options.fp32_fallback:
            raise NonFiniteOutput(f"the model produced NaN/Inf values in {dtype_name(dtype)}; not written")
        warn(f"{what}: {dtype_name(dtype)} produced NaN/Inf values; computing this file again in fp32")
        del y
        y = engine(x, replace(state.plan, dtype=torch.float32), on_tile=on_tile, on_retry=on_retry)
        if not bool(torch.isfinite(y).all()):
            raise NonFiniteOutput("the model produced NaN/Inf values even in fp32; not written")
    return tensor_to_image(y, in_place=True)  # y is ours: no copy of a large output


def upscale_image(
    pipe: SRPipeline | Engine,
    src: LoadedImage,
    options: UpscaleOptions,
    *,
    state: _RunState | None = None,
    warn: Callable[[str], None] = lambda _: None,
    on_tile: Callable[[int, int], None] = lambda d, t: None,
    pixels: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """A decoded image -> (colour, alpha) at ``options.scale``, ready for ``write_image(like=src)``.

    ``pixels`` is ``image_to_tensor(src.rgb)`` when the caller already made it (pinned, say).

    Colour is ``[H, W, 3]`` float32 in [0, 1], or ``[H, W]`` luma for a grayscale source;
    alpha is ``[H, W]`` or None. ``H, W`` = :func:`output_size` of the source.
    """
    engine = _engine(pipe)
    if state is None:
        state = _RunState(options.plan_for(engine.pipe.preset))
    what = str(src.path) if src.path is not None else "image"
    width, height = src.size
    size = output_size(width, height, options.scale)

    x = image_to_tensor(src.rgb) if pixels is None else pixels
    rgb = _run_model(engine, x, options, state, warn=warn, on_tile=on_tile, what=what)
    color: np.ndarray = luma(rgb) if src.grayscale else rgb
    color = resample(color, size)
    del rgb

    alpha = None
    if src.alpha is not None:
        if float(src.alpha.min()) >= 1.0:
            alpha = np.ones((size[1], size[0]), dtype=np.float32)
        elif options.alpha == "model":
            a3 = image_to_tensor(np.repeat(src.alpha[..., None], 3, axis=2))
            up = _run_model(engine, a3, options, state, warn=warn, on_tile=on_tile, what=what + " (alpha)")
            alpha = resample(up.mean(axis=2), size)
        else:
            alpha = resample(src.alpha, size)
    return color, alpha


# --------------------------------------------------------------------------- the run


def _failure_message(path: Path, err: BaseException, device: torch.device) -> str:
    if isinstance(err, MemoryError) or is_oom_error(err):
        where = "host memory" if isinstance(err, MemoryError) else f"{device.type} memory"
        return f"{path}: out of {where}; use a smaller --tile (e.g. --tile 128) or --tile auto"
    if isinstance(err, (SinsrIOError, ValueError, NonFiniteOutput, OSError, OutputTooLarge)):
        return _with_path(path, err)
    return f"{path}: {type(err).__name__}: {' '.join(str(err).split())}"


def run_batch(
    pipe: SRPipeline | None,
    jobs: Sequence[Job],
    options: UpscaleOptions,
    observer: BatchObserver | None = None,
    *,
    stop: threading.Event | None = None,
) -> BatchReport:
    """Process every pending job in order; never raises for a bad file.

    The model handles one file at a time; with ``options.io_threads`` the next file is decoded
    and the previous one encoded and written on two worker threads meanwhile (see ``_IO``), so
    a file's ``file_finished`` may come after the next file's ``file_started``. Results and
    ``file_finished`` calls stay in job order. ``pipe`` may be None only when no job is pending.
    Returns the report; a KeyboardInterrupt inside a file is caught, recorded
    (``report.interrupted``) and ends the run (a write already under way is finished first).
    """
    obs = observer or BatchObserver()
    pending = sum(j.status == "pending" for j in jobs)
    if pending and pipe is None:
        raise ValueError("run_batch needs a pipeline when some jobs are pending")
    engine = None if pipe is None else _engine(pipe)  # one per run: it keeps the fp32 copy
    state = None if engine is None else _RunState(options.plan_for(engine.pipe.preset))
    seed = resolve_seed(options.seed) if state is None else state.plan.seed
    t_start = time.perf_counter()
    obs.batch_started(jobs, pending)
    results: list[ItemResult] = []
    interrupted = False
    index = 0
    in_flight: tuple[ItemResult, Future[None], float] | None = None  # the file being written
    io = _IO(options.io_threads and pending > 1, pin=engine is not None and engine.device.type == "cuda")

    def settle() -> None:
        """Wait for the file being written and report it (before any later result)."""
        nonlocal in_flight, interrupted
        if in_flight is not None:
            result, write, t0 = in_flight
            in_flight = None
            interrupted |= _finish_write(result, write, t0, engine.device)  # type: ignore[union-attr]
            emit(result)

    def emit(result: ItemResult) -> None:
        settle()
        results.append(result)
        obs.file_finished(result)

    def next_pending(k: int) -> int | None:
        return next((n for n in range(k + 1, len(jobs)) if jobs[n].status == "pending"), None)

    try:
        for k, job in enumerate(jobs):
            if job.status != "pending":
                emit(ItemResult(job.item, job.status, job.target, job.message, error=job.error, reason=job.reason))
                continue
            if interrupted or (stop is not None and stop.is_set()):
                interrupted = True
                emit(ItemResult(job.item, "cancelled", job.target, f"{job.item.path}: not started (interrupted)"))
                continue
            index += 1
            obs.file_started(job, index, pending)
            nxt = next_pending(k)
            try:
                result, write, t0 = _process(
                    engine, job, options, state, obs, io.read(k, job, options),  # type: ignore[arg-type]
                    lambda: io.prefetch(nxt, jobs[nxt], options) if nxt is not None else None,
                )
            except KeyboardInterrupt as e:
                interrupted = True
                result = ItemResult(job.item, "cancelled", job.target, f"{job.item.path}: interrupted; nothing written")
                _keep_error(result, e)
                emit(result)
                continue
            settle()
            if write is None:
                emit(result)
            elif io.background(result.output_size):
                in_flight = (result, io.write(write), t0)
            else:
                in_flight = (result, io.write(write, inline=True), t0)
                settle()
        settle()
    finally:
        io.close()
    tile = options.tile if state is None else state.plan.tiling.tile
    return BatchReport(results, time.perf_counter() - t_start, seed, interrupted, tile)


#: outputs up to this many pixels are written on the writer thread while the next file runs
#: (two outputs are alive then); larger ones are written before the next file starts
BACKGROUND_WRITE_PIXELS = 1 << 26


class _IO:
    """A reader thread decoding the next file and a writer thread encoding the last one, so the
    model (the GPU) does not wait for PNG/JPEG decoding and encoding. Threads suffice: Pillow,
    zlib and numpy release the GIL while they work. On CUDA the decoded input is copied into
    pinned memory on the reader thread, so its upload does not block. Disabled, everything
    runs inline in the same order."""

    def __init__(self, enabled: bool, *, pin: bool) -> None:
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="sinsr-io") if enabled else None
        self.pin = pin
        self.reads: dict[int, Future[tuple[LoadedImage, torch.Tensor]]] = {}

    def _read(self, job: Job, options: UpscaleOptions) -> tuple[LoadedImage, torch.Tensor]:
        src = read_image(job.item.path, max_pixels=options.max_pixels)
        pixels = image_to_tensor(src.rgb)
        return src, pixels.pin_memory() if self.pin else pixels

    def prefetch(self, k: int, job: Job, options: UpscaleOptions) -> None:
        if self.pool is not None and k not in self.reads:
            self.reads[k] = self.pool.submit(self._read, job, options)

    def read(self, k: int, job: Job, options: UpscaleOptions) -> Callable[[], tuple[LoadedImage, torch.Tensor]]:
        """A call giving job ``k``'s decoded image (raising its read error), prefetched or not."""
        fut = self.reads.pop(k, None)
        return fut.result if fut is not None else (lambda: self._read(job, options))

    def background(self, size: tuple[int, int] | None) -> bool:
        return self.pool is not None and size is not None and size[0] * size[1] <= BACKGROUND_WRITE_PIXELS

    def write(self, fn: Callable[[], None], *, inline: bool = False) -> Future[None]:
        if self.pool is not None and not inline:
            return self.pool.submit(fn)
        fut: Future[None] = Future()
        try:
            fut.set_result(fn())
        except BaseException as e:  # noqa: BLE001 - delivered by _finish_write like a thread's
            fut.set_exception(e)
        return fut

    def close(self) -> None:
        if self.pool is not None:
            for fut in self.reads.values():
                fut.cancel()
            self.pool.shutdown(wait=True)


def _process(
    engine: Engine,
    job: Job,
    options: UpscaleOptions,
    state: _RunState,
    obs: BatchObserver,
    read: Callable[[], tuple[LoadedImage, torch.Tensor]],
    prefetch_next: Callable[[], None],
) -> tuple[ItemResult, Callable[[], None] | None, float]:
    """Read and upscale one file; returns ``(result, write, t0)``: ``write`` stores the output
    (None when the file already failed: every failure becomes a "failed" result)."""
    assert job.target is not None
    target = job.target
    t0 = time.perf_counter()
    result = ItemResult(job.item, "failed", target)

    def warn(message: str) -> None:
        result.warnings.append(message)
        obs.warning(job, message)

    write: Callable[[], None] | None = None
    try:
        src, pixels = read()
        prefetch_next()  # decode the next file while this one is on the model
        result.input_size = src.size
        color, alpha = upscale_image(
            engine, src, options, state=state, warn=warn, on_tile=obs.tiles, pixels=pixels
        )
        result.output_size = (color.shape[1], color.shape[0])
        if alpha is not None and not format_of(target).alpha and float(alpha.min()) < 1.0:
            warn(f"{job.item.path}: JPEG has no alpha channel; transparency dropped (use --format png to keep it)")

        def write() -> None:
            write_image(
                target, color, alpha, like=src, quality=options.quality,
                strip_metadata=options.strip_metadata,
            )

    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - one bad file never stops the batch
        result.message = _failure_message(job.item.path, e, engine.device)
        _keep_error(result, e)
    if result.error is not None:  # the failed file's tensors are free now: give them back
        prefetch_next()
        release_cached_memory(engine.device)
        result.seconds = time.perf_counter() - t0
    return result, write, t0


def _finish_write(result: ItemResult, write: Future[None], t0: float, device: torch.device) -> bool:
    """Wait for a file's write and record how it ended; True when the run must stop.

    Ctrl-C while waiting lets the (atomic) write end on its own and is reported as the end of
    the run, with the file as it really ended; an interrupt inside the write cancels the file.
    """
    stop = False
    while True:
        try:
            write.result()
        except KeyboardInterrupt as e:
            if not (write.done() and write.exception() is e):
                stop = True  # Ctrl-C while waiting: wait for the writer, then end the run
                continue
            result.status, result.message = "cancelled", f"{result.item.path}: interrupted; nothing written"
            _keep_error(result, e)
            return True
        except Exception as e:  # noqa: BLE001 - a failed write fails this file only
            result.message = _failure_message(result.item.path, e, device)
            _keep_error(result, e)
        else:
            result.status = "done"
        break
    result.seconds = time.perf_counter() - t0
    return stop


def _keep_error(result: ItemResult, err: BaseException) -> None:
    """Keep the error's text and traceback on ``result``, not its frames.

    A traceback pins every local of every frame it passes through: after a CUDA out-of-memory
    or NaN file that is gigabytes of device tensors, held for the rest of the batch so later
    files fail too. The traceback is formatted now, then the frames of the whole chain
    (``__cause__``/``__context__``) are cleared and dropped.
    """
    result.traceback = "".join(traceback.format_exception(err))
    seen: set[int] = set()
    stack: list[BaseException | None] = [err]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if e.__traceback__ is not None:
            traceback.clear_frames(e.__traceback__)
            e.__traceback__ = None
        stack += [e.__cause__, e.__context__, *getattr(e, "exceptions", ())]
    result.error = err

