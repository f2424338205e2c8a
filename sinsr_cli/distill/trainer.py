"""The distillation loop (nanoGPT style: one config, one loop, helpers around it).

``train(cfg, teacher, vq, preset, out_dir)`` turns a ResShift teacher into a one-step student:
the student starts as a copy of the teacher, the teacher and the VQ stay frozen, the student's EMA
is what gets exported. It runs the same on one device or under ``torchrun`` (DDP: the data is
sharded by rank, rank 0 logs, validates and saves; ``processes.py``).

Determinism: every random draw of step s, micro-batch j (degradation, noise, TAD-SR steps) comes
from a generator seeded with ``(seed, s, global micro-batch index)`` (``step.prepare``), and the
data of step s is a function of s alone (``data.py``). A resumed run therefore repeats an
uninterrupted one step for step (up to float noise), and a W-process run with per-process batch
B/W equals a one-process run with batch B and ``micro_batch`` B/W (gradient accumulation).

The pieces live beside this file: the run's definition and learning rate (``config.py``), one
step's losses and optimiser steps (``step.py``), the checkpointed state (``state.py``), the logs
(``logs.py``) and validation (``validate.py``).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..config import ModelPreset
from ..devices import resolve_device
from ..distributed import DistInfo, barrier, join
from ..errors import SettingError
from ..models.checkpoints import unet_metadata, write_safetensors
from ..models.swin_unet import SwinUNet
from ..models.vq_f4 import VQModel
from ..pipeline import SRPipeline
from .config import AMP_MODES, DistillConfig, learning_rate, schedule_warnings
from .data import HRCrops, PairCrops, find_hr_images, find_pairs, generator_for, load_val_pairs, stream_loader
from .degradations import DegradationConfig, TrainingPairPool
from .discriminator import TimeAwareDiscriminator
from .logs import EventFn, RunLog, RunningMeans
from .processes import all_reduce_mean, autocast, no_sync, wrap_ddp
from .state import TrainState, check_run_folder, find_checkpoint, list_checkpoints, read_checkpoint_state, save_checkpoint, save_state
from .step import Models, discriminator_loss, discriminator_step, optimizer_step, prepare, slice_batch, student_losses, term_names
from .validate import load_val_metrics, validate


class TrainingDiverged(RuntimeError):
    """Too many non-finite steps in a row; ``mentions``: the settings the message suggests changing."""

    mentions = ("lr", "clip_grad", "amp")


@dataclass
class TrainResult:
    step: int
    records: list[dict] = field(default_factory=list)
    checkpoint: Path | None = None
    export: Path | None = None
    ema: SwinUNet | None = None
    skipped: int = 0


def train(
    cfg: DistillConfig,
    teacher: SwinUNet,
    vq: VQModel,
    preset: ModelPreset,
    out_dir: str | Path,
    *,
    device: str | torch.device | None = "auto",
    resume: str | Path | None = None,
    export: str | Path | None = None,
    on_event: EventFn | None = None,
    tensorboard: bool = False,
) -> TrainResult:
    """Distil ``teacher`` (a ResShift UNet, its ``preset``) into a one-step student.

    Writes ``out_dir/log.jsonl`` (one record per ``log_every`` steps), ``out_dir/checkpoints/``
    (every ``ckpt_every`` steps and at the end, the last ``keep`` kept) and, with ``export``, the
    EMA student as safetensors. ``resume`` (a checkpoint or a run directory) continues exactly.
    """
    out_dir, emit = Path(out_dir), on_event or (lambda kind, info: None)
    check_run_folder(out_dir, find_checkpoint(resume) if resume is not None else None)
    info, dev = join(resolve_device(device))  # torchrun: this rank and its device
    torch.manual_seed(cfg.seed + info.rank)
    # models and their trainable state: the frozen teacher + VQ, the student (a copy), its EMA, the discriminator
    m, ts = build(cfg, teacher, vq, preset, dev, info)
    s_preset = student_preset(preset, cfg.name)
    # resume: weights, optimisers, counters and RNG from the checkpoint
    ckpt = read_checkpoint_state(resume) if resume is not None else None
    teacher_id = teacher_fingerprint(teacher)
    if ckpt is not None:
        _check_same_teacher(ckpt, s_preset, teacher_id)
        ts.load_state_dict(ckpt)
    saved_step = ts.step  # the state on disk: a failure after it saves the steps done since
    # data: this rank's share of every step from ts.step on, split into micro-batches
    loader, n_micro, micro, n_images = _loader(cfg, preset, dev, info, ts.step)
    degradation = DegradationConfig.official()
    pool = TrainingPairPool(cfg.pool, generator_for(cfg.seed, 0x9001, info.rank, ts.step, device=dev)) if cfg.pool else None
    val_pairs = load_val_pairs(cfg.val, cfg.val_max) if cfg.val and info.main else []
    val_metrics = load_val_metrics(dev, emit) if val_pairs else {}
    log, names = RunLog(out_dir, info.main, tensorboard, emit), term_names(cfg.weights)
    window, result, params = RunningMeans(names), TrainResult(ts.step, skipped=ts.skipped), list(m.raw.parameters())
    emit("start", {"step": ts.step, "steps": cfg.steps, "world": info.world, "device": str(dev), "images": n_images,
                   "params": sum(p.numel() for p in params), "micro_batches": n_micro, "terms": names})
    if ckpt is not None and ts.step < cfg.steps:
        log.write({"event": "resume", "step": ts.step, "from": ckpt["path"]})
    try:
        while ts.step < cfg.steps:
            for group in ts.opt.param_groups:  # the rate of iteration step+1, set before stepping
                group["lr"] = learning_rate(ts.step + 1, cfg)
            batch = next(loader)  # this rank's HR crops (and LR crops for --pairs), [0,1], on the CPU
            mbs = []  # the micro-batches on the device, each with every random draw of its step
            for j in range(n_micro):
                g = generator_for(cfg.seed, ts.step, info.rank * n_micro + j, device=dev)
                with autocast(dev, cfg.amp):
                    mbs.append(prepare(m, *slice_batch(batch, slice(j * micro, (j + 1) * micro), dev), cfg, g, degradation, pool))
            if m.disc is not None:  # TAD-SR: the discriminator's own step first, against the current student
                d_loss = _discriminator_phase(m, ts, mbs, cfg, dev, info)
            sums = _student_phase(m, ts, mbs, cfg, dev, names)  # the student's losses, back-propagated
            if m.disc is not None:
                sums = torch.cat([sums, d_loss.view(1)])
            all_reduce_mean(sums, info)  # the logged terms: means over micro-batches and processes
            finite, stepped, gnorm = optimizer_step(ts.opt, ts.scaler, params, cfg.clip_grad, float(sums[0]))
            if stepped:  # the EMA follows the weights that were actually updated
                ema_update(ts.ema, m.raw, cfg.ema_rate)
            ts.step, ts.nan_streak, ts.skipped = ts.step + 1, 0 if finite else ts.nan_streak + 1, ts.skipped + (not stepped)
            window.add(sums.tolist() if finite else None, gnorm)
            emit("step", {"step": ts.step, "steps": cfg.steps, "terms": dict(zip(names, sums.tolist()))})
            if not finite:  # NaN guard: the step was skipped; too many in a row stop the run
                _nan_guard(ts, cfg, emit)
            if ts.step % cfg.log_every == 0 or ts.step == cfg.steps:  # rank 0 logs, validates, saves
                rec = window.record(ts.step, ts.opt.param_groups[0]["lr"], ts.skipped)
                if info.main:
                    log.write(rec)
                    result.records.append(rec)
            if val_pairs and (ts.step % cfg.val_every == 0 or ts.step == cfg.steps):
                log.write({"event": "val", "step": ts.step, **validate(ts.ema, vq, s_preset, val_pairs, dev, cfg.seed, val_metrics)}, kind="val")
            if ts.step % cfg.ckpt_every == 0 or ts.step == cfg.steps:
                result.checkpoint = save_state(out_dir, ts, cfg, s_preset, info, teacher_id)
                saved_step = ts.step
                emit("ckpt", {"step": ts.step, "path": str(result.checkpoint)})
    except BaseException as e:
        # Ctrl-C, SIGTERM (the CLI turns it into KeyboardInterrupt), an unreadable image, a
        # divergence: keep the steps done since the last checkpoint, so --resume picks them up.
        # Not under DDP (the other processes may be gone) and never weights that went non-finite.
        if info.world == 1 and ts.step > saved_step and _all_finite(ts):
            if info.main and window.steps:  # the log covers every saved step, as a run's last record does
                with contextlib.suppress(OSError):
                    log.write(window.record(ts.step, learning_rate(ts.step, cfg), ts.skipped))
            result.checkpoint = save_state(out_dir, ts, cfg, s_preset, info, teacher_id)
            emit("ckpt", {"step": ts.step, "path": str(result.checkpoint), "interrupted": isinstance(e, KeyboardInterrupt)})
        raise
    finally:
        log.close()
    if export is not None and info.main:
        if not _all_finite(ts):
            raise TrainingDiverged(f"the EMA student's weights are not finite at step {ts.step}; not exported (lower lr)")
        result.export = export_student(ts.ema, s_preset, export, ts.step)
    barrier(info)
    result.step, result.ema, result.skipped = ts.step, ts.ema, ts.skipped
    emit("end", {"step": ts.step, "checkpoint": str(result.checkpoint) if result.checkpoint else None,
                 "export": str(result.export) if result.export else None, "skipped": ts.skipped})
    return result


# -- the loop's helpers ---------------------------------------------------------------------------


def build(
    cfg: DistillConfig, teacher: SwinUNet, vq: VQModel, preset: ModelPreset, dev: torch.device, info: DistInfo
) -> tuple[Models, TrainState]:
    """The models a step touches and the state a checkpoint holds, on ``dev``.

    The teacher and the VQ are frozen (``eval``, no gradients, in no optimiser); the student is a
    trainable copy of the teacher (DDP-wrapped across processes), the EMA another frozen copy.
    The discriminator (only with ``weights.adv``) has its own AdamW at ``disc_lr``.
    """
    pipe = SRPipeline(teacher.to(dev), vq.to(dev), preset, device=dev)  # freezes both
    raw = copy.deepcopy(teacher).train().requires_grad_(True)
    ema = copy.deepcopy(teacher).eval().requires_grad_(False)
    lat = cfg.crop // preset.schedule.sf
    if lat % raw.size_multiple:
        raise SettingError("crop", f"crop {cfg.crop} gives {lat} px latents; the UNet needs a multiple of {raw.size_multiple}")
    if preset.one_step:  # its t = 0 output is the learned inversion: there is no map to learn from it
        raise SettingError("teacher", f"teacher {preset.name} is a one-step student, not a ResShift teacher")
    if cfg.weights.hsd and cfg.hsd_t_max > preset.schedule.steps:
        raise SettingError("hsd_t_max", f"hsd_t_max {cfg.hsd_t_max} is more than the teacher's {preset.schedule.steps} steps")
    disc = TimeAwareDiscriminator.for_unet(teacher, cfg.disc_channels).to(dev) if cfg.weights.adv else None
    ts = TrainState(
        raw, ema, _adamw(raw.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay),
        torch.amp.GradScaler(dev.type, enabled=cfg.amp == "fp16"), disc,
        _adamw(disc.parameters(), lr=cfg.disc_lr, weight_decay=cfg.weight_decay) if disc is not None else None,
    )
    return Models(wrap_ddp(raw, dev, info), raw, pipe, disc), ts


def _loader(cfg: DistillConfig, preset: ModelPreset, dev: torch.device, info: DistInfo, start_step: int) -> tuple[Any, int, int, int]:
    """``(batch iterator, micro-batches per step, micro-batch size, images)`` of this rank."""
    per_rank = cfg.batch // info.world if cfg.batch % info.world == 0 else 0
    micro = cfg.micro_batch or per_rank
    if not per_rank or per_rank % micro:
        raise SettingError("batch", f"batch {cfg.batch} must split into {info.world} process(es) x whole micro-batches of {micro}")
    if cfg.data is not None:
        dataset: Any = HRCrops(find_hr_images(cfg.data), cfg.crop, cfg.seed, cfg.crop_mode)
    else:
        dataset = PairCrops(find_pairs(cfg.pairs), cfg.crop, preset.schedule.sf, cfg.seed)  # type: ignore[arg-type]
    loader = stream_loader(dataset, cfg.batch, cfg.seed, rank=info.rank, world=info.world, start_step=start_step,
                           workers=cfg.workers, pin_memory=dev.type == "cuda")
    return loader, per_rank // micro, micro, len(dataset)


def _discriminator_phase(m: Models, ts: TrainState, mbs: list, cfg: DistillConfig, dev: torch.device, info: DistInfo) -> Tensor:
    """The discriminator's hinge loss over the micro-batches (accumulated), then its own optimiser
    step; returns this process's mean loss (float64 scalar)."""
    assert m.disc is not None and ts.d_opt is not None
    m.disc.requires_grad_(True)
    total = torch.zeros((), dtype=torch.float64, device=dev)
    for mb in mbs:
        with autocast(dev, cfg.amp):
            loss = discriminator_loss(m, mb).mean() / len(mbs)
        ts.scaler.scale(loss).backward()
        total += loss.detach().double()
    discriminator_step(ts.d_opt, ts.scaler, m.disc, float(all_reduce_mean(total.clone(), info)), info)
    m.disc.requires_grad_(False)  # the student's adversarial term must not train it
    return total


