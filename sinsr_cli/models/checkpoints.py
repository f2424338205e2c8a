"""Checkpoint files: read, canonicalise, tell UNet from VQ, load strictly, write safetensors.

Official SinSR/ResShift ``.pth`` files are plain state dicts, sometimes wrapped
(``state_dict`` / ``params_ema`` / ``model``) or prefixed (``module.`` from DDP,
``_orig_mod.`` from ``torch.compile``). We unwrap and strip *every* key that carries a prefix
(never guess from the first key) and write safetensors whose metadata records the config, so a
file rebuilds its own model. The architecture of a file without that metadata is inferred from
its tensor shapes in ``detect.py``; official config files and conversion are ``convert.py``.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..config import ModelPreset, VQConfig
from ..errors import one_line
from ..files import atomic_path, new_file_mode

StateDict = dict[str, torch.Tensor]

FORMAT_VERSION = "1"
_WRAPPERS = ("params_ema", "ema", "state_dict", "model", "params", "net", "module")


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the model; the message is one line.
    ``mentions``: the settings (``model``, ``vq``, ``config``) the message names as words, for a
    front end to respell (a flag)."""

    def __init__(self, message: str, mentions: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.mentions = mentions

    def __reduce__(self) -> tuple[object, ...]:  # survive multiprocessing
        return (type(self), (str(self), self.mentions))


@dataclass
class Checkpoint:
    """A canonical state dict plus what we know about it."""

    state_dict: StateDict
    metadata: dict[str, str]
    path: Path | None = None

    @property
    def kind(self) -> str:
        return self.metadata.get("sinsr.kind") or detect_kind(self.state_dict)


# -- reading -------------------------------------------------------------------------------


def _load_failure(e: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, without torch's paragraph on its 2.6
    default (the reason sits after "WeightsUnpickler error:")."""
    text = str(e)
    marker = "WeightsUnpickler error:"
    if marker in text:
        detail = text.split(marker, 1)[1].split("Check the documentation", 1)[0]
        return f"torch's safe loader refused it: {one_line(detail, 160)}; it is not a state dict of tensors"
    return one_line(e, 200)


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read ``.safetensors`` or a torch pickle (``weights_only=True``: no code runs on load)."""
    path = Path(path)
    head = _head(path)
    meta: dict[str, str] = {}
    try:
        if _looks_like_safetensors(head):
            from safetensors import safe_open

            sd: dict[str, Any] = {}
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                for k in f.keys():
                    sd[k] = f.get_tensor(k)
        else:
            sd = load_torch_file(path)
    except CheckpointError:
        raise
    except Exception as e:  # corrupt header, truncated file, ...
        raise CheckpointError(f"{path}: not a readable checkpoint ({_load_failure(e)})") from e
    return Checkpoint(canonicalize(sd, source=str(path)), meta, path)


def load_torch_file(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)`` on the CPU (no code runs), its refusals in one line:
    a file that is no torch file at all (text, an image) is named so, not by torch's unpickler
    error (``(101)``) or its paragraph on the 2.6 default."""
    path = Path(path)
    head = _head(path, what)
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # torch's zip format, or a legacy pickle
        if _looks_like_safetensors(head):  # model weights where a torch file (a training state) belongs
            raise CheckpointError(f"{path}: is a safetensors file (model weights), not a {what}")
        raise CheckpointError(f"{path}: not a {what} (neither a torch file nor safetensors)")
    try:
        with warnings.catch_warnings():  # torch warns of pickle protocols before failing on them
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt zip, truncated file, pickle with code, ...
        raise CheckpointError(f"{path}: not a readable {what} ({_load_failure(e)})") from e


def _head(path: Path, what: str = "checkpoint") -> bytes:
    """The first bytes of a file that must exist and hold something."""
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a {what} file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such {what} file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file")
    with open(path, "rb") as f:
        return f.read(16)


def _looks_like_safetensors(head: bytes) -> bool:
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 0 < n < 100_000_000 and head[8:9] == b"{"


def canonicalize(obj: Any, source: str = "checkpoint") -> StateDict:
    """Unwrap nested containers and strip ``module.``/``_orig_mod.`` from every key that has one."""
    for _ in range(4):
        if isinstance(obj, Mapping) and not _is_state_dict(obj):
            inner = next((obj[k] for k in _WRAPPERS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not _is_state_dict(obj):
        raise CheckpointError(f"{source}: no state dict of tensors found")
    out: StateDict = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            continue
        key = k
        changed = True
        while changed:
            changed = False
            for p in ("module.", "_orig_mod."):
                if key.startswith(p):
                    key = key[len(p) :]
                    changed = True
        if key in out:
            raise CheckpointError(f"{source}: duplicate key {key!r} after stripping prefixes")
        out[key] = v
    return out


def _is_state_dict(m: Mapping) -> bool:
    vals = list(m.values())
    return bool(vals) and sum(isinstance(v, torch.Tensor) for v in vals) >= max(1, len(vals) // 2)


def split_prefixed(sd: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
    """The sub-dict under ``prefix`` (e.g. ``unet.``), prefix removed."""
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


# -- what a state dict holds -------------------------------------------------------------


def detect_kind(sd: Mapping[str, torch.Tensor]) -> str:
    """``unet`` or ``vq`` from the key layout."""
    if "input_blocks.0.0.weight" in sd and "out.2.weight" in sd:
        return "unet"
    if "quantize.embedding.weight" in sd and "decoder.conv_in.weight" in sd:
        return "vq"
    raise CheckpointError("unrecognised checkpoint: neither a Swin-UNet nor a VQ-f4 autoencoder")


# -- loading -------------------------------------------------------------------------------


def check_fits(module: nn.Module, sd: Mapping[str, torch.Tensor], what: str = "model") -> None:
    """Raise a one-line CheckpointError naming missing/unexpected/mis-shaped keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    bad_shape = [
        f"{k} {tuple(sd[k].shape)}!={tuple(v.shape)}" for k, v in own.items() if k in sd and sd[k].shape != v.shape
    ]
    if missing or unexpected or bad_shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", bad_shape)):
            if keys:
                shown = ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")
                parts.append(f"{len(keys)} {label}: {shown}")
        raise CheckpointError(f"{what}: checkpoint does not fit: " + "; ".join(parts))


def load_strict(module: nn.Module, sd: Mapping[str, torch.Tensor], what: str = "model") -> None:
    """``load_state_dict(strict=True)`` after ``check_fits`` (so errors are one line)."""
    check_fits(module, sd, what)
    module.load_state_dict(sd, strict=True)


# -- writing -------------------------------------------------------------------------------


def unet_metadata(preset: ModelPreset, **extra: str) -> dict[str, str]:
    return {"sinsr.format": FORMAT_VERSION, "sinsr.kind": "unet", "sinsr.preset": preset.to_json(), **extra}


def vq_metadata(cfg: VQConfig, **extra: str) -> dict[str, str]:
    return {
        "sinsr.format": FORMAT_VERSION,
        "sinsr.kind": "vq",
        "sinsr.config": json.dumps(cfg.to_dict(), sort_keys=True),
        **extra,
    }


def write_safetensors(sd: Mapping[str, torch.Tensor], path: str | Path, metadata: Mapping[str, str]) -> Path:
    """Atomically write ``sd`` with string ``metadata`` (``files.atomic_path``)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in sd.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=dict(metadata))  # which makes the file 0600
        os.chmod(tmp, new_file_mode())
    return path
