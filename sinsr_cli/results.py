"""What a folder run reports: one :class:`ItemResult` per input, the :class:`BatchReport`,
the :class:`BatchObserver` that hears progress, and the merging of a sharded run's reports."""

from __future__ import annotations

import pickle
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from .imageio import InputItem
from .jobs import SKIP_EXISTS, Job, Status

__all__ = ["BatchObserver", "BatchReport", "ItemResult", "keep_error", "merge_reports", "sendable"]


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
    error: BaseException | None = None  # the exception, without its frames (see keep_error)
    traceback: str = ""  # the formatted traceback, for --verbose
    reason: str = ""  # see Job.reason
    setting: str = ""  # the setting that would change a failure's outcome (``tile``), if one would


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


def keep_error(result: ItemResult, err: BaseException) -> None:
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
