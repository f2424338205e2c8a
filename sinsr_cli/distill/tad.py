"""TAD-SR extras (Zhang et al., "One Step Diffusion-based Super-Resolution with Time-Aware
Distillation", 2024), off by default: a simple, documented version of its two additions.

1. **High-frequency score distillation** (weight ``LossWeights.hf``, TAD-SR's lambda_1 = 1).
   The student's one-step output x̂0 is pushed back onto the forward path at a *small* step
   t' ∈ [1, t_max] (t_max = 3), ``z_t' = x̂0 + eta_t' (z_y - x̂0) + kappa sqrt(eta_t') eps``, and the
   frozen teacher denoises it. Near x0 the teacher's prediction differs from x̂0 mostly in fine
   detail, so the residual is a score-distillation signal (SDS form: no gradient through the
   teacher) restricted to the high frequencies of the latent::

       L_hf = mean_flat( (HP(x̂0) - sg[HP(teacher(z_t', t'))])^2 ),   HP(z) = z - G_sigma * z

   with G a 5x5 Gaussian (sigma 1, reflect padding) applied per channel.

2. **Time-aware latent discriminator** (weight ``LossWeights.adv``, TAD-SR's lambda_2 = 0.02).
   Features come from the *frozen teacher UNet's encoder* (``input_blocks`` + ``middle_block``)
   applied to a latent diffused to a random step t ∈ [0, T-1] (real: z_gt, fake: x̂0; the same
   noise for both) with the LR conditioning; a small trainable head (:class:`LatentDiscriminator`)
   adds a projection of the teacher's timestep embedding (time awareness) and outputs a patch
   logit map. Hinge loss: the head minimises ``relu(1 - D(real)) + relu(1 + D(fake))``, the
   student minimises ``-D(fake)`` (gradients flow through the frozen encoder into x̂0).

Simplifications against the paper: a single feature scale (the bottleneck), a plain convolutional
head (FiLM time conditioning), uniform t for the discriminator, and the HF term on the latent (not on decoded pixels).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..diffusion.schedule import Schedule
from ..models.swin_unet import SwinUNet
from ..nn.embeddings import timestep_embedding
from ..nn.norm import GroupNorm32
from .losses import mean_flat

#: TAD-SR's loss weights (lambda_1 for HF score distillation, lambda_2 for the adversarial term)
PAPER_WEIGHTS = {"hf": 1.0, "adv": 0.02}


# -- forward diffusion at a per-sample step --------------------------------------------------


def _per_sample(arr: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """Float64 schedule values at ``t [B]`` as float32 ``[B,1,1,1]`` on ``like``'s device."""
    return arr.to(t.device)[t].to(torch.float32).to(like.device).view(-1, 1, 1, 1)


def input_divisor(schedule: Schedule, t: Tensor, like: Tensor) -> Tensor:
    """``sqrt(kappa^2 eta_t + 1)`` per sample, ``[B,1,1,1]`` (the official ``_scale_input``)."""
    if not schedule.normalize_input:
        return torch.ones(t.shape[0], 1, 1, 1, device=like.device)
    return torch.sqrt(_per_sample(schedule.etas, t, like) * schedule.kappa**2 + 1)


def q_sample(x0: Tensor, z_y: Tensor, schedule: Schedule, t: Tensor, noise: Tensor) -> Tensor:
    """ResShift's forward path ``x0 + eta_t (z_y - x0) + kappa sqrt(eta_t) noise`` at steps ``t [B]``."""
    eta = _per_sample(schedule.etas, t, x0)
    return x0 + eta * (z_y - x0) + schedule.kappa * torch.sqrt(eta) * noise


def model_t(schedule: Schedule, i: Tensor) -> Tensor:
    """Step indices -> the model's timesteps (identity unless respaced)."""
    return schedule.timestep_map.to(i.device)[i]


# -- 1. high-frequency score distillation ------------------------------------------------------


def gaussian_kernel2d(size: int = 5, sigma: float = 1.0) -> Tensor:
    """Normalised ``[size, size]`` Gaussian, float32."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    k = torch.outer(g, g)
    return (k / k.sum()).to(torch.float32)


def high_pass(z: Tensor, size: int = 5, sigma: float = 1.0) -> Tensor:
    """``z - G_sigma * z`` per channel (reflect padding): ``[B,C,h,w]`` -> same shape."""
    c = z.shape[1]
    k = gaussian_kernel2d(size, sigma).to(device=z.device, dtype=z.dtype).expand(c, 1, size, size)
    p = size // 2
    mode = "reflect" if min(z.shape[-2:]) > p else "replicate"
    return z - F.conv2d(F.pad(z, (p, p, p, p), mode=mode), k, groups=c)


def sample_small_t(batch: int, t_max: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Per-sample step indices uniform in ``[1, t_max]`` (int64 on ``device``)."""
    gdev = generator.device if generator is not None else device
    return torch.randint(1, t_max + 1, (batch,), generator=generator, device=gdev).to(device)


