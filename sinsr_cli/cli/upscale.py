"""`sinsr upscale`: files, folders and globs in, upscaled images out (Typer only).

Parse the options, find the inputs and plan the outputs (``imageio``/``batch``), load the model
once, hand the work to ``batch.run_batch`` and render its events: a rich progress bar (files and
tiles) on a terminal, one line per error or warning, the written paths on stdout, and a summary
table. Exit codes: 0 all done, 1 some inputs failed, 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ..config import DEFAULT_SEED
from .common import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, console, fail, handle_errors, quiet_option

if TYPE_CHECKING:  # the batch engine imports torch: keep `sinsr --help` fast
    import torch

    from ..batch import BatchReport, ItemResult, Job, UpscaleOptions
    from ..distributed import DistInfo
    from ..pipeline import SRPipeline

EXIT_INTERRUPTED = 130
#: what to tell the user for each library setting an error names (``SinsrIOError.setting``)
_SETTING_HINTS = {
    "max_pixels": "raise it with --max-pixels (0 = no limit)",
    "strip_metadata": "use --strip-metadata",
}


def _message(result: ItemResult) -> str:
    """The result's one line, plus the flag that changes the outcome when its error names one."""
    hint = _SETTING_HINTS.get(getattr(result.error, "setting", None) or "")
    return f"{result.message}; {hint}" if hint else result.message


def parse_tile(value: str) -> int | None:
    """``--tile``: ``auto`` -> None (planned per image once the model is loaded), else an int
    in the range ``plan.Tiling`` takes (SettingError otherwise)."""
    from ..plan import Tiling

    text = str(value).strip().lower()
    if text == "auto":
        return None
    try:
        tile = int(text)
    except ValueError:
        raise ValueError(f"--tile must be a number of LR pixels, 0 (off) or 'auto', got {value!r}") from None
    return Tiling(tile=tile).tile


class _Renderer:
    """Turns ``run_batch`` events into terminal output. Errors and warnings are one line each.

    ``quiet``: errors (and the interruption notices) only. Skips because the output exists are
    counted in the summary instead of listed (``verbose`` lists them).
    """

    def __init__(self, err: Console, *, quiet: bool, verbose: bool, show_progress: bool, paths: bool = True) -> None:
        from ..batch import BatchObserver

        self.err, self.quiet, self.verbose, self.paths = err, quiet, verbose, paths
        self.progress: Progress | None = None
        if show_progress:
            self.progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err,
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            )
        # stdout and the bar share one terminal: print written paths above the bar instead
        self.paths_via_console = show_progress and sys.stdout.isatty()
        self._files = self._tiles = None
        self._started: set[Path] = set()  # files between file_started and file_finished (writes overlap)
        renderer = self

        class Observer(BatchObserver):  # the engine's callbacks, bound to this renderer
            def batch_started(self, jobs: Sequence[Job], pending: int) -> None:
                renderer.started(pending)

            def file_started(self, job: Job, index: int, pending: int) -> None:
                renderer.file_started(job, index, pending)

            def tiles(self, done: int, total: int) -> None:
                renderer.tiles(done, total)

            def warning(self, job: Job, message: str) -> None:
                if not renderer.quiet:
                    renderer.line("warning", "yellow", message)

            def file_finished(self, result: ItemResult) -> None:
                renderer.file_finished(result)

        self.observer = Observer()

    # -- output helpers
    def line(self, label: str, style: str, message: str) -> None:
        self.err.print(Text.assemble((f"{label}: ", style), message), soft_wrap=True, highlight=False)

    # -- events
    def started(self, pending: int) -> None:
        if self.progress is not None and pending:
            self.progress.start()
            self._files = self.progress.add_task("files", total=pending)
            self._tiles = self.progress.add_task("tiles", total=None, visible=False)  # tiled files only

    def file_started(self, job: Job, index: int, pending: int) -> None:
        self._started.add(job.item.path)
        if self.progress is not None and self._files is not None:
            name = job.item.rel.as_posix()
            self.progress.update(self._files, description=f"file {index}/{pending}: {name}")
            self.progress.reset(self._tiles, total=None, description="tiles", visible=False)

    def tiles(self, done: int, total: int) -> None:
        if self.progress is not None and self._tiles is not None:
            self.progress.update(self._tiles, completed=done, total=total, visible=total > 1)

    def file_finished(self, result: ItemResult) -> None:
        if result.status == "failed":
            self.line("error", "red", _message(result))
            if self.verbose and (result.traceback or result.error is not None):
                tb = result.traceback or "".join(traceback.format_exception(result.error))
                self.err.print(Text(tb.rstrip()), soft_wrap=True, highlight=False)
        elif result.status == "skipped" and not self.quiet:
            from ..batch import SKIP_EXISTS

            if result.reason != SKIP_EXISTS or self.verbose:
                self.line("skipped", "dim", result.message)
        elif result.status == "cancelled" and result.error is not None:  # the file Ctrl-C abandoned
            self.line("interrupted", "yellow", result.message)
        elif result.status == "done" and not self.quiet and self.paths:
            if self.paths_via_console:
                self.err.print(Text(str(result.target)), soft_wrap=True, highlight=False)
            else:
                typer.echo(str(result.target))
        started = result.item.path in self._started
        self._started.discard(result.item.path)
        if started and self.progress is not None and self._files is not None:
            self.progress.advance(self._files)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _summary(report: BatchReport, err: Console) -> None:
    """The table (its columns add up to the inputs of the run), the failures again, the skips."""
    table = Table(title="sinsr upscale", title_justify="left")
    for col in ("done", "skipped", "failed", "not started", "time"):
        table.add_column(col, justify="right")
    table.add_row(
        str(report.count("done")), str(report.count("skipped")), str(report.count("failed")),
        str(report.count("cancelled")), f"{report.seconds:.1f} s",
    )
    err.print(table)
    failed = report.failed
    if failed:
        err.print(Text(f"{len(failed)} input(s) failed:", style="red"))
        for r in failed:
            err.print(Text(f"  {_message(r)}"), soft_wrap=True, highlight=False)
    if report.existing:
        err.print(
            Text(f"{report.existing} output(s) already exist and were kept; --overwrite replaces them", style="dim"),
            soft_wrap=True, highlight=False,
        )


