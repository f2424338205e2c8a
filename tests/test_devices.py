"""Device helpers: the out-of-memory classifier, fp32 precision switches, cached memory."""

from __future__ import annotations

import pytest
import torch

from sinsr_cli.devices import cudnn_autotune, exact_fp32, is_oom_error, precision_flags, release_cached_memory

#: messages as torch raises them (CUDA ones copied from real reports; the CPU one is live below)
OOM_MESSAGES = [
    "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total capacity; 5.12 GiB already allocated)",
    "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
    "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
    "Unable to find a valid cuDNN algorithm to run convolution",
    "CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported at some other API call, "
    "so the stacktrace below might be incorrect.",
    "cuFFT error: CUFFT_ALLOC_FAILED",
    "MPS backend out of memory (MPS allocated: 17.00 GB, other allocations: 1.02 GB, max allowed: 18.13 GB).",
    "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to "
    "allocate 100000000000000 bytes. Error code 12 (Cannot allocate memory)",
    "[enforce fail at C:\\actions-runner\\_work\\pytorch\\c10\\core\\impl\\alloc_cpu.cpp:72] data. "
    "DefaultCPUAllocator: not enough memory: you tried to allocate 4294967296 bytes.",
]
NOT_OOM = [
    "CUDA error: device-side assert triggered",
    "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error may appear if you passed in a non-contiguous input.",
    "CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling `cublasCreate(handle)`",
    "expected scalar type Half but found Float",
]


@pytest.mark.parametrize("message", OOM_MESSAGES)
def test_allocation_failures_are_out_of_memory(message):
    assert is_oom_error(RuntimeError(message))


def test_typed_out_of_memory_and_a_live_cpu_allocation_failure():
    assert is_oom_error(torch.OutOfMemoryError("CUDA out of memory."))
    with pytest.raises(RuntimeError) as info:
        torch.empty(2**62, dtype=torch.uint8)  # more than any address space
    assert is_oom_error(info.value)


@pytest.mark.parametrize("message", NOT_OOM)
def test_other_errors_are_not_out_of_memory(message):
    assert not is_oom_error(RuntimeError(message))


def test_only_runtime_errors_are_classified():
    assert not is_oom_error(ValueError("out of memory"))
    assert not is_oom_error(MemoryError())


def _fp32_modes() -> dict[str, str]:
    b = torch.backends
    return {"matmul": b.cuda.matmul.fp32_precision, "conv": b.cudnn.conv.fp32_precision}


@pytest.mark.skipif(not hasattr(torch.backends.cuda.matmul, "fp32_precision"), reason="torch < 2.9: legacy flags")
def test_exact_fp32_turns_tf32_off_and_restores():
    b = torch.backends
    before = _fp32_modes()
    b.cuda.matmul.fp32_precision = "tf32"  # as torch.set_float32_matmul_precision("high") would
    try:
        with exact_fp32():
            assert _fp32_modes() == {"matmul": "ieee", "conv": "ieee"}
            assert precision_flags()["cuda_matmul_fp32_precision"] == "ieee"
            assert b.mkldnn.matmul.fp32_precision == "ieee"
        assert _fp32_modes() == {**before, "matmul": "tf32"}
    finally:
        b.cuda.matmul.fp32_precision = before["matmul"]


def test_exact_fp32_restores_after_an_error():
    before = precision_flags()
    with pytest.raises(KeyError), exact_fp32():
        raise KeyError("x")
    assert precision_flags() == before


def test_cudnn_autotune_is_scoped():
    before = torch.backends.cudnn.benchmark
    with cudnn_autotune(True):
        assert torch.backends.cudnn.benchmark is True
        assert precision_flags()["cudnn_benchmark"] is True
    with cudnn_autotune(False):
        assert torch.backends.cudnn.benchmark == before
    assert torch.backends.cudnn.benchmark == before


def test_release_cached_memory_runs_on_any_device():
    release_cached_memory("cpu")
    release_cached_memory(torch.device("cpu"))


def test_dtype_names_come_from_one_table() -> None:
    from sinsr_cli.devices import DTYPES, dtype_from_name, dtype_name, resolve_dtype

    for name, dtype in DTYPES.items():
        assert dtype_name(dtype) == name and dtype_from_name(name) is dtype
    assert dtype_from_name("Half") is torch.float16 and dtype_from_name("bfloat16") is torch.bfloat16
    assert dtype_name(torch.float64) == "torch.float64"
    assert resolve_dtype("float32", torch.device("cpu")) is torch.float32
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        resolve_dtype("int8", torch.device("cpu"))
