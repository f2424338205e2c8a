"""Model zoo: where the official weights live, and a verified local cache of them.

The zoo is data (``ZOO``). ``resolve_weights("sinsr-v1")`` returns the path of a verified,
self-describing safetensors file, fetching and converting it once if needed:

1. a mirror on the Hugging Face Hub, if one is named: ``SINSR_HUB_REPO`` (a repo written by
   ``export_mirror`` / ``sinsr export`` and uploaded; no public mirror exists, so there is no
   default), at ``SINSR_HUB_REVISION`` (default ``main``), through ``hf_hub_download`` (its
   cache, ``HF_ENDPOINT``, ``HF_TOKEN``);
2. otherwise the authors' GitHub release (streamed with ``urllib`` into a temp file that is
   only ever used after its length checked out).

Timeouts: a connection or read that stalls for ``SINSR_HTTP_TIMEOUT`` seconds (default 30)
fails that source. Before huggingface_hub is called, one plain request checks that the Hub
endpoint answers at all, so an unreachable network costs one failed connection instead of
huggingface_hub's five retries with back-off (~25 s).

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
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import inspect
import json
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__

Progress = Callable[[int, int | None], None]

#: seconds a connect or a read may stall before a source is abandoned (``SINSR_HTTP_TIMEOUT``)
HTTP_TIMEOUT = 30.0
_CHUNK = 1 << 20
_SIDECAR_FORMAT = 1
_STALE_PART_S = 24 * 3600
_TRUE = {"1", "true", "yes", "on"}

_SINSR = "CC BY-NC-SA 4.0"
_SLAB = "S-Lab License 1.0"
_SINSR_REL = "https://github.com/wyf0912/SinSR/releases/download/v1.0/"
_RESSHIFT_REL = "https://github.com/zsyOAOA/ResShift/releases/download/v2.0/"
#: where each licence's text is (the authors' repositories carry their LICENSE files)
LICENCE_URLS = {
    _SINSR: "https://creativecommons.org/licenses/by-nc-sa/4.0/legalcode",
    _SLAB: "https://github.com/zsyOAOA/ResShift/blob/master/LICENSE",
}
#: the Hugging Face model-card ``license`` field for each licence
_HF_LICENCE = {_SINSR: "cc-by-nc-sa-4.0", _SLAB: "other"}


class WeightsUnavailable(Exception):
    """Weights cannot be found, fetched or verified. The message is one line a user can act on."""

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message, limit=2000))


class WeightsMissing(WeightsUnavailable):
    """A zoo model is not in the cache and could not be fetched (offline, no network, the source
    failed). Unlike a wrong name this is not a usage error: the command itself was fine."""


@dataclass(frozen=True)
class ZooEntry:
    """One downloadable model.

    ``sha256`` is the expected hash of the release file at ``url`` and ``hub_sha256`` of the Hub
    file; ``None`` (nothing published) means trust on first use. ``repo_id`` is a Hub repo that
    really holds this model ("" for none: today no public one does); ``SINSR_HUB_REPO``
    overrides it for every model.
    """

    name: str
    kind: str  # "unet" | "vq"
    preset: str  # key of config.PRESETS, or of config.VQ_PRESETS for kind "vq"
    repo_id: str
    hub_filename: str
    revision: str
    url: str
    sha256: str | None
    licence: str
    description: str
    hub_sha256: str | None = None

    @property
    def filename(self) -> str:
        """The release file's name (``SinSR_v1.pth``): what a manual download is called."""
        return urllib.parse.unquote(urllib.parse.urlsplit(self.url).path.rsplit("/", 1)[-1])


def _entry(name: str, kind: str, url: str, licence: str, description: str) -> ZooEntry:
    return ZooEntry(
        name=name,
        kind=kind,
        preset=name,
        repo_id="",
        hub_filename=name.replace("-", "_") + ".safetensors",
        revision="main",
        url=url,
        sha256=None,
        licence=licence,
        description=description,
    )


