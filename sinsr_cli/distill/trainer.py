"""The SinSR distillation loop (nanoGPT style: one config, one loop, helpers around it).

``train(cfg, teacher, vq, preset, out_dir)`` turns a ResShift teacher into a one-step student:
the student starts as a copy of the teacher, the teacher and the VQ stay frozen, the student's EMA
is what gets exported. It runs the same on one device or under ``torchrun`` (DDP: the data is
sharded by rank, rank 0 logs, validates and saves).

Determinism: every random draw of step s, micro-batch j (noise, degradation, TAD steps) comes
from a generator seeded with ``(seed, s, global micro-batch index)``, and the data of step s is a
function of s alone (``data.py``). A resumed run therefore repeats an uninterrupted one step for
step (up to float noise), and a W-process run with per-process batch B/W equals a one-process
run with batch B and ``micro_batch`` B/W (gradient accumulation).

Learning rate (official ``milestones: [5000, 500000]``): linear warm-up ``lr * it / warmup`` for
iterations it = 1..warmup, then ``lr``, halved after each ``halve_at`` iteration. The official
trainer sets the rate *after* each step, so its iteration 1 runs at the full rate and the ramp
lags one iteration; ``official_lr_quirk=True`` reproduces that, the default does not.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..config import ModelPreset
from ..devices import resolve_device
from ..diffusion.sampler import prior_sample
from ..diffusion.schedule import Schedule, make_schedule
from ..distributed import DistInfo, join
from ..models.checkpoints import unet_metadata, write_safetensors
from ..models.swin_unet import SwinUNet
from ..models.vq_f4 import VQModel
from . import tad
from .data import CROP_MODES, HRCrops, PairCrops, ValPair, find_hr_images, find_pairs, generator_for, load_val_pairs, stream_loader
from .degradations import DegradationConfig, TrainingPairPool, degrade
from .losses import LossWeights, distill_terms, encode_latents, teacher_x0

AMP_MODES = ("no", "bf16", "fp16")
CKPT_FORMAT = "sinsr-distill/1"
_CKPT_RE = re.compile(r"step_(\d+)\.pt$")

#: ``on_event(kind, info)``: kinds "start", "step", "log", "val", "ckpt", "skip", "end"
EventFn = Callable[[str, dict], None]


class TrainingDiverged(RuntimeError):
    """Too many non-finite steps in a row."""


@dataclass(frozen=True)
class DistillConfig:
    """Everything that defines a distillation run; stored in every checkpoint.

    ``batch`` is global (summed over processes); ``micro_batch`` is what one process runs at a
    time (0: its whole share), the rest is gradient accumulation. Defaults are the official
    ``configs/SinSR.yaml`` (batch 64, lr 5e-5, warm-up 5000, halved at 500k, EMA 0.999, fp32,
    no clipping, seed 123456).
    """

    teacher: str = ""  # what --teacher named (zoo name or file); informational, the caller loads it
    vq: str = "vq-f4"
    data: str | None = None  # HR images (LR made by the Real-ESRGAN degradation)
    pairs: str | None = None  # lr/ + hr/ pairs
    val: str | None = None
    name: str = "sinsr-distilled"
    steps: int = 500_000
    batch: int = 64
    micro_batch: int = 0
    crop: int = 256
    crop_mode: str = "rescale"
    pool: int = 0  # training-pair pool size in samples (official: 10 x batch); 0 = off
    workers: int = 4
    lr: float = 5e-5
    weight_decay: float = 0.0
    warmup: int = 5000
    halve_at: tuple[int, ...] = (500_000,)
    official_lr_quirk: bool = False
    ema_rate: float = 0.999
    amp: str = "no"
    clip_grad: float = 0.0  # max gradient norm; 0 = off
    max_nan_steps: int = 10
    weights: LossWeights = field(default_factory=LossWeights)
    tad_t_max: int = 3
    disc_lr: float = 1e-4
    disc_hidden: int = 128
    seed: int = 123456
    log_every: int = 10
    ckpt_every: int = 1000
    keep: int = 3
    val_every: int = 5000
    val_max: int = 16

    def __post_init__(self) -> None:
        if (self.data is None) == (self.pairs is None):
            raise ValueError("give exactly one of --data (HR images) or --pairs (lr/ + hr/ folders)")
        if self.amp not in AMP_MODES:
            raise ValueError(f"unknown --amp {self.amp!r} (use {', '.join(AMP_MODES)})")
        positive = ("batch", "crop", "log_every", "ckpt_every", "keep", "val_every", "max_nan_steps")
        for k in positive:
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        for k in ("steps", "micro_batch", "pool", "workers", "warmup", "val_max"):
            if getattr(self, k) < 0:
                raise ValueError(f"{k} must be >= 0, got {getattr(self, k)}")
        if self.crop % 4 or self.crop < 32:
            raise ValueError(f"--crop must be a multiple of 4 and at least 32, got {self.crop}")
        if not (self.lr > 0 and 0 <= self.ema_rate < 1 and self.weight_decay >= 0 and self.clip_grad >= 0):
            raise ValueError("need lr > 0, 0 <= ema < 1, weight decay >= 0 and clip >= 0")
        if self.tad_t_max < 1:
            raise ValueError(f"--tad-t-max must be >= 1, got {self.tad_t_max}")
        if self.crop_mode not in CROP_MODES:
            raise ValueError(f"unknown --crop-mode {self.crop_mode!r} (use {', '.join(CROP_MODES)})")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["halve_at"] = list(self.halve_at)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DistillConfig":
        kw = dict(d)
        kw["halve_at"] = tuple(kw.get("halve_at", ()))
        kw["weights"] = LossWeights.from_dict(kw.get("weights", {}))
        return cls(**kw)


@dataclass
class TrainResult:
    step: int
    records: list[dict] = field(default_factory=list)
    checkpoint: Path | None = None
    export: Path | None = None
    ema: SwinUNet | None = None
    skipped: int = 0


# -- schedule, EMA, presets ---------------------------------------------------------------------


def learning_rate(it: int, cfg: DistillConfig) -> float:
    """The rate iteration ``it`` (1-based) runs at (see the module docstring)."""
    if cfg.official_lr_quirk and it == 1:
        return cfg.lr  # the official trainer's first iteration, before any adjust_lr
    ramp = it - 1 if cfg.official_lr_quirk else it
    if cfg.warmup and ramp <= cfg.warmup:
        return cfg.lr * ramp / cfg.warmup
    return cfg.lr * 0.5 ** sum(it > m for m in cfg.halve_at)


def schedule_warnings(cfg: DistillConfig, *, milestones: bool = True) -> list[tuple[str, str]]:
    """What in the learning-rate schedule a run of ``cfg.steps`` never reaches, as
    ``(part, message)`` with part "warmup" or "milestone" (the caller names its options).

    A warm-up longer than the run means the student trains at a fraction of the rate (the
    default 5000-iteration warm-up keeps a 20-step run at 2e-8..2e-7). ``milestones=False``
    leaves out halvings after the last step (harmless where they are only a default).
    """
    out: list[tuple[str, str]] = []
    if cfg.warmup and cfg.warmup > cfg.steps:
        top = learning_rate(cfg.steps, cfg)
        out.append((
            "warmup",
            f"the learning-rate warm-up ({cfg.warmup} iterations) does not end within the run ({cfg.steps} steps): "
            f"the rate only reaches {top:.2g} of {cfg.lr:.2g}",
        ))
    if milestones:
        for m in cfg.halve_at:
            if m >= cfg.steps:
                out.append(("milestone", f"the rate halving after iteration {m} is at or after the last step ({cfg.steps}): it never happens"))
    return out


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


# -- checkpoints ----------------------------------------------------------------------------------


def checkpoint_path(out_dir: Path, step: int) -> Path:
    return out_dir / "checkpoints" / f"step_{step:08d}.pt"


def list_checkpoints(out_dir: Path) -> list[Path]:
    d = out_dir / "checkpoints"
    found = [p for p in d.glob("step_*.pt") if _CKPT_RE.search(p.name)] if d.is_dir() else []
    return sorted(found, key=lambda p: int(_CKPT_RE.search(p.name).group(1)))  # type: ignore[union-attr]


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or the latest one of a run directory (or of its ``checkpoints/``)."""
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        found = list_checkpoints(p.parent if p.name == "checkpoints" else p)
        if found:
            return found[-1]
        raise FileNotFoundError(f"{p}: no checkpoints (checkpoints/step_*.pt) to resume from")
    raise FileNotFoundError(f"{p}: no such checkpoint file or run directory")


