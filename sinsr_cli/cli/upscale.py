"""`sinsr upscale`: files, folders and globs in, upscaled images out (Typer only).

Parse the options, find the inputs and plan the outputs (``imageio``/``jobs``), load the model
once, hand the work to ``batch.run_batch`` and render its events (``upscale_render``: a rich
progress bar of files and tiles on a terminal, one line per error or warning, the written paths
on stdout, and a summary table). Exit codes: 0 all done, 1 some inputs failed, 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.text import Text

from ..config import DEFAULT_SEED
from ..files import unwritable_reason
from .common import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, console, fail, handle_errors, parse_tile, quiet_option
from .upscale_render import Renderer, summary, summary_dict

if TYPE_CHECKING:  # the batch engine imports torch: keep `sinsr --help` fast
    import torch

    from ..jobs import Job
    from ..options import UpscaleOptions
    from ..results import BatchReport
    from ..distributed import DistInfo
    from ..pipeline import SRPipeline
    from ..plan import Plan

EXIT_INTERRUPTED = 130


def _check_output(
    output: Path | None, single_input_file: bool, n_inputs: int, fmt: str | None = None, *, folder: bool = False
) -> None:
    """Usage errors about ``-o``, found before any model is loaded (ValueError, SinsrIOError: exit 2).
    ``folder``: the name was given with a trailing slash, so it is a folder whatever it looks like."""
    from ..imageio import IMAGE_EXTENSIONS, SinsrIOError, choose_output_format, format_named

    if output is None:
        return
    if single_input_file:  # a named output file and --format that disagree: before any model loads
        if output.exists() and not output.is_dir() and format_named(output.suffix) is None:
            raise ValueError(
                f"{output}: --output exists and is not a directory (a name without .png, .jpg, .webp or .tif is a folder)"
            )
        named = output.suffix.lower() in IMAGE_EXTENSIONS and not output.is_dir()
        if named and format_named(output.suffix) is None:  # out.bmp: an image name, not a folder
            raise ValueError(f"{output}: sinsr does not write {output.suffix} files; use .png, .jpg, .webp or .tif")
        if output.suffix and not output.is_dir() and fmt is not None:
            try:
                choose_output_format(fmt, output_file=output)
            except ValueError:
                raise ValueError(f"{output}: the extension of --output does not match --format {fmt}") from None
        return
    if output.exists() and not output.is_dir():
        why = "a name ending in / is a folder" if folder else f"{n_inputs} inputs need a folder"
        raise ValueError(f"{output}: --output exists and is not a directory ({why})")
    if not output.exists() and not folder and format_named(output.suffix) is not None:
        raise ValueError(f"{output}: --output looks like a file name, but the inputs are a folder or several files; give a directory")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SinsrIOError(output, f"cannot write to the output directory ({e.strerror or e})") from None
    reason = unwritable_reason(output / "x", probe=True)
    if reason is not None:
        raise SinsrIOError(output, f"cannot write to the output directory ({reason})")


def _check_target(jobs: Sequence[Job]) -> None:
    """One input file: its output can be written (``-o results/x.png`` below a file, ``-o
    /proc/x.png``, a read-only folder), found before the model loads and runs; SinsrIOError
    (exit 2), as ``_check_output`` finds it for many inputs."""
    from ..imageio import SinsrIOError

    for job in jobs:
        if job.status == "pending" and job.target is not None:
            reason = unwritable_reason(job.target, probe=True)
            if reason is not None:
                raise SinsrIOError(job.target, f"cannot write the output ({reason})")


def _single_input_file(inputs: Sequence[str], n_items: int) -> bool:
    return len(inputs) == 1 and n_items == 1 and Path(os.path.expanduser(inputs[0])).is_file()


def _tiling_words(pipe: SRPipeline, plan: Plan, jobs: Sequence[Job]) -> str:
    """``untiled`` when no pending image will be tiled (as the engine cuts each distinct size:
    a tile whose box holds the image runs it whole; ``auto`` plans by arithmetic only), else the tile."""
    from ..engine import geometry

    sizes = {j.item.size for j in jobs if j.status == "pending" and j.item.size}
    tile = plan.tiling.tile
    if sizes and not any(geometry(pipe, plan, 1, h, w).tile for w, h in sizes):
        return "untiled"
    if tile == 0 and not sizes:
        return "untiled"
    return "tile auto" if tile is None else f"tile {tile}"


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
    output_arg: Optional[str] = typer.Option(None, "-o", "--output", help="Output folder (the input tree is mirrored) or, for one input file, the output file (a name ending in / is always a folder). Default: next to each input.", show_default=False),
    scale: float = typer.Option(4.0, "-s", "--scale", "--outscale", help="Output scale: the x4 model, then a Lanczos resample to exactly round(s*w) x round(s*h)."),
    suffix: Optional[str] = typer.Option(None, "--suffix", help="Added to output file names (default _x<scale>, e.g. _x4; 'out' gives photo_out.png, as in Real-ESRGAN); '' keeps the names.", show_default=False),
    fmt: str = typer.Option("auto", "-f", "--format", "--ext", help="Output format: png, jpg, webp, tif, or auto (the input's, for PNG, JPEG, WebP and TIFF inputs; PNG for others, such as BMP, GIF, TGA, PPM or ICO)."),
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
    tile_overlap: int = typer.Option(32, "--tile-overlap", help="Overlap between tiles in LR pixels (blended seamlessly; at most half the tile, less one) for --tile N; auto chooses its own."),
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
    from ..jobs import plan_jobs
    from ..options import UpscaleOptions

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
    output = Path(output_arg) if output_arg is not None else None
    if max_pixels < 0:  # the flag's 0 is the library's None
        raise ValueError(f"--max-pixels must be >= 0 (0 = no limit), got {max_pixels}")
    options = UpscaleOptions(
        scale=scale, steps=steps, sampler=sampler, seed=seed_value, tile=tile_size,
        tile_overlap=tile_overlap, tile_pad=tile_pad, tile_batch=batch, alpha=alpha, output=output,
        suffix=suffix, format=fmt, quality=quality, strip_metadata=strip_metadata, overwrite=overwrite,
        max_pixels=max_pixels or None,
    )

    items, rejected = collect_inputs(given, recursive=recursive)
    folder = output_arg is not None and output_arg.endswith(("/", os.sep))  # `-o out.png/`: a folder
    single = _single_input_file(given, len(items)) and not folder
    if items:
        _check_output(output, single, len(items), options.format, folder=folder)
    jobs = plan_jobs(items, rejected, options, explicit=given, single_input_file=single)
    if single:
        _check_target(jobs)
    if not items and not any(j.status == "failed" for j in jobs):
        raise fail(f"no images found in {', '.join(given)}", EXIT_PARTIAL)
    wanted = resolve_device(device)

    with distributed.process_group(wanted, timeout=distributed.SHARD_TIMEOUT) as (rank, dev):
        if not rank.main:
            console.quiet = False  # joined: from here on, errors are this rank's own
        report, renderer, shares = _run_sharded(
            rank, dev, jobs, options, model=model, vq=vq, dtype=dtype, config=config, offline=offline,
            quiet=quiet or not rank.main, verbose=verbose, json_out=json_out,
        )
    if not rank.main:  # rank 0 reports the whole run and carries its exit code
        raise typer.Exit(EXIT_OK)
    mine = set(shares[0])
    for i, result in enumerate(report.results):  # the other processes' files, told as rank 0 told its own
        if i not in mine:
            for message in result.warnings if not quiet else ():
                renderer.line("warning", "yellow", message)
            renderer.file_finished(result)
    code = EXIT_INTERRUPTED if report.interrupted else EXIT_PARTIAL if report.failed else EXIT_OK
    if json_out:
        typer.echo(json.dumps(summary_dict(report, processes=rank.world, exit_code=code), indent=2))
    if not quiet:
        summary(report, console)
    if report.interrupted:
        renderer.line(
            "interrupted", "yellow",
            f"{report.count('cancelled')} file(s) not processed; rerun the same command to continue (finished outputs are kept)",
        )
    raise typer.Exit(code)


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
    quiet: bool,
    verbose: bool,
    json_out: bool,
) -> tuple[BatchReport, Renderer, list[list[int]]]:
    """This process's share of the jobs through the model, then every process's report merged
    (in job order) on every rank. Alone, the share is every job. Returns (report, rank 0's
    renderer, the shares)."""
    from .. import distributed
    from ..batch import run_batch
    from ..jobs import plan_key, shard_jobs
    from ..results import BatchObserver, merge_reports, sendable

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
        plan = options.plan_for(pipe.preset)
        if not quiet:
            dt = str(pipe.dtype).removeprefix("torch.")
            where = f"{pipe.device} ({dt})" if rank.world == 1 else f"{rank.world} processes ({pipe.device.type}, {dt})"
            console.print(
                Text(
                    f"{pipe.preset.name} on {where}, {_tiling_words(pipe, plan, jobs)}, "
                    f"seed {options.seed}: {pending} of {len(jobs)} file(s) to upscale",
                    style="dim",
                ),
                soft_wrap=True, highlight=False,
            )
    elif config is None and (options.steps is not None or options.sampler is not None):
        from ..weights import preset_of

        preset = preset_of(model)  # nothing to upscale: the same usage check, without loading the model
        if preset is not None:
            options.plan_for(preset)

    show_progress = console.is_terminal and not quiet
    renderer = Renderer(console, quiet=quiet, verbose=verbose, show_progress=show_progress, paths=not json_out)
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


upscale_cmd.__doc__ = _HELP


__all__ = ["upscale_cmd", "EXIT_INTERRUPTED"]
