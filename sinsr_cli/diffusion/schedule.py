"""The ResShift eta schedule, computed once in float64, and its respacing.

Coefficients are float64 at build time and cast to float32 when used, which is exactly how the
official ``_extract_into_tensor`` evaluates every formula (reference NOTES §4, §7).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..config import ScheduleConfig


@dataclass(frozen=True)
class StepTable:
    """Every float32 coefficient a sampler reads, for all steps, resident on one device.

    Built once per (schedule, device) from the scalar methods of :class:`Schedule` (so the
    values are bitwise theirs): a sampler step then indexes device tensors instead of copying
    host scalars to the GPU, each copy of which would wait for the queued kernels.
    """

    prior_std: torch.Tensor  # [] float32
    timesteps: torch.Tensor  # [T] int64, the model's timestep per step index
    input_divisor: torch.Tensor  # [T] float32
    posterior: torch.Tensor  # [T, 3] float32: coef of z_t, coef of x0, noise std
    ddim: torch.Tensor  # [T, 3] float32: k, m, j


@dataclass(frozen=True)
class Schedule:
    """A (possibly respaced) schedule: ``sqrt_etas[i]`` and the model timestep ``timestep_map[i]``."""

    sqrt_etas: torch.Tensor  # float64 [T]
    kappa: float
    timestep_map: torch.Tensor  # int64 [T]
    normalize_input: bool = True
    _tables: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def on(self, device: torch.device | str) -> StepTable:
        """The :class:`StepTable` of this schedule on ``device`` (made on first use, then kept)."""
        device = torch.device(device)
        table = self._tables.get(device)
        if table is None:
            n = self.num_steps
            table = StepTable(
                prior_std=self.prior_std().to(device),
                timesteps=self.timestep_map.to(device),
                input_divisor=torch.stack([self.input_divisor(i).float() for i in range(n)]).to(device),
                posterior=torch.stack([torch.stack(self.posterior(i)) for i in range(n)]).to(device),
                ddim=torch.stack([torch.stack(self.ddim(i)) for i in range(n)]).to(device),
            )
            self._tables[device] = table
        return table

    @property
    def num_steps(self) -> int:
        return int(self.sqrt_etas.shape[0])

    @property
    def etas(self) -> torch.Tensor:
        return self.sqrt_etas**2

    @property
    def etas_prev(self) -> torch.Tensor:
        e = self.etas
        return torch.cat([e.new_zeros(1), e[:-1]])

    def f32(self, arr: torch.Tensor, i: int) -> torch.Tensor:
        """Element ``i`` of a float64 coefficient array, as a float32 scalar tensor."""
        return arr[i].to(torch.float32)

    def input_divisor(self, i: int) -> torch.Tensor:
        """``sqrt(kappa^2 * etas[i] + 1)`` evaluated in float32 (the official ``_scale_input``)."""
        if not self.normalize_input:
            return torch.tensor(1.0)
        return torch.sqrt(self.f32(self.etas, i) * self.kappa**2 + 1)

    def prior_std(self) -> torch.Tensor:
        """``kappa * sqrt_etas[T-1]`` (float64 product, then float32)."""
        return (self.kappa * self.sqrt_etas[-1]).to(torch.float32)

    def posterior(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Ancestral step ``i``: (coef of z_t, coef of x0, noise std), float32."""
        e, ep = self.etas, self.etas_prev
        alpha = e - ep
        c1 = ep / e
        c2 = alpha / e
        var = self.kappa**2 * ep / e * alpha
        var_clipped = torch.cat([var[1:2], var[1:]]) if self.num_steps > 1 else var
        logvar = torch.log(var_clipped) if self.num_steps > 1 else torch.full_like(var, -math.inf)
        std = torch.exp(0.5 * logvar[i].to(torch.float32))
        return c1[i].to(torch.float32), c2[i].to(torch.float32), std

    def ddim(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Deterministic step ``i`` (SinSR eq. 4-5): (k, m, j) in float32, from float32 pieces."""
        ep = self.f32(self.etas_prev, i)
        c1 = self.f32(self.etas_prev * self.etas, i)
        c2 = self.f32(self.etas_prev / self.etas, i)
        k = 1 - ep + torch.sqrt(c1) - torch.sqrt(c2)
        m = torch.sqrt(c2)
        j = ep - torch.sqrt(c1)
        return k, m, j


def make_schedule(cfg: ScheduleConfig) -> Schedule:
    """Exponential schedule: ``sqrt_etas = increaser**(linspace(0,1,T)**power*(T-1)) * etas_start``."""
    T = cfg.steps
    start = min(cfg.min_noise_level / cfg.kappa, cfg.min_noise_level)
    if cfg.sinsr_min_clip:
        start = min(start, math.sqrt(0.001))
    if T == 1:
        sqrt_etas = torch.tensor([cfg.etas_end], dtype=torch.float64)
    else:
        increaser = math.exp(1 / (T - 1) * math.log(cfg.etas_end / start))
        base = torch.ones(T, dtype=torch.float64) * increaser
        power_t = torch.linspace(0, 1, T, dtype=torch.float64) ** cfg.power * (T - 1)
        sqrt_etas = base**power_t * start
    return Schedule(sqrt_etas, float(cfg.kappa), torch.arange(T), cfg.normalize_input)


def respace(s: Schedule, steps: int) -> Schedule:
    """Keep ``steps`` of the schedule's steps as the official ``space_timesteps`` does.

    Kept indices are ``{int(T/steps * x) for x in range(steps)}``; the model still sees the
    original timestep (``timestep_map``). Note the last kept step is not T-1 in general.
    """
    T = s.num_steps
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be in 1..{T}, got {steps}")
    if steps == T:
        return s
    keep = sorted({int((T / steps) * x) for x in range(steps)})
    idx = torch.tensor(keep)
    return Schedule(s.sqrt_etas[idx], s.kappa, s.timestep_map[idx], s.normalize_input)