def read_checkpoint_state(path: str | Path) -> dict[str, Any]:
    """Load a training checkpoint (``weights_only``: no code runs) and check its format."""
    path = find_checkpoint(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated / not a checkpoint
        raise ValueError(f"{path}: not a readable training checkpoint ({str(e).splitlines()[0][:160]})") from e
    if not isinstance(state, dict) or state.get("format") != CKPT_FORMAT:
        raise ValueError(f"{path}: not a sinsr distill checkpoint")
    state["path"] = str(path)
    return state


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename (atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(dict(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def prune_checkpoints(out_dir: Path, keep: int) -> None:
    """Keep the last ``keep`` checkpoints; drop temporaries a killed writer left behind."""
    for old in list_checkpoints(out_dir)[:-keep]:
        old.unlink(missing_ok=True)
    for tmp in (out_dir / "checkpoints").glob(".step_*.tmp"):
        tmp.unlink(missing_ok=True)


# -- processes ------------------------------------------------------------------------------------


def _all_reduce_mean(t: Tensor, info: DistInfo) -> Tensor:
    if info.world > 1:
        dist.all_reduce(t)
        t /= info.world
    return t


# -- one micro-batch --------------------------------------------------------------------------------


@dataclass
class Models:
    """What a training step touches. ``student`` may be the DDP wrapper of ``raw``."""

    student: nn.Module
    raw: SwinUNet
    teacher: SwinUNet
    vq: VQModel
    disc: tad.LatentDiscriminator | None
    schedule: Schedule


def micro_batch_losses(
    m: Models, gt: Tensor, lq: Tensor, weights: LossWeights, g: torch.Generator, t_max: int = 3
) -> dict[str, Tensor]:
    """All loss terms of one micro-batch, each ``[B]`` float32; ``"loss"`` is what to minimise.

    ``gt [B,3,H,W]``, ``lq [B,3,H/4,W/4]`` in [-1,1]; ``g`` draws every random number.
    With ``weights.adv`` the discriminator's own hinge loss is added to ``"loss"`` too: it only
    reaches the head's parameters (the student's path through it is detached, and the head is
    frozen while the student's adversarial term is formed), so one backward serves both.
    """
    z_y, z_gt = encode_latents(m.vq, lq, gt)
    noise = torch.randn(z_y.shape, generator=g, device=g.device).to(z_y.device)
    z_t = prior_sample(z_y, m.schedule, noise)
    x0_teacher = teacher_x0(m.teacher, z_y, lq, m.schedule, noise)
    terms, x0 = distill_terms(m.student, x0_teacher, z_t, z_gt, lq, m.schedule, weights)
    if weights.hf:
        t_small = tad.sample_small_t(z_y.shape[0], min(t_max, m.schedule.num_steps - 1), g, z_y.device)
        eps = torch.randn(z_y.shape, generator=g, device=g.device).to(z_y.device)
        terms["hf"] = tad.hf_score_distill_loss(x0, m.teacher, z_y, lq, m.schedule, t_small, eps)
        terms["loss"] = terms["loss"] + weights.hf * terms["hf"]
    if weights.adv:
        assert m.disc is not None
        t_d = torch.randint(0, m.schedule.num_steps, (z_y.shape[0],), generator=g, device=g.device).to(z_y.device)
        eps = torch.randn(z_y.shape, generator=g, device=g.device).to(z_y.device)
        m.disc.requires_grad_(False)
        feat, emb = tad.disc_features(m.teacher, x0, z_y, lq, m.schedule, t_d, eps)
        terms["adv"] = tad.hinge_g_loss(m.disc(feat, emb))
        m.disc.requires_grad_(True)
        with torch.no_grad():
            feat_real, emb_real = tad.disc_features(m.teacher, z_gt, z_y, lq, m.schedule, t_d, eps)
        terms["disc"] = tad.hinge_d_loss(m.disc(feat_real, emb_real), m.disc(feat.detach(), emb.detach()))
        terms["loss"] = terms["loss"] + weights.adv * terms["adv"] + terms["disc"]
    return terms


def term_names(weights: LossWeights) -> list[str]:
    names = ["loss", "distill", "inverse", "gt"]
    if weights.hf:
        names.append("hf")
    if weights.adv:
        names += ["adv", "disc"]
    return names


# -- the run ------------------------------------------------------------------------------------------


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
    out_dir = Path(out_dir)
    emit = on_event or (lambda kind, info: None)
    info, dev = join(resolve_device(device))  # torchrun: this rank and its device
    torch.manual_seed(cfg.seed + info.rank)

    # models: frozen teacher and VQ, the student a trainable copy of the teacher, its EMA
    teacher = teacher.to(dev).eval().requires_grad_(False)
    vq = vq.to(dev).eval().requires_grad_(False)
    raw = copy.deepcopy(teacher).train().requires_grad_(True)
    ema = copy.deepcopy(teacher).eval().requires_grad_(False)
    lat = cfg.crop // preset.schedule.sf
    if lat % raw.size_multiple:
        raise ValueError(f"--crop {cfg.crop} gives {lat} px latents; the UNet needs a multiple of {raw.size_multiple}")
    student: nn.Module = raw
    if info.world > 1:
        student = nn.parallel.DistributedDataParallel(
            raw, device_ids=[dev.index] if dev.type == "cuda" else None, **_no_buffer_sync()
        )
    disc = tad.LatentDiscriminator.for_unet(teacher, cfg.disc_hidden).to(dev) if cfg.weights.adv else None
    m = Models(student, raw, teacher, vq, disc, make_schedule(preset.schedule))

    opt = _adamw(raw.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    d_opt = _adamw(disc.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.999)) if disc is not None else None
    scaler = torch.amp.GradScaler(dev.type, enabled=cfg.amp == "fp16")
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)

    step, nan_streak, skipped = 0, 0, 0
    if resume is not None:
        state = read_checkpoint_state(resume)
        step, nan_streak, skipped = _restore(state, raw, ema, opt, scaler, disc, d_opt)
    s_preset = student_preset(preset, cfg.name)

    # data: this rank's share of each step's batch
    per_rank = cfg.batch // info.world if cfg.batch % info.world == 0 else 0
    micro = cfg.micro_batch or per_rank
    if not per_rank or per_rank % micro:
        raise ValueError(f"--batch {cfg.batch} must split into {info.world} process(es) x whole micro-batches of {micro}")
    n_micro = per_rank // micro
    if cfg.data is not None:
        dataset: Any = HRCrops(find_hr_images(cfg.data), cfg.crop, cfg.seed, cfg.crop_mode)
    else:
        dataset = PairCrops(find_pairs(cfg.pairs), cfg.crop, preset.schedule.sf, cfg.seed)  # type: ignore[arg-type]
    loader = stream_loader(
        dataset, cfg.batch, cfg.seed, rank=info.rank, world=info.world, start_step=step,
        workers=cfg.workers, pin_memory=dev.type == "cuda",
    )
    degradation = DegradationConfig.official()
    pool = TrainingPairPool(cfg.pool, generator_for(cfg.seed, 0x9001, info.rank, step, device=dev)) if cfg.pool else None
    val_pairs = load_val_pairs(cfg.val, cfg.val_max) if cfg.val and info.main else []
    val_metrics = load_val_metrics(dev, emit) if val_pairs else {}
    logger = _Logger(out_dir, info.main, tensorboard, emit)
    names = term_names(cfg.weights)
    result = TrainResult(step, skipped=skipped)
    emit("start", {"step": step, "steps": cfg.steps, "world": info.world, "device": str(dev), "images": len(dataset),
                   "params": sum(p.numel() for p in raw.parameters()), "micro_batches": n_micro, "terms": names})
    if resume is not None:
        logger.write({"event": "resume", "step": step, "from": state["path"]})

    params = list(raw.parameters())
    window = _Window(names)
    try:
        while step < cfg.steps:
            for group in opt.param_groups:  # the rate of iteration step+1, set before stepping
                group["lr"] = learning_rate(step + 1, cfg)
            batch = next(loader)  # this rank's HR crops (and LR crops for --pairs), [0,1], on the CPU
            sums = torch.zeros(len(names), dtype=torch.float64, device=dev)
            for j in range(n_micro):  # gradient accumulation over micro-batches
                g = generator_for(cfg.seed, step, info.rank * n_micro + j, device=dev)  # every draw of this one
                gt, lq = _micro_pair(batch, slice(j * micro, (j + 1) * micro), dev, degradation, g, pool)
                with _no_sync(student, j < n_micro - 1), _autocast(dev, amp_dtype):  # DDP syncs on the last
                    terms = micro_batch_losses(m, gt, lq, cfg.weights, g, cfg.tad_t_max)
                scaler.scale(terms["loss"].mean() / n_micro).backward()
                sums += torch.stack([terms[k].detach().double().mean() for k in names]) / n_micro
            _all_reduce_mean(sums, info)  # the logged terms: means over micro-batches and processes
            finite, stepped, gnorm = _optimizer_step(opt, d_opt, scaler, params, disc, cfg.clip_grad, float(sums[0]), info)
            if stepped:  # the EMA follows the weights that were actually updated
                ema_update(ema, raw, cfg.ema_rate)
            step, nan_streak, skipped = step + 1, 0 if finite else nan_streak + 1, skipped + (not stepped)
            window.add(sums.tolist() if finite else None, gnorm)
            emit("step", {"step": step, "steps": cfg.steps, "terms": dict(zip(names, sums.tolist()))})
            if not finite:  # NaN guard: the step was skipped; too many in a row stop the run
                emit("skip", {"step": step, "streak": nan_streak, "skipped": skipped})
                if nan_streak >= cfg.max_nan_steps:
                    raise TrainingDiverged(
                        f"{nan_streak} non-finite steps in a row (step {step}); lower --lr, enable --clip-grad "
                        "or use --amp bf16/no, and resume from the last checkpoint"
                    )
            if step % cfg.log_every == 0 or step == cfg.steps:  # rank 0 logs, validates, saves
                rec = window.record(step, opt.param_groups[0]["lr"], skipped)
                if info.main:
                    logger.write(rec)
                    result.records.append(rec)
            if val_pairs and (step % cfg.val_every == 0 or step == cfg.steps):
                metrics = validate(ema, vq, s_preset, val_pairs, dev, cfg.seed, val_metrics)
                logger.write({"event": "val", "step": step, **metrics}, kind="val")
            if step % cfg.ckpt_every == 0 or step == cfg.steps:
                result.checkpoint = _save(out_dir, cfg, s_preset, step, raw, ema, opt, scaler, disc, d_opt, nan_streak, skipped, info)
                emit("ckpt", {"step": step, "path": str(result.checkpoint)})
    except KeyboardInterrupt:
        if info.world == 1 and step > 0:  # keep the work done so far; --resume picks it up
            result.checkpoint = _save(out_dir, cfg, s_preset, step, raw, ema, opt, scaler, disc, d_opt, nan_streak, skipped, info)
            emit("ckpt", {"step": step, "path": str(result.checkpoint), "interrupted": True})
        raise
    finally:
        logger.close()

    if export is not None and info.main:
        result.export = export_student(ema, s_preset, export, step)
    if info.world > 1:
        dist.barrier()
    result.step, result.ema, result.skipped = step, ema, skipped
    emit("end", {"step": step, "checkpoint": str(result.checkpoint) if result.checkpoint else None,
                 "export": str(result.export) if result.export else None, "skipped": skipped})
    return result


# -- helpers of the loop ---------------------------------------------------------------------------


def _micro_pair(
    batch: Mapping[str, Tensor],
    sl: slice,
    dev: torch.device,
    degradation: DegradationConfig,
    g: torch.Generator,
    pool: TrainingPairPool | None,
) -> tuple[Tensor, Tensor]:
    """One micro-batch on the device: ``(gt, lq)`` in [-1, 1]; LR by the degradation when absent."""
    hr = batch["hr"][sl].to(dev, non_blocking=True)
    if "lq" in batch:
        lq = batch["lq"][sl].to(dev, non_blocking=True)
    else:
        with torch.no_grad():
            lq = degrade(hr, degradation, g)
    if pool is not None:
        lq, hr = pool(lq, hr)
    return hr * 2 - 1, lq * 2 - 1


def _adamw(params: Any, **kw: Any) -> torch.optim.AdamW:
    """AdamW, deliberately not ``fused``: the fused kernel updates weights without bumping their
    version counters, and the core's Swin layers cache the relative-position bias under no_grad
    keyed by that counter, so the student's no-grad call (the GT inversion) would see stale
    weights (caught by the exact-resume test)."""
    return torch.optim.AdamW(list(params), **kw)


def _optimizer_step(
    opt: torch.optim.Optimizer,
    d_opt: torch.optim.Optimizer | None,
    scaler: torch.amp.GradScaler,
    params: list[Tensor],
    disc: nn.Module | None,
    clip: float,
    loss: float,
    info: DistInfo,
) -> tuple[bool, bool, float]:
    """Unscale, measure (and clip) the gradient, step unless something is non-finite.

    Returns ``(finite, stepped, grad_norm)``. ``finite`` is False for a NaN/inf loss, or a
    non-finite gradient without a scaler; with fp16's scaler an overflowing gradient is the
    scaler's business (it skips the step and lowers the scale: ``stepped`` False, ``finite`` True).
    """
    if disc is not None and info.world > 1:  # the discriminator head is not DDP-wrapped
        _all_reduce_grads(disc, info)
    scaler.unscale_(opt)
    gnorm = float(torch.nn.utils.clip_grad_norm_(params, clip or math.inf, foreach=True))
    finite = math.isfinite(loss) and (math.isfinite(gnorm) or scaler.is_enabled())
    scale_before = scaler.get_scale() if scaler.is_enabled() else 1.0
    if finite:
        scaler.step(opt)
        if d_opt is not None:
            scaler.step(d_opt)
    scaler.update()
    stepped = finite and (not scaler.is_enabled() or scaler.get_scale() >= scale_before)
    opt.zero_grad(set_to_none=True)
    if d_opt is not None:
        d_opt.zero_grad(set_to_none=True)
    return finite, stepped, gnorm


def _no_sync(module: nn.Module, skip: bool) -> contextlib.AbstractContextManager:
    """DDP's ``no_sync`` for all but the last micro-batch of a step (a no-op without DDP)."""
    return module.no_sync() if skip and hasattr(module, "no_sync") else contextlib.nullcontext()  # type: ignore[operator]


def _no_buffer_sync() -> dict[str, bool]:
    """The UNet's buffers (Swin masks, position indices) are constants: never broadcast them."""
    import inspect

    params = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}


def _autocast(dev: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast(dev.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def _all_reduce_grads(module: nn.Module, info: DistInfo) -> None:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if grads:
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= info.world
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view_as(g))


class _Window:
    """Running means of the logged terms since the last record, plus timing."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.reset()

    def reset(self) -> None:
        self.sums = [0.0] * len(self.names)
        self.n = 0
        self.gnorm = 0.0
        self.steps = 0
        self.t0 = time.perf_counter()

    def add(self, values: list[float] | None, gnorm: float) -> None:
        self.steps += 1
        if values is not None:
            self.sums = [a + b for a, b in zip(self.sums, values)]
            self.n += 1
            self.gnorm += gnorm if math.isfinite(gnorm) else 0.0

    def record(self, step: int, lr: float, skipped: int) -> dict:
        dt = time.perf_counter() - self.t0
        rec: dict[str, Any] = {"step": step}
        rec.update({k: (s / self.n if self.n else float("nan")) for k, s in zip(self.names, self.sums)})
        rec.update({"lr": lr, "grad_norm": self.gnorm / self.n if self.n else float("nan"),
                    "s_per_it": dt / max(self.steps, 1), "skipped": skipped, "time": time.time()})
        self.reset()
        return rec


class _Logger:
    """``log.jsonl`` (append) and optional TensorBoard, on rank 0 only."""

    def __init__(self, out_dir: Path, main: bool, tensorboard: bool, emit: EventFn) -> None:
        self.main, self.emit, self.tb = main, emit, None
        self.path = out_dir / "log.jsonl"
        if main:
            out_dir.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self.tb = SummaryWriter(str(out_dir / "tb"))
                except Exception as e:  # tensorboard not installed
                    emit("warning", {"message": f"TensorBoard disabled: {type(e).__name__}: {e}"})

    def write(self, rec: dict, kind: str = "log") -> None:
        if not self.main:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(rec, allow_nan=True) + "\n")
        if rec.get("event") in (None, "val"):
            self.emit(kind, rec)
        if self.tb is not None and "step" in rec:
            prefix = "val" if kind == "val" else "train"
            for k, v in rec.items():
                if k not in ("step", "time", "event") and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{prefix}/{k}", v, rec["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _save(out_dir, cfg, s_preset, step, raw, ema, opt, scaler, disc, d_opt, nan_streak, skipped, info) -> Path | None:
    """Rank 0 writes the checkpoint (atomically) and prunes old ones; everyone waits."""
    path = checkpoint_path(out_dir, step)
    if info.main:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        state = {
            "format": CKPT_FORMAT, "step": step, "config": cfg.to_dict(), "preset": s_preset.to_dict(),
            "student": raw.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
            "scaler": scaler.state_dict(), "disc": disc.state_dict() if disc is not None else None,
            "disc_optimizer": d_opt.state_dict() if d_opt is not None else None,
            "nan_streak": nan_streak, "skipped": skipped, "world": info.world, "rng": rng,
        }
        save_checkpoint(path, state)
        prune_checkpoints(out_dir, cfg.keep)
    if info.world > 1:
        dist.barrier()
    return path


def _restore(state, raw, ema, opt, scaler, disc, d_opt) -> tuple[int, int, int]:
    raw.load_state_dict(state["student"])
    ema.load_state_dict(state["ema"])
    opt.load_state_dict(state["optimizer"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    if disc is not None:
        if state.get("disc") is None:
            raise ValueError("this checkpoint has no discriminator: resume it without the adversarial term")
        disc.load_state_dict(state["disc"])
        d_opt.load_state_dict(state["disc_optimizer"])
    rng = state.get("rng") or {}
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return int(state["step"]), int(state.get("nan_streak", 0)), int(state.get("skipped", 0))


# -- validation ------------------------------------------------------------------------------------


@torch.no_grad()
def validate(
    unet: SwinUNet,
    vq: VQModel,
    preset: ModelPreset,
    pairs: list[ValPair],
    device: torch.device,
    seed: int = 0,
    learned: Mapping[str, Callable[[Tensor, Tensor], Tensor]] | None = None,
) -> dict[str, float]:
    """Mean PSNR/SSIM (Y channel) and any ``learned`` metric (LPIPS) of the one-step pipeline.

    Uses the core pipeline (pad, encode, one step, decode; noise from ``seed``) and the bench
    metrics; SR outputs are quantised to 8 bits as saved and cropped to the HR where sizes differ.
    Returns ``{"psnr", "ssim", <learned>..., "n"}``.
    """
    from ..bench.metrics import MetricAccumulator, psnr_y, ssim_y
    from ..pipeline import SRPipeline

    was_training = unet.training
    pipe = SRPipeline(unet, vq, preset, device=device, dtype=torch.float32)
    acc = MetricAccumulator()
    for p in pairs:
        sr = pipe(p.lr.to(device), seed=seed)
        h, w = min(sr.shape[-2], p.hr.shape[-2]), min(sr.shape[-1], p.hr.shape[-1])
        sr = (sr[..., :h, :w] * 255).round() / 255
        hr = p.hr[..., :h, :w].to(sr.device)
        acc.update("psnr", psnr_y(sr, hr))
        if min(h, w) >= 11:
            acc.update("ssim", ssim_y(sr, hr))
        for name, metric in (learned or {}).items():
            acc.update(name, metric(sr, hr))
    unet.train(was_training)
    return {**acc.means(), "n": len(pairs)}


def load_val_metrics(device: torch.device, emit: EventFn) -> dict[str, Any]:
    """LPIPS through the bench code when pyiqa and its weights are there; else a warning event."""
    from ..bench.metrics import load_learned_metrics

    metrics, messages = load_learned_metrics(["lpips"], device)
    for m in messages:
        emit("warning", {"message": f"validation without LPIPS: {m}"})
    return metrics


__all__ = [
    "AMP_MODES",
    "DistillConfig",
    "TrainResult",
    "TrainingDiverged",
    "learning_rate",
    "ema_update",
    "student_preset",
    "export_student",
    "schedule_warnings",
    "find_checkpoint",
    "read_checkpoint_state",
    "save_checkpoint",
    "list_checkpoints",
    "micro_batch_losses",
    "train",
    "validate",
    "load_val_metrics",
]
