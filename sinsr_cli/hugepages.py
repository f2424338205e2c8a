"""Transparent huge pages for torch's CPU tensors: a photo's working set faulted in 2 MiB at a time.

glibc hands every freed block of more than 32 MiB straight back to the kernel, so each model
call on the CPU maps its gigabytes of feature maps afresh and the kernel faults (and zeroes)
them in 4 KiB pages: 3.4 million faults and 12-16 s of system time for one lq 128 call of
``sinsr upscale`` on a 2-core host. With ``THP_MEM_ALLOC_ENABLE=1`` torch's CPU allocator
marks every block of 2 MiB and more ``madvise(MADV_HUGEPAGE)``: 0.6 million faults, half the
system time, 1.1-1.2x the whole call (docs/performance.md), the same peak RSS.

torch reads the variable once, at its first CPU allocation (during ``import torch``), so it has
to be set before torch is imported: the CLI's entry point does it first thing; library users
call :func:`enable_huge_pages` before their own ``import torch`` (or set the variable). This
module must not import torch.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path

__all__ = ["ENV", "THP_SYSFS", "enable_huge_pages", "thp_mode"]

#: the variable torch's CPU allocator (c10 ``alloc_cpu``) reads
ENV = "THP_MEM_ALLOC_ENABLE"

#: the kernel's THP policy: ``always [madvise] never``, the bracketed one in force
THP_SYSFS = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def thp_mode(sysfs: Path = THP_SYSFS) -> str | None:
    """The kernel's THP policy (``always``, ``madvise`` or ``never``), None without THP (or Linux)."""
    try:
        text = sysfs.read_text()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else None


#: the environment this process started with (``os.environ`` changes do not reach it)
STARTUP_ENVIRON = Path("/proc/self/environ")

#: set when this process asked for huge pages before torch was imported (so torch took them)
_enabled_before_torch = False


def _set_at_startup(path: Path) -> bool:
    """Whether ``THP_MEM_ALLOC_ENABLE=1`` was in the environment the process started with."""
    try:
        return f"{ENV}=1".encode() in path.read_bytes().split(b"\0")
    except OSError:
        return False


def enable_huge_pages(
    environ: MutableMapping[str, str] = os.environ,
    *,
    sysfs: Path = THP_SYSFS,
    modules: Mapping[str, object] = sys.modules,
    startup: Path = STARTUP_ENVIRON,
) -> bool:
    """Ask torch for huge-page CPU tensors; True when they will be (or are) used in this process.

    A value the user set (``THP_MEM_ALLOC_ENABLE=0`` opts out) is left alone. Nothing is set
    where the kernel has no THP or its policy is ``never`` (torch would warn that ``madvise``
    failed), or once torch is imported (too late to take effect). Called again after
    ``import torch``, it still says True when the variable was in force before torch read it
    (set by an earlier call, or in the environment the process started with). Child processes
    inherit it.
    """
    global _enabled_before_torch
    torch_loaded = "torch" in modules
    if ENV in environ:
        on = environ[ENV] == "1"
        if not torch_loaded:
            if on and environ is os.environ:
                _enabled_before_torch = True
            return on
        return on and environ is os.environ and (_enabled_before_torch or _set_at_startup(startup))
    if torch_loaded or thp_mode(sysfs) in (None, "never"):
        return False
    environ[ENV] = "1"
    if environ is os.environ:
        _enabled_before_torch = True
    return True
