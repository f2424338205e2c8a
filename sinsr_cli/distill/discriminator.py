"""TAD-SR's time-aware discriminator (He et al., arXiv:2408.07476) and the hinge losses.

Real (the HR latent z_gt) and fake (the student's x̂0) are diffused to the same random step t
with the same noise, and the *frozen teacher's encoder* turns each into multi-scale features
(``SwinUNet.encoder_features``: the last block of every resolution level and the middle block,
as the authors' ``only_fea`` path). Only the small heads here are trained:

* time conditioning per scale: ``GN(f) * (1 + scale) + shift`` with ``scale, shift`` a linear map
  of SiLU(sinusoidal embedding of t), then SiLU and a zero-initialised 3x3 conv;
* a head on the flattened map (tokens): spectral-normalised 1-D convs (kernel 1, then a residual
  kernel-9 block with circular padding, GroupNorm(4) and LeakyReLU 0.2 each, averaged with the
  input by ``/ √2``), and a spectral-normalised projection to ``out_channels`` logits per token.

The logits of all scales are concatenated: ``[B, N]``. Hinge loss (every logit weighs the same):
the discriminator minimises ``mean relu(1 - D(real)) + mean relu(1 + D(fake))``, the student
``-mean D(fake)``, through the frozen encoder into x̂0. The trainer updates the two in
alternation, each with its own optimiser step (``distill/step.py``).

The architecture follows the authors' released code (its ``ProjectedDiscriminator``), written
anew; we did not find the paper's own description of the heads.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from ..diffusion.forward import q_sample
from ..diffusion.schedule import Schedule
from ..models.swin_unet import SwinUNet
from ..nn.embeddings import timestep_embedding
from ..nn.norm import GroupNorm32
from .losses import mean_flat


def _groups(channels: int, most: int) -> int:
    return math.gcd(channels, most)


class _TokenBlock(nn.Module):
    """Spectral-normalised 1-D conv over tokens, GroupNorm(4), LeakyReLU(0.2): ``[B,C,N] -> [B,C,N]``."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.conv = spectral_norm(nn.Conv1d(channels, channels, kernel, padding=kernel // 2, padding_mode="circular"))
        self.norm = nn.GroupNorm(_groups(channels, 4), channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(self.norm(self.conv(x)), 0.2)


class _Head(nn.Module):
    """One scale: time-conditioned features ``[B,C,h,w]`` -> logits ``[B, out * h * w]``."""

    def __init__(self, channels: int, embed_dim: int, out_channels: int) -> None:
        super().__init__()
        self.norm = GroupNorm32(channels, groups=_groups(channels, 32))
        self.time = nn.Sequential(nn.SiLU(), nn.Linear(embed_dim, 2 * channels))
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.block = _TokenBlock(channels, 1)
        self.residual = _TokenBlock(channels, 9)
        self.out = spectral_norm(nn.Conv1d(channels, out_channels, 1))

    def forward(self, feat: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.time(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.conv(F.silu(self.norm(feat.float()) * (1 + scale) + shift))
        tokens = self.block(h.flatten(2))
        tokens = (self.residual(tokens) + tokens) / math.sqrt(2)
        return self.out(tokens).flatten(1)


class TimeAwareDiscriminator(nn.Module):
    """``(features: list of [B,C_i,h_i,w_i], t [B] model timesteps) -> logits [B, N]`` (module docstring)."""

    def __init__(self, channels: Sequence[int], embed_dim: int, out_channels: int = 64) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.heads = nn.ModuleList(_Head(c, embed_dim, out_channels) for c in channels)

    @classmethod
    def for_unet(cls, unet: SwinUNet, out_channels: int = 64) -> "TimeAwareDiscriminator":
        """Heads for the UNet's :meth:`~SwinUNet.encoder_features`; the time embedding is
        ``model_channels`` wide, as the UNet's own (authors: ``embed_dim=160``, ``c_dim=64``)."""
        return cls(unet.level_channels(), unet.cfg.model_channels, out_channels)

    def forward(self, features: Sequence[Tensor], t: Tensor) -> Tensor:
        if len(features) != len(self.heads):
            raise ValueError(f"expected {len(self.heads)} feature maps, got {len(features)}")
        emb = timestep_embedding(t.reshape(-1), self.embed_dim).to(features[0].device)
        return torch.cat([head(f, emb) for head, f in zip(self.heads, features)], dim=1)


def teacher_features(
    teacher: SwinUNet, z0: Tensor, z_y: Tensor, lq: Tensor, schedule: Schedule, t: Tensor, noise: Tensor
) -> list[Tensor]:
    """The frozen teacher encoder's features of ``z0`` diffused to steps ``t [B]`` (0-based; gradients flow into ``z0``).

    The encoder sees the scaled input and model timestep of each step, as in sampling.
    """
    z_t = q_sample(z0.float(), z_y, schedule, t, noise)
    table = schedule.on(z_t.device)
    return teacher.encoder_features(z_t / table.input_divisor[t].view(-1, 1, 1, 1), table.timesteps[t], lq)


def sample_disc_steps(batch: int, num_steps: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """The discriminator's t: uniform over indices ``0..T-2`` ``[B]``, as the authors' ``randint(0, T-1)``."""
    gdev = generator.device if generator is not None else device
    return torch.randint(0, max(num_steps - 1, 1), (batch,), generator=generator, device=gdev).to(device)


def hinge_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """``[B]`` discriminator hinge loss ``mean relu(1 - D(real)) + mean relu(1 + D(fake))``."""
    return mean_flat(F.relu(1 - real_logits)) + mean_flat(F.relu(1 + fake_logits))


def hinge_g_loss(fake_logits: Tensor) -> Tensor:
    """``[B]`` generator hinge loss ``-mean D(fake)``."""
    return -mean_flat(fake_logits)


__all__ = [
    "TimeAwareDiscriminator",
    "teacher_features",
    "sample_disc_steps",
    "hinge_d_loss",
    "hinge_g_loss",
]
