"""Official config files (``config=``) and conversion of any checkpoint to self-describing
safetensors (``sinsr convert``, the zoo's downloads).

:func:`with_config` / :func:`vq_with_config` are the one place a config file overrides what a
checkpoint says about its architecture: loading (``weights.py``) and conversion both use them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from ..config import ModelPreset, ScheduleConfig, UNetConfig, VQConfig, check_scale
from ..errors import one_line
from .checkpoints import CheckpointError, check_fits, read_checkpoint, unet_metadata, vq_metadata, write_safetensors
from .detect import detect_preset, vq_config_of
from .swin_unet import SwinUNet
from .vq_f4 import VQModel


@dataclass(frozen=True)
class ConfigFile:
    """What an official config file says, checked: each part None where the file says nothing."""

    path: Path
    unet: UNetConfig | None = None
    vq: VQConfig | None = None
    schedule: ScheduleConfig | None = None


#: where each part sits: a whole official config, a fixture sidecar
_SECTIONS = {
    "unet": (("model", "params"), ("unet_params",)),
    "vq": (("autoencoder", "params"), ("vq_params",)),
    "schedule": (("diffusion", "params"), ("diffusion_params",)),
}
_BUILDERS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "unet": UNetConfig.from_official, "vq": VQConfig.from_official, "schedule": ScheduleConfig.from_official,
}


def _section(data: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[bool, Any]:
    """(found, value) of ``data[keys[0]][keys[1]]...``."""
    for key in keys:
        if not isinstance(data, Mapping) or key not in data:
            return False, None
        data = data[key]
    return True, data


def read_config_file(path: str | Path) -> ConfigFile:
    """An official YAML or a JSON sidecar, every part it gives built and checked here (at load,
    not at the first image): a missing or bad entry is a CheckpointError naming the file and the
    key. Accepts a whole official config (``model.params`` / ``autoencoder.params`` /
    ``diffusion.params``), a fixture sidecar (``unet_params`` / ``vq_params`` /
    ``diffusion_params``) or a bare params mapping.
    """
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise CheckpointError(f"{path}: cannot read config ({one_line(e, 160)})") from e
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path}: config is not a mapping")
    found: dict[str, tuple[str, Any]] = {}
    for part, places in _SECTIONS.items():
        for keys in places:
            there, value = _section(data, keys)
            if there:
                found[part] = (".".join(keys), value)
    if not found:
        if "ddconfig" in data:
            found["vq"] = ("the config", data)
        elif "model_channels" in data:
            found["unet"] = ("the config", data)
    if not found:
        raise CheckpointError(f"{path}: no model.params / autoencoder.params / diffusion.params found")
    parts: dict[str, Any] = {}
    for part, (where, value) in found.items():
        if not isinstance(value, Mapping):
            raise CheckpointError(f"{path}: {where} is not a mapping (got {one_line(repr(value), 60)})")
        try:
            parts[part] = _BUILDERS[part](value)
        except ValueError as e:
            raise CheckpointError(f"{path}: {where}: {one_line(e, 200)}") from e
    given = ConfigFile(path, **parts)
    if given.schedule is not None and given.vq is not None:
        try:
            check_scale(given.schedule, given.vq)
        except ValueError as e:
            raise CheckpointError(f"{path}: {e}") from e
    return given


def with_config(preset: ModelPreset, config: ConfigFile, stem: str) -> ModelPreset:
    """``preset`` with the UNet architecture and/or schedule of a config file, named
    ``custom-<stem>``; unchanged when it describes neither.

    Whether the file is a one-step student is the checkpoint's (its detected preset or
    metadata), not the config's: a config describes an architecture and a schedule, so the
    one-step rule and a student's single default step are kept. A teacher's default step
    count is the config's T, the count its schedule was trained for.
    """
    if config.unet is None and config.schedule is None:
        return preset
    sched = config.schedule or preset.schedule
    steps = preset.default_steps if preset.one_step or config.schedule is None else sched.steps
    return replace(
        preset, name=f"custom-{stem}", unet=config.unet or preset.unet, schedule=sched,
        default_steps=steps, description="from a config file",
    )


def vq_with_config(cfg: VQConfig, config: ConfigFile) -> VQConfig:
    """``cfg``, or the VQ architecture a config file gives."""
    return config.vq or cfg


def convert_checkpoint(
    src: str | Path,
    dst: str | Path,
    *,
    config: str | Path | None = None,
    hint: str = "",
    extra_metadata: Mapping[str, str] | None = None,
) -> Path:
    """Convert an official ``.pth`` (or any checkpoint) into a self-describing safetensors file.

    The weights are validated against the model they describe (strict load), so a converted file
    is known to load. ``config`` supplies the architecture when it is not one of the presets.
    """
    ckpt = read_checkpoint(src)
    extra = dict(extra_metadata or {})
    extra.setdefault("sinsr.source", Path(src).name)
    given = read_config_file(config) if config else ConfigFile(Path())
    kind = ckpt.kind
    if kind == "unet":
        preset = with_config(detect_preset(ckpt, hint or Path(src).name), given, Path(src).stem)
        with torch.device("meta"):
            model = SwinUNet(preset.unet)
        check_fits(model, ckpt.state_dict, what=str(src))
        meta = unet_metadata(preset, **extra)
    else:
        cfg = vq_with_config(vq_config_of(ckpt), given)
        with torch.device("meta"):
            model = VQModel(cfg)
        check_fits(model, ckpt.state_dict, what=str(src))
        meta = vq_metadata(cfg, **extra)
    return write_safetensors(ckpt.state_dict, dst, meta)
