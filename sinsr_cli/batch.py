"""Upscale many image files with one loaded pipeline: read, model, post-process, write.

This is the orchestration behind ``sinsr upscale``; it knows nothing about terminals. The
pieces have their own modules: the settings (``options.UpscaleOptions``), where each output
goes (``jobs.plan_jobs``), running the model (``engine.Engine``), the pixels after it
(``postprocess``) and what is reported (``results``). Progress and warnings go to a
``BatchObserver``; every outcome is an ``ItemResult`` whose ``message`` is one line naming the
file. Nothing here prints.

Policies:
  * fp16/bf16: an output with NaN/Inf is computed again in fp32 (same seed) with a warning, on
    the engine's fp32 copy of the pipeline (made once, kept for the run; the shared pipeline
    keeps its dtype). Non-finite output in fp32 fails the item. Nothing non-finite is ever
    written (it would come out black).
  * Tiles: ``tile`` LR pixels (0 = whole image, None = auto per image). On out-of-memory the
    engine halves the tile; the smaller tile is then kept for the rest of the run.
  * Seeds: one seed for the run (``plan.resolve_seed``: ``DEFAULT_SEED`` when not given; reported
    in ``BatchReport``), used for every file, so a file's result does not depend on its
    position in the batch and a rerun gives identical pixels.
  * Writes are atomic (``imageio.write_image``); JPEG drops alpha (a warning says so).
  * Interruption: when ``stop`` is set the run ends after the current file; a KeyboardInterrupt
    raised inside a file abandons that file (nothing is written) and ends the run. Either way
    the report lists what was done and what was never started.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from .devices import HALF_DTYPES, dtype_name, is_oom_error, release_cached_memory
from .engine import Engine
from .errors import one_line
from .files import OutputExists
from .imageio import LoadedImage, SinsrIOError, format_of, image_to_tensor, read_image, tensor_to_image, write_image
from .jobs import SKIP_EXISTS, Job, message_for, plan_jobs
from .options import UpscaleOptions
from .plan import Plan, Tiling, resolve_seed
from .postprocess import finish_color, output_size, upscale_alpha
from .results import BatchObserver, BatchReport, ItemResult, keep_error
from .tiling import OutputTooLarge

if TYPE_CHECKING:
    from .pipeline import SRPipeline

#: the front door of a folder run: the options, the plan of outputs, the run
__all__ = ["NonFiniteOutput", "UpscaleOptions", "plan_jobs", "run_batch", "upscale_image"]


class NonFiniteOutput(RuntimeError):
    """The model produced NaN/Inf."""


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
        if dtype not in HALF_DTYPES or not options.fp32_fallback:
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
    color = finish_color(rgb, size, grayscale=src.grayscale)
    del rgb

    def model(a3: np.ndarray) -> np.ndarray:
        return _run_model(engine, image_to_tensor(a3), options, state, warn=warn, on_tile=on_tile, what=what + " (alpha)")

    alpha = None if src.alpha is None else upscale_alpha(src.alpha, size, options.alpha, model)
    return color, alpha


# --------------------------------------------------------------------------- the run


def _fail(result: ItemResult, err: BaseException, device: torch.device) -> None:
    """Record ``err`` on ``result``: one line naming the file and, where one setting would change
    the outcome, that setting (``result.setting``: a front end says how to change it)."""
    path = result.item.path
    if isinstance(err, MemoryError) or is_oom_error(err):
        where = "host memory" if isinstance(err, MemoryError) else f"{device.type} memory"
        result.message, result.setting = f"{path}: out of {where}", "tile"  # a smaller tile, or auto
    elif isinstance(err, (SinsrIOError, ValueError, NonFiniteOutput, OSError, OutputTooLarge)):
        result.message = message_for(path, err)
        result.setting = getattr(err, "setting", None) or ""
    else:
        result.message = f"{path}: {one_line(err, 500, typed=True)}"
    keep_error(result, err)


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
            if not options.overwrite and job.target is not None and os.path.lexists(job.target):
                io.drop(k)  # another run into the same folder did this one since the plan: no work twice
                emit(_written_meanwhile(ItemResult(job.item, "skipped", job.target)))
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
                keep_error(result, e)
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

    def drop(self, k: int) -> None:
        """Forget job ``k``'s prefetched image (the job is skipped)."""
        fut = self.reads.pop(k, None)
        if fut is not None:
            fut.cancel()

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
        if src.frames > 1:
            warn(f"{job.item.path}: {src.frames} frames (animated or multi-page); only the first is upscaled")
        color, alpha = upscale_image(
            engine, src, options, state=state, warn=warn, on_tile=obs.tiles, pixels=pixels
        )
        result.output_size = (color.shape[1], color.shape[0])
        if alpha is not None and not format_of(target).alpha and float(alpha.min()) < 1.0:
            warn(f"{job.item.path}: JPEG has no alpha channel; transparency dropped (format png keeps it)")

        def write() -> None:
            write_image(
                target, color, alpha, like=src, quality=options.quality,
                strip_metadata=options.strip_metadata, replace=options.overwrite,
            )

    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - one bad file never stops the batch
        _fail(result, e, engine.device)
    if result.error is not None:  # the failed file's tensors are free now: give them back
        prefetch_next()
        release_cached_memory(engine.device)
        result.seconds = time.perf_counter() - t0
    return result, write, t0


def _written_meanwhile(result: ItemResult) -> ItemResult:
    """``result`` as a file skipped because another run wrote its output since the plan (two
    runs into one folder without ``overwrite`` share the work; neither replaces the other's)."""
    result.status, result.reason = "skipped", SKIP_EXISTS
    result.message = f"{result.item.path} (output exists: {result.target}; written by another run meanwhile)"
    return result


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
            keep_error(result, e)
            return True
        except OutputExists:  # another run wrote it while this one was on it: keep theirs
            _written_meanwhile(result)
        except Exception as e:  # noqa: BLE001 - a failed write fails this file only
            _fail(result, e, device)
        else:
            result.status = "done"
        break
    result.seconds = time.perf_counter() - t0
    return stop
