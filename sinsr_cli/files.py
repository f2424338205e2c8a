"""Files written whole or not at all: the one atomic replace that every writer uses (images,
reports, converted checkpoints, cache sidecars, training state).

The lowest layer (no torch, no other sinsr module), so models, the cache and imageio share it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

__all__ = ["atomic_path", "new_file_mode", "unwritable_reason"]


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, suffix: str = ".tmp", fsync: bool = True) -> Iterator[Path]:
    """A new empty file next to ``path`` for the body to write; it replaces ``path`` (after an
    fsync) only if the body finishes, and is removed otherwise.

    The name starts with "." so input discovery skips what a killed run leaves; the file is made
    ``0o666 & ~umask`` like any new file (``mkstemp`` would make it 0600). ``fsync=False`` for a
    body that syncs its own handle.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_file(p, suffix)
    try:
        yield tmp
        if fsync:
            with open(tmp, "r+b") as f:
                os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


def unwritable_reason(path: str | os.PathLike[str]) -> str | None:
    """Why ``atomic_path`` could not write ``path`` (a directory there, a file where a folder
    must be, no write permission), or None: checked before long work whose result would
    otherwise be lost at the end."""
    p = Path(path)
    if p.is_dir():
        return "is a directory"
    for parent in p.parents:  # the nearest existing ancestor is where the folders get made
        if parent.exists():
            if not parent.is_dir():
                return "a parent path is a file, not a directory"
            if not os.access(parent, os.W_OK | os.X_OK):
                return "permission denied"
            return None
    return None


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
