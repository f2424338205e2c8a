"""`sinsr bench`: quality and speed of each model and step count on your images, in one run."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..config import DEFAULT_SEED
from ..errors import one_line
from .common import EXIT_PARTIAL, console, handle_errors, parse_tile, quiet_option, shown

if TYPE_CHECKING:
    from ..bench.dataset import BenchDataset
    from ..bench.results import BenchReport
    from ..bench.sheet import SheetCollector
    from ..distributed import DistInfo

_HELP_MODEL = (
    "Models to compare, comma-separated or repeated: zoo names or checkpoint files "
    "(e.g. sinsr-v1,resshift-v3); 'none' benchmarks the bicubic baseline only. Default: sinsr-v1."
)


def _split(values: Optional[list[str]]) -> list[str]:
    return [v.strip() for raw in values or [] for v in raw.split(",") if v.strip()]


def _parse_steps(values: Optional[list[str]]) -> list[Optional[int]]:
    tokens = _split(values)
    if not tokens:
        return [None]
    steps: list[Optional[int]] = []
    for t in tokens:
        if t.lower() == "default":
            steps.append(None)
            continue
        try:
            n = int(t)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"--steps takes positive integers separated by commas (or 'default'), got {t!r}")
        steps.append(n)
    return steps


def _parse_learned(value: str) -> Optional[tuple[str, ...]]:
    from ..bench.metrics import LEARNED_METRICS

    key = value.strip().lower()
    if key == "auto":
        return None
    if key in ("none", ""):
        return ()
    names = tuple(dict.fromkeys(_split([key])))
    unknown = [n for n in names if n not in LEARNED_METRICS]
    if unknown:
        raise ValueError(
            f"--learned: unknown metric(s) {', '.join(unknown)}; use auto, none or any of {', '.join(LEARNED_METRICS)}"
        )
    return names


def _render_table(report: object) -> Table:
    from ..bench.report import summary_table

    t = summary_table(report)  # type: ignore[arg-type]
    ds = report.dataset  # type: ignore[attr-defined]
    env = report.environment  # type: ignore[attr-defined]
    table = Table(
        title=f"sinsr bench: {len(ds.items)} {'pairs' if ds.paired else 'images'} ({ds.mode}) · "
        f"{env['device']} {env['dtype']} · torch {env['torch']}",
        title_justify="left",
    )
    for i, h in enumerate(t.headers):
        table.add_column(h, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for row, best, failed in zip(t.rows, t.best, t.failed):
        cells = [f"[bold green]{c}[/]" if b else c for c, b in zip(row, best)]
        table.add_row(*cells, style="red" if failed else None)
    return table


_SCRATCH: list[Path] = []  # temporary folders of the running command, removed when it ends


def _removes_scratch(fn: Callable[..., None]) -> Callable[..., None]:
    """Remove the folders a command put in ``_SCRATCH``, however it ends."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        finally:
            while _SCRATCH:
                shutil.rmtree(_SCRATCH.pop(), ignore_errors=True)

    return wrapper


def _dataset(
    input: Path, hr: Optional[Path], limit: Optional[int], make_lr: Optional[str], pairs_dir: Optional[Path],  # noqa: A002
    *, talk: bool = True,
) -> "BenchDataset":
    """The benchmark's images: found as given, or (``--make-lr``) made from INPUT's HR images."""
    from ..bench.dataset import find_dataset, make_lr_dataset

    if make_lr is None:
        if pairs_dir is not None:
            raise ValueError("--pairs-dir only applies with --make-lr")
        return find_dataset(input, hr, limit=limit)
    if hr is not None:
        raise ValueError("--make-lr makes the LR from INPUT's HR images; do not give --hr as well")
    target = pairs_dir
    if target is None:
        target = Path(tempfile.mkdtemp(prefix="sinsr-bench-"))
        _SCRATCH.append(target)
    with console.status(f"making LR images ({make_lr})") if talk else contextlib.nullcontext():
        return make_lr_dataset(input, target, make_lr.strip().lower(), limit=limit)


