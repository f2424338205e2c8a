"""Output planning for a folder run: where each input's result goes, and whether it runs.

Policies:
  * Outputs: ``imageio.output_path`` places them (next to the input, under an output directory
    mirroring the input tree, or exactly the output file for one input). An output that is any
    input of the run, or that two inputs would share, fails that item. An existing output is
    kept and its input skipped (reason :data:`SKIP_EXISTS`, so a rerun of a finished batch does
    nothing and succeeds), unless ``overwrite`` (replaced). A directory at an output's path is
    no output: that item fails, with or without ``overwrite`` (the directory is left alone). An output its format cannot store
    (the header's size at the scale past ``Format.max_side``) fails that item before any model
    work. Files found inside the output
    directory while walking an input directory that contains it are skipped, so a rerun never
    upscales its own results; so are inputs that are another input's output (``bird_x4.png``
    beside ``bird.png`` when outputs go next to their inputs, and no ``overwrite``), which keeps
    their source skipped.
  * Inputs that ``collect_inputs`` rejected: named explicitly, missing, or carrying an image
    extension (``broken.png``, a zero-byte ``x.jpg``) -> failed, with ``read_image``'s reason;
    other non-images met while walking a folder (``notes.txt``), and links to folders met there
    (a loop back to the input folder included) -> skipped with a note. So a
    file whose name or content says "image" is an image: if it cannot be read, that is an error.
  * Sharded runs: :func:`plan_key` lets processes check they planned the same run, and
    :func:`shard_jobs` deals the pending jobs between them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .distributed import deal
from .errors import SettingError, one_line
from .files import within
from .imageio import InputItem, SinsrIOError, format_of, named_as_image, output_path, read_image, size_refusal
from .options import UpscaleOptions
from .postprocess import output_size

__all__ = ["SKIP_EXISTS", "Job", "Status", "message_for", "plan_jobs", "plan_key", "shard_jobs"]

Status = Literal["pending", "done", "skipped", "failed", "cancelled"]
#: ``Job.reason`` / ``ItemResult.reason`` of an input skipped because its output exists
SKIP_EXISTS = "output exists"


@dataclass(frozen=True)
class Job:
    """One input and where its result goes. ``status`` is "pending" unless decided in planning."""

    item: InputItem
    target: Path | None
    status: Status = "pending"
    message: str = ""  # one line naming the file, for jobs decided in planning
    error: BaseException | None = None  # what made a planned failure, for --verbose
    reason: str = ""  # why a planned skip was skipped (e.g. SKIP_EXISTS)


def _resolved(p: Path) -> str:
    return os.path.normcase(os.path.realpath(p))


def _as_named(p: Path) -> str:
    """``p`` with its folders resolved but not its last part, so a link is the link, not what it
    points to: a link met while walking that leads to a path the user named is not that path."""
    a = os.path.abspath(p)
    return os.path.normcase(os.path.join(os.path.realpath(os.path.dirname(a)), os.path.basename(a)))


def _root_of(item: InputItem) -> Path:
    """The directory (or glob prefix) the item was found under: ``path`` minus ``rel``."""
    n = len(item.rel.parts)
    return Path(*item.path.parts[: len(item.path.parts) - n]) if n < len(item.path.parts) else Path(".")


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
    explicit_paths = {_as_named(Path(os.path.expanduser(os.fspath(p)))) for p in explicit}
    out_dir = None
    if options.output is not None and not single_input_file:
        out_dir = _resolved(options.output)

    def in_output_dir(item: InputItem) -> bool:
        """Found by walking an input folder that contains the output folder (a previous result)."""
        root = _resolved(_root_of(item))
        return (
            out_dir is not None and out_dir != root and within(out_dir, root)
            and within(_resolved(item.path), out_dir)
        )

    jobs: list[Job] = []
    for path, reason in rejected:
        item = InputItem(path=path, rel=Path(path.name))
        named = _as_named(path) in explicit_paths
        if path.is_dir():  # a link to a folder met while walking (a folder named is walked, never rejected)
            jobs.append(Job(item, None, "skipped", f"{path} ({reason})", reason=reason))
        elif named or not os.path.lexists(path) or named_as_image(path):
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
    planned: list[_Planned] = []
    for item in inputs:
        try:
            target = output_path(
                item, output=options.output, suffix=options.file_suffix, format=options.format,
                single_input_file=single_input_file,
            )
            planned.append((item, _resolved(item.path), target, None))
        except SinsrIOError as e:
            planned.append((item, _resolved(item.path), None, e))
    previous = _previous_results(planned, options)
    input_paths = {key: i.path for i, key, _, _ in planned if key not in previous}
    claimed: dict[str, Path] = {}
    for item, item_key, target, err in planned:
        if item_key in previous:
            note = f"{item.path} (the output of {previous[item_key]}, not an input)"
            jobs.append(Job(item, None, "skipped", note))
            continue
        if err is not None or target is None:
            jobs.append(Job(item, None, "failed", message_for(item.path, err), err))
            continue
        key = _resolved(target)
        if key in input_paths:
            msg = f"{item.path}: the output {target} is an input of this run; refusing to overwrite it"
            jobs.append(Job(item, target, "failed", msg))
        elif key in claimed:
            msg = (
                f"{item.path}: the output {target} is also the output of {claimed[key]} (outputs are "
                f"named by file stem, and both are written as {format_of(target).name}); rename one of "
                "them or upscale them separately"
            )
            jobs.append(Job(item, target, "failed", msg))
        elif os.path.isdir(target):  # not an output kept, nor one to replace: the user's folder stays
            msg = f"{item.path}: a directory is in the way of the output {target}; move or rename it"
            jobs.append(Job(item, target, "failed", msg))
        elif os.path.lexists(target) and not options.overwrite:
            jobs.append(Job(item, target, "skipped", f"{item.path} (output exists: {target})", reason=SKIP_EXISTS))
        elif (refused := _unstorable(item, target, options.scale)) is not None:
            jobs.append(Job(item, target, "failed", message_for(item.path, refused), refused))
        else:
            jobs.append(Job(item, target))
        claimed.setdefault(key, item.path)
    return jobs


#: an input as planned: the item, its real path, its output (None when ``output_path`` refused it, and why)
_Planned = tuple[InputItem, str, Path | None, SinsrIOError | None]


def _previous_results(planned: Sequence[_Planned], options: UpscaleOptions) -> dict[str, Path]:
    """Inputs that are another input's output (``bird_x4.png`` beside ``bird.png``): a previous
    run's results, met again when outputs go next to their inputs. Real path -> the input whose
    output it is. Only with a non-empty suffix (without one an output's name is no evidence).
    Under ``overwrite`` they are replaced by their source's new output, as a rerun in place
    with ``--overwrite`` asks; an input that is not some other input's output never is."""
    if not options.file_suffix:
        return {}
    target_of = {_resolved(t): (item.path, key) for item, key, t, _ in planned if t is not None}
    found: dict[str, Path] = {}
    for _, key, _, _ in planned:
        source, source_key = target_of.get(key, (None, key))
        if source is not None and source_key != key:
            found[key] = source
    return found


def _unstorable(item: InputItem, target: Path, scale: float) -> SinsrIOError | None:
    """Why the output (the header's size at ``scale``, ``postprocess.output_size``) cannot be
    written in its format, or None: known now, so the model never runs for a file whose
    result the encoder would refuse (a WebP past 16383 pixels a side)."""
    if item.size is None:
        return None
    try:
        width, height = output_size(*item.size, scale)
    except SettingError:  # a scale that makes no image of this one: the run says so, after the input's own checks
        return None
    why = size_refusal(format_of(target), width, height)
    return None if why is None else SinsrIOError(item.path, f"the output {target} would be {why}", setting="format")


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


def message_for(path: Path, err: BaseException) -> str:
    """One line naming ``path``: SinsrIOError messages already start with a path."""
    text = one_line(err, 500)
    if isinstance(err, SinsrIOError) and err.path is not None:
        return text
    return f"{path}: {text}"


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
