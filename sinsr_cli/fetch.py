"""Getting a zoo model's original bytes: the authors' release URL (streamed with ``urllib``)
or a Hugging Face mirror (``SINSR_HUB_REPO``, through ``hf_hub_download``), with one timeout
(``SINSR_HTTP_TIMEOUT``) and errors in a few words. ``hub`` decides which source to ask and
what to keep; nothing here touches the cache's own files.

Before huggingface_hub is called, :func:`unreachable` checks with one plain request that the
endpoint answers at all, so an unreachable network costs one failed connection instead of
huggingface_hub's five retries with back-off (~25 s).
"""

from __future__ import annotations

import glob
import hashlib
import inspect
import os
import re
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import __version__
from .errors import one_line
from .zoo import WeightsUnavailable, ZooEntry

Progress = Callable[[int, int | None], None]

#: seconds a connect or a read may stall before a source is abandoned (``SINSR_HTTP_TIMEOUT``)
HTTP_TIMEOUT = 30.0
CHUNK = 1 << 20
_STALE_PART_S = 24 * 3600


def http_timeout() -> float:
    """``SINSR_HTTP_TIMEOUT`` seconds, else ``HTTP_TIMEOUT``: how long a connection or a read may
    stall before that source is given up."""
    text = os.environ.get("SINSR_HTTP_TIMEOUT", "").strip()
    try:
        value = float(text) if text else HTTP_TIMEOUT
    except ValueError:
        raise ValueError(f"SINSR_HTTP_TIMEOUT must be a number of seconds, got {text!r}") from None
    if not value > 0:
        raise ValueError(f"SINSR_HTTP_TIMEOUT must be > 0, got {text!r}")
    return value


def hub_repo(e: ZooEntry) -> str:
    """``SINSR_HUB_REPO`` if set (an empty value: no Hub at all), else the entry's own repo."""
    env = os.environ.get("SINSR_HUB_REPO")
    return e.repo_id if env is None else env.strip()


def hub_revision(e: ZooEntry) -> str:
    return os.environ.get("SINSR_HUB_REVISION", "").strip() or e.revision


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def unreachable(base_url: str) -> str:
    """"" if ``base_url``'s server answers an HTTP request (any status), else why not.

    One plain request with our timeout, through the same proxies as everything else; it saves
    an unreachable network from huggingface_hub's retry loop.
    """
    req = urllib.request.Request(base_url + "/", method="HEAD", headers={"User-Agent": f"sinsr-cli/{__version__}"})
    try:
        with urllib.request.urlopen(req, timeout=http_timeout()):
            return ""
    except urllib.error.HTTPError:
        return ""  # it answered
    except urllib.error.URLError as err:
        return f"cannot connect ({err.reason})"
    except Exception as err:  # noqa: BLE001 - timeout, reset, ...
        return f"cannot connect ({describe(err)})"


def fetch_hub(
    e: ZooEntry, hub_cache: Path, *, offline: bool, force: bool, progress: Progress | None
) -> tuple[Path, str]:
    """``hf_hub_download`` of ``e`` from :func:`hub_repo` into ``hub_cache``; returns (file,
    ``hf://repo@commit/filename``).

    An LFS blob is named by its sha256 (the ETag); a blob that no longer matches its name is
    downloaded again once.
    """
    from huggingface_hub import hf_hub_download

    repo = hub_repo(e)
    kw: dict[str, Any] = dict(repo_id=repo, filename=e.hub_filename, revision=hub_revision(e), cache_dir=hub_cache)
    endpoint = os.environ.get("HF_ENDPOINT")
    if endpoint:  # huggingface_hub reads it once at import; honour a later change too
        kw["endpoint"] = endpoint.rstrip("/")
    if offline:
        kw["local_files_only"] = True
    else:
        kw["etag_timeout"] = http_timeout()
    if "tqdm_class" in inspect.signature(hf_hub_download).parameters:
        kw["tqdm_class"] = _callback_bar(progress)
    path = Path(hf_hub_download(**kw, force_download=force))
    blob_sha = _lfs_sha(path)
    if blob_sha is not None and sha256_file(path) != blob_sha:
        if offline:
            raise WeightsUnavailable(f"{path}: corrupt in the Hugging Face cache")
        path = Path(hf_hub_download(**kw, force_download=True))
    commit = path.parent.name  # .../snapshots/<commit>/<filename>
    return path, f"hf://{repo}@{commit}/{e.hub_filename}"


def _lfs_sha(path: Path) -> str | None:
    try:
        name = Path(os.path.realpath(path)).name
    except OSError:
        return None
    return name if re.fullmatch(r"[0-9a-f]{64}", name) else None