@handle_errors
@_removes_scratch
def bench_cmd(
    input: Path = typer.Argument(  # noqa: A002
        ..., metavar="INPUT", show_default=False,
        help="A folder with lr/ and hr/ sub-folders (paired), an LR folder with --hr, or LR images only "
        "(no-reference: speed and no-reference metrics).",
    ),
    hr: Optional[Path] = typer.Option(None, "--hr", help="HR folder, paired with INPUT by file name without extension."),
    make_lr: Optional[str] = typer.Option(
        None, "--make-lr",
        help="INPUT is HR images: make the LR with a recipe, imagenet-test (ResShift's ImageNet-Test "
        "degradation, 256 -> 64, seeded per file name) or bicubic (MATLAB bicubic x4).",
    ),
    pairs_dir: Optional[Path] = typer.Option(
        None, "--pairs-dir",
        help="With --make-lr: write the made lr/ and hr/ here (a new or empty folder) and keep them "
        "(default: a temporary folder, removed afterwards).",
    ),
    model: Optional[list[str]] = typer.Option(None, "--model", "-m", metavar="MODELS", help=_HELP_MODEL, show_default=False),
    steps: Optional[list[str]] = typer.Option(
        None, "--steps", metavar="STEPS", show_default=False,
        help="Step counts to compare, comma-separated (e.g. 1,4); 'default' (the default) = each model's own. "
        "One-step students run only at 1 step; their other combinations are skipped with a note.",
    ),
    vq: str = typer.Option("vq-f4", "--vq", help="VQ autoencoder (zoo name or file) for every model."),
    config: Optional[Path] = typer.Option(None, "--config", help="Official YAML/JSON for non-preset checkpoints."),
    sampler: Optional[str] = typer.Option(
        None, "--sampler", show_default=False, help="ancestral (default) or deterministic, for multi-step runs."
    ),
    seed: str = typer.Option(str(DEFAULT_SEED), "--seed", help="Noise seed, the same for every image and run, or 'random'."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    dtype: str = typer.Option("auto", "--dtype", help="auto (fp16 on CUDA, bf16 on CPUs with AMX or AVX512-BF16, else fp32), fp32, fp16 or bf16."),
    tile: str = typer.Option(
        "0", "--tile",
        help="LR tile size; 0 = whole image (the default: the official evaluation runs images up to 512 px "
        "whole), auto = as `sinsr upscale` plans by default. Recorded in the report.",
    ),
    tile_overlap: int = typer.Option(32, "--tile-overlap", help="Overlap between tiles, LR pixels."),
    warmup: int = typer.Option(1, "--warmup", help="Untimed passes on the first image before timing each run."),
    crop_border: int = typer.Option(0, "--crop-border", help="Pixels cut from each side before PSNR/SSIM (4 = BasicSR convention)."),
    learned: str = typer.Option(
        "auto", "--learned",
        help="Learned metrics: auto (all that pyiqa can load; none without pyiqa), none, or a list of "
        "lpips,clipiqa,musiq,niqe.",
    ),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N images (in name order)."),
    center_crop: Optional[int] = typer.Option(
        None, "--center-crop", help="Only the central NxN LR pixels of each image (and the HR under them): quick runs."
    ),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the full report (summary and per image) as JSON."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Write per-image results as CSV."),
    markdown: Optional[Path] = typer.Option(
        None, "--markdown", help="Write a shareable Markdown report (with the comparison sheet next to it)."
    ),
    save_images: Optional[Path] = typer.Option(None, "--save-images", help="Save every SR image as PNG under DIR/<run>/."),
    sheet: Optional[Path] = typer.Option(None, "--sheet", help="Write the comparison sheet PNG (bicubic | each run | HR)."),
    sheet_images: int = typer.Option(4, "--sheet-images", help="Images on the comparison sheet (0 = no sheet)."),
    sheet_crop: int = typer.Option(128, "--sheet-crop", help="Crop size on the sheet, in SR pixels."),
    sheet_zoom: int = typer.Option(1, "--sheet-zoom", help="Enlarge each crop on the sheet this many times (nearest neighbour)."),
    offline: bool = typer.Option(False, "--offline", help="Never download; use cached weights only."),
    quiet: bool = quiet_option(),
    verbose: bool = typer.Option(False, "--verbose", help="Show tracebacks on errors."),
) -> None:
    """Benchmark quality (PSNR/SSIM on Y, learned metrics) and speed of models and step counts.

    Every run is compared with a bicubic baseline row. LR and HR images are paired by file name,
    never by order; HR must be exactly 4x LR. SR images are scored as saved (8-bit).
    """
    from .. import distributed

    rank = distributed.from_env()
    if not rank.main:  # errors found before the processes join are every rank's: rank 0 tells them
        console.quiet = True
    from ..bench.report import check_outputs, to_csv, to_json, to_markdown, write_text
    from ..devices import resolve_device
    from ..plan import resolve_seed

    seed_value = resolve_seed(seed)
    tile_size = parse_tile(tile)
    models = _split(model) or ["sinsr-v1"]
    if [m.lower() for m in models] == ["none"]:
        models = []
    elif any(m.lower() == "none" for m in models):
        raise ValueError("--model none (bicubic only) cannot be combined with other models")
    step_list = _parse_steps(steps)
    learned_names = _parse_learned(learned)
    if sheet is not None and sheet_images == 0:
        raise ValueError("--sheet with --sheet-images 0 (no sheet): give one or the other")
    if sheet_images < 0:
        raise ValueError(f"--sheet-images must be >= 0, got {sheet_images}")
    sheet_label = "--sheet"
    if sheet is None and markdown is not None and sheet_images > 0:
        sheet, sheet_label = markdown.with_suffix(".png"), "--markdown's sheet"

    wanted = resolve_device(device)
    with distributed.process_group(wanted, timeout=distributed.SHARD_TIMEOUT) as (rank, dev):
        if not rank.main:
            console.quiet = False  # joined: from here on, errors are this rank's own
        dataset = _shared_dataset(rank, input, hr, limit, make_lr, pairs_dir)
        reports = {"--json": json_path, "--csv": csv_path, "--markdown": markdown, sheet_label: sheet}
        check_outputs(reports, dataset, ("--save-images", save_images))  # now, not after the run
        report, collector = _bench_sharded(
            rank, dataset, models, step_list,
            dict(
                vq=vq, config=None if config is None else str(config), device=str(dev), dtype=dtype, sampler=sampler,
                seed=distributed.broadcast(seed_value, rank), tile=tile_size, tile_overlap=tile_overlap, warmup=warmup,
                crop_border=crop_border, center_crop=center_crop, learned=learned_names, save_dir=save_images,
                offline=offline or None,
            ),
            show=not quiet and rank.main, sheet=(sheet_images, sheet_crop, sheet_zoom) if sheet is not None else None,
        )
    if not rank.main:  # rank 0 reports the whole run and carries its exit code
        return
    show = not quiet
    out = Console()
    if not out.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
        out = Console(width=160)
    if show:
        out.print(_render_table(report))
    else:  # errors only: the runs that failed
        for r in report.runs:
            if r.error:
                console.print(f"[red]error:[/red] {shown(r.label)}: {shown(r.error)}", soft_wrap=True, highlight=False)
    command = ["sinsr", "bench", *sys.argv[2:]] if len(sys.argv) > 1 and sys.argv[1] == "bench" else None
    link = None
    if markdown is not None and sheet is not None:
        link = Path(os.path.relpath(sheet.resolve(), markdown.resolve().parent)).as_posix()
    # Each report on its own: one that cannot be written (a full disk, a name a font cannot
    # lay out) must not take the others, and the run's results, with it.
    writers: list[tuple[str, Optional[Path], Callable[[Path], Path]]] = [
        ("--json", json_path, lambda p: write_text(p, to_json(report, command=command))),
        ("--csv", csv_path, lambda p: write_text(p, to_csv(report))),
        ("--markdown", markdown, lambda p: write_text(p, to_markdown(report, sheet=link))),
        (sheet_label, sheet if collector is not None else None, lambda p: collector.save(p, report)),
    ]
    written: list[Path] = []
    unwritten: list[str] = []
    for label, path, write in writers:
        if path is None:
            continue
        try:
            written.append(write(path))
        except Exception as e:  # noqa: BLE001 - reported in one line, exit 1
            unwritten.append(f"{label} {path}: {one_line(e)}")
    if show:
        if collector is not None and collector.left_out:
            on_sheet = len(dataset.items) - len(collector.left_out)
            console.print(f"sheet: {on_sheet} of {len(dataset.items)} images; left out: {shown(collector.left_out_text())}", soft_wrap=True)
        for p in written:
            console.print(f"wrote {shown(p)}", soft_wrap=True)
        if save_images is not None:
            console.print(f"SR images under {shown(save_images)}", soft_wrap=True)
        console.print(f"bench took {report.wall_s:.1f} s")
    for text in unwritten:
        console.print(f"[red]error:[/red] could not write {shown(text)}", soft_wrap=True, highlight=False)
    if report.failed or unwritten:
        raise typer.Exit(EXIT_PARTIAL)


