"""ResShift's forward process at a per-sample step, for training losses (TAD-SR's score
distillation and time-aware discriminator diffuse latents to random small steps).

``q(x_t | x0, y) = N(x0 + eta_t (y - x0), kappa^2 eta_t I)``; step indices ``t [B]`` are 0-based
(index 0 is ResShift's step 1). The samplers (``sampler.py``) walk whole trajectories at one step
index for the batch; these helpers take one index per sample. Coefficients are the schedule's
float64 values cast to float32, as the official ``_extract_into_tensor``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .sampler import Denoiser
from .schedule import Schedule


def per_sample(values: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """``values[t]`` as float32 ``[B,1,1,1]`` on ``like``'s device (``values``: a float64 ``[T]`` array)."""
    return values.to(t.device)[t].to(torch.float32).to(like.device).view(-1, 1, 1, 1)


def q_sample(x0: Tensor, z_y: Tensor, schedule: Schedule, t: Tensor, noise: Tensor) -> Tensor:
    """``x_t = x0 + eta_t (z_y - x0) + kappa sqrt(eta_t) noise`` at steps ``t [B]`` (gradients flow into x0)."""
    eta = per_sample(schedule.etas, t, x0)
    return x0 + eta * (z_y - x0) + per_sample(schedule.kappa * schedule.sqrt_etas, t, x0) * noise


def predict_x0_at(denoiser: Denoiser, z_t: Tensor, schedule: Schedule, t: Tensor) -> Tensor:
    """The denoiser's x0 for ``z_t`` at per-sample steps ``t [B]``: it sees ``z_t / sqrt(kappa^2 eta_t + 1)``
    and the model timestep of each step, as :func:`sampler.predict_x0` does for one step."""
    table = schedule.on(z_t.device)
    return denoiser(z_t / table.input_divisor[t].view(-1, 1, 1, 1), table.timesteps[t]).float()


def eps_from_x0(z_t: Tensor, x0: Tensor, z_y: Tensor, schedule: Schedule, t: Tensor) -> Tensor:
    """The noise that takes ``x0`` to ``z_t`` at steps ``t``: ``(z_t - x0 - eta_t (z_y - x0)) / (kappa sqrt(eta_t))``.

    With ``x0`` a denoiser's prediction this is its noise (score) prediction, ResShift's
    ``_predict_eps_from_xstart``.
    """
    eta = per_sample(schedule.etas, t, z_t)
    return (z_t - x0 - eta * (z_y - x0)) / per_sample(schedule.kappa * schedule.sqrt_etas, t, z_t)


__all__ = ["per_sample", "q_sample", "predict_x0_at", "eps_from_x0"]
