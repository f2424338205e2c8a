"""Device and dtype resolution: the one place that asks torch about CUDA/MPS."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from .errors import one_line

#: the dtype names users type (``--dtype``, ``--amp``, reports): the one table of them
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: the reduced-precision dtypes (a NaN in one of them earns an fp32 retry)
HALF_DTYPES = (torch.float16, torch.bfloat16)
_ALIASES = {"float32": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16"}


def dtype_name(dtype: torch.dtype) -> str:
    """``fp32`` / ``fp16`` / ``bf16`` (torch's own name for any other dtype): the names users type."""
    return next((name for name, d in DTYPES.items() if d == dtype), str(dtype))


def dtype_from_name(name: str) -> torch.dtype:
    """The dtype a name in :data:`DTYPES` (or torch's spelling: ``float16``, ``half``...) means;
    ``ValueError`` naming the choices of ``--dtype`` otherwise (the one free-text use)."""
    if not isinstance(name, str):
        raise TypeError(f"dtype must be a torch.dtype or a name (auto, fp32, fp16, bf16), got {name!r}")
    key = name.strip().lower()
    try:
        return DTYPES[_ALIASES.get(key, key)]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r} (use auto, fp32, fp16 or bf16)") from None


def as_dtype(value: str | torch.dtype) -> torch.dtype:
    """A torch dtype, or the dtype a name means (:func:`dtype_from_name`), for the APIs that
    take either (``SRPipeline.to``, ``plan.make_plan``). ``auto`` is refused: it depends on a
    device, which only :func:`resolve_dtype` is given."""
    if isinstance(value, torch.dtype):
        return value
    if isinstance(value, str) and value.strip().lower() == "auto":
        raise ValueError("dtype 'auto' depends on the device: pass it to load_pipeline, or name fp32, fp16 or bf16")
    return dtype_from_name(value)


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto`` -> cuda if available, else mps, else cpu. Raises ValueError on unusable names."""
    if isinstance(name, torch.device):
        return name
    if name is None or name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise ValueError("device 'mps' requested but MPS is not available")
    return dev


#: CPU flags of native bf16 arithmetic: AMX tiles (Sapphire Rapids+) or AVX512-BF16 dot products
#: (Cooper Lake, Zen 4+). Without them torch emulates bf16 and it is slower than fp32.
_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
#: "1"/"0" forces auto's CPU choice (containers and VMs sometimes hide or misreport flags)
BF16_ENV = "SINSR_CPU_BF16"


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The ``flags`` of the first CPU in ``cpuinfo`` (empty where there is no such file)."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """True where bf16 matmuls and convs run natively (``SINSR_CPU_BF16`` overrides)."""
    forced = os.environ.get(BF16_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in _BF16_FLAGS)


def resolve_dtype(name: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``auto`` -> fp16 on CUDA, bf16 on CPUs with native bf16, else fp32.

    bf16 on an AMX or AVX512-BF16 CPU runs the convolutions at 2-6x the fp32 rate; elsewhere it
    is emulated and slower, so ``auto`` keeps fp32 there. ``fp32`` is always the parity path.
    """
    if name is None or (isinstance(name, str) and name.strip().lower() == "auto"):
        if device.type == "cuda":
            return torch.float16
        if device.type == "cpu" and cpu_has_native_bf16():
            return torch.bfloat16
        return torch.float32
    return as_dtype(name)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded with ``seed`` (an int: seeds are made by ``plan.resolve_seed``)."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels (for honest timings)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


# --------------------------------------------------------------------------- memory


#: Messages of allocation failures that do not arrive as ``torch.OutOfMemoryError``: cuBLAS
#: (``cublasCreate`` needs memory for its workspace), cuDNN (plans and workspaces; torch says
#: "Unable to find a valid cuDNN algorithm" when every algorithm's workspace failed), cuFFT,
#: cuSOLVER/cuSPARSE, a raw ``cudaMalloc`` outside the caching allocator ("CUDA error: out of
#: memory"), MPS, and torch's CPU allocator (host RAM: tiles help there too). Status codes that are only *sometimes* memory
#: (CUBLAS_STATUS_NOT_INITIALIZED, CUDNN_STATUS_INTERNAL_ERROR) are left out: retrying those with
#: smaller tiles would hide a broken install behind minutes of futile retries.
_OOM_MARKERS = (
    "out of memory",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_ALLOC_FAILED",
    "CUFFT_ALLOC_FAILED",
    "CUSOLVER_STATUS_ALLOC_FAILED",
    "CUSPARSE_STATUS_ALLOC_FAILED",
    "Unable to find a valid cuDNN algorithm",
    "cudaErrorMemoryAllocation",
    "DefaultCPUAllocator",
)