def hf_score_distill_loss(
    x0_student: Tensor,
    teacher: nn.Module,
    z_y: Tensor,
    lq: Tensor,
    schedule: Schedule,
    t: Tensor,
    noise: Tensor,
) -> Tensor:
    """``[B]`` L_hf (see the module docstring). Gradients reach ``x0_student`` only.

    ``x0_student``, ``z_y``, ``noise``: ``[B,C,h,w]``; ``lq`` ``[B,3,h,w]`` in [-1,1];
    ``t`` ``[B]`` step indices (small, e.g. from :func:`sample_small_t`).
    """
    with torch.no_grad():
        z_t = q_sample(x0_student.detach(), z_y, schedule, t, noise)
        target = teacher(z_t / input_divisor(schedule, t, z_t), model_t(schedule, t), lq).float()
    return mean_flat((high_pass(x0_student) - high_pass(target)) ** 2)


# -- 2. time-aware latent discriminator --------------------------------------------------------


def unet_encoder_features(unet: SwinUNet, x: Tensor, t: Tensor, lq: Tensor) -> tuple[Tensor, Tensor]:
    """The UNet's own encoder path: ``(middle_block output [B,C_mid,h/2^L,w/2^L], emb [B,E])``.

    Runs exactly the first half of ``SwinUNet.forward`` (time embedding, LR concat, input blocks,
    middle block) with the UNet's modules; the decoder is never evaluated.
    """
    cfg = unet.cfg
    te = timestep_embedding(t.reshape(-1).expand(x.shape[0]), cfg.model_channels)
    emb = unet.time_embed(te.to(unet.time_embed[0].weight.dtype))
    if cfg.lq_channels:
        x = torch.cat([x, lq.to(x.dtype)], dim=1)
    dtype = unet.input_blocks[0][0].weight.dtype
    h, emb_h = x.to(dtype), emb.to(dtype)
    for block in unet.input_blocks:
        h = block(h, emb_h)
    return unet.middle_block(h, emb_h), emb


def feature_channels(unet: SwinUNet) -> tuple[int, int]:
    """(bottleneck channels, timestep-embedding width) of a UNet."""
    cfg = unet.cfg
    return cfg.model_channels * cfg.channel_mult[-1], cfg.time_embed_dim


class LatentDiscriminator(nn.Module):
    """A small head on frozen UNet-encoder features: ``(feat [B,C,h,w], emb [B,E]) -> logits [B,1,h,w]``.

    ``GN(feat) * (1 + scale) + shift`` with ``scale, shift = Linear(SiLU(emb))`` (time awareness,
    as the UNet's own ResBlocks), then SiLU-conv3x3 to ``hidden`` channels, GN-SiLU-conv1x1 to one
    logit per position (a patch discriminator).
    """

    def __init__(self, channels: int, emb_dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.norm = GroupNorm32(channels, groups=_groups(channels))
        self.time_proj = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * channels))
        self.body = nn.Sequential(
            nn.SiLU(),
            nn.Conv2d(channels, hidden, 3, padding=1),
            GroupNorm32(hidden, groups=_groups(hidden)),
            nn.SiLU(),
            nn.Conv2d(hidden, 1, 1),
        )

    @classmethod
    def for_unet(cls, unet: SwinUNet, hidden: int = 128) -> "LatentDiscriminator":
        c, e = feature_channels(unet)
        return cls(c, e, hidden)

    def forward(self, feat: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.time_proj(emb.float())[:, :, None, None].chunk(2, dim=1)
        return self.body(self.norm(feat.float()) * (1 + scale) + shift)


def _groups(c: int) -> int:
    return math.gcd(c, 32)


def disc_features(
    teacher: SwinUNet, z0: Tensor, z_y: Tensor, lq: Tensor, schedule: Schedule, t: Tensor, noise: Tensor
) -> tuple[Tensor, Tensor]:
    """Teacher-encoder features of ``z0`` diffused to steps ``t [B]`` (gradients flow into ``z0``)."""
    z_t = q_sample(z0, z_y, schedule, t, noise)
    return unet_encoder_features(teacher, z_t / input_divisor(schedule, t, z_t), model_t(schedule, t), lq)


def hinge_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """``[B]`` discriminator hinge loss ``mean relu(1 - real) + mean relu(1 + fake)``."""
    return mean_flat(F.relu(1 - real_logits)) + mean_flat(F.relu(1 + fake_logits))


def hinge_g_loss(fake_logits: Tensor) -> Tensor:
    """``[B]`` generator hinge loss ``-mean D(fake)``."""
    return -mean_flat(fake_logits)


__all__ = [
    "PAPER_WEIGHTS",
    "input_divisor",
    "q_sample",
    "gaussian_kernel2d",
    "high_pass",
    "sample_small_t",
    "hf_score_distill_loss",
    "unet_encoder_features",
    "feature_channels",
    "LatentDiscriminator",
    "disc_features",
    "hinge_d_loss",
    "hinge_g_loss",
]
