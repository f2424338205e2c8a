"""Turn a zoo name or a checkpoint file into a loaded model (strict, with one-line errors).

This is the seam between files/Hub (``hub``; ``models.checkpoints``, ``detect``, ``convert``) and
the pure modules in ``models``: the models know nothing of files, the pipeline knows nothing of
formats.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from .config import PRESETS, VQ_PRESETS, ModelPreset, VQConfig
from .models.checkpoints import Checkpoint, CheckpointError, load_strict, read_checkpoint
from .models.convert import read_config_file, vq_with_config, with_config
from .models.detect import detect_preset, vq_config_of
from .models.swin_unet import SwinUNet
from .models.vq_f4 import VQModel


def _resolve(name_or_path: str | Path, kind: str, offline: bool | None) -> Path:
    p = Path(name_or_path)
    if p.exists() or p.suffix in (".pth", ".pt", ".ckpt", ".safetensors", ".bin"):
        if not p.is_file():
            what = "is a directory, not a checkpoint file" if p.is_dir() else "no such checkpoint file"
            raise CheckpointError(f"{p}: {what}")
        return p
    from .hub import resolve_weights

    return resolve_weights(str(name_or_path), kind=kind, offline=offline)


#: the ``torch.nn.init`` functions a layer's constructor calls (torch's and ours)
_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_",
                   "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_", "xavier_normal_")


@contextmanager
def _no_init() -> Iterator[None]:
    """Constructors skip weight initialisation: every value is about to be loaded.

    The models are built on the CPU (``_build``), where the random initialisation of the
    full-size pair's ~174 M parameters takes 1.1 s that the load then overwrites (0.03 s without
    it; transformers' ``no_init_weights`` does the same for the same reason).
    """
    saved = {name: getattr(torch.nn.init, name) for name in _INIT_FUNCTIONS}
    try:
        for name in _INIT_FUNCTIONS:
            setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.nn.init, name, fn)


def _build(module_cls: type, cfg: object, ckpt: Checkpoint, what: str) -> torch.nn.Module:
    """The module built without initialising (every value is loaded next), then loaded strictly.

    Built straight on the CPU: its parameters are ``torch.empty`` (pages untouched until the load
    writes them), so nothing is gained by the meta device, whose ``to_empty`` runs through
    torch's Python references and imports ``sympy`` and ``torch.fx``'s symbolic shapes on the
    way: 0.4 s of every start-up (loading the full-size pair 0.75-0.9 s -> 0.41 s).
    Not ``load_state_dict(assign=True)``: safetensors' tensors are file mappings, and a model
    holding them keeps both the mapping and its low-precision copy resident (+250 MiB peak).
    """
    with torch.device("cpu"), _no_init():
        model = module_cls(cfg)
    load_strict(model, ckpt.state_dict, what)
    # buffers computed at construction are overwritten by the (identical) stored ones
    return model


def preset_of(name_or_path: str | Path) -> ModelPreset | None:
    """A UNet's preset without loading (or fetching) its weights: a zoo name's, or what a
    safetensors file's metadata says; None where only loading could tell (a ``.pth``). For the
    usage checks of a run that has nothing left to upscale."""
    import json

    from .cache import safetensors_metadata
    from .zoo import ZOO, zoo_entry

    if str(name_or_path) in {e.name for e in ZOO}:
        return PRESETS.get(zoo_entry(str(name_or_path)).preset)
    p = Path(name_or_path)
    meta = safetensors_metadata(p) if p.suffix == ".safetensors" and p.is_file() else None
    try:
        return ModelPreset.from_dict(json.loads(meta["sinsr.preset"])) if meta and "sinsr.preset" in meta else None
    except (ValueError, TypeError, KeyError):  # unreadable here: the load (if any) will say why
        return None


def load_unet(
    name_or_path: str | Path, *, config: str | Path | None = None, offline: bool | None = None, setting: str = "model"
) -> tuple[SwinUNet, ModelPreset]:
    """A UNet and its preset from a zoo name or file; ``config`` overrides the architecture.
    ``setting``: the caller's name for it in errors (``model``; ``teacher`` for distillation)."""
    path = _resolve(name_or_path, "unet", offline)
    ckpt = read_checkpoint(path)
    if ckpt.kind != "unet":
        raise CheckpointError(f"{path}: this is a {ckpt.kind} checkpoint, not a UNet ({setting})", (setting,))
    zoo_hint = str(name_or_path) if str(name_or_path) in PRESETS else ""
    preset = detect_preset(ckpt, zoo_hint)
    if zoo_hint and preset.name != zoo_hint and "sinsr.preset" not in ckpt.metadata:
        preset = PRESETS[zoo_hint]
    if config is not None:
        preset = with_config(preset, read_config_file(config), path.stem)
    model = _build(SwinUNet, preset.unet, ckpt, str(path))
    return model, preset  # type: ignore[return-value]


def load_vq(
    name_or_path: str | Path, *, config: str | Path | None = None, offline: bool | None = None
) -> VQModel:
    """The VQ-f4 autoencoder from a zoo name or file."""
    path = _resolve(name_or_path, "vq", offline)
    ckpt = read_checkpoint(path)
    if ckpt.kind != "vq":
        raise CheckpointError(f"{path}: this is a {ckpt.kind} checkpoint, not a VQ autoencoder (vq)", ("vq",))
    cfg: VQConfig = vq_config_of(ckpt)
    if config is not None:
        cfg = vq_with_config(cfg, read_config_file(config))
    return _build(VQModel, cfg, ckpt, str(path))  # type: ignore[return-value]


__all__ = ["load_unet", "load_vq", "CheckpointError", "VQ_PRESETS"]
