"""The layout of sinsr's model cache: where each zoo model's files live, and how its sidecar
(the record ``hub`` verifies against) is read and written, and whether a converted file has its
zoo entry's architecture. ``hub.py`` decides what goes in.

Layout (root: ``SINSR_CACHE``, else ``$XDG_CACHE_HOME/sinsr``, else ``~/.cache/sinsr``; the
docstring of ``hub.py`` says what each file is for)::

    models/<name>.safetensors   models/<name>.json   incoming/<release file>   hub/
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ModelPreset, VQConfig, differences
from .files import atomic_path, unwritable_reason
from .zoo import ZooEntry, zoo_entry

__all__ = ["SIDECAR_FORMAT", "CachePaths", "cache_root", "cache_unwritable", "link_or_copy", "read_sidecar",
           "safetensors_metadata", "weights_path", "write_json", "wrong_architecture"]

SIDECAR_FORMAT = 1


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


def cache_unwritable(root: Path) -> str | None:
    """Why the cache at ``root`` cannot take a new model, as a sentence naming where it came from
    (``SINSR_CACHE=/x is a file, not a directory``), or None. A cache that cannot be written still
    serves what is in it; this is asked only before something must be saved there."""
    env = os.environ.get("SINSR_CACHE")
    name = f"SINSR_CACHE={root}" if env and Path(env).expanduser() == root else f"the cache {root}"
    if root.exists() and not root.is_dir():
        return f"{name} is a file, not a directory"
    incoming = root / "incoming"
    if incoming.exists() and not incoming.is_dir():
        return f"{name} holds a file where its folders must be"
    reason = unwritable_reason(incoming / "probe")
    if reason is not None:
        return f"{name} is not a writable directory ({reason})"
    return None


@dataclass(frozen=True)
class CachePaths:
    """Where one zoo model's files live in a cache (see the module docstring)."""

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
    return CachePaths(cache_root(cache_dir), zoo_entry(name)).weights


def safetensors_metadata(path: Path) -> dict[str, str] | None:
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


def wrong_architecture(meta: dict[str, str], entry: ZooEntry) -> str:
    """How the architecture a converted file records (its ``meta``) differs from the zoo entry's,
    "" when it is the entry's: a file of another size never passes as an official model."""
    try:
        got = (ModelPreset.from_dict(json.loads(meta["sinsr.preset"])).unet if entry.kind == "unet"
               else VQConfig.from_dict(json.loads(meta["sinsr.config"])))
    except (KeyError, TypeError, ValueError):
        return "its architecture is not recorded"
    return differences(got, entry.architecture)


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (no second copy on disk), copying where links are impossible."""
    dst.unlink(missing_ok=True)
    try:
        os.link(os.path.realpath(src), dst)
    except OSError:
        shutil.copyfile(src, dst)


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """A sidecar's record, or None where it is missing, unreadable or not a JSON object."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """``data`` as JSON at ``path``, atomically (``files.atomic_path``): a sidecar is whole or absent."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
