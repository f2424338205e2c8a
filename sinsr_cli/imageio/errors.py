"""The errors of image I/O, and the one-line reasons they carry."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

from ..errors import one_line


class SinsrIOError(Exception):
    """A file cannot be read, written or placed; ``str()`` is one line: ``"<path>: <reason>"``.

    ``setting`` names the keyword argument that would change the outcome ("max_pixels",
    "strip_metadata"), so a front end can say how to pass it (the CLI names its flag); the
    message itself stays in library terms.
    """

    def __init__(self, path: str | os.PathLike[str] | None, reason: str, *, setting: str | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.reason = " ".join(str(reason).split())
        self.setting = setting
        super().__init__(self.reason if path is None else f"{os.fspath(path)}: {self.reason}")

    def __reduce__(self) -> tuple[Any, ...]:  # survive multiprocessing
        return (_rebuild, (type(self), self.path, self.reason, self.setting))


def _rebuild(cls: type[SinsrIOError], path: Path | None, reason: str, setting: str | None) -> SinsrIOError:
    return cls(path, reason, setting=setting)


class ImageReadError(SinsrIOError):
    """An input cannot be decoded: missing, unreadable, not an image, corrupt, too big or small."""


class ImageWriteError(SinsrIOError):
    """An output image cannot be encoded or saved (bad format, permission, disk full, ...)."""


_OS_REASONS = {
    errno.ENOENT: "no such file or directory",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOSPC: "no space left on device (disk full)",
    errno.EROFS: "read-only file system",
    errno.EISDIR: "is a directory",
    errno.ENOTDIR: "a parent path is not a directory",
    errno.EEXIST: "a parent path is a file, not a directory",
    errno.ENAMETOOLONG: "file name too long",
    getattr(errno, "EDQUOT", -1): "disk quota exceeded",
}


def os_reason(e: OSError) -> str:
    return _OS_REASONS.get(e.errno or 0) or e.strerror or one_line(e, 160)


def megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.0f} MP" if pixels >= 10**6 else f"{pixels} px"