def _callback_bar(progress: Progress | None) -> type:
    """A silent tqdm stand-in for huggingface_hub that forwards byte counts to ``progress``."""

    class _Bar:
        def __init__(self, *args: Any, total: int | None = None, initial: int = 0, **kwargs: Any) -> None:
            self.total = total
            self.n = initial
            if progress is not None:
                progress(self.n, self.total)

        def update(self, n: int | float | None = 1) -> None:
            self.n += int(n or 0)
            if progress is not None:
                progress(self.n, self.total)

        def close(self) -> None:
            pass

        def refresh(self, *args: Any, **kwargs: Any) -> None:
            pass

        def set_description(self, *args: Any, **kwargs: Any) -> None:
            pass

        def set_postfix(self, *args: Any, **kwargs: Any) -> None:
            pass

        def __enter__(self) -> _Bar:
            return self

        def __exit__(self, *exc: Any) -> None:
            self.close()

    return _Bar


class DownloadError(Exception):
    """A URL could not be streamed completely; the message is one short line."""


def fetch_url(url: str, folder: Path, filename: str, progress: Progress | None) -> tuple[Path, str]:
    """Stream ``url`` into ``folder/.<filename>.*.part``; returns (that file, its sha256).

    The caller owns the file. It is returned only if the body was complete (as many bytes as
    Content-Length said); on any error it is deleted.
    """
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise DownloadError(f"not an http(s) URL: {url}")
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(folder, filename)
    fd, name = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=folder)
    tmp = Path(name)
    h = hashlib.sha256()
    done, total = 0, None
    req = urllib.request.Request(url, headers={"User-Agent": f"sinsr-cli/{__version__}", "Accept-Encoding": "identity"})
    try:
        with os.fdopen(fd, "wb") as f:
            try:
                with urllib.request.urlopen(req, timeout=http_timeout()) as resp:
                    length = resp.headers.get("Content-Length")
                    identity = resp.headers.get("Content-Encoding", "identity").lower() == "identity"
                    total = int(length) if length and length.isdigit() and identity else None
                    if progress is not None:
                        progress(0, total)
                    while chunk := resp.read(CHUNK):
                        f.write(chunk)
                        h.update(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(done, total)
            except urllib.error.HTTPError as err:
                raise DownloadError(f"HTTP {err.code} {err.reason}") from None
            except urllib.error.URLError as err:
                raise DownloadError(f"cannot connect ({err.reason})") from None
            except Exception as err:  # reset, timeout, http.client.IncompleteRead, ...
                raise DownloadError(f"interrupted after {done} bytes ({describe(err)})") from None
        if total is not None and done != total:
            raise DownloadError(f"incomplete: received {done} of {total} bytes")
        if done == 0:
            raise DownloadError("empty response")
        return tmp, h.hexdigest()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _remove_stale_parts(folder: Path, filename: str) -> None:
    """Delete ``.part`` files of ``filename`` left by a killed process a day or more ago."""
    now = time.time()
    for part in folder.glob(f".{glob.escape(filename)}.*.part"):
        try:
            if now - part.stat().st_mtime > _STALE_PART_S:
                part.unlink()
        except OSError:
            pass


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    buf = bytearray(CHUNK * 4)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(view):
            h.update(view[:n])
    return h.hexdigest()


# huggingface_hub errors, by class name (stable across its versions), in a few words
_HF_ERRORS = {
    "RemoteEntryNotFoundError": "no such file in the repository",
    "EntryNotFoundError": "no such file in the repository",
    "RevisionNotFoundError": "no such revision",
    "GatedRepoError": "gated repository (accept its terms and set HF_TOKEN)",
    "RepositoryNotFoundError": "no such repository (or it is private: set HF_TOKEN)",
    "LocalEntryNotFoundError": "the Hub cannot be reached",
}


def describe(err: BaseException) -> str:
    if isinstance(err, (WeightsUnavailable, DownloadError)):
        return one_line(str(err))
    if type(err).__name__ in _HF_ERRORS:
        return _HF_ERRORS[type(err).__name__]
    text = one_line(str(err)) or "no details"
    return f"{type(err).__name__}: {text}"


__all__ = [
    "CHUNK",
    "HTTP_TIMEOUT",
    "DownloadError",
    "Progress",
    "describe",
    "fetch_hub",
    "fetch_url",
    "http_timeout",
    "hub_endpoint",
    "hub_repo",
    "hub_revision",
    "sha256_file",
    "unreachable",
]
