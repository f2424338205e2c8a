"""What defines a ``sinsr distill`` run: :class:`DistillConfig` (stored in every checkpoint) and
the learning-rate schedule it implies.

Learning rate (official ``milestones: [5000, 500000]``): linear warm-up ``lr * it / warmup`` for
iterations it = 1..warmup, then ``lr``, halved after each ``halve_at`` iteration. The official
trainer sets the rate *after* each step, so its iteration 1 runs at the full rate and the ramp
lags one iteration; ``official_lr_quirk=True`` reproduces that, the default does not.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from ..errors import SettingError
from ..plan import resolve_seed
from .data import CROP_MODES
from .hsd import OMEGAS, REFERENCES
from .losses import LossWeights

AMP_MODES = ("no", "bf16", "fp16")

#: fields of earlier versions that no longer exist (only meaningful for their TAD approximation,
#: whose checkpoints ``LossWeights.from_dict`` refuses)
_DROPPED = ("tad_t_max", "disc_hidden")


@dataclass(frozen=True)
class DistillConfig:
    """Everything that defines a distillation run; stored in every checkpoint.

    ``batch`` is global (summed over processes); ``micro_batch`` is what one process runs at a
    time (0: its whole share), the rest is gradient accumulation. Defaults are the official
    ``configs/SinSR.yaml`` (batch 64, lr 5e-5, warm-up 5000, halved at 500k, EMA 0.999, fp32,
    no clipping, seed 123456). The TAD-SR options (``hsd_*``, ``disc_*``) default to the authors'
    ``configs/TAD-SR.yaml`` and code; they only matter when ``weights.hsd`` / ``weights.adv`` > 0.
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
    hsd_t_max: int = 3  # t' uniform in ResShift's steps 1..hsd_t_max (paper: [1, 3])
    hsd_reference: str = "teacher"  # teacher (HSD), gt (the paper's "SDS + HR"), noise (SDS)
    hsd_omega: str = "one"  # ω(t'): one (the authors' code) or x0 (see hsd.OMEGAS)
    disc_lr: float = 5e-5  # the discriminator's AdamW rate (authors: the student's rate, no schedule)
    disc_channels: int = 64  # logits per token of each discriminator head (authors' c_dim)
    seed: int = 123456
    log_every: int = 10
    ckpt_every: int = 1000
    keep: int = 3
    val_every: int = 5000
    val_max: int = 16

    def __post_init__(self) -> None:
        if (self.data is None) == (self.pairs is None):
            raise SettingError("data", "give exactly one of data (HR images) or pairs (lr/ + hr/ folders)", ("data", "pairs"))
        if self.amp not in AMP_MODES:
            raise SettingError("amp", f"unknown amp {self.amp!r} (use {', '.join(AMP_MODES)})", ("amp",))
        positive = ("batch", "crop", "log_every", "ckpt_every", "keep", "val_every", "max_nan_steps",
                    "hsd_t_max", "disc_channels")
        for k in positive:
            if getattr(self, k) < 1:
                raise SettingError(k, f"{k} must be >= 1, got {getattr(self, k)}")
        for k in ("steps", "micro_batch", "pool", "workers", "warmup", "val_max"):
            if getattr(self, k) < 0:
                raise SettingError(k, f"{k} must be >= 0, got {getattr(self, k)}")
        if self.crop % 4 or self.crop < 32:
            raise SettingError("crop", f"crop must be a multiple of 4 and at least 32, got {self.crop}")
        # a rate or weight of inf/nan trains a NaN student that nothing else would stop
        for k in ("lr", "disc_lr"):
            if not (math.isfinite(getattr(self, k)) and getattr(self, k) > 0):
                raise SettingError(k, f"{k} must be a finite number > 0, got {getattr(self, k)}")
        for k in ("weight_decay", "clip_grad"):
            if not (math.isfinite(getattr(self, k)) and getattr(self, k) >= 0):
                raise SettingError(k, f"{k} must be a finite number >= 0, got {getattr(self, k)}")
        if not 0 <= self.ema_rate < 1:
            raise SettingError("ema_rate", f"ema_rate must be in [0, 1), got {self.ema_rate}")
        resolve_seed(self.seed)  # the seed rule of every command (0..2^63-1)
        if self.crop_mode not in CROP_MODES:
            raise SettingError("crop_mode", f"unknown crop_mode {self.crop_mode!r} (use {', '.join(CROP_MODES)})", ("crop_mode",))
        if self.hsd_reference not in REFERENCES:
            raise ValueError(f"unknown HSD reference {self.hsd_reference!r} (use {', '.join(REFERENCES)})")
        if self.hsd_omega not in OMEGAS:
            raise ValueError(f"unknown HSD weighting {self.hsd_omega!r} (use {', '.join(OMEGAS)})")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["halve_at"] = list(self.halve_at)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DistillConfig":
        """From :meth:`to_dict`, also of an earlier version's checkpoint (see ``LossWeights.from_dict``)."""
        kw = {k: v for k, v in d.items() if k not in _DROPPED}
        kw["halve_at"] = tuple(kw.get("halve_at", ()))
        kw["weights"] = LossWeights.from_dict(kw.get("weights", {}))
        return cls(**kw)


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


__all__ = ["AMP_MODES", "DistillConfig", "learning_rate", "schedule_warnings"]
