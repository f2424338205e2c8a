"""High-frequency score distillation (HSD), the score term of TAD-SR (He et al., "One Step
Diffusion-based Super-Resolution with Time-Aware Distillation", arXiv:2408.07476).

The student's one-step x̂0 and a reference x0 (by default the teacher's multi-step x0) are put
back on ResShift's forward path at the *same* small step t' with the *same* noise ε::

    x^s = q(x̂0, z_y; t', ε),   x^r = q(x0_ref, z_y; t', ε)

and the frozen teacher predicts the noise of each, ``ε̂(x) = eps_from_x0(x, D(x, t'))``. The
student is moved along their difference (score distillation: no gradient through the teacher)::

    ∇_θ L_HSD = E_{t', ε}[ ω(t') (ε̂(x^s) - ε̂(x^r)) ∂x̂0/∂θ ] / (C h w)

With the same noise, ``ε̂(x^s) - ε̂(x^r) = (1-η)/(κ√η) [(x̂0 - x0_ref) - (D(x^s) - D(x^r))]``: the
part of the student-teacher gap that the teacher's small-t' denoiser does not reproduce, i.e.
the fine detail. That is the "high frequency" of the name; at t' ∈ [1, 3] the teacher only
removes a little noise (the authors' released code applies no further filter). A reference of
plain noise (``reference="noise"``) gives the biased SDS gradient ``ε̂(x^s) - ε`` the paper
improves on; the ground-truth latent (``"gt"``) is its "SDS + HR" ablation.

The loss is written ``½ mean_flat((x̂0 - sg[x̂0 - g])²)`` with ``g = ω Δε``: its gradient is
exactly ``g / (C h w)`` (the authors' ``mean_flat(sg[g] * x̂0)`` surrogate has the same one), and
its value ``½ mean(g²)`` is a readable size of the score gap.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..diffusion.forward import eps_from_x0, per_sample, predict_x0_at, q_sample
from ..diffusion.sampler import Denoiser
from ..diffusion.schedule import Schedule
from .losses import mean_flat

#: what the student's score is compared with: the teacher's x0 (HSD), the HR latent, or the noise (SDS)
REFERENCES = ("teacher", "gt", "noise")
#: ω(t'): 1 (the authors' code), or ``κ√η/(1-η)``, which turns Δε into the x0-space residual
OMEGAS = ("one", "x0")


def sample_steps(batch: int, t_max: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """t' uniform in ResShift's steps ``1..t_max`` (paper: [1, 3]), as 0-based indices ``0..t_max-1`` ``[B]``.

    The authors' code draws ``randint(0, 3)``: indices 0, 1, 2.
    """
    gdev = generator.device if generator is not None else device
    return torch.randint(0, t_max, (batch,), generator=generator, device=gdev).to(device)


def score_difference(
    teacher: Denoiser,
    x0_student: Tensor,
    x0_reference: Tensor | None,
    z_y: Tensor,
    schedule: Schedule,
    t: Tensor,
    noise: Tensor,
) -> Tensor:
    """``ε̂(x^s) - ε̂(x^r)`` ``[B,C,h,w]`` (no graph), both re-noised at steps ``t`` with ``noise``.

    ``teacher``: the frozen teacher as a denoiser ``(x_scaled, t) -> x0`` with the LR bound.
    ``x0_reference`` None: the reference score is ``noise`` itself (SDS).
    """
    with torch.no_grad():
        x_s = q_sample(x0_student.detach().float(), z_y, schedule, t, noise)
        eps_s = eps_from_x0(x_s, predict_x0_at(teacher, x_s, schedule, t), z_y, schedule, t)
        if x0_reference is None:
            return eps_s - noise
        x_r = q_sample(x0_reference.float(), z_y, schedule, t, noise)
        return eps_s - eps_from_x0(x_r, predict_x0_at(teacher, x_r, schedule, t), z_y, schedule, t)


def omega(schedule: Schedule, t: Tensor, kind: str, like: Tensor) -> Tensor:
    """ω(t') ``[B,1,1,1]`` (see :data:`OMEGAS`)."""
    if kind == "one":
        return torch.ones(t.shape[0], 1, 1, 1, device=like.device)
    if kind == "x0":
        eta = per_sample(schedule.etas, t, like)
        return per_sample(schedule.kappa * schedule.sqrt_etas, t, like) / (1 - eta)
    raise ValueError(f"unknown HSD weighting {kind!r} (use {', '.join(OMEGAS)})")


def hsd_loss(x0_student: Tensor, direction: Tensor) -> Tensor:
    """``[B]`` ``½ mean_flat((x̂0 - sg[x̂0 - g])²)``: gradient ``g / (C h w)`` into ``x0_student``, value ``½ mean(g²)``."""
    x0 = x0_student.float()
    return 0.5 * mean_flat((x0 - (x0 - direction).detach()) ** 2)


__all__ = ["REFERENCES", "OMEGAS", "sample_steps", "score_difference", "omega", "hsd_loss"]