def _check_output(output: Path | None, single_input_file: bool, n_inputs: int) -> None:
    """Usage errors about ``-o``, found before any model is loaded (ValueError, SinsrIOError: exit 2)."""
    from ..imageio import SinsrIOError, format_named

    if output is None or single_input_file:
        return
    if output.exists() and not output.is_dir():
        raise ValueError(f"{output}: --output exists and is not a directory ({n_inputs} inputs need a folder)")
    if not output.exists() and format_named(output.suffix) is not None:
        raise ValueError(f"{output}: --output looks like a file name, but the inputs are a folder or several files; give a directory")
    try:
        output.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output, prefix=".sinsr-write-test-"):
            pass
    except OSError as e:
        raise SinsrIOError(output, f"cannot write to the output directory ({e.strerror or e})") from None


def _single_input_file(inputs: Sequence[str], n_items: int) -> bool:
    return len(inputs) == 1 and n_items == 1 and Path(os.path.expanduser(inputs[0])).is_file()


def _tiling_words(pipe: SRPipeline, tile: int | None, jobs: Sequence[Job], tile_batch: int) -> str:
    """``untiled`` when no pending image will be tiled (a fixed tile no image exceeds, the
    pipeline's own rule, or an ``auto`` plan that tiles none of them), else the tile."""
    from ..tileplan import auto_plan

    sizes = {j.item.size for j in jobs if j.status == "pending" and j.item.size}
    if tile is None:  # planned per image: plan each distinct size now (arithmetic only)
        tiled = any(auto_plan(pipe, h, w, tile_batch=tile_batch).tile for w, h in sizes) or not sizes
        return "tile auto" if tiled else "untiled"
    if not tile or (sizes and max(max(s) for s in sizes) <= tile):
        return "untiled"
    return f"tile {tile}"


