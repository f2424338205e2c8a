"""A run's trainable state (:class:`TrainState`) and its checkpoint files.

Checkpoints (``OUT/checkpoints/step_XXXXXXXX.pt``) are written to a temporary file, fsynced and
renamed (atomic), and read with ``weights_only=True`` (no code runs). Format ``sinsr-distill/1``:
``student``, ``ema``, ``optimizer``, ``scaler``, ``disc``, ``disc_optimizer`` (None without the
adversarial term), ``step``, ``nan_streak``, ``skipped``, ``world``, ``rng`` (torch and CUDA
states), ``config`` (``DistillConfig.to_dict``), ``preset`` (the student's) and ``teacher`` (a
fingerprint of the teacher's weights, ``trainer.teacher_fingerprint``; None in older files).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..config import ModelPreset
from ..errors import SettingError
from ..models.checkpoints import load_torch_file
from ..files import atomic_path
from ..models.swin_unet import SwinUNet
from .config import DistillConfig
from ..distributed import DistInfo, barrier

CKPT_FORMAT = "sinsr-distill/1"
_CKPT_RE = re.compile(r"step_(\d+)\.pt$")


@dataclass
class TrainState:
    """Everything a step changes and a checkpoint restores: the student (unwrapped), its EMA, the
    optimiser and scaler, the discriminator and its optimiser (TAD-SR's adversarial term), and the
    counters (``step`` done, the current run of non-finite steps, the skipped steps in all)."""

    student: SwinUNet
    ema: SwinUNet
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    disc: nn.Module | None = None
    d_opt: torch.optim.Optimizer | None = None
    step: int = 0
    nan_streak: int = 0
    skipped: int = 0

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's training part (without format, config, preset and RNG)."""
        return {
            "step": self.step, "student": self.student.state_dict(), "ema": self.ema.state_dict(),
            "optimizer": self.opt.state_dict(), "scaler": self.scaler.state_dict(),
            "disc": self.disc.state_dict() if self.disc is not None else None,
            "disc_optimizer": self.d_opt.state_dict() if self.d_opt is not None else None,
            "nan_streak": self.nan_streak, "skipped": self.skipped,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from a checkpoint (:func:`read_checkpoint_state`), the RNG states included."""
        self.student.load_state_dict(state["student"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.disc is not None:
            if state.get("disc") is None:
                raise ValueError("this checkpoint has no discriminator: resume it without the adversarial term")
            self.disc.load_state_dict(state["disc"])
            assert self.d_opt is not None
            self.d_opt.load_state_dict(state["disc_optimizer"])
        self.step, self.nan_streak, self.skipped = int(state["step"]), int(state.get("nan_streak", 0)), int(state.get("skipped", 0))
        rng = state.get("rng") or {}
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])


def save_state(
    out_dir: Path, ts: TrainState, cfg: DistillConfig, preset: ModelPreset, info: DistInfo, teacher: str | None = None
) -> Path:
    """Rank 0 writes the checkpoint of ``ts.step`` (atomically) and prunes old ones; everyone waits.
    ``teacher``: the teacher's fingerprint, checked on resume."""
    path = checkpoint_path(out_dir, ts.step)
    if info.main:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        state = {"format": CKPT_FORMAT, **ts.state_dict(), "config": cfg.to_dict(), "preset": preset.to_dict(),
                 "world": info.world, "rng": rng, "teacher": teacher}
        save_checkpoint(path, state)
        prune_checkpoints(out_dir, cfg.keep)
    barrier(info)
    return path


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
        why = " (its run stopped before saving one)" if (p / "log.jsonl").exists() else ""
        raise FileNotFoundError(f"{p}: no checkpoints (checkpoints/step_*.pt) to resume from{why}")
    raise FileNotFoundError(f"{p}: no such checkpoint file or run directory")


def check_run_folder(out_dir: str | Path, resume: str | Path | None = None) -> None:
    """Refuse to start a run in a folder that holds another run's checkpoints or log: pruning
    by step number would delete the new run's checkpoints among the old ones, and ``--resume``
    of the folder would pick up either. ``resume``: the checkpoint this run continues; its own
    run folder is fine when it is that run's latest checkpoint (from an earlier one, the run
    would replace the later checkpoints with other weights)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SettingError("out", f"{out}: is a file, not a run folder")
    found = list_checkpoints(out)
    if resume is not None and _same_dir(out, Path(resume).parent.parent):
        if found and not _same_file(Path(resume), found[-1]):
            raise SettingError(
                "out", f"{out}: resuming from {Path(resume).name} would replace the run's later checkpoints "
                f"(up to {found[-1].name}); give a new --out folder for this branch of the run",
            )
        return
    if found:
        raise SettingError(
            "out", f"{out}: holds another run (checkpoints up to {found[-1].name}); continue it with --resume {out}, "
            "or start this run in a new --out folder",
        )
    if (out / "log.jsonl").exists():
        raise SettingError(
            "out", f"{out}: holds the log of a run that saved no checkpoint (nothing to resume); "
            f"delete {out / 'log.jsonl'} to start again there, or use a new --out folder",
        )


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def read_checkpoint_state(path: str | Path) -> dict[str, Any]:
    """Load a training checkpoint (``weights_only``: no code runs) and check its format."""
    path = find_checkpoint(path)
    state = load_torch_file(path, "training checkpoint")  # one-line reasons for text, images, truncation
    if not isinstance(state, dict) or state.get("format") != CKPT_FORMAT:
        raise ValueError(f"{path}: not a sinsr distill checkpoint")
    state["path"] = str(path)
    return state


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> Path:
    """``torch.save`` whole or not at all (``files.atomic_path``: temporary file, fsync, rename)."""
    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)
    return path


def prune_checkpoints(out_dir: Path, keep: int) -> None:
    """Keep the last ``keep`` checkpoints; drop temporaries a killed writer left behind."""
    for old in list_checkpoints(out_dir)[:-keep]:
        old.unlink(missing_ok=True)
    for tmp in (out_dir / "checkpoints").glob(".step_*.tmp"):
        tmp.unlink(missing_ok=True)


__all__ = [
    "CKPT_FORMAT",
    "TrainState",
    "save_state",
    "checkpoint_path",
    "list_checkpoints",
    "find_checkpoint",
    "check_run_folder",
    "read_checkpoint_state",
    "save_checkpoint",
    "prune_checkpoints",
]
