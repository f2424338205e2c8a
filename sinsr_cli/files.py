"""Files written whole or not at all: the one atomic replace that every writer uses (images,
reports, converted checkpoints, cache sidecars, training state).

The lowest layer (no torch, no other sinsr module), so models, the cache and imageio share it.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

__all__ = ["OutputExists", "atomic_path", "new_file_mode", "unwritable_reason", "within"]


class OutputExists(FileExistsError):
    """``atomic_path(replace=False)`` found a file at its path when the body finished."""


@contextmanager
def atomic_path(
    path: str | os.PathLike[str], *, suffix: str = ".tmp", fsync: bool = True, replace: bool = True
) -> Iterator[Path]:
    """A new empty file next to ``path`` for the body to write; it replaces ``path`` (after an
    fsync) only if the body finishes, and is removed otherwise.

    The name starts with "." so input discovery skips what a killed run leaves; the file is made
    ``0o666 & ~umask`` like any new file (``mkstemp`` would make it 0600). ``fsync=False`` for a
    body that syncs its own handle. ``replace=False``: ``path`` is created only if nothing is
    there when the body finishes (:class:`OutputExists` otherwise), so two runs writing the same file
    at once never both write it.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_file(p, suffix)
    try:
        yield tmp
        if fsync:
            with open(tmp, "r+b") as f:
                os.fsync(f.fileno())
        if replace:
            os.replace(tmp, p)
        else:
            _publish_new(tmp, p)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


def unwritable_reason(path: str | os.PathLike[str], *, probe: bool = False) -> str | None:
    """Why ``atomic_path`` could not write ``path`` (a directory there, a file where a folder
    must be, no write permission), or None: checked before long work whose result would
    otherwise be lost at the end. ``probe`` also makes and removes an empty file in the nearest
    existing folder, for what permissions do not tell (root may write anywhere by them, but
    not in ``/proc`` or on a read-only mount)."""
    p = Path(path)
    if p.is_dir():
        return "is a directory"
    for parent in p.parents:  # the nearest existing ancestor is where the folders get made
        if parent.exists():
            if not parent.is_dir():
                return "a parent path is a file, not a directory"
            if not os.access(parent, os.W_OK | os.X_OK):
                return "permission denied"
            return _probe(parent) if probe else None
    return None


def _probe(folder: Path) -> str | None:
    """Why no file can be made in ``folder``, found by making one (and removing it), or None."""
    try:
        os.unlink(_new_file(folder / "write-test", ".tmp"))
    except OSError as e:
        return f"cannot create a file in {folder}: {(e.strerror or str(e)).lower()}"
    return None


def _publish_new(tmp: Path, p: Path) -> None:
    """Move ``tmp`` to ``p`` only where ``p`` does not exist: a hard link fails atomically on an
    existing name. Where links are impossible (FAT, some network shares) a check, then a rename."""
    try:
        os.link(tmp, p)
    except FileExistsError:
        raise OutputExists(errno.EEXIST, "already exists", str(p)) from None
    except OSError:
        if os.path.lexists(p):
            raise OutputExists(errno.EEXIST, "already exists", str(p)) from None
        os.replace(tmp, p)
        return
    os.unlink(tmp)


def within(path: str, folder: str) -> bool:
    """``path`` is ``folder`` or lies under it (both already resolved, e.g. ``os.path.realpath``)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def new_file_mode() -> int:
    """``0o666 & ~umask``: the mode of a new file (read by setting the umask, so set straight back).
    For writers that make their files 0600 themselves (safetensors does)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _new_file(p: Path, suffix: str) -> Path:
    for _ in range(100):
        tmp = p.parent / f".{p.name}.{secrets.token_hex(4)}{suffix}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"{p}: cannot create a temporary file next to it")  # pragma: no cover
