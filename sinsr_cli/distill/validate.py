"""Validation of the EMA student during ``sinsr distill``: the core one-step pipeline on
held-out LR/HR pairs, scored with the bench metrics (PSNR / SSIM on Y, LPIPS when available)."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from ..config import ModelPreset
from ..models.swin_unet import SwinUNet
from ..models.vq_f4 import VQModel
from ..pipeline import SRPipeline
from .data import ValPair
from .logs import EventFn


@torch.no_grad()
def validate(
    unet: SwinUNet,
    vq: VQModel,
    preset: ModelPreset,
    pairs: list[ValPair],
    device: torch.device,
    seed: int = 0,
    learned: Mapping[str, Callable[[Tensor, Tensor], Tensor]] | None = None,
) -> dict[str, float]:
    """Mean PSNR/SSIM (Y channel) and any ``learned`` metric (LPIPS) of the one-step pipeline.

    Uses the core pipeline (pad, encode, one step, decode; noise from ``seed``) and the bench
    metrics; SR outputs are quantised to 8 bits as saved and cropped to the HR where sizes differ.
    Returns ``{"psnr", "ssim", <learned>..., "n"}``.
    """
    from ..bench.metrics import MetricAccumulator, psnr_y, ssim_y

    was_training = unet.training
    pipe = SRPipeline(unet, vq, preset, device=device, dtype=torch.float32)
    acc = MetricAccumulator()
    for p in pairs:
        sr = pipe(p.lr.to(device), seed=seed)
        h, w = min(sr.shape[-2], p.hr.shape[-2]), min(sr.shape[-1], p.hr.shape[-1])
        sr = (sr[..., :h, :w] * 255).round() / 255
        hr = p.hr[..., :h, :w].to(sr.device)
        acc.update("psnr", psnr_y(sr, hr))
        if min(h, w) >= 11:
            acc.update("ssim", ssim_y(sr, hr))
        for name, metric in (learned or {}).items():
            acc.update(name, metric(sr, hr))
    unet.train(was_training)
    return {**acc.means(), "n": len(pairs)}


def load_val_metrics(device: torch.device, emit: EventFn) -> dict[str, Any]:
    """LPIPS through the bench code when pyiqa and its weights are there; else a warning event."""
    from ..bench.metrics import load_learned_metrics

    metrics, messages = load_learned_metrics(["lpips"], device)
    for m in messages:
        emit("warning", {"message": f"validation without LPIPS: {m}"})
    return metrics


__all__ = ["validate", "load_val_metrics"]
