"""Official config files (``config=``) and conversion of any checkpoint to self-describing
safetensors (``sinsr convert``, the zoo's downloads).

:func:`with_config` / :func:`vq_with_config` are the one place a config file overrides what a
checkpoint says about its architecture: loading (``weights.py``) and conversion both use them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch

from ..config import ModelPreset, ScheduleConfig, UNetConfig, VQConfig
from ..errors import one_line
from .checkpoints import CheckpointError, check_fits, read_checkpoint, unet_metadata, vq_metadata, write_safetensors
from .detect import detect_preset, vq_config_of
from .swin_unet import SwinUNet
from .vq_f4 import VQModel


def read_config_file(path: str | Path) -> dict[str, Any]:
    """An official YAML or a JSON sidecar: returns {'unet': params} and/or {'vq': params}.

    Accepts a whole official config (``model.params`` / ``autoencoder.params``), a fixture
    sidecar (``unet_params`` / ``vq_params``) or a bare params mapping.
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
    out: dict[str, Any] = {}
    if isinstance(data.get("model"), Mapping) and "params" in data["model"]:
        out["unet"] = data["model"]["params"]
    if isinstance(data.get("autoencoder"), Mapping) and "params" in data["autoencoder"]:
        out["vq"] = data["autoencoder"]["params"]
    if isinstance(data.get("diffusion"), Mapping) and "params" in data["diffusion"]:
        out["diffusion"] = data["diffusion"]["params"]
    if "unet_params" in data:
        out["unet"] = data["unet_params"]
    if "vq_params" in data:
        out["vq"] = data["vq_params"]
    if "diffusion_params" in data:
        out["diffusion"] = data["diffusion_params"]
    if not out:
        if "ddconfig" in data:
            out["vq"] = data
        elif "model_channels" in data:
            out["unet"] = data
    if not out:
        raise CheckpointError(f"{path}: no model.params / autoencoder.params found")
    return out


def with_config(preset: ModelPreset, config: Mapping[str, Any], stem: str) -> ModelPreset:
    """``preset`` with the UNet architecture (and schedule) of a config file read by
    :func:`read_config_file`, named ``custom-<stem>``; unchanged when it describes no UNet."""
    if "unet" not in config:
        return preset
    arch = UNetConfig.from_official(config["unet"])
    sched = ScheduleConfig.from_official(config["diffusion"]) if "diffusion" in config else preset.schedule
    return ModelPreset(f"custom-{stem}", arch, sched, preset.default_steps, preset.default_sampler, "from a config file")


def vq_with_config(cfg: VQConfig, config: Mapping[str, Any]) -> VQConfig:
    """``cfg``, or the VQ architecture a config file read by :func:`read_config_file` gives."""
    return VQConfig.from_official(config["vq"]) if "vq" in config else cfg


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
    cfg_map = read_config_file(config) if config else {}
    kind = ckpt.kind
    if kind == "unet":
        preset = with_config(detect_preset(ckpt, hint or Path(src).name), cfg_map, Path(src).stem)
        with torch.device("meta"):
            model = SwinUNet(preset.unet)
        check_fits(model, ckpt.state_dict, what=str(src))
        meta = unet_metadata(preset, **extra)
    else:
        cfg = vq_with_config(vq_config_of(ckpt), cfg_map)
        with torch.device("meta"):
            model = VQModel(cfg)
        check_fits(model, ckpt.state_dict, what=str(src))
        meta = vq_metadata(cfg, **extra)
    return write_safetensors(ckpt.state_dict, dst, meta)