def _real_esrgan_options(device: str, gpu_id: int | None, dtype: str, fp32: bool) -> tuple[str, str]:
    """``-g N`` -> ``--device cuda:N``, ``--fp32`` -> ``--dtype fp32`` (Real-ESRGAN's spellings)."""
    if gpu_id is not None:
        if device not in ("auto", f"cuda:{gpu_id}"):
            raise ValueError(f"--gpu-id {gpu_id} and --device {device} disagree; give one of them")
        device = f"cuda:{gpu_id}"
    if fp32:
        if dtype.lower() not in ("auto", "fp32", "float32"):
            raise ValueError(f"--fp32 and --dtype {dtype} disagree; give one of them")
        dtype = "fp32"
    return device, dtype


_HELP = """Upscale images with SinSR / ResShift (x4 model, any output scale).

Inputs are files, folders (searched recursively) and glob patterns. A file is an image when its
name or its content says so; one that cannot be read (empty, truncated, text named .png) is an
error, and other files in folders (notes.txt) are skipped.

Outputs are written atomically and never replace an input. An existing output is kept and its
input skipped (so a rerun of a finished batch does nothing and exits 0); --overwrite replaces it.

The default seed is fixed: the same command gives the same pixels. Ctrl-C stops after the
current file; press it twice to abandon that file (nothing half-written is left).

Exit codes: 0 done (or skipped), 1 some inputs failed, 2 usage error, 130 interrupted.
"""