def _shared_dataset(
    rank: "DistInfo", input: Path, hr: Optional[Path], limit: Optional[int], make_lr: Optional[str],  # noqa: A002
    pairs_dir: Optional[Path],
) -> "BenchDataset":
    """:func:`_dataset` on every process; a kept ``--pairs-dir`` (on a filesystem all nodes
    share) is made by rank 0 alone and handed to the others once it is there; a temporary one is
    each process's own."""
    from .. import distributed

    if rank.world == 1 or make_lr is None or pairs_dir is None:
        return _dataset(input, hr, limit, make_lr, pairs_dir, talk=rank.main)
    dataset = _dataset(input, hr, limit, make_lr, pairs_dir) if rank.main else None
    return distributed.broadcast(dataset, rank)  # type: ignore[return-value]


def _bench_sharded(
    rank: "DistInfo",
    dataset: "BenchDataset",
    models: list[str],
    step_list: list[Optional[int]],
    fields: dict[str, Any],
    *,
    show: bool,
    sheet: Optional[tuple[int, int, int]],
) -> tuple["BenchReport", Optional["SheetCollector"]]:
    """This process's share of the images through every run, then every process's report (and
    sheet crops) merged on every rank. Alone, the share is every image."""
    from .. import distributed
    from ..bench.dataset import ImageStore
    from ..bench.protocol import SCALE
    from ..bench.results import BenchOptions, merge_reports, plan_runs
    from ..bench.runner import run_bench
    from ..bench.sheet import SheetCollector

    runs = plan_runs(models, step_list)
    options = BenchOptions(**fields)
    center_crop = options.center_crop
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True, disable=not (show and console.is_terminal),  # no bar in logs
    )
    tasks: dict[str, int] = {}

    def on_progress(label: str, done: int, total: int) -> None:
        if label not in tasks:
            tasks[label] = progress.add_task(label, total=total)
        progress.update(tasks[label], completed=done)

    def on_message(text: str) -> None:
        if show:
            progress.console.print(f"[yellow]note:[/yellow] {shown(text)}", soft_wrap=True, highlight=False)

    with progress:
        reading = progress.add_task("reading images", total=len(dataset.items))
        store = ImageStore(
            dataset, scale=SCALE, center_crop=center_crop,
            on_read=lambda done, total: progress.update(reading, completed=done),
        )
        progress.remove_task(reading)
        collector = None
        if sheet is not None:
            collector = SheetCollector(store, images=sheet[0], crop=sheet[1], zoom=sheet[2])
        sizes = [store.lr_size(i) for i in range(len(store))]
        mine = distributed.deal([w * h for w, h in sizes], rank.world)[rank.rank]
        report = run_bench(
            dataset, runs, options, store=store, on_progress=on_progress, on_message=on_message, on_output=collector,
            images=mine,
        )
    if rank.world == 1:
        return report, collector
    with console.status("waiting for the other processes") if show and console.is_terminal else contextlib.nullcontext():
        parts = distributed.all_gather((report, collector.state() if collector is not None else None), rank)
    if collector is not None:
        for _, state in parts[1:]:
            collector.merge(state)  # type: ignore[arg-type]
    merged = merge_reports([r for r, _ in parts])
    told = set(report.messages)
    for text in merged.messages:  # the other processes' notes, told as this one told its own
        if text not in told:
            on_message(text)
    return merged, collector