ZOO: tuple[ZooEntry, ...] = (
    _entry(
        "sinsr-v1",
        "unet",
        _SINSR_REL + "SinSR_v1.pth",
        _SINSR,
        "SinSR v1: one-step x4 real-world SR; the authors' model for RealSet65 and ImageNet-Test",
    ),
    _entry(
        "sinsr-v2",
        "unet",
        _SINSR_REL + "SinSR_v2.pth",
        _SINSR,
        "SinSR v2: one-step x4, an early-stopped run; the authors' model for RealSR",
    ),
    _entry(
        "resshift-v1",
        "unet",
        _RESSHIFT_REL + "resshift_realsrx4_s15_v1.pth",
        _SLAB,
        "ResShift v1: 15-step x4 SR (SinSR's teacher)",
    ),
    _entry("resshift-v2", "unet", _RESSHIFT_REL + "resshift_realsrx4_s15_v2.pth", _SLAB, "ResShift v2: 15-step x4 SR"),
    _entry("resshift-v3", "unet", _RESSHIFT_REL + "resshift_realsrx4_s4_v3.pth", _SLAB, "ResShift v3: 4-step x4 SR"),
    _entry("vq-f4", "vq", _RESSHIFT_REL + "autoencoder_vq_f4.pth", _SLAB, "VQ-f4 autoencoder (needed by every UNet)"),
)


def zoo_entry(name: str) -> ZooEntry:
    """The entry called ``name``; ``ValueError`` naming the known models otherwise."""
    for e in ZOO:
        if e.name == name:
            return e
    raise ValueError(f"unknown model {name!r}; known models: {', '.join(e.name for e in ZOO)}")


