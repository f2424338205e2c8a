"""What a run writes as it goes: ``OUT/log.jsonl`` (and TensorBoard), from running means.

One record per ``log_every`` steps: the mean of each logged term over the window (and over
micro-batches and processes), the rate, the mean gradient norm, seconds per iteration and the
skipped steps; plus ``{"event": "val" | "resume", ...}`` lines. Only rank 0 writes.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import one_line

#: ``on_event(kind, info)``: kinds "start", "step", "log", "val", "ckpt", "skip", "warning", "end"
EventFn = Callable[[str, dict], None]


class RunningMeans:
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


class RunLog:
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
                    emit("warning", {"message": f"TensorBoard disabled: {one_line(e, typed=True)}"})

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


__all__ = ["EventFn", "RunningMeans", "RunLog"]