def is_oom_error(err: BaseException) -> bool:
    """True for an out-of-memory error: torch's typed one, or a library allocation failure.

    Library failures come as ``RuntimeError`` (``torch.AcceleratorError`` is one) whose message
    names the status (see ``_OOM_MARKERS``). ``MemoryError`` (Python/numpy) is not included.
    """
    oom_type = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    if isinstance(err, oom_type):
        return True
    if not isinstance(err, RuntimeError):
        return False
    text = str(err)
    return any(m in text for m in _OOM_MARKERS)


def free_memory(device: torch.device | str, *, host: bool = False) -> int | None:
    """Free bytes on ``device``: CUDA's ``mem_get_info``; elsewhere, with ``host``, the host's
    available RAM (CPU and MPS draw on it), else None (torch cannot tell)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return available_ram() if host else None


def available_ram() -> int | None:
    """The host's available RAM in bytes (``MemAvailable``, else ``SC_AVPHYS_PAGES``); None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def release_cached_memory(device: torch.device | str) -> None:
    """Collect garbage and hand the allocator's cached blocks back (before a retry, after a failure)."""
    import gc

    device = torch.device(device)
    gc.collect()
    if device.type == "cuda" and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()


# --------------------------------------------------------------------------- fp32 precision

#: ``(backend module path, attribute)`` of every float32 precision switch of torch >= 2.9; each
#: takes "ieee" (true fp32) or a reduced mode ("tf32" on CUDA, "bf16"/"tf32" for oneDNN on CPU)
_FP32_SWITCHES = (
    ("cuda.matmul", "fp32_precision"),
    ("cudnn.conv", "fp32_precision"),
    ("mkldnn.matmul", "fp32_precision"),
    ("mkldnn.conv", "fp32_precision"),
)


def _backend(path: str):
    obj = torch.backends
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _new_precision_api() -> bool:
    return isinstance(getattr(_backend("cuda.matmul"), "fp32_precision", None), str)


@contextmanager
def exact_fp32() -> Iterator[None]:
    """Run float32 matmuls and convolutions in true IEEE fp32 inside the block (no TF32/bf16).

    On Ampere and later GPUs cuDNN convolutions run in TF32 by default (10-bit mantissa: ~1e-3
    relative), and a user may enable TF32 matmuls globally: fine for the fast path, wrong for
    parity checks and for the codebook's nearest-code search (a rounded distance flips codes).
    The previous settings are restored on exit. Uses torch's ``fp32_precision`` switches where
    they exist (torch >= 2.9; mixing them with the legacy ``allow_tf32`` flags makes torch raise),
    else the legacy flags.
    """
    if _new_precision_api():
        saved = []
        for path, attr in _FP32_SWITCHES:
            mod = _backend(path)
            if mod is not None and isinstance(getattr(mod, attr, None), str):
                saved.append((mod, attr, getattr(mod, attr)))
                setattr(mod, attr, "ieee")
        try:
            yield
        finally:
            for mod, attr, value in reversed(saved):
                setattr(mod, attr, value)
        return
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def precision_flags() -> dict[str, object]:
    """The settings a CUDA timing depends on: TF32 for matmul/conv and ``cudnn.benchmark``."""
    out: dict[str, object] = {"cudnn_benchmark": bool(torch.backends.cudnn.benchmark)}
    if _new_precision_api():
        for path, attr in _FP32_SWITCHES[:2]:
            mod = _backend(path)
            out[f"{path.replace('.', '_')}_fp32_precision"] = getattr(mod, attr, None)
        return out
    try:
        out["cuda_matmul_allow_tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
        out["cudnn_allow_tf32"] = bool(torch.backends.cudnn.allow_tf32)
    except RuntimeError as e:  # torch refuses to read flags set through both APIs
        out["tf32"] = f"unreadable: {one_line(e, 80)}"
    return out


@contextmanager
def cudnn_autotune(enabled: bool = True) -> Iterator[None]:
    """``cudnn.benchmark`` inside the block: autotune each conv shape once, then reuse.

    Worth it when many calls share one shape (equal tiles); costly when every call has a new
    shape (a folder of untiled images of different sizes), so it is scoped, not global.
    """
    if not enabled:
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before
