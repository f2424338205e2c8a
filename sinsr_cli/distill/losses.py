"""SinSR distillation losses as pure functions of a student callable.

One micro-batch of SinSR training (paper eq. 4-8, supplement B.1; official
``GaussianDiffusion.training_losses_distill`` with ``learn_xT=True, finetune_use_gt=1``):

    z_y      = VQ(bicubic_x4(lq))                       conditioning latent
    x_T      = z_y + kappa * sqrt(eta_T) * noise         the student's input
    x0_tea   = teacher's deterministic T-step sampler from x_T           (no grad)
    z_gt     = VQ(gt)                                    (HR encoded directly, no upsampling)

    L_distill = |S(x_T, T-1)              - x0_tea|^2
    L_inverse = |S(x0_tea, 0)             - x_T   |^2    the student at t=0 learns the inversion
    L_gt      = |S(sg[S(z_gt, 0)], T-1)   - z_gt  |^2    the inversion of z_gt under no_grad

Every student call sees its input divided by the **t=T-1** divisor ``sqrt(kappa^2 eta_{T-1} + 1)``,
the t=0 inversion calls too (reference NOTES §10). Each term is ``mean_flat`` (mean over C, H, W),
one value per sample; the trainer back-propagates ``loss.mean() / micro_batches``.

A *student* here is any callable ``(x_scaled [B,C,h,w], t [B] int64, lq [B,3,h,w] in [-1,1]) ->
x0 [B,C,h,w]``: a ``SwinUNet``, its DDP wrapper, or a test double. Nothing here knows about
optimisers, devices or files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from ..diffusion.sampler import sample_deterministic
from ..diffusion.schedule import Schedule
from ..models.vq_f4 import VQModel
from ..pipeline import bicubic_up

#: ``(x_scaled, t, lq) -> x0``
Student = Callable[[Tensor, Tensor, Tensor], Tensor]

#: the per-sample terms every call returns, in this order
TERMS = ("distill", "inverse", "gt", "loss")


@dataclass(frozen=True)
class LossWeights:
    """lambda_0..2 of SinSR (all 1 officially) and the optional TAD-SR extras (0 = off).

    ``hf``: high-frequency score distillation (TAD-SR's lambda_1 = 1); ``adv``: the time-aware
    discriminator's generator loss (TAD-SR's lambda_2 = 0.02). See ``distill/tad.py``.
    An inverse or gt weight of 0 skips that term's student calls (the term then reads 0); the
    distill term is always computed: its student call is the one-step output itself.
    """

    distill: float = 1.0
    inverse: float = 1.0
    gt: float = 1.0
    hf: float = 0.0
    adv: float = 0.0

    def __post_init__(self) -> None:
        for k, v in asdict(self).items():
            if not v >= 0:  # also rejects NaN
                raise ValueError(f"loss weight {k} must be >= 0, got {v}")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LossWeights":
        return cls(**{k: float(v) for k, v in d.items()})


def mean_flat(x: Tensor) -> Tensor:
    """``[B, ...]`` -> ``[B]``: the mean over every dimension but the batch (float32)."""
    return x.float().flatten(1).mean(dim=1)


def encode_latents(vq: VQModel, lq: Tensor, gt: Tensor, scale: int = 4) -> tuple[Tensor, Tensor]:
    """``lq [B,3,h,w]``, ``gt [B,3,sh,sw]`` in [-1,1] -> ``(z_y, z_gt)`` float32 ``[B,C,h,w]``.

    ``z_y = VQ(bicubic_x4(lq))`` as the pipeline encodes; ``z_gt = VQ(gt)`` without upsampling.
    The VQ is frozen: no graph is kept.
    """
    with torch.no_grad():
        z_y = vq.encode(bicubic_up(lq.float(), scale)).float()  # as SRPipeline.encode
        z_gt = vq.encode(gt.to(vq.dtype)).float()
    return z_y, z_gt


def bind(model: Student, lq: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    """A sampler denoiser ``(x, t) -> x0`` (float32) with the LR conditioning bound."""

    def fn(x: Tensor, t: Tensor) -> Tensor:
        return model(x, t, lq).float()

    return fn


def teacher_x0(teacher: Student, z_y: Tensor, lq: Tensor, schedule: Schedule, noise: Tensor) -> Tensor:
    """The teacher's deterministic sampler (SinSR eq. 4-5) from ``x_T = z_y + kappa sqrt(eta_T) noise``.

    No gradient; ``[B,C,h,w]`` float32. This is the core sampler, not a copy of it.
    """
    with torch.no_grad():
        return sample_deterministic(bind(teacher, lq), z_y, schedule, noise)


def _timesteps(schedule: Schedule, z: Tensor) -> tuple[Tensor, Tensor]:
    b = z.shape[0]
    t_last = schedule.timestep_map[-1].to(z.device).expand(b).contiguous()
    return t_last, torch.zeros(b, dtype=torch.long, device=z.device)


def distill_terms(
    student: Student,
    teacher_x0: Tensor,
    z_t: Tensor,
    z_gt: Tensor,
    lq: Tensor,
    schedule: Schedule,
    weights: LossWeights = LossWeights(),
) -> tuple[dict[str, Tensor], Tensor]:
    """The SinSR terms of one micro-batch, and the student's one-step x0 (with its graph).

    Args:
        student: ``(x_scaled, t, lq) -> x0`` (in train mode; gradients flow through three calls).
        teacher_x0: ``[B,C,h,w]`` the teacher's deterministic x0 for ``z_t`` (no grad).
        z_t: ``[B,C,h,w]`` the prior sample x_T.
        z_gt: ``[B,C,h,w]`` the VQ latent of the HR image.
        lq: ``[B,3,h,w]`` in [-1,1], the UNet's conditioning.
        schedule: the full T-step schedule.
        weights: lambda_distill/inverse/gt; the extras (hf/adv) are added by the caller.

    Returns:
        ``({"distill", "inverse", "gt", "loss"}: [B] float32 each, x0_student [B,C,h,w])`` where
        ``loss`` is the weighted sum of the three terms.
    """
    d = schedule.input_divisor(schedule.num_steps - 1).to(z_t.device)
    t_last, t_zero = _timesteps(schedule, z_t)
    zero = z_t.new_zeros(z_t.shape[0], dtype=torch.float32)

    # call 0: the one-step prediction x0 = S(x_T, T-1)
    x0_student = student(z_t / d, t_last, lq).float()
    distill = mean_flat((teacher_x0 - x0_student) ** 2)

    # call 1: the inversion S(x0_teacher, 0) should give back x_T
    inverse = zero
    if weights.inverse:
        x_T_pred = student(teacher_x0 / d, t_zero, lq).float()
        inverse = mean_flat((z_t - x_T_pred) ** 2)

    # calls 2-3: invert the GT latent (no grad), then map that x_T back to z_gt
    gt = zero
    if weights.gt:
        with torch.no_grad():
            x_T_gt = student(z_gt / d, t_zero, lq).float()
        gt = mean_flat((z_gt - student(x_T_gt.detach() / d, t_last, lq).float()) ** 2)

    loss = weights.distill * distill + weights.inverse * inverse + weights.gt * gt
    return {"distill": distill, "inverse": inverse, "gt": gt, "loss": loss}, x0_student


def distill_losses(
    student: Student,
    teacher_x0: Tensor,
    z_t: Tensor,
    z_gt: Tensor,
    lq: Tensor,
    schedule: Schedule,
    weights: LossWeights = LossWeights(),
) -> dict[str, Tensor]:
    """The per-sample SinSR terms ``{"distill", "inverse", "gt", "loss"}`` (each ``[B]``).

    See :func:`distill_terms` for the arguments; this drops the student's x0.
    """
    return distill_terms(student, teacher_x0, z_t, z_gt, lq, schedule, weights)[0]


__all__ = [
    "Student",
    "TERMS",
    "LossWeights",
    "mean_flat",
    "encode_latents",
    "bind",
    "teacher_x0",
    "distill_terms",
    "distill_losses",
]
