"""Finding inputs (files, folders, globs; images by content), placing outputs, pairing LR/HR."""

from __future__ import annotations

import glob
import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..files import within
from .errors import SinsrIOError
from .formats import IMAGE_EXTENSIONS, choose_output_format, format_named
from .read import sniff, sniff_format


@dataclass(frozen=True)
class InputItem:
    """One input image; ``rel`` is its path below the input root, mirrored under ``-o DIR``.

    ``size`` is the (width, height) its header declares and ``format`` Pillow's name for its
    content ("PNG", "JPEG", ...), when known: what discovery learned from the header, carried
    so nothing opens the file again before it is read.
    """

    path: Path
    rel: Path
    size: tuple[int, int] | None = None  # (width, height) before EXIF rotation
    format: str | None = None


def collect_inputs(
    inputs: Sequence[str | os.PathLike[str]], *, recursive: bool = True
) -> tuple[list[InputItem], list[tuple[Path, str]]]:
    """Expand files, directories and glob patterns into image inputs, detected by content.

    Returns ``(images, skipped)``: images sorted by path and de-duplicated (same real file once),
    each with ``rel`` below the root it came from (a directory, a glob's fixed prefix, or just the
    file name); skipped is ``[(path, reason)]`` for non-images ("not an image"), unreadable files,
    inputs that do not exist or match nothing, and links to folders met while walking (not
    followed). Hidden files and directories (".name") found
    while walking are ignored silently; a hidden file named explicitly is used.
    """
    found: list[InputItem] = []
    skipped: list[tuple[Path, str]] = []

    def consider(path: Path, rel: Path) -> None:
        probe = sniff(path)
        if probe.format is None:
            skipped.append((path, probe.reason))
        else:
            found.append(InputItem(path=path, rel=rel, size=probe.size, format=probe.format))

    def walk(root: Path, prefix: Path) -> None:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
            for d in dirnames:  # os.walk does not enter them (a link may loop): say so
                if os.path.islink(os.path.join(dirpath, d)):
                    skipped.append((Path(dirpath) / d, _folder_link_reason(Path(dirpath) / d, root)))
            for name in sorted(filenames):
                if not name.startswith("."):
                    path = Path(dirpath) / name
                    consider(path, prefix / path.relative_to(root))

    for raw in inputs:
        given = Path(os.path.expanduser(os.fspath(raw)))
        if given.is_dir():
            walk(given, Path())
        elif given.exists():
            consider(given, Path(given.name))
        elif _has_magic(os.fspath(given)):
            root = _glob_root(given)
            matches = sorted(glob.glob(os.fspath(given), recursive=True))
            if not matches:
                skipped.append((given, "no files match this pattern"))
            for m in map(Path, matches):
                if m.is_dir():
                    walk(m, m.relative_to(root))
                else:
                    consider(m, m.relative_to(root))
        else:
            skipped.append((given, "no such file or directory"))

    unique: dict[str, InputItem] = {}
    for item in found:
        unique.setdefault(os.path.normcase(os.path.realpath(item.path)), item)
    return sorted(unique.values(), key=lambda i: i.path), sorted(skipped)


def _folder_link_reason(link: Path, root: Path) -> str:
    """Why a link to a folder met while walking ``root`` is not followed, as a skip's note: one
    leading back into the folders being walked (a loop, ``up -> ..``) is not worth naming."""
    target, here = os.path.realpath(link), os.path.realpath(link.parent)
    if within(here, target) or within(target, os.path.realpath(root)):
        return "a link to a folder: not followed (it leads back into the folder being searched)"
    return "a link to a folder: not followed, name it to include it"


def named_as_image(path: Path) -> bool:
    """Whether ``path``'s name says "image" (``x.png``, ``y.JPG``): such a file that cannot be read
    is an error, where other non-images met in a folder (``notes.txt``) are only skipped."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def refuse_unreadable(skipped: Sequence[tuple[Path, str]]) -> None:
    """Raise SinsrIOError for the first of ``collect_inputs``' skipped files named as an image."""
    bad = [(path, reason) for path, reason in skipped if named_as_image(path)]
    if bad:
        more = f" (and {len(bad) - 1} more unreadable image file(s))" if len(bad) > 1 else ""
        raise SinsrIOError(bad[0][0], f"{bad[0][1]}{more}")


def _has_magic(s: str) -> bool:
    return any(c in s for c in "*?[")


def _glob_root(pattern: Path) -> Path:
    """The leading part of a glob pattern without wildcards: what matches are made relative to."""
    return Path(*itertools.takewhile(lambda part: not _has_magic(part), pattern.parts))


