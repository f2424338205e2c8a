"""Checkpoint files: read, canonicalise, detect, load strictly, write self-describing safetensors.

Official SinSR/ResShift ``.pth`` files are plain state dicts, sometimes wrapped
(``state_dict`` / ``params_ema`` / ``model``) or prefixed (``module.`` from DDP,
``_orig_mod.`` from ``torch.compile``). We unwrap and strip *every* key that carries a prefix
(never guess from the first key), infer the architecture from tensor shapes (spandrel style),
and write safetensors whose metadata records the config, so a file rebuilds its own model.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..config import PRESETS, ModelPreset, UNetConfig, VQConfig

StateDict = dict[str, torch.Tensor]

FORMAT_VERSION = "1"
_WRAPPERS = ("params_ema", "ema", "state_dict", "model", "params", "net", "module")
_PREFIXES = ("module.", "_orig_mod.", "model.")


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the model; the message is one line."""


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


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read ``.safetensors`` or a torch pickle (``weights_only=True``: no code runs on load)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file")
    with open(path, "rb") as f:
        head = f.read(16)
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
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as e:  # corrupt zip, truncated file, pickle with code, ...
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason[:200]})") from e
    return Checkpoint(canonicalize(sd, source=str(path)), meta, path)


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


# -- detection -----------------------------------------------------------------------------


def detect_kind(sd: Mapping[str, torch.Tensor]) -> str:
    """``unet`` or ``vq`` from the key layout."""
    if "input_blocks.0.0.weight" in sd and "out.2.weight" in sd:
        return "unet"
    if "quantize.embedding.weight" in sd and "decoder.conv_in.weight" in sd:
        return "vq"
    raise CheckpointError("unrecognised checkpoint: neither a Swin-UNet nor a VQ-f4 autoencoder")


