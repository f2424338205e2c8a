"""ResShift / SinSR samplers as small pure functions (k-diffusion style).

A *denoiser* is any callable ``(x_scaled [B,C,h,w], t [B] int64) -> x0 [B,C,h,w]`` with the LR
conditioning already bound; samplers never see models, files or devices. Latent arithmetic is
float32 whatever dtype the denoiser runs in. Noise comes from an explicit ``torch.Generator``
or is passed in (tests inject the official noises).
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

import torch

from .schedule import Schedule


class Denoiser(Protocol):
    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...


#: ``callback(step_index, num_steps, x0_pred, z_next)``
Callback = Callable[[int, int, torch.Tensor, torch.Tensor], None]

SAMPLERS = ("onestep", "ancestral", "deterministic")


def randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, drawn on the generator's device then moved.

    A CPU generator gives the same noise whatever device ``x`` is on (so a seed means the same
    image on CPU and GPU); for CUDA it is drawn into pinned memory and copied without waiting.
    """
    dev = generator.device if generator is not None else x.device
    noise = torch.randn(x.shape, generator=generator, device=dev, dtype=torch.float32)
    if noise.device == x.device:
        return noise
    if dev.type == "cpu" and x.device.type == "cuda":
        noise = noise.pin_memory()
    return noise.to(x.device, non_blocking=True)


def prior_sample(z_y: torch.Tensor, schedule: Schedule, noise: torch.Tensor) -> torch.Tensor:
    """``x_T = z_y + kappa * sqrt(eta_T) * noise`` (the start of every sampler)."""
    return z_y + schedule.on(z_y.device).prior_std * noise


def _t(schedule: Schedule, i: int, x: torch.Tensor) -> torch.Tensor:
    return schedule.on(x.device).timesteps[i].expand(x.shape[0]).contiguous()


def predict_x0(denoiser: Denoiser, z_t: torch.Tensor, schedule: Schedule, i: int) -> torch.Tensor:
    """The denoiser's x0 at step ``i``, fed ``z_t / sqrt(kappa^2 eta_i + 1)`` as officially."""
    x_in = z_t / schedule.on(z_t.device).input_divisor[i]
    return denoiser(x_in, _t(schedule, i, z_t)).float()


def sample_onestep(denoiser: Denoiser, z_y: torch.Tensor, schedule: Schedule, noise: torch.Tensor) -> torch.Tensor:
    """SinSR: one denoiser call at the last step maps ``x_T`` straight to x0 (no clamp)."""
    return predict_x0(denoiser, prior_sample(z_y, schedule, noise), schedule, schedule.num_steps - 1)


def sample_deterministic(
    denoiser: Denoiser,
    z_y: torch.Tensor,
    schedule: Schedule,
    noise: torch.Tensor,
    callback: Callback | None = None,
) -> torch.Tensor:
    """SinSR eq. 4-5: ``z_{t-1} = k_t x0 + m_t z_t + j_t z_y``; a function of the initial noise."""
    z = prior_sample(z_y, schedule, noise)
    n = schedule.num_steps
    for step, i in enumerate(reversed(range(n))):
        x0 = predict_x0(denoiser, z, schedule, i)
        k, m, j = schedule.on(z.device).ddim[i]
        z = x0 * k + m * z + j * z_y
        if callback is not None:
            callback(step, n, x0, z)
    return z


def sample_ancestral(
    denoiser: Denoiser,
    z_y: torch.Tensor,
    schedule: Schedule,
    noise: torch.Tensor,
    generator: torch.Generator | None = None,
    step_noises: Sequence[torch.Tensor] | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """ResShift's sampler: posterior mean plus fresh noise at every step but the last.

    ``step_noises[k]`` (k = 0..T-1, used at step index T-1-k) replaces the generator's draws.
    """
    z = prior_sample(z_y, schedule, noise)
    n = schedule.num_steps
    for step, i in enumerate(reversed(range(n))):
        x0 = predict_x0(denoiser, z, schedule, i)
        c1, c2, std = schedule.on(z.device).posterior[i]
        mean = c1 * z + c2 * x0
        if i > 0:
            eps = step_noises[step] if step_noises is not None else randn_like(z, generator)
            z = mean + std * eps
        else:
            z = mean
        if callback is not None:
            callback(step, n, x0, z)
    return z


def sample(
    name: str,
    denoiser: Denoiser,
    z_y: torch.Tensor,
    schedule: Schedule,
    noise: torch.Tensor,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Dispatch by sampler name (``onestep``, ``ancestral``, ``deterministic``)."""
    if name == "onestep":
        return sample_onestep(denoiser, z_y, schedule, noise)
    if name == "deterministic":
        return sample_deterministic(denoiser, z_y, schedule, noise, callback)
    if name == "ancestral":
        return sample_ancestral(denoiser, z_y, schedule, noise, generator, callback=callback)
    raise ValueError(f"unknown sampler {name!r} (choose from {', '.join(SAMPLERS)})")
