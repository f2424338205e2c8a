"""`sinsr upscale`'s terminal output: the progress bar, one line per error or warning, the
written paths, the summary table and ``--json``. Library results come in library terms; the
flag that changes an outcome is named here (:data:`_SETTING_HINTS`)."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ..text import printable
from .common import echo_path

if TYPE_CHECKING:  # the batch modules import torch: keep `sinsr --help` fast
    from ..jobs import Job
    from ..results import BatchReport, ItemResult

__all__ = ["Renderer", "message", "summary", "summary_dict"]

#: what to tell the user for each library setting an error names (``SinsrIOError.setting``)
_SETTING_HINTS = {
    "max_pixels": "raise it with --max-pixels (0 = no limit)",
    "strip_metadata": "use --strip-metadata",
    "tile": "use a smaller --tile (e.g. --tile 128) or --tile auto",
    "scale": "use another --scale",
    "format": "use -f png or -f tif",  # the formats without a size limit (imageio.formats' table)
}


def message(result: ItemResult) -> str:
    """The result's one line, plus the flag that changes the outcome when it names a setting."""
    hint = _SETTING_HINTS.get(result.setting or getattr(result.error, "setting", None) or "")
    return f"{result.message}; {hint}" if hint else result.message


class Renderer:
    """Turns ``run_batch`` events into terminal output. Errors and warnings are one line each.

    ``quiet``: errors (and the interruption notices) only. Skips because the output exists are
    counted in the summary instead of listed (``verbose`` lists them).
    """

    def __init__(self, err: Console, *, quiet: bool, verbose: bool, show_progress: bool, paths: bool = True) -> None:
        from ..results import BatchObserver

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
        self.err.print(Text.assemble((f"{label}: ", style), printable(message)), soft_wrap=True, highlight=False)

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
            self.line("error", "red", message(result))
            if self.verbose and (result.traceback or result.error is not None):
                tb = result.traceback or "".join(traceback.format_exception(result.error))
                self.err.print(Text(tb.rstrip()), soft_wrap=True, highlight=False)
        elif result.status == "skipped" and not self.quiet:
            from ..jobs import SKIP_EXISTS

            if result.reason != SKIP_EXISTS or self.verbose:
                self.line("skipped", "dim", result.message)
        elif result.status == "cancelled" and result.error is not None:  # the file Ctrl-C abandoned
            self.line("interrupted", "yellow", result.message)
        elif result.status == "done" and not self.quiet and self.paths:
            if self.paths_via_console:
                self.err.print(Text(printable(str(result.target))), soft_wrap=True, highlight=False)
            else:
                echo_path(result.target)
        started = result.item.path in self._started
        self._started.discard(result.item.path)
        if started and self.progress is not None and self._files is not None:
            self.progress.advance(self._files)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def summary(report: BatchReport, err: Console) -> None:
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
            err.print(Text(f"  {printable(message(r))}"), soft_wrap=True, highlight=False)
    if report.existing:
        err.print(
            Text(f"{report.existing} output(s) already exist and were kept; --overwrite replaces them", style="dim"),
            soft_wrap=True, highlight=False,
        )


def summary_dict(report: BatchReport, *, processes: int = 1, exit_code: int | None = None) -> dict[str, object]:
    """``--json``: the run's counts and every input's outcome, in job order (paths as given), and
    the exit code the command ends with."""
    def size(s: tuple[int, int] | None) -> list[int] | None:
        return None if s is None else list(s)

    return {
        "exit_code": exit_code,
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
                "message": message(r),
                "reason": r.reason,
                "seconds": r.seconds,
                "input_size": size(r.input_size),
                "output_size": size(r.output_size),
                "warnings": list(r.warnings),
            }
            for r in report.results
        ],
    }
