"""The verified local cache of the zoo's weights (``zoo``): ``resolve_weights("sinsr-v1")``
returns the path of a verified, self-describing safetensors file, fetching (``fetch``) and
converting it once if needed, from:

1. a mirror on the Hugging Face Hub, if one is named: ``SINSR_HUB_REPO`` (a repo written by
   ``mirror.export_mirror`` / ``sinsr export`` and uploaded; no public mirror exists, so there
   is no default), at ``SINSR_HUB_REVISION`` (default ``main``), through ``hf_hub_download``
   (its cache, ``HF_ENDPOINT``, ``HF_TOKEN``);
2. otherwise the authors' GitHub release (streamed into a temp file that is only ever used
   after its length checked out).

Cache layout (root: ``SINSR_CACHE``, else ``$XDG_CACHE_HOME/sinsr``, else ``~/.cache/sinsr``)::

    models/<name>.safetensors   converted weights, what resolve_weights returns
    models/<name>.json          sidecar: sha256 + size of that file, source, sha256 of the original
    incoming/<release file>     a manually downloaded original (e.g. SinSR_v1.pth) goes here;
                                it is converted on next use, even offline, then removed
    incoming/.<file>.*.part     an in-flight download (unique per process, never read as complete)
    hub/                        huggingface_hub's cache of a SINSR_HUB_REPO mirror (models--org--repo/...)

No checksums are published upstream, so trust is on first use: the sha256 of the first original
downloaded from a source is recorded and a later download from the same source must match it.
The sidecar also records the cached file's size, mtime and inode: ``resolve_weights``
re-hashes the file (0.7 GB for a UNet) only when one of them changed, and ``verify_cache``
(``sinsr models --verify``) re-hashes everything. A file that fails is deleted and fetched
again (or, offline, reported). ``SINSR_OFFLINE`` / ``HF_HUB_OFFLINE`` (or ``offline=True``)
mean no network at all.

Nothing here prints: progress goes through ``progress(done_bytes, total_bytes_or_None)``.

The layout itself (paths, sidecar files, links) is ``cache.py``; this module is the order in
which a model is adopted, verified, fetched, converted and pinned.
"""

from __future__ import annotations

import contextlib
import os
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from . import fetch
from .cache import (
    SIDECAR_FORMAT,
    CachePaths,
    cache_root,
    cache_unwritable,
    link_or_copy,
    read_sidecar,
    safetensors_metadata,
    weights_path,
    write_json,
    wrong_architecture,
)
from . import zoo as _zoo
from .fetch import HTTP_TIMEOUT, Progress, http_timeout
from .files import atomic_path
from .zoo import ZOO, WeightsMissing, WeightsUnavailable, ZooEntry, zoo_entry

_TRUE = {"1", "true", "yes", "on"}


# -- public API ------------------------------------------------------------------------------


def is_offline() -> bool:
    """``SINSR_OFFLINE`` or ``HF_HUB_OFFLINE`` set to 1/true/yes/on."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("SINSR_OFFLINE", "HF_HUB_OFFLINE"))


def resolve_weights(
    name_or_path: str | os.PathLike[str],
    *,
    kind: str | None = None,
    offline: bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> Path:
    """A local weights file for a path or a zoo name.

    An existing file is returned as is. A zoo name returns ``models/<name>.safetensors`` in the
    cache after verifying its sha256, fetching and converting it first if it is missing or corrupt.
    ``kind`` ('unet' | 'vq') rejects a zoo model of the other kind. Raises ``WeightsUnavailable``.
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    names = {e.name for e in _zoo.ZOO}
    if text not in names:
        if path.exists():
            raise WeightsUnavailable(f"{path}: is not a file")
        raise WeightsUnavailable(
            f"{text}: no such file, and not a model name{_zoo.did_you_mean(text)} (known models: {', '.join(sorted(names))})"
        )
    entry = zoo_entry(text)
    if kind is not None and entry.kind != kind:
        raise ValueError(f"{entry.name} is a {entry.kind} model, not a {kind} model")
    offline = is_offline() if offline is None else offline
    p = CachePaths(cache_root(cache_dir), entry)
    with _entry_lock(p):
        return _resolve(p, offline=offline, progress=progress, force=False)