def _student_phase(m: Models, ts: TrainState, mbs: list, cfg: DistillConfig, dev: torch.device, names: list[str]) -> Tensor:
    """The student's losses over the micro-batches, back-propagated (gradient accumulation); their means."""
    student_names = [k for k in names if k != "disc"]  # "disc" is the discriminator phase's
    sums = torch.zeros(len(student_names), dtype=torch.float64, device=dev)
    for j, mb in enumerate(mbs):
        with no_sync(m.student, j < len(mbs) - 1), autocast(dev, cfg.amp):  # DDP syncs on the last
            terms = student_losses(m, mb, cfg)
        ts.scaler.scale(terms["loss"].mean() / len(mbs)).backward()
        sums += torch.stack([terms[k].detach().double().mean() for k in student_names]) / len(mbs)
    return sums


def _all_finite(ts: TrainState) -> bool:
    """Whether the student and its EMA hold only finite weights (a finite loss times a huge rate
    can still make them inf)."""
    return all(bool(torch.isfinite(p).all()) for m in (ts.student, ts.ema) for p in m.parameters())


def teacher_fingerprint(teacher: nn.Module) -> str:
    """A cheap identity of the teacher's weights (sha256 of the first 256 values of every
    tensor): a resumed run must distil the same teacher, wherever its file now is."""
    h = hashlib.sha256()
    for k, v in sorted(teacher.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().flatten()[:256].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _check_same_teacher(ckpt: dict[str, Any], s_preset: ModelPreset, teacher_id: str) -> None:
    """Refuse to resume with a teacher of another architecture or schedule, or other weights."""
    stored = ckpt.get("preset") or {}
    ours = s_preset.to_dict()
    for key in ("unet", "schedule"):
        if key in stored and json.dumps(stored[key], sort_keys=True) != json.dumps(ours[key], sort_keys=True):
            raise SettingError(
                "teacher", f"teacher has another {key} than the one this run was distilled from; "
                "a resumed run keeps its teacher (start a new run to change it)",
            )
    if ckpt.get("teacher") not in (None, teacher_id):
        raise SettingError(
            "teacher", "teacher has other weights than the one this run was distilled from; "
            "a resumed run keeps its teacher (start a new run to change it)",
        )


def _nan_guard(ts: TrainState, cfg: DistillConfig, emit: EventFn) -> None:
    emit("skip", {"step": ts.step, "streak": ts.nan_streak, "skipped": ts.skipped})
    if ts.nan_streak >= cfg.max_nan_steps:
        raise TrainingDiverged(
            f"{ts.nan_streak} non-finite steps in a row (step {ts.step}); resume from the last checkpoint "
            "with a lower lr, clip_grad or amp bf16/no"
        )


def _adamw(params: Any, **kw: Any) -> torch.optim.AdamW:
    """AdamW with torch's default implementation (foreach on CUDA, for-loop on CPU).

    Not ``fused``: the official trainer does not use it, and its kernel rounds differently. (The
    Swin layers' no-grad bias cache would be safe with it too: it is skipped for trainable
    tables, ``nn/swin.py``, and ``test_no_grad_student_call_sees_the_updated_weights`` holds it.)
    """
    return torch.optim.AdamW(list(params), **kw)


# -- EMA, presets, export ---------------------------------------------------------------------------


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, rate: float) -> None:
    """``ema = rate * ema + (1 - rate) * model`` over parameters (buffers are constants)."""
    e = [p for p in ema.parameters()]
    m = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(e, m, 1.0 - rate)


def student_preset(teacher: ModelPreset, name: str) -> ModelPreset:
    """The exported student: the teacher's architecture and schedule, sampled in one step."""
    return ModelPreset(
        name, teacher.unet, teacher.schedule, 1, "onestep", f"SinSR student distilled from {teacher.name}", one_step=True
    )


def export_student(ema: nn.Module, preset: ModelPreset, path: str | Path, step: int) -> Path:
    """Write the EMA student as a self-describing safetensors file (``sinsr upscale --model``)."""
    meta = unet_metadata(preset, **{"sinsr.source": "sinsr distill", "sinsr.distill_step": str(step)})
    return write_safetensors(ema.state_dict(), path, meta)


__all__ = [
    "AMP_MODES",
    "DistillConfig",
    "TrainResult",
    "TrainingDiverged",
    "learning_rate",
    "schedule_warnings",
    "ema_update",
    "student_preset",
    "export_student",
    "find_checkpoint",
    "read_checkpoint_state",
    "save_checkpoint",
    "list_checkpoints",
    "build",
    "train",
]
