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

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from ..diffusion.sampler import sample_deterministic
from ..errors import SettingError
from ..diffusion.schedule import Schedule
from ..pipeline import SRPipeline

#: ``(x_scaled, t, lq) -> x0``
Student = Callable[[Tensor, Tensor, Tensor], Tensor]

#: the per-sample terms every call returns, in this order
TERMS = ("distill", "inverse", "gt", "loss")

#: the message for a checkpoint of the earlier TAD-SR approximation (0.x: ``hf`` weight, one-scale head)
LEGACY_TAD = (
    "this checkpoint was trained with the earlier TAD-SR approximation (high-pass MSE term, one-scale "
    "discriminator), which this version replaced by the paper's HSD and time-aware discriminator; "
    "it cannot be resumed (export it with the version that wrote it, or start a new run)"
)


@dataclass(frozen=True)
class LossWeights:
    """The weights of the objective's terms (0 = off).

    SinSR: lambda_0..2 = ``distill``, ``inverse``, ``gt`` (all 1 officially). TAD-SR (He et al.):
    ``hsd`` (high-frequency score distillation, ``distill/hsd.py``) and ``adv`` (the time-aware
    discriminator's generator loss, ``distill/discriminator.py``); :meth:`tad` is the paper's
    objective ``L_distill + 1 * L_HSD + 0.02 * L_adv``, without SinSR's inverse and GT terms.
    An inverse or gt weight of 0 skips that term's student calls (the term then reads 0); the
    distill term is always computed: its student call is the one-step output itself.
    """

    distill: float = 1.0
    inverse: float = 1.0
    gt: float = 1.0
    hsd: float = 0.0
    adv: float = 0.0

    def __post_init__(self) -> None:
        for k, v in asdict(self).items():
            if not (math.isfinite(v) and v >= 0):  # inf would train a NaN student
                raise SettingError(f"lambda_{k}", f"lambda_{k} must be a finite number >= 0, got {v}")

    @classmethod
    def tad(cls) -> "LossWeights":
        """TAD-SR's objective: ``L_distill + 1 * L_HSD + 0.02 * L_adv`` (the authors' ``hsd_weight``, ``GAN_weight``)."""
        return cls(distill=1.0, inverse=0.0, gt=0.0, hsd=1.0, adv=0.02)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LossWeights":
        """From :meth:`to_dict`; a plain SinSR run of an earlier version (``hf`` and ``adv`` 0) reads
        as the same run, one of the earlier TAD-SR approximation is refused (:data:`LEGACY_TAD`)."""
        d = dict(d)
        if "hf" in d:
            if float(d.pop("hf")) or float(d.get("adv", 0)):
                raise ValueError(LEGACY_TAD)
        return cls(**{k: float(v) for k, v in d.items()})


def mean_flat(x: Tensor) -> Tensor:
    """``[B, ...]`` -> ``[B]``: the mean over every dimension but the batch (float32)."""
    return x.float().flatten(1).mean(dim=1)


def encode_latents(pipe: SRPipeline, lq: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
    """``lq [B,3,h,w]``, ``gt [B,3,sh,sw]`` in [-1,1] -> ``(z_y, z_gt)`` float32 ``[B,C,h,w]``.

    ``z_y`` is the pipeline's own ``encode`` (bicubic x4, VQ encoder, not quantised); ``z_gt`` is
    the HR image through the VQ encoder without upsampling. The VQ is frozen: no graph is kept.
    """
    with torch.no_grad():
        return pipe.encode(lq), pipe.vq.encode(gt.to(pipe.vq.dtype)).float()


def teacher_x0(pipe: SRPipeline, z_y: Tensor, lq: Tensor, noise: Tensor) -> Tensor:
    """The teacher's deterministic sampler (SinSR eq. 4-5) from ``x_T = z_y + kappa sqrt(eta_T) noise``.

    No gradient; ``[B,C,h,w]`` float32. The core sampler with the pipeline's denoiser, not a copy.
    """
    with torch.no_grad():
        return sample_deterministic(pipe.denoiser(lq), z_y, pipe.schedule, noise)


def _timesteps(schedule: Schedule, z: Tensor) -> tuple[Tensor, Tensor]:
    b = z.shape[0]
    t_last = schedule.timestep_map[-1].to(z.device).expand(b).contiguous()
    return t_last, torch.zeros(b, dtype=torch.long, device=z.device)


def student_x0(student: Student, z_t: Tensor, lq: Tensor, schedule: Schedule) -> Tensor:
    """The student's one-step output ``x0 = S(x_T / d_{T-1}, T-1)`` ``[B,C,h,w]`` float32 (call 0 below)."""
    d = schedule.input_divisor(schedule.num_steps - 1).to(z_t.device)
    return student(z_t / d, _timesteps(schedule, z_t)[0], lq).float()


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
        weights: lambda_distill/inverse/gt; the TAD-SR terms (hsd/adv) are added by the caller.

    Returns:
        ``({"distill", "inverse", "gt", "loss"}: [B] float32 each, x0_student [B,C,h,w])`` where
        ``loss`` is the weighted sum of the three terms.
    """
    d = schedule.input_divisor(schedule.num_steps - 1).to(z_t.device)
    t_last, t_zero = _timesteps(schedule, z_t)
    zero = z_t.new_zeros(z_t.shape[0], dtype=torch.float32)

    # call 0: the one-step prediction x0 = S(x_T, T-1)
    x0_student = student_x0(student, z_t, lq, schedule)
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
    "LEGACY_TAD",
    "LossWeights",
    "mean_flat",
    "encode_latents",
    "teacher_x0",
    "student_x0",
    "distill_terms",
    "distill_losses",
]