def download(
    name: str,
    *,
    force: bool = False,
    offline: bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> Path:
    """Fetch zoo model ``name`` into the cache (``sinsr download NAME``); ``force`` re-downloads."""
    entry = zoo_entry(name)
    offline = is_offline() if offline is None else offline
    if force and offline:
        raise WeightsUnavailable(f"{name}: cannot re-download while offline (SINSR_OFFLINE / HF_HUB_OFFLINE is set)")
    p = CachePaths(cache_root(cache_dir), entry)
    with _entry_lock(p):
        return _resolve(p, offline=offline, progress=progress, force=force)


def cached_status(cache_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """One dict per zoo model for ``sinsr models``: cheap (no hashing; ``cached`` = file and
    sidecar present, sizes agree). Keys: name, kind, preset, cached, path, size, licence,
    description, url, hub (``repo/file@revision``, or None without a mirror)."""
    root = cache_root(cache_dir)
    rows = []
    for e in _zoo.ZOO:
        p = CachePaths(root, e)
        rec = read_sidecar(p.sidecar)
        size = p.weights.stat().st_size if p.weights.is_file() else None
        cached = size is not None and rec is not None and rec.get("size") == size
        rows.append(
            {
                "name": e.name,
                "kind": e.kind,
                "preset": e.preset,
                "cached": cached,
                "path": str(p.weights),
                "size": size,
                "licence": e.licence,
                "description": e.description,
                "url": e.url,
                "hub": f"{fetch.hub_repo(e)}/{e.hub_filename}@{fetch.hub_revision(e)}" if fetch.hub_repo(e) else None,
            }
        )
    return rows


# -- resolution ------------------------------------------------------------------------------


@contextlib.contextmanager
def _entry_lock(p: CachePaths) -> Iterator[None]:
    """One process at a time per model and cache: a reader never sees a half-replaced pair of
    weights and sidecar, and two processes never download the same file. (``filelock`` comes
    with huggingface_hub.) A cache we cannot write to is used without a lock."""
    lock = None
    try:
        from filelock import FileLock

        p.weights.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(p.weights.parent / f".{p.entry.name}.lock"))
        lock.acquire()
    except (ImportError, OSError):
        lock = None
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def verify_cache(
    names: Sequence[str] | None = None, cache_dir: str | os.PathLike[str] | None = None
) -> list[dict[str, Any]]:
    """Re-hash every cached model (or those named) against its sidecar: ``sinsr models --verify``.

    A file that fails is deleted (the next use fetches it again), as a failed check on load
    does. Returns one dict per model: name, path, status ("ok" | "corrupt" | "not cached"),
    sha256 (of a good file).
    """
    root = cache_root(cache_dir)
    out = []
    for e in [zoo_entry(n) for n in names] if names else _zoo.ZOO:
        p = CachePaths(root, e)
        row: dict[str, Any] = {"name": e.name, "path": str(p.weights), "status": "not cached", "sha256": None}
        with _entry_lock(p):
            rec = read_sidecar(p.sidecar)
            if p.weights.is_file() and rec is not None and "sha256" in rec:
                if _verify(p, rec, full=True):
                    row.update(status="ok", sha256=rec["sha256"])
                else:
                    p.weights.unlink(missing_ok=True)
                    row["status"] = "corrupt"
        out.append(row)
    return out


def _resolve(p: CachePaths, *, offline: bool, progress: Progress | None, force: bool) -> Path:
    e = p.entry
    problem = ""
    if p.weights.is_dir():
        raise WeightsUnavailable(f"{p.weights} is a directory, not a model file (remove it to fetch {e.name} again)")
    if p.weights.exists() and not force:
        rec = read_sidecar(p.sidecar)
        if rec is not None and "sha256" in rec:
            if _verify(p, rec):
                wrong = wrong_architecture(safetensors_metadata(p.weights) or {}, e)  # cached before it was checked
                if wrong:
                    raise WeightsUnavailable(f"{p.weights} is not the {e.name} architecture ({wrong}); delete it to fetch {e.name} again")
                return p.weights
            problem = f"the cached {p.weights} failed sha256 verification and was deleted"
            p.weights.unlink(missing_ok=True)
        else:
            # a file put there by hand, or a crash between writing it and its sidecar: adopt it
            try:
                return _install(p, p.weights, source=f"file:{p.weights.name}", source_sha256=fetch.sha256_file(p.weights))
            except WeightsUnavailable as err:
                raise WeightsUnavailable(f"{err} (delete {p.weights} to fetch {e.name} again)") from None

    if p.incoming.is_file() and not force:
        try:
            out = _install(p, p.incoming, source=e.url, source_sha256=fetch.sha256_file(p.incoming))
        except WeightsUnavailable as err:
            raise WeightsUnavailable(f"{err} (delete or replace {p.incoming})") from None
        p.incoming.unlink(missing_ok=True)
        return out

    unwritable = cache_unwritable(p.root)
    if unwritable:  # nothing could be saved there: neither a download nor a file put in incoming/
        why = f" ({problem})" if problem else ""
        raise WeightsUnavailable(
            f"{e.name} is not in the cache{why}, and {unwritable}: set SINSR_CACHE to a folder you can write"
        )
    if offline:
        why = [problem] if problem else []
        if fetch.hub_repo(e):
            try:  # a copy in huggingface_hub's cache works offline too
                blob, source = fetch.fetch_hub(p.entry, p.hub_cache, offline=True, force=False, progress=progress)
                return _install(p, blob, source=source, source_sha256=fetch.sha256_file(blob), linkable=True)
            except WeightsUnavailable as err:
                why.append(str(err))
            except Exception:  # not in huggingface_hub's cache either
                pass
        raise _missing(p, "offline (SINSR_OFFLINE / HF_HUB_OFFLINE / --offline)", why)

    errors: list[str] = [problem] if problem else []
    if fetch.hub_repo(e):
        where = f"Hub {fetch.hub_repo(e)}/{e.hub_filename}@{fetch.hub_revision(e)}"
        down = fetch.unreachable(fetch.hub_endpoint())
        if down:
            errors.append(f"{where}: {down}")
        else:
            try:
                blob, source = fetch.fetch_hub(p.entry, p.hub_cache, offline=False, force=force or bool(problem), progress=progress)
                return _install(p, blob, source=source, source_sha256=fetch.sha256_file(blob), linkable=True)
            except Exception as err:  # anything wrong with the mirror: fall back to the release
                errors.append(f"{where}: {fetch.describe(err)}")
    try:
        tmp, sha = fetch.fetch_url(e.url, p.incoming.parent, e.filename, progress)
        try:
            return _install(p, tmp, source=e.url, source_sha256=sha)
        finally:
            tmp.unlink(missing_ok=True)
    except Exception as err:  # the URL itself is in the message's last part
        errors.append(f"release on {urllib.parse.urlsplit(e.url).netloc}: {fetch.describe(err)}")
    if force and p.weights.is_file():  # `download --force` of a cached model: the copy stays
        raise WeightsMissing(f"{e.name} could not be downloaded again ({'; '.join(errors)}); the cached {p.weights} is kept")
    raise _missing(p, "could not be downloaded", errors)


def _missing(p: CachePaths, state: str, details: Sequence[str]) -> WeightsMissing:
    """The one line of a first run without the weights: what is missing, why, the two ways out."""
    e = p.entry
    why = f" ({'; '.join(details)})" if details else ""
    return WeightsMissing(
        f"{e.name} is not in the cache and {state}{why}. Get it with `sinsr download {e.name}` where "
        f"there is network, or download {e.url} and save it as {p.incoming}"
    )


def _install(p: CachePaths, src: Path, *, source: str, source_sha256: str, linkable: bool = False) -> Path:
    """Convert (or, for a sinsr safetensors from the Hub, hard-link) ``src`` into the cache and
    record its sidecar. ``src`` is left in place."""
    from .models.checkpoints import CheckpointError
    from .models.convert import convert_checkpoint

    e = p.entry
    _check_pin(p, source, source_sha256)
    with atomic_path(p.weights, suffix=".safetensors.tmp") as tmp:
        if linkable and (safetensors_metadata(src) or {}).get("sinsr.kind") == e.kind:
            link_or_copy(src, tmp)
        else:
            meta = {
                "sinsr.zoo": e.name,
                "sinsr.source": source,
                "sinsr.source_sha256": source_sha256,
                "sinsr.licence": e.licence,
            }
            try:
                convert_checkpoint(src, tmp, hint=e.preset, extra_metadata=meta)
            except CheckpointError as err:
                raise WeightsUnavailable(f"{e.name}: {src.name} from {source} is not usable: {err}") from None
        got_meta = safetensors_metadata(tmp) or {}
        if got_meta.get("sinsr.kind") != e.kind:
            raise WeightsUnavailable(f"{e.name}: {source} holds a {got_meta.get('sinsr.kind')} checkpoint, expected {e.kind}")
        wrong = wrong_architecture(got_meta, e)  # another size must not pass as this model
        if wrong:
            raise WeightsUnavailable(f"{e.name}: {e.filename if source == e.url else src.name} from {source} is not the {e.name} architecture ({wrong}); a model of "
                                     "another size is used by its path, not under a zoo name")
        record = {
            "format": SIDECAR_FORMAT,
            "name": e.name,
            "kind": e.kind,
            "file": p.weights.name,
            "sha256": fetch.sha256_file(tmp),
            "size": tmp.stat().st_size,
            "stat": _stat_key(tmp),  # a rename keeps all of it
            "source": source,
            "source_sha256": source_sha256,
            "licence": e.licence,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        # sidecar first: the weights file never appears without a sidecar that matches it
        write_json(p.sidecar, record)
    return p.weights


def _check_pin(p: CachePaths, source: str, sha: str) -> None:
    """Published hash if any, else the hash recorded when this source was first downloaded."""
    e = p.entry
    published = e.sha256 if source == e.url else e.hub_sha256 if source.startswith("hf://") else None
    if published is not None and published.lower() != sha:
        raise WeightsUnavailable(f"{e.name}: {source} has sha256 {sha}, expected the published {published}")
    rec = read_sidecar(p.sidecar)
    if published is None and rec is not None and rec.get("source") == source:
        first = rec.get("source_sha256")
        if first and first != sha:
            raise WeightsUnavailable(
                f"{e.name}: {source} now has sha256 {sha[:16]}..., but {first[:16]}... was recorded when it was "
                f"first downloaded (the upstream file changed?); delete {p.sidecar} to accept the new file"
            )


def _stat_key(path: Path) -> dict[str, int]:
    """What changes when a file is rewritten, truncated, replaced or touched. (Not ctime: a
    rename or a new hard link, as in ``export_mirror``, changes it without touching the bytes.)"""
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}


def _verify(p: CachePaths, rec: dict[str, Any], *, full: bool = False) -> bool:
    """The cached file matches its sidecar. Unless ``full``, an unchanged stat record stands
    for the hash; a changed one means re-hashing, and a good hash is recorded with the new stat
    (a copied or touched cache is hashed once, not on every load)."""
    try:
        key = _stat_key(p.weights)
        if key["size"] != rec.get("size"):
            return False
        if not full and rec.get("stat") == key:
            return True
        if fetch.sha256_file(p.weights) != rec.get("sha256"):
            return False
    except OSError:
        return False
    if rec.get("stat") != key:
        with contextlib.suppress(OSError):
            write_json(p.sidecar, {**rec, "stat": key})
    return True


__all__ = [
    "HTTP_TIMEOUT",
    "ZOO",
    "CachePaths",
    "Progress",
    "ZooEntry",
    "WeightsMissing",
    "WeightsUnavailable",
    "http_timeout",
    "verify_cache",
    "zoo_entry",
    "resolve_weights",
    "download",
    "cached_status",
    "cache_root",
    "weights_path",
    "is_offline",
]