def infer_unet_config(sd: Mapping[str, torch.Tensor]) -> UNetConfig:
    """Architecture hyper-parameters from tensor shapes (no config file needed)."""
    try:
        w0 = sd["input_blocks.0.0.weight"]
        mc = int(w0.shape[0])
        out_ch = int(sd["out.2.weight"].shape[0])
        total_in = int(w0.shape[1])
        lq_ch = total_in - out_ch if total_in > out_ch else 0
        # walk the encoder levels: ResBlocks ("in_layers") and Downsample ("op")
        idx = 1
        mults: list[int] = []
        nrb: list[int] = []
        swin_levels: list[int] = []
        level_blocks = 0
        while f"input_blocks.{idx}.0.in_layers.2.weight" in sd or f"input_blocks.{idx}.0.op.weight" in sd or f"input_blocks.{idx}.0.in_layers.0.weight" in sd:
            if f"input_blocks.{idx}.0.in_layers.2.weight" in sd and f"input_blocks.{idx}.0.op.weight" not in sd:
                oc = int(sd[f"input_blocks.{idx}.0.in_layers.2.weight"].shape[0])
                if level_blocks == 0:
                    mults.append(oc // mc)
                    if f"input_blocks.{idx}.1.patch_embed.proj.weight" in sd:
                        swin_levels.append(len(mults) - 1)
                level_blocks += 1
            else:  # downsample
                nrb.append(level_blocks)
                level_blocks = 0
            idx += 1
        nrb.append(level_blocks)
        if len(nrb) != len(mults):
            # no downsample keys (conv_resample=False): cannot split levels reliably
            raise CheckpointError("cannot infer the UNet level layout (conv_resample=False?)")
        emb_w = sd["input_blocks.1.0.emb_layers.1.weight"]
        scale_shift = int(emb_w.shape[0]) == 2 * mc * mults[0]
        swin_key = next(k for k in sd if k.endswith("patch_embed.proj.weight"))
        base = swin_key[: -len("patch_embed.proj.weight")]
        embed = int(sd[swin_key].shape[0])
        table = sd[base + "blocks.0.attn.relative_position_bias_table"]
        heads = int(table.shape[1])
        win = (int(round(table.shape[0] ** 0.5)) + 1) // 2
        depth = len({m.group(1) for k in sd if (m := re.match(re.escape(base) + r"blocks\.(\d+)\.", k))})
        mlp_ratio = float(sd[base + "blocks.0.mlp.fc1.weight"].shape[0]) / embed
        patch_norm = (base + "patch_embed.norm.weight") in sd
        # image_size from the top level's shifted-window mask, if any
        image_size = 64
        mask_key = base + "blocks.1.attn_mask"
        if 0 in swin_levels and mask_key in sd:
            n_win = int(sd[mask_key].shape[0])
            image_size = int(round(n_win**0.5)) * win
        attn_res = tuple(image_size // (2**lv) for lv in swin_levels)
        return UNetConfig(
            image_size=image_size,
            in_channels=out_ch if lq_ch else total_in,
            lq_channels=lq_ch,
            model_channels=mc,
            out_channels=out_ch,
            num_res_blocks=tuple(nrb),
            attention_resolutions=attn_res,
            channel_mult=tuple(mults),
            num_heads=-1,
            num_head_channels=embed // heads,
            use_scale_shift_norm=scale_shift,
            conv_resample=True,
            resblock_updown=False,
            swin_depth=depth,
            swin_embed_dim=embed,
            window_size=win,
            mlp_ratio=mlp_ratio,
            patch_norm=patch_norm,
        )
    except CheckpointError:
        raise
    except (KeyError, StopIteration, IndexError) as e:
        raise CheckpointError(f"cannot infer the UNet architecture from its keys (missing {e})") from e


def infer_vq_config(sd: Mapping[str, torch.Tensor]) -> VQConfig:
    """VQ-f4 hyper-parameters from tensor shapes."""
    try:
        n_embed, embed_dim = (int(x) for x in sd["quantize.embedding.weight"].shape)
        ch = int(sd["encoder.conv_in.weight"].shape[0])
        in_ch = int(sd["encoder.conv_in.weight"].shape[1])
        z = int(sd["encoder.conv_out.weight"].shape[0])
        out_ch = int(sd["decoder.conv_out.weight"].shape[0])
        levels = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.down."))
        mult = []
        for i in range(levels):
            mult.append(int(sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) // ch)
        nrb = 1 + max(int(k.split(".")[4]) for k in sd if k.startswith("encoder.down.0.block."))
        attn = any(k.startswith("encoder.down.") and ".attn." in k for k in sd)
        if attn:
            raise CheckpointError("VQ checkpoints with per-level attention need --config")
        return VQConfig(
            embed_dim=embed_dim,
            n_embed=n_embed,
            z_channels=z,
            in_channels=in_ch,
            out_ch=out_ch,
            ch=ch,
            ch_mult=tuple(mult),
            num_res_blocks=nrb,
        )
    except CheckpointError:
        raise
    except (KeyError, ValueError, IndexError) as e:
        raise CheckpointError(f"cannot infer the VQ architecture from its keys ({e})") from e


def detect_preset(ckpt: Checkpoint, hint: str = "") -> ModelPreset:
    """The model preset of a UNet checkpoint.

    Metadata written by sinsr wins. Otherwise the architecture comes from the shapes, and since
    SinSR and ResShift share one architecture, the schedule comes from the file name (``s4``,
    ``v3`` -> ResShift-v3; ``resshift`` -> ResShift-v1; else SinSR).
    """
    if "sinsr.preset" in ckpt.metadata:
        return ModelPreset.from_dict(json.loads(ckpt.metadata["sinsr.preset"]))
    arch = infer_unet_config(ckpt.state_dict)
    name = (hint or (ckpt.path.name if ckpt.path else "")).lower()
    if "resshift" in name and ("s4" in name or "v3" in name):
        key = "resshift-v3"
    elif "resshift" in name:
        key = "resshift-v2" if "v2" in name else "resshift-v1"
    elif "v2" in name:
        key = "sinsr-v2"
    else:
        key = "sinsr-v1"
    base = PRESETS[key]
    if arch == base.unet:
        return base
    return ModelPreset(f"custom-{key}", arch, base.schedule, base.default_steps, base.default_sampler, "inferred")


def vq_config_of(ckpt: Checkpoint) -> VQConfig:
    if "sinsr.config" in ckpt.metadata and ckpt.metadata.get("sinsr.kind") == "vq":
        return VQConfig.from_dict(json.loads(ckpt.metadata["sinsr.config"]))
    return infer_vq_config(ckpt.state_dict)


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
    """Atomically write ``sd`` with string ``metadata`` (temp file + rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in sd.items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=dict(metadata))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a new file follows the umask
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    """The process umask (read by setting it, so set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# -- conversion ----------------------------------------------------------------------------


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
        raise CheckpointError(f"{path}: cannot read config ({str(e).splitlines()[0][:160]})") from e
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
    from ..config import ScheduleConfig
    from .swin_unet import SwinUNet
    from .vq_f4 import VQModel

    ckpt = read_checkpoint(src)
    extra = dict(extra_metadata or {})
    extra.setdefault("sinsr.source", Path(src).name)
    cfg_map = read_config_file(config) if config else {}
    kind = ckpt.kind
    if kind == "unet":
        preset = detect_preset(ckpt, hint or Path(src).name)
        if "unet" in cfg_map:
            arch = UNetConfig.from_official(cfg_map["unet"])
            sched = ScheduleConfig.from_official(cfg_map["diffusion"]) if "diffusion" in cfg_map else preset.schedule
            preset = ModelPreset(f"custom-{Path(src).stem}", arch, sched, preset.default_steps, preset.default_sampler, "from --config")
        with torch.device("meta"):
            model = SwinUNet(preset.unet)
        check_fits(model, ckpt.state_dict, what=str(src))
        meta = unet_metadata(preset, **extra)
    else:
        cfg = VQConfig.from_official(cfg_map["vq"]) if "vq" in cfg_map else vq_config_of(ckpt)
        with torch.device("meta"):
            model = VQModel(cfg)
        check_fits(model, ckpt.state_dict, what=str(src))
        meta = vq_metadata(cfg, **extra)
    return write_safetensors(ckpt.state_dict, dst, meta)
