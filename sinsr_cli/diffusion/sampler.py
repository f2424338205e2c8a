"""ResShift / SinSR samplers as small pure functions in one table (k-diffusion style).

A *denoiser* is any callable ``(x_scaled [B,C,h,w], t [B] int64) -> x0 [B,C,h,w]`` with the LR
conditioning already bound; samplers never see models, files or devices. Latent arithmetic is
float32 whatever dtype the denoiser runs in. Noise comes from an explicit ``torch.Generator``
or is passed in (tests inject the official noises).

Every sampler has the one signature :class:`Sampler`,
``(denoiser, z_y, schedule, noise, generator=None, callback=None) -> z0``, and is registered in
:data:`SAMPLERS`; choosing one is ``SAMPLERS[name]`` (:func:`get_sampler` says what exists when
a name is unknown). Which step counts go with which sampler is decided in ``plan.make_plan``.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

import torch

from .schedule import Schedule


class Denoiser(Protocol):
    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...


#: ``callback(step_index, num_steps, x0_pred, z_next)``
Callback = Callable[[int, int, torch.Tensor, torch.Tensor], None]


class Sampler(Protocol):
    """``(denoiser, z_y, schedule, noise, generator=None, callback=None) -> z0`` (float32).

    ``noise`` is the prior's ``x_T`` noise, shaped like ``z_y``; ``generator`` feeds any later
    draws (only ``ancestral`` makes them); ``callback`` sees every step.
    """

    def __call__(
        self,
        denoiser: Denoiser,
        z_y: torch.Tensor,
        schedule: Schedule,
        noise: torch.Tensor,
        generator: torch.Generator | None = None,
        callback: Callback | None = None,
    ) -> torch.Tensor: ...



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


def sample_onestep(
    denoiser: Denoiser,
    z_y: torch.Tensor,
    schedule: Schedule,
    noise: torch.Tensor,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """SinSR: one denoiser call at the last step maps ``x_T`` straight to x0 (no clamp).

    Draws nothing from ``generator``; ``callback`` sees the one step (``x0`` is also ``z``).
    """
    x0 = predict_x0(denoiser, prior_sample(z_y, schedule, noise), schedule, schedule.num_steps - 1)
    if callback is not None:
        callback(0, 1, x0, x0)
    return x0


def sample_deterministic(
    denoiser: Denoiser,
    z_y: torch.Tensor,
    schedule: Schedule,
    noise: torch.Tensor,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """SinSR eq. 4-5: ``z_{t-1} = k_t x0 + m_t z_t + j_t z_y``; a function of the initial noise
    (draws nothing from ``generator``)."""
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
    callback: Callback | None = None,
    *,
    step_noises: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """ResShift's sampler: posterior mean plus fresh noise at every step but the last.

    ``step_noises[k]`` (k = 0..T-1, used at step index T-1-k) replaces the generator's draws
    (the parity runner replays the official noises with it; the table's callers never pass it).
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


#: every sampler by name; ``onestep`` is SinSR's single step
ONE_STEP = "onestep"
SAMPLERS: dict[str, Sampler] = {
    ONE_STEP: sample_onestep,
    "ancestral": sample_ancestral,
    "deterministic": sample_deterministic,
}
#: the samplers that take a step count (all but ``onestep``)
MULTI_STEP: tuple[str, ...] = tuple(name for name in SAMPLERS if name != ONE_STEP)


def get_sampler(name: str) -> Sampler:
    """``SAMPLERS[name]``, or a ValueError listing the names there are."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r} (choose from {', '.join(SAMPLERS)})") from None