def output_path(
    item: InputItem,
    *,
    output: Path | None,
    suffix: str,
    format: str | None,  # noqa: A002
    single_input_file: bool,
) -> Path:
    """Where the result for ``item`` goes; never the input file itself (SinsrIOError).

    * ``output`` None: next to the input, ``<stem><suffix><ext>``.
    * ``output`` is a file path (only when ``single_input_file``, ``output`` is not an existing
      directory and has an image extension): exactly ``output``.
    * otherwise ``output`` is a directory: ``output / item.rel`` with ``<stem><suffix><ext>``.
    The output format is decided here, once (``formats.choose_output_format``: ``format``, else
    the named output file's extension, else the input's content format, else PNG), and written
    into the target's extension, which is all the writer looks at.
    """
    as_file = (
        output is not None and single_input_file and not output.is_dir()
        and format_named(output.suffix) is not None
    )
    content = item.format
    if content is None and format is None and not as_file:  # an item not made by collect_inputs
        content = sniff_format(item.path)
    try:
        fmt = choose_output_format(format, output_file=output if as_file else None, content=content)
    except ValueError as e:  # an unknown ``format`` (no path to name), or a file that disagrees
        raise SinsrIOError(output if format is not None and format_named(format) else None, str(e)) from None

    if output is None:
        target = item.path.with_name(item.path.stem + suffix + fmt.extension)
    elif as_file:
        target = output
    else:
        target = output / item.rel.parent / (item.rel.stem + suffix + fmt.extension)
    if _same_file(target, item.path):
        raise SinsrIOError(
            item.path,
            "the output would overwrite the input; use a suffix or another output directory",
        )
    return target


def _same_file(a: Path, b: Path) -> bool:
    if os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b)):
        return True
    try:
        return a.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def pair_by_stem(
    lr_dir: str | os.PathLike[str], hr_dir: str | os.PathLike[str]
) -> tuple[list[tuple[Path, Path]], list[Path], list[Path]]:
    """Match LR and HR images by relative path without extension (recursive), never by position.

    Returns ``(pairs, lr_only, hr_only)``, each sorted. ``a.png`` pairs with ``a.jpg``; ``x/a``
    does not pair with ``a``. Raises SinsrIOError if a folder is missing, holds a file named as
    an image that cannot be read (:func:`refuse_unreadable`), or holds two images with the same
    stem (e.g. ``a.png`` and ``a.jpg``), which would make pairing ambiguous.
    """
    sides = []
    for d in (Path(lr_dir), Path(hr_dir)):
        if not d.is_dir():
            raise SinsrIOError(d, "not a directory")
        items, skipped = collect_inputs([d], recursive=True)
        refuse_unreadable(skipped)
        by_stem: dict[str, Path] = {}
        for item in items:
            key = item.rel.with_suffix("").as_posix()
            if key in by_stem:
                names = f"{by_stem[key].name}, {item.path.name}"
                raise SinsrIOError(
                    d, f"two images share the name {key!r} ({names}); pairing is ambiguous"
                )
            by_stem[key] = item.path
        sides.append(by_stem)
    lr, hr = sides
    pairs = [(lr[k], hr[k]) for k in sorted(lr.keys() & hr.keys())]
    lr_only = sorted(lr[k] for k in lr.keys() - hr.keys())
    hr_only = sorted(hr[k] for k in hr.keys() - lr.keys())
    return pairs, lr_only, hr_only


def refuse_unpaired(lr_dir: Path, hr_dir: Path, lr_only: Sequence[Path], hr_only: Sequence[Path]) -> None:
    """Raise SinsrIOError naming ``pair_by_stem``'s images without a partner: a benchmark or a
    training set missing half of some pairs is a mistake to fix, not images to leave out."""
    parts = []
    if lr_only:
        parts.append(f"{len(lr_only)} LR image(s) have no HR image of the same name ({_names(lr_only)})")
    if hr_only:
        parts.append(f"{len(hr_only)} HR image(s) have no LR image of the same name ({_names(hr_only)})")
    if parts:
        raise SinsrIOError(lr_dir, "; ".join(parts) + f" in {hr_dir}; images are paired by file name without extension")


_SHOW = 5  # file names listed in an error before "and N more"


def _names(paths: Sequence[Path]) -> str:
    shown = ", ".join(p.name for p in paths[:_SHOW])
    return shown + (f" and {len(paths) - _SHOW} more" if len(paths) > _SHOW else "")
