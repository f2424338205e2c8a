"""Speed and memory measurement for ``sinsr bench``, and the environment a report records.

Peak memory is measured per run:

* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensors only,
  not the caching allocator's reserve or the CUDA context), less the ``excluded`` bytes that
  stay resident but are not the SR path's (the learned metrics' models) -> kind
  ``"cuda-max-allocated"``;
* CPU/MPS on Linux: the process's peak resident set (``VmHWM``), reset between runs through
  ``/proc/self/clear_refs`` -> kind ``"peak-rss"`` (includes Python, torch and cached images);
* elsewhere: ``getrusage`` ``ru_maxrss``, which cannot be reset, so it is the process's peak
  so far -> kind ``"peak-rss-process"``.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..devices import dtype_name, synchronize

__all__ = ["PeakMemory", "Stopwatch", "device_name", "environment"]

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def device_name(device: torch.device) -> str:
    """A human name for the hardware: the GPU's name, or the CPU model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def environment(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """What the timings depend on: device, dtype, versions, threads."""
    env: dict[str, Any] = {
        "device": str(device),
        "device_name": device_name(device),
        "dtype": dtype_name(dtype),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "sinsr": __version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
    return env


class Stopwatch:
    """Wall-clock seconds around device work: synchronises before reading the clock."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._t0 = 0.0

    def start(self) -> None:
        synchronize(self.device)
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        synchronize(self.device)
        return time.perf_counter() - self._t0


def _vm_hwm() -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _ru_maxrss() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


class PeakMemory:
    """Peak memory of one run (see the module docstring for what each kind means)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.excluded = 0  # resident CUDA bytes that are not the measured work's (see read)
        if device.type == "cuda":
            self.kind = "cuda-max-allocated"
        elif _vm_hwm() is not None and os.access(_CLEAR_REFS, os.W_OK):
            self.kind = "peak-rss"
        else:
            self.kind = "peak-rss-process"

    def reset(self) -> None:
        if self.kind == "cuda-max-allocated":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.kind == "peak-rss":
            try:
                _CLEAR_REFS.write_text("5")  # 5: reset the peak RSS to the current RSS
            except OSError:
                self.kind = "peak-rss-process"

    def allocated(self) -> int:
        """Bytes of CUDA tensors alive now (0 for the RSS kinds)."""
        if self.kind == "cuda-max-allocated":
            synchronize(self.device)
            return int(torch.cuda.memory_allocated(self.device))
        return 0

    def read(self) -> int:
        """Peak bytes since :meth:`reset` (on CUDA less :attr:`excluded`)."""
        if self.kind == "cuda-max-allocated":
            synchronize(self.device)
            return max(0, int(torch.cuda.max_memory_allocated(self.device)) - self.excluded)
        if self.kind == "peak-rss":
            hwm = _vm_hwm()
            if hwm is not None:
                return hwm
        return _ru_maxrss()