@handle_errors
def upscale_cmd(
    inputs: Optional[list[str]] = typer.Argument(None, metavar="INPUT", help="Image files, folders or glob patterns.", show_default=False),
    input_opt: Optional[list[str]] = typer.Option(None, "-i", "--input", metavar="INPUT", help="An input, as INPUT (Real-ESRGAN's -i); repeatable.", show_default=False),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output folder (the input tree is mirrored) or, for one input file, the output file. Default: next to each input."),
    scale: float = typer.Option(4.0, "-s", "--scale", "--outscale", help="Output scale: the x4 model, then a Lanczos resample to exactly round(s*w) x round(s*h)."),
    suffix: Optional[str] = typer.Option(None, "--suffix", help="Added to output file names (default _x<scale>, e.g. _x4); '' keeps the names.", show_default=False),
    fmt: str = typer.Option("auto", "-f", "--format", "--ext", help="Output format: png, jpg, webp, tif, or auto (the input's)."),
    quality: int = typer.Option(95, "--quality", help="JPEG/WebP quality, 1-100."),
    model: str = typer.Option("sinsr-v1", "-m", "--model", "-n", "--model-name", help="Zoo name (see `sinsr models`) or checkpoint file."),
    vq: str = typer.Option("vq-f4", "--vq", help="VQ autoencoder: zoo name or file."),
    config: Optional[Path] = typer.Option(None, "--config", help="Official YAML/JSON for checkpoints that are not presets."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Sampling steps of a ResShift teacher (default its T: 15, or 4 for v3); SinSR students take exactly 1.", show_default=False),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="ancestral (default) or deterministic, for ResShift's multi-step sampling.", show_default=False),
    seed: str = typer.Option(str(DEFAULT_SEED), "--seed", help="Noise seed, or 'random' for a fresh one (shown in the header)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    gpu_id: Optional[int] = typer.Option(None, "-g", "--gpu-id", help="Same as --device cuda:N (Real-ESRGAN's -g).", show_default=False),
    dtype: str = typer.Option("auto", "--dtype", help="auto (fp16 on CUDA, bf16 on CPUs with AMX or AVX512-BF16, else fp32), fp32, fp16 or bf16. NaN/Inf in fp16/bf16 is retried in fp32."),
    fp32: bool = typer.Option(False, "--fp32", help="Same as --dtype fp32 (Real-ESRGAN's flag)."),
    tile: str = typer.Option("auto", "-t", "--tile", help="Tile size in LR pixels, 0 = whole image, auto = the fastest geometry per image that fits in memory."),
    tile_overlap: int = typer.Option(32, "--tile-overlap", help="Overlap between tiles in LR pixels (blended seamlessly) for --tile N; auto chooses its own."),
    tile_pad: int = typer.Option(8, "--tile-pad", help="Context each tile sees beyond its edges, in LR pixels (at least), for --tile N; auto chooses its own."),
    batch: int = typer.Option(1, "--batch", help="Tiles per model call."),
    alpha: str = typer.Option("resize", "--alpha", help="Alpha channel: resize (Lanczos) or model (through the model as gray)."),
    recursive: bool = typer.Option(True, "--recursive/--no-recursive", help="Search folders recursively."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs (inputs are never overwritten)."),
    skip_existing: bool = typer.Option(False, "--skip-existing", hidden=True, help="The default (kept for old scripts)."),
    strip_metadata: bool = typer.Option(False, "--strip-metadata", help="Do not carry EXIF and ICC profile to the outputs."),
    max_pixels: int = typer.Option(178_956_970, "--max-pixels", help="Refuse inputs declaring more pixels than this (decompression bombs); 0 = no limit."),
    offline: bool = typer.Option(False, "--offline", help="Never download; use cached weights only."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary (every input: status, output, time) as JSON on stdout instead of the written paths."),
    quiet: bool = quiet_option(),
    verbose: bool = typer.Option(False, "--verbose", help="Show tracebacks on errors (and every skipped input)."),
) -> None:
    from .. import distributed
    from ..batch import UpscaleOptions, plan_jobs

    rank = distributed.from_env()
    if not rank.main:  # errors found before the processes join are every rank's: rank 0 tells them
        console.quiet = True
    from ..devices import resolve_device
    from ..imageio import collect_inputs
    from ..plan import resolve_seed

    given = [*(inputs or []), *(input_opt or [])]
    if not given:
        raise fail("give at least one INPUT (an image file, a folder or a glob pattern); see --help", EXIT_USAGE)
    if skip_existing and overwrite:
        raise ValueError("--skip-existing and --overwrite cannot be used together")
    tile_size = parse_tile(tile)
    seed_value = resolve_seed(seed)  # "random" becomes a number here, shown in the header
    device, dtype = _real_esrgan_options(device, gpu_id, dtype, fp32)
    fmt_name = None if fmt.strip().lower() == "auto" else fmt
    options = UpscaleOptions(
        scale=scale, steps=steps, sampler=sampler, seed=seed_value, tile=tile_size,
        tile_overlap=tile_overlap, tile_pad=tile_pad, tile_batch=batch, alpha=alpha, output=output,
        suffix=suffix, format=fmt_name, quality=quality, strip_metadata=strip_metadata, overwrite=overwrite,
        max_pixels=max_pixels or None,
    )

    items, rejected = collect_inputs(given, recursive=recursive)
    single = _single_input_file(given, len(items))
    if items:
        _check_output(output, single, len(items))
    jobs = plan_jobs(items, rejected, options, explicit=given, single_input_file=single)
    if not items and not any(j.status == "failed" for j in jobs):
        raise fail(f"no images found in {', '.join(given)}", EXIT_PARTIAL)
    wanted = resolve_device(device)

    with distributed.process_group(wanted, timeout=distributed.SHARD_TIMEOUT) as (rank, dev):
        if not rank.main:
            console.quiet = False  # joined: from here on, errors are this rank's own
        report, renderer, shares = _run_sharded(
            rank, dev, jobs, options, model=model, vq=vq, dtype=dtype, config=config, offline=offline,
            tile_size=tile_size, quiet=quiet or not rank.main, verbose=verbose, json_out=json_out,
        )
    if not rank.main:  # rank 0 reports the whole run and carries its exit code
        raise typer.Exit(EXIT_OK)
    mine = set(shares[0])
    for i, result in enumerate(report.results):  # the other processes' files, told as rank 0 told its own
        if i not in mine:
            for message in result.warnings if not quiet else ():
                renderer.line("warning", "yellow", message)
            renderer.file_finished(result)
    if json_out:
        typer.echo(json.dumps(summary_dict(report, processes=rank.world), indent=2))
    if not quiet:
        _summary(report, console)
    if report.interrupted:
        renderer.line(
            "interrupted", "yellow",
            f"{report.count('cancelled')} file(s) not processed; rerun the same command to continue (finished outputs are kept)",
        )
        raise typer.Exit(EXIT_INTERRUPTED)
    raise typer.Exit(EXIT_PARTIAL if report.failed else EXIT_OK)


def _run_sharded(
    rank: DistInfo,
    dev: torch.device,
    jobs: list[Job],
    options: UpscaleOptions,
    *,
    model: str,
    vq: str,
    dtype: str,
    config: Path | None,
    offline: bool,
    tile_size: int | None,
    quiet: bool,
    verbose: bool,
    json_out: bool,
) -> tuple[BatchReport, _Renderer, list[list[int]]]:
    """This process's share of the jobs through the model, then every process's report merged
    (in job order) on every rank. Alone, the share is every job. Returns (report, rank 0's
    renderer, the shares)."""
    from .. import distributed
    from ..batch import BatchObserver, merge_reports, plan_key, run_batch, sendable, shard_jobs

    if rank.world > 1:
        if len(set(distributed.all_gather(plan_key(jobs), rank))) > 1:
            raise ValueError(
                "the processes found different inputs or outputs; under torchrun every node must see the "
                "same INPUT and --output (a shared filesystem)"
            )
        options = replace(options, seed=distributed.broadcast(options.seed, rank))  # `--seed random`: rank 0's
    shares = shard_jobs(jobs, rank.world)
    mine = [jobs[i] for i in shares[rank.rank]]
    pipe = None
    pending = sum(j.status == "pending" for j in jobs)
    if pending:
        from ..pipeline import load_pipeline

        pipe = load_pipeline(model, vq, device=dev, dtype=dtype, config=config, offline=offline or None)
        # a steps/sampler pair this model does not take is a usage error, before any file
        options.plan_for(pipe.preset)
        if not quiet:
            dt = str(pipe.dtype).removeprefix("torch.")
            where = f"{pipe.device} ({dt})" if rank.world == 1 else f"{rank.world} processes ({pipe.device.type}, {dt})"
            console.print(
                Text(
                    f"{pipe.preset.name} on {where}, {_tiling_words(pipe, tile_size, jobs, options.tile_batch)}, "
                    f"seed {options.seed}: {pending} of {len(jobs)} file(s) to upscale",
                    style="dim",
                ),
                soft_wrap=True, highlight=False,
            )

    show_progress = console.is_terminal and not quiet
    renderer = _Renderer(console, quiet=quiet, verbose=verbose, show_progress=show_progress, paths=not json_out)
    observer = renderer.observer if rank.main else BatchObserver()  # the others' results are told by rank 0
    stop = threading.Event()

    def on_sigint(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        if rank.main:
            renderer.line("interrupt", "yellow", "stopping after the current file (press Ctrl-C again to abandon it)")

    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if in_main else None
    try:
        report = run_batch(pipe, mine, options, observer, stop=stop)
    finally:
        renderer.stop()
        if in_main:
            signal.signal(signal.SIGINT, previous)
    if rank.world == 1:
        return report, renderer, shares
    waiting = console.status("waiting for the other processes") if show_progress else contextlib.nullcontext()
    with waiting:
        parts = distributed.all_gather(sendable(report), rank)
    return merge_reports(parts, shares), renderer, shares


def summary_dict(report: BatchReport, *, processes: int = 1) -> dict[str, object]:
    """``--json``: the run's counts and every input's outcome, in job order (paths as given)."""
    def size(s: tuple[int, int] | None) -> list[int] | None:
        return None if s is None else list(s)

    return {
        "seed": report.seed,
        "seconds": report.seconds,
        "processes": processes,
        "interrupted": report.interrupted,
        "counts": {k: report.count(k) for k in ("done", "skipped", "failed", "cancelled")},  # type: ignore[arg-type]
        "files": [
            {
                "input": str(r.item.path),
                "output": None if r.target is None else str(r.target),
                "status": r.status,
                "message": _message(r),
                "reason": r.reason,
                "seconds": r.seconds,
                "input_size": size(r.input_size),
                "output_size": size(r.output_size),
                "warnings": list(r.warnings),
            }
            for r in report.results
        ],
    }


upscale_cmd.__doc__ = _HELP


__all__ = ["upscale_cmd", "parse_tile", "EXIT_INTERRUPTED"]
