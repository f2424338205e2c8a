"""Global single-head attention over every position (the VQ mid block), by the fastest kernel.

torch's CPU flash kernel runs bf16 no faster than fp32 (~165 GFLOP/s on a 2-core AVX512-BF16
host at 16,384 tokens x 512 channels), while a bf16 GEMM there runs at ~370. In bf16/fp16 on the
CPU the scores are therefore computed in query chunks as plain GEMMs, with the softmax of each
chunk accumulated in float32 inside torch's kernel: 1.9x the flash kernel at that size, and the
score memory stays bounded (at most ``_SCORE_ELEMENTS`` per chunk) instead of (HW)^2. float32 keeps the
flash kernel (the parity path; fp32 GEMMs are no faster than it), and so does CUDA, where
``benchmarks/gpu_check.py`` measures both kernels for the head dim of 512.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: 256 queries per chunk measured fastest at 16k and 37k tokens (64: 0.65x, 1024: 0.8x); the
#: score block is capped at 32 Mi elements (64 MiB in bf16) for very large inputs
_SCORE_ELEMENTS = 1 << 25
_MIN_CHUNK, _MAX_CHUNK = 64, 256


def attention_kernel(device: torch.device, dtype: torch.dtype) -> str:
    """``"chunked"`` (GEMM-softmax-GEMM in query chunks) or ``"sdpa"`` for this device and dtype."""
    if device.type == "cpu" and dtype in (torch.bfloat16, torch.float16):
        return "chunked"
    return "sdpa"


def query_chunk(tokens: int) -> int:
    """Queries per chunk for ``tokens`` keys: 256, fewer where that exceeds ``_SCORE_ELEMENTS``."""
    return max(_MIN_CHUNK, min(_MAX_CHUNK, _SCORE_ELEMENTS // max(tokens, 1) // 64 * 64))


def chunked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T / sqrt(C)) v`` for ``[..., N, C]`` inputs, ``query_chunk(N)`` rows at a time."""
    n, c = q.shape[-2:]
    q = q * c**-0.5  # scale the N x C queries, not the N x N scores
    kt = k.transpose(-2, -1).contiguous()  # once: a strided k would be copied by every chunk's GEMM
    v = v.contiguous()
    out = torch.empty(q.shape[:-1] + (v.shape[-1],), dtype=q.dtype, device=q.device)
    step = query_chunk(k.shape[-2])
    # Score and probability blocks are allocated once and reused by every full chunk. At 65k
    # tokens a block is 32 MiB, glibc's largest dynamic mmap threshold: fresh blocks per chunk
    # were mmapped, page-faulted and unmapped each time, which cost 20-25% of the attention.
    scores = torch.empty(q.shape[:-2] + (step, kt.shape[-1]), dtype=q.dtype, device=q.device)
    probs = torch.empty_like(scores)
    for s in range(0, n, step):
        if s + step > n:  # the last, shorter chunk: its own (smaller) blocks
            scores = scores.new_empty(scores.shape[:-2] + (n - s, scores.shape[-1]))
            probs = torch.empty_like(scores)
        torch.matmul(q[..., s : s + step, :], kt, out=scores)
        torch.ops.aten._softmax.out(scores, -1, False, out=probs)  # torch.softmax, into probs
        torch.matmul(probs, v, out=out[..., s : s + step, :])
    return out


def global_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: str | None = None) -> torch.Tensor:
    """Attention of ``[B, 1, N, C]`` queries/keys/values (scale ``C^-0.5``), by ``kernel``.

    ``kernel`` None picks :func:`attention_kernel` for the inputs' device and dtype.
    """
    kernel = kernel or attention_kernel(q.device, q.dtype)
    if kernel == "chunked":
        return chunked_attention(q, k, v)
    if kernel != "sdpa":
        raise ValueError(f"unknown attention kernel {kernel!r} (use chunked or sdpa)")
    # unit last stride and 4-D: the flash kernel on CPU, never the (HW)^2 matrix
    return F.scaled_dot_product_attention(q, k, v)
