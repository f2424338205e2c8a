"""One training step's pieces: a micro-batch's inputs and random draws, the discriminator's and
the student's losses on it, and the two optimiser steps.

A step runs in two phases over the same micro-batches (TAD-SR's alternation, as the authors'
``training_step``: the discriminator first, then the student against the updated discriminator):

1. :func:`prepare` each micro-batch once: its LR, its latents and *every* random draw, so both
   phases see the same student output, noise and steps;
2. with the adversarial term on, :func:`discriminator_loss` per micro-batch (the student's x̂0
   under ``no_grad``), accumulated, then :func:`discriminator_step`;
3. :func:`student_losses` per micro-batch, accumulated, then :func:`optimizer_step`.

Without the adversarial term phase 2 is skipped and this is SinSR's step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor, nn

from ..diffusion.sampler import prior_sample
from ..models.swin_unet import SwinUNet
from ..pipeline import SRPipeline
from . import discriminator as D
from . import hsd
from .config import DistillConfig
from .degradations import DegradationConfig, TrainingPairPool, degrade
from .losses import LossWeights, distill_terms, encode_latents, student_x0, teacher_x0
from ..distributed import DistInfo
from .processes import all_reduce_grads


@dataclass
class Models:
    """What a training step touches. ``student`` may be the DDP wrapper of ``raw``; ``teacher`` is
    the frozen teacher UNet and VQ as a pipeline (its ``encode``, ``denoiser`` and ``schedule``)."""

    student: nn.Module
    raw: SwinUNet
    teacher: SRPipeline
    disc: D.TimeAwareDiscriminator | None = None


@dataclass
class MicroBatch:
    """One micro-batch on the device, with every random number its step will use.

    ``gt [B,3,H,W]``, ``lq [B,3,H/4,W/4]`` in [-1,1]; latents ``[B,C,h,w]`` float32; ``z_t`` the
    student's input x_T; ``hsd_t``/``disc_t`` 0-based step indices ``[B]`` (None when off).
    """

    gt: Tensor
    lq: Tensor
    z_y: Tensor
    z_gt: Tensor
    noise: Tensor
    z_t: Tensor
    hsd_t: Tensor | None = None
    hsd_noise: Tensor | None = None
    disc_t: Tensor | None = None
    disc_noise: Tensor | None = None


def _randn(like: Tensor, g: torch.Generator) -> Tensor:
    return torch.randn(like.shape, generator=g, device=g.device).to(like.device)


def prepare(
    m: Models,
    hr: Tensor,
    lq: Tensor | None,
    cfg: DistillConfig,
    g: torch.Generator,
    degradation: DegradationConfig | None = None,
    pool: TrainingPairPool | None = None,
) -> MicroBatch:
    """A micro-batch from HR crops ``[B,3,H,W]`` in [0,1] on the device (and their LR, or None:
    made by the Real-ESRGAN degradation). Draws, in order: degradation, prior noise, HSD steps and
    noise, discriminator steps and noise, all from ``g``."""
    if lq is None:
        with torch.no_grad():
            lq = degrade(hr, degradation, g)
    if pool is not None:
        lq, hr = pool(lq, hr)
    gt, lq = hr * 2 - 1, lq * 2 - 1
    z_y, z_gt = encode_latents(m.teacher, lq, gt)
    noise = _randn(z_y, g)
    mb = MicroBatch(gt, lq, z_y, z_gt, noise, prior_sample(z_y, m.teacher.schedule, noise))
    n, b = m.teacher.schedule.num_steps, z_y.shape[0]
    if cfg.weights.hsd:
        mb.hsd_t = hsd.sample_steps(b, min(cfg.hsd_t_max, n), g, z_y.device)
        mb.hsd_noise = _randn(z_y, g)
    if cfg.weights.adv:
        mb.disc_t = D.sample_disc_steps(b, n, g, z_y.device)
        mb.disc_noise = _randn(z_y, g)
    return mb


def discriminator_loss(m: Models, mb: MicroBatch) -> Tensor:
    """``[B]`` the discriminator's hinge loss: real = z_gt, fake = the student's x̂0 (no gradient
    into the student), both diffused to ``mb.disc_t`` with ``mb.disc_noise``."""
    assert m.disc is not None and mb.disc_t is not None and mb.disc_noise is not None
    unet, sched = m.teacher.unet, m.teacher.schedule
    with torch.no_grad():
        fake = student_x0(m.raw, mb.z_t, mb.lq, sched)
        f_fake = D.teacher_features(unet, fake, mb.z_y, mb.lq, sched, mb.disc_t, mb.disc_noise)
        f_real = D.teacher_features(unet, mb.z_gt, mb.z_y, mb.lq, sched, mb.disc_t, mb.disc_noise)
    t = sched.timestep_map.to(mb.disc_t.device)[mb.disc_t]
    return D.hinge_d_loss(m.disc(f_real, t), m.disc(f_fake, t))


def student_losses(m: Models, mb: MicroBatch, cfg: DistillConfig) -> dict[str, Tensor]:
    """The student's terms of one micro-batch, each ``[B]`` float32; ``"loss"`` is their weighted sum.

    SinSR's distill / inverse / GT terms (``losses.distill_terms``), plus with ``weights.hsd`` the
    HSD term (``hsd.py``) and with ``weights.adv`` the generator's hinge loss through the frozen
    teacher encoder and the (frozen here) discriminator.
    """
    w, sched = cfg.weights, m.teacher.schedule
    x0_teacher = teacher_x0(m.teacher, mb.z_y, mb.lq, mb.noise)
    terms, x0 = distill_terms(m.student, x0_teacher, mb.z_t, mb.z_gt, mb.lq, sched, w)
    if w.hsd:
        assert mb.hsd_t is not None and mb.hsd_noise is not None
        ref = {"teacher": x0_teacher, "gt": mb.z_gt, "noise": None}[cfg.hsd_reference]
        delta = hsd.score_difference(m.teacher.denoiser(mb.lq), x0, ref, mb.z_y, sched, mb.hsd_t, mb.hsd_noise)
        terms["hsd"] = hsd.hsd_loss(x0, hsd.omega(sched, mb.hsd_t, cfg.hsd_omega, x0) * delta)
        terms["loss"] = terms["loss"] + w.hsd * terms["hsd"]
    if w.adv:
        assert m.disc is not None and mb.disc_t is not None and mb.disc_noise is not None
        feats = D.teacher_features(m.teacher.unet, x0, mb.z_y, mb.lq, sched, mb.disc_t, mb.disc_noise)
        terms["adv"] = D.hinge_g_loss(m.disc(feats, sched.timestep_map.to(mb.disc_t.device)[mb.disc_t]))
        terms["loss"] = terms["loss"] + w.adv * terms["adv"]
    return terms


def term_names(weights: LossWeights) -> list[str]:
    """The logged terms, in order: the student's, then (with the adversarial term) the discriminator's."""
    names = ["loss", "distill", "inverse", "gt"]
    if weights.hsd:
        names.append("hsd")
    if weights.adv:
        names += ["adv", "disc"]
    return names


def discriminator_step(
    d_opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler, disc: nn.Module, loss: float, info: DistInfo
) -> bool:
    """Average the heads' gradients over processes and step, unless the loss (or, without a scaler,
    a gradient) is non-finite: then ``False`` and no step (an fp16 overflow is the scaler's to skip)."""
    all_reduce_grads(disc, info)
    scaler.unscale_(d_opt)
    grads = [p.grad for p in disc.parameters() if p.grad is not None]
    finite = math.isfinite(loss) and (scaler.is_enabled() or all(bool(torch.isfinite(g).all()) for g in grads))
    if finite:
        scaler.step(d_opt)
    scaler.update()
    d_opt.zero_grad(set_to_none=True)
    return finite


def optimizer_step(
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    params: list[Tensor],
    clip: float,
    loss: float,
) -> tuple[bool, bool, float]:
    """Unscale, measure (and clip) the student's gradient, step unless something is non-finite.

    Returns ``(finite, stepped, grad_norm)``. ``finite`` is False for a NaN/inf loss, or a
    non-finite gradient without a scaler; with fp16's scaler an overflowing gradient is the
    scaler's business (it skips the step and lowers the scale: ``stepped`` False, ``finite`` True).
    """
    scaler.unscale_(opt)
    gnorm = float(torch.nn.utils.clip_grad_norm_(params, clip or math.inf, foreach=True))
    finite = math.isfinite(loss) and (math.isfinite(gnorm) or scaler.is_enabled())
    scale_before = scaler.get_scale() if scaler.is_enabled() else 1.0
    if finite:
        scaler.step(opt)
    scaler.update()
    stepped = finite and (not scaler.is_enabled() or scaler.get_scale() >= scale_before)
    opt.zero_grad(set_to_none=True)
    return finite, stepped, gnorm


def slice_batch(batch: Mapping[str, Tensor], sl: slice, dev: torch.device) -> tuple[Tensor, Tensor | None]:
    """``(hr, lq or None)`` of one micro-batch of a loader batch, on the device, in [0, 1]."""
    hr = batch["hr"][sl].to(dev, non_blocking=True)
    return hr, batch["lq"][sl].to(dev, non_blocking=True) if "lq" in batch else None


__all__ = [
    "Models",
    "MicroBatch",
    "prepare",
    "discriminator_loss",
    "student_losses",
    "term_names",
    "discriminator_step",
    "optimizer_step",
    "slice_batch",
]
