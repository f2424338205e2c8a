"""Which model a state dict holds: hyper-parameters from tensor shapes (spandrel style), the
preset (schedule) of an official file from its name.

SinSR and ResShift share one architecture, so a file without sinsr metadata gets its schedule
from its name; everything else is read off the shapes, no config file needed.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Mapping

import torch

from ..config import PRESETS, ModelPreset, UNetConfig, VQConfig
from .checkpoints import Checkpoint, CheckpointError


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
            raise CheckpointError("VQ checkpoints with per-level attention need their official YAML or JSON (config)", ("config",))
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
    # another size of the same model: its schedule, sampling and one-step rule (a student's
    # other step counts are noise, so they stay refused)
    return replace(base, name=f"custom-{key}", unet=arch, description="inferred")


def vq_config_of(ckpt: Checkpoint) -> VQConfig:
    if "sinsr.config" in ckpt.metadata and ckpt.metadata.get("sinsr.kind") == "vq":
        return VQConfig.from_dict(json.loads(ckpt.metadata["sinsr.config"]))
    return infer_vq_config(ckpt.state_dict)