# -- cache paths -----------------------------------------------------------------------------


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``cache_dir``, else ``SINSR_CACHE``, else ``$XDG_CACHE_HOME/sinsr``, else ``~/.cache/sinsr``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("SINSR_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "sinsr"
    return Path.home() / ".cache" / "sinsr"


@dataclass(frozen=True)
class _Paths:
    root: Path
    entry: ZooEntry

    @property
    def weights(self) -> Path:
        return self.root / "models" / f"{self.entry.name}.safetensors"

    @property
    def sidecar(self) -> Path:
        return self.root / "models" / f"{self.entry.name}.json"

    @property
    def incoming(self) -> Path:
        return self.root / "incoming" / self.entry.filename

    @property
    def hub_cache(self) -> Path:
        return self.root / "hub"


def weights_path(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the converted weights of zoo model ``name`` live (whether or not they exist yet)."""
    return _Paths(cache_root(cache_dir), zoo_entry(name)).weights


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
    names = {e.name for e in ZOO}
    if text not in names:
        if path.exists():
            raise WeightsUnavailable(f"{path}: is not a file")
        raise WeightsUnavailable(
            f"{text}: no such file, and not a model name (known models: {', '.join(sorted(names))})"
        )
    entry = zoo_entry(text)
    if kind is not None and entry.kind != kind:
        raise ValueError(f"{entry.name} is a {entry.kind} model, not a {kind} model")
    offline = is_offline() if offline is None else offline
    p = _Paths(cache_root(cache_dir), entry)
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
    p = _Paths(cache_root(cache_dir), entry)
    with _entry_lock(p):
        return _resolve(p, offline=offline, progress=progress, force=force)


def cached_status(cache_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """One dict per zoo model for ``sinsr models``: cheap (no hashing; ``cached`` = file and
    sidecar present, sizes agree). Keys: name, kind, preset, cached, path, size, licence,
    description, url, hub (``repo/file@revision``, or None without a mirror)."""
    root = cache_root(cache_dir)
    rows = []
    for e in ZOO:
        p = _Paths(root, e)
        rec = _read_sidecar(p.sidecar)
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
                "hub": f"{_hub_repo(e)}/{e.hub_filename}@{_hub_revision(e)}" if _hub_repo(e) else None,
            }
        )
    return rows


# -- mirrors ---------------------------------------------------------------------------------


def export_mirror(
    folder: str | os.PathLike[str],
    names: Sequence[str] | None = None,
    *,
    force: bool = False,
    offline: bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> list[Path]:
    """Write a folder that, uploaded as a Hugging Face model repo, is a mirror for ``SINSR_HUB_REPO``.

    For each model (default: the whole zoo; missing ones are fetched first): the converted
    safetensors under the file name the zoo asks the Hub for (hard-linked from the cache where
    possible), plus ``README.md`` (a model card: licences, sources, hashes, how to use it) and
    ``SHA256SUMS`` (``sha256sum -c`` format). Files already in ``folder`` are an error unless
    ``force``. Returns the files written.
    """
    entries = [zoo_entry(n) for n in dict.fromkeys(names)] if names else list(ZOO)
    out = Path(folder).expanduser()
    targets = [out / e.hub_filename for e in entries] + [out / "README.md", out / "SHA256SUMS"]
    existing = [t for t in targets if os.path.lexists(t)]
    if existing and not force:
        raise ValueError(f"{existing[0]}: already exists (use --force to replace the mirror's files)")
    sources = [resolve_weights(e.name, offline=offline, cache_dir=cache_dir, progress=progress) for e in entries]
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for e, src in zip(entries, sources):
        rec = _read_sidecar(_Paths(cache_root(cache_dir), e).sidecar) or {}
        dst = out / e.hub_filename
        _link_or_copy(src, dst)
        sha = rec.get("sha256") or _sha256(dst)
        rows.append((e, sha, dst.stat().st_size, rec.get("source", e.url)))
    (out / "SHA256SUMS").write_text("".join(f"{sha}  {e.hub_filename}\n" for e, sha, _, _ in rows))
    (out / "README.md").write_text(_model_card(rows))
    return [out / e.hub_filename for e in entries] + [out / "SHA256SUMS", out / "README.md"]


def _model_card(rows: Sequence[tuple[ZooEntry, str, int, str]]) -> str:
    """A Hub model card for a mirror: YAML front matter, then what each file is and whose it is."""
    licences = list(dict.fromkeys(e.licence for e, *_ in rows))
    hf_id = _HF_LICENCE[licences[0]] if len(licences) == 1 else "other"
    front = ["---", f"license: {hf_id}"]
    if hf_id == "other":
        front += [f"license_name: {'-'.join(licences).lower().replace(' ', '-').replace('.', '-')}",
                  f"license_link: {LICENCE_URLS[licences[0]] if len(licences) == 1 else 'README.md'}"]
    front += ["library_name: sinsr-cli", "pipeline_tag: image-to-image",
              "tags: [super-resolution, diffusion, sinsr, resshift]", "---", ""]
    lines = [
        "# sinsr weights mirror", "",
        "A mirror of the authors' SinSR / ResShift weights, converted to self-describing safetensors by "
        f"`sinsr export` (sinsr-cli {__version__}). The weights are **the authors'**, under their "
        "licences below (**non-commercial use only**); this mirror changes the file format, not the "
        "licence.", "",
        "Use it with [sinsr](https://pypi.org/project/sinsr-cli/):", "",
        "```bash", "export SINSR_HUB_REPO=<user>/<this-repo>   # optional: SINSR_HUB_REVISION=<commit>",
        "sinsr upscale photo.png", "```", "",
        "| file | model | licence | original | sha256 | bytes |", "|---|---|---|---|---|---|",
    ]
    for e, sha, size, source in rows:
        lines.append(f"| `{e.hub_filename}` | {e.name}: {e.description} | [{e.licence}]({LICENCE_URLS[e.licence]}) "
                     f"| {e.url} | `{sha}` | {size} |")
    lines += ["", "## Licences", ""]
    for lic in licences:
        names = ", ".join(e.name for e, *_ in rows if e.licence == lic)
        lines.append(f"- {names}: {lic}, {LICENCE_URLS[lic]}")
    lines += [
        "", "SinSR: Yufei Wang et al., *SinSR: Diffusion-Based Image Super-Resolution in a Single Step*, "
        "CVPR 2024, https://github.com/wyf0912/SinSR.",
        "ResShift: Zongsheng Yue et al., *ResShift: Efficient Diffusion Model for Image Super-resolution "
        "by Residual Shifting*, NeurIPS 2023, https://github.com/zsyOAOA/ResShift.", "",
        "Check the files with `sha256sum -c SHA256SUMS`.", "",
    ]
    return "\n".join(front + lines)


# -- resolution ------------------------------------------------------------------------------


@contextlib.contextmanager
def _entry_lock(p: _Paths) -> Iterator[None]:
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
    for e in [zoo_entry(n) for n in names] if names else ZOO:
        p = _Paths(root, e)
        row: dict[str, Any] = {"name": e.name, "path": str(p.weights), "status": "not cached", "sha256": None}
        with _entry_lock(p):
            rec = _read_sidecar(p.sidecar)
            if p.weights.is_file() and rec is not None and "sha256" in rec:
                if _verify(p, rec, full=True):
                    row.update(status="ok", sha256=rec["sha256"])
                else:
                    p.weights.unlink(missing_ok=True)
                    row["status"] = "corrupt"
        out.append(row)
    return out


def _resolve(p: _Paths, *, offline: bool, progress: Progress | None, force: bool) -> Path:
    e = p.entry
    problem = ""
    if p.weights.exists() and not force:
        rec = _read_sidecar(p.sidecar)
        if rec is not None and "sha256" in rec:
            if _verify(p, rec):
                return p.weights
            problem = f"the cached {p.weights} failed sha256 verification and was deleted"
            p.weights.unlink(missing_ok=True)
        else:
            # a file put there by hand, or a crash between writing it and its sidecar: adopt it
            try:
                return _install(p, p.weights, source=f"file:{p.weights.name}", source_sha256=_sha256(p.weights))
            except WeightsUnavailable as err:
                raise WeightsUnavailable(f"{err} (delete {p.weights} to fetch {e.name} again)") from None

    if p.incoming.is_file() and not force:
        try:
            out = _install(p, p.incoming, source=e.url, source_sha256=_sha256(p.incoming))
        except WeightsUnavailable as err:
            raise WeightsUnavailable(f"{err} (delete or replace {p.incoming})") from None
        p.incoming.unlink(missing_ok=True)
        return out

    if offline:
        why = [problem] if problem else []
        if _hub_repo(e):
            try:  # a copy in huggingface_hub's cache works offline too
                blob, source = _fetch_hub(p, offline=True, force=False, progress=progress)
                return _install(p, blob, source=source, source_sha256=_sha256(blob), linkable=True)
            except WeightsUnavailable as err:
                why.append(str(err))
            except Exception:  # not in huggingface_hub's cache either
                pass
        raise _missing(p, "offline (SINSR_OFFLINE / HF_HUB_OFFLINE / --offline)", why)

    errors: list[str] = [problem] if problem else []
    if _hub_repo(e):
        where = f"Hub {_hub_repo(e)}/{e.hub_filename}@{_hub_revision(e)}"
        down = _unreachable(_hub_endpoint())
        if down:
            errors.append(f"{where}: {down}")
        else:
            try:
                blob, source = _fetch_hub(p, offline=False, force=force or bool(problem), progress=progress)
                return _install(p, blob, source=source, source_sha256=_sha256(blob), linkable=True)
            except Exception as err:  # anything wrong with the mirror: fall back to the release
                errors.append(f"{where}: {_describe(err)}")
    try:
        tmp, sha = _fetch_url(e.url, p.incoming.parent, e.filename, progress)
        try:
            return _install(p, tmp, source=e.url, source_sha256=sha)
        finally:
            tmp.unlink(missing_ok=True)
    except Exception as err:  # the URL itself is in the message's last part
        errors.append(f"release on {urllib.parse.urlsplit(e.url).netloc}: {_describe(err)}")
    raise _missing(p, "could not be downloaded", errors)


def _missing(p: _Paths, state: str, details: Sequence[str]) -> WeightsMissing:
    """The one line of a first run without the weights: what is missing, why, the two ways out."""
    e = p.entry
    why = f" ({'; '.join(details)})" if details else ""
    return WeightsMissing(
        f"{e.name} is not in the cache and {state}{why}. Get it with `sinsr download {e.name}` where "
        f"there is network, or download {e.url} and save it as {p.incoming}"
    )


def _install(p: _Paths, src: Path, *, source: str, source_sha256: str, linkable: bool = False) -> Path:
    """Convert (or, for a sinsr safetensors from the Hub, hard-link) ``src`` into the cache and
    record its sidecar. ``src`` is left in place."""
    from .models.checkpoints import CheckpointError, convert_checkpoint

    e = p.entry
    _check_pin(p, source, source_sha256)
    p.weights.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{e.name}.", suffix=".safetensors.tmp", dir=p.weights.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        if linkable and (_safetensors_metadata(src) or {}).get("sinsr.kind") == e.kind:
            _link_or_copy(src, tmp)
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
        got_kind = (_safetensors_metadata(tmp) or {}).get("sinsr.kind")
        if got_kind != e.kind:
            raise WeightsUnavailable(f"{e.name}: {source} holds a {got_kind} checkpoint, expected {e.kind}")
        record = {
            "format": _SIDECAR_FORMAT,
            "name": e.name,
            "kind": e.kind,
            "file": p.weights.name,
            "sha256": _sha256(tmp),
            "size": tmp.stat().st_size,
            "stat": _stat_key(tmp),  # a rename keeps all of it
            "source": source,
            "source_sha256": source_sha256,
            "licence": e.licence,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        # sidecar first: the weights file never appears without a sidecar that matches it
        _write_json(p.sidecar, record)
        os.replace(tmp, p.weights)
    finally:
        tmp.unlink(missing_ok=True)
    return p.weights


def _check_pin(p: _Paths, source: str, sha: str) -> None:
    """Published hash if any, else the hash recorded when this source was first downloaded."""
    e = p.entry
    published = e.sha256 if source == e.url else e.hub_sha256 if source.startswith("hf://") else None
    if published is not None and published.lower() != sha:
        raise WeightsUnavailable(f"{e.name}: {source} has sha256 {sha}, expected the published {published}")
    rec = _read_sidecar(p.sidecar)
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


def _verify(p: _Paths, rec: dict[str, Any], *, full: bool = False) -> bool:
    """The cached file matches its sidecar. Unless ``full``, an unchanged stat record stands
    for the hash; a changed one means re-hashing, and a good hash is recorded with the new stat
    (a copied or touched cache is hashed once, not on every load)."""
    try:
        key = _stat_key(p.weights)
        if key["size"] != rec.get("size"):
            return False
        if not full and rec.get("stat") == key:
            return True
        if _sha256(p.weights) != rec.get("sha256"):
            return False
    except OSError:
        return False
    if rec.get("stat") != key:
        with contextlib.suppress(OSError):
            _write_json(p.sidecar, {**rec, "stat": key})
    return True


# -- sources ---------------------------------------------------------------------------------


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


def _hub_repo(e: ZooEntry) -> str:
    """``SINSR_HUB_REPO`` if set (an empty value: no Hub at all), else the entry's own repo."""
    env = os.environ.get("SINSR_HUB_REPO")
    return e.repo_id if env is None else env.strip()


def _hub_revision(e: ZooEntry) -> str:
    return os.environ.get("SINSR_HUB_REVISION", "").strip() or e.revision


def _hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _unreachable(base_url: str) -> str:
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
        return f"cannot connect ({_describe(err)})"


def _fetch_hub(p: _Paths, *, offline: bool, force: bool, progress: Progress | None) -> tuple[Path, str]:
    """``hf_hub_download`` into ``<cache>/hub``; returns (file, ``hf://repo@commit/filename``).

    An LFS blob is named by its sha256 (the ETag); a blob that no longer matches its name is
    downloaded again once.
    """
    from huggingface_hub import hf_hub_download

    e = p.entry
    repo = _hub_repo(e)
    kw: dict[str, Any] = dict(
        repo_id=repo, filename=e.hub_filename, revision=_hub_revision(e), cache_dir=p.hub_cache
    )
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
    if blob_sha is not None and _sha256(path) != blob_sha:
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


class _DownloadError(Exception):
    pass


def _fetch_url(url: str, folder: Path, filename: str, progress: Progress | None) -> tuple[Path, str]:
    """Stream ``url`` into ``folder/.<filename>.*.part``; returns (that file, its sha256).

    The caller owns the file. It is returned only if the body was complete (as many bytes as
    Content-Length said); on any error it is deleted.
    """
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise _DownloadError(f"not an http(s) URL: {url}")
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
                    while chunk := resp.read(_CHUNK):
                        f.write(chunk)
                        h.update(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(done, total)
            except urllib.error.HTTPError as err:
                raise _DownloadError(f"HTTP {err.code} {err.reason}") from None
            except urllib.error.URLError as err:
                raise _DownloadError(f"cannot connect ({err.reason})") from None
            except Exception as err:  # reset, timeout, http.client.IncompleteRead, ...
                raise _DownloadError(f"interrupted after {done} bytes ({_describe(err)})") from None
        if total is not None and done != total:
            raise _DownloadError(f"incomplete: received {done} of {total} bytes")
        if done == 0:
            raise _DownloadError("empty response")
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


# -- small file helpers ----------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    buf = bytearray(_CHUNK * 4)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(view):
            h.update(view[:n])
    return h.hexdigest()


def _safetensors_metadata(path: Path) -> dict[str, str] | None:
    """The ``__metadata__`` of a safetensors file (header only), or None if it is not one."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 1 < n < 100_000_000:
                return None
            header = json.loads(f.read(n))
        meta = header.get("__metadata__") if isinstance(header, dict) else None
        return dict(meta) if isinstance(meta, dict) else {}
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (no second copy on disk), copying where links are impossible."""
    dst.unlink(missing_ok=True)
    try:
        os.link(os.path.realpath(src), dst)
    except OSError:
        shutil.copyfile(src, dst)


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _one_line(text: str, limit: int = 300) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


# huggingface_hub errors, by class name (stable across its versions), in a few words
_HF_ERRORS = {
    "RemoteEntryNotFoundError": "no such file in the repository",
    "EntryNotFoundError": "no such file in the repository",
    "RevisionNotFoundError": "no such revision",
    "GatedRepoError": "gated repository (accept its terms and set HF_TOKEN)",
    "RepositoryNotFoundError": "no such repository (or it is private: set HF_TOKEN)",
    "LocalEntryNotFoundError": "the Hub cannot be reached",
}


def _describe(err: BaseException) -> str:
    if isinstance(err, (WeightsUnavailable, _DownloadError)):
        return _one_line(str(err))
    if type(err).__name__ in _HF_ERRORS:
        return _HF_ERRORS[type(err).__name__]
    text = _one_line(str(err)) or "no details"
    return f"{type(err).__name__}: {text}"


__all__ = [
    "ZOO",
    "ZooEntry",
    "WeightsMissing",
    "WeightsUnavailable",
    "export_mirror",
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
