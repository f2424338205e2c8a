"""The chunked global attention equals torch's SDPA; the kernel choice per device and dtype."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sinsr_cli.nn.attention import attention_kernel, chunked_attention, global_attention, query_chunk


@pytest.mark.parametrize("n", [1, 63, 700, 4097])
def test_chunked_equals_sdpa_in_float32(n):
    g = torch.Generator().manual_seed(n)
    q, k, v = (torch.randn(2, 1, n, 24, generator=g) * 3 for _ in range(3))
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double())
    out = chunked_attention(q, k, v)
    assert out.shape == ref.shape and out.dtype == torch.float32
    own = (F.scaled_dot_product_attention(q, k, v).double() - ref).abs().max().item()
    assert (out.double() - ref).abs().max().item() <= 3 * own + 1e-6  # float32 rounding, as the flash kernel


def test_chunked_accepts_strided_views_like_the_fused_qkv():
    qkv = torch.randn(1, 1, 300, 3 * 16)
    q, k, v = qkv.chunk(3, dim=-1)  # row stride 3C, as AttnBlock makes them
    torch.testing.assert_close(chunked_attention(q, k, v), F.scaled_dot_product_attention(q, k, v), rtol=0, atol=2e-6)


def test_bf16_chunked_is_close_to_float32():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, 1500, 64, generator=g) for _ in range(3))
    ref = F.scaled_dot_product_attention(q, k, v)
    out = global_attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.03  # bf16 has 8 bits of mantissa: ~4e-3 relative


def test_kernel_choice_and_chunk_bounds():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert attention_kernel(cpu, torch.bfloat16) == "chunked"
    assert attention_kernel(cpu, torch.float16) == "chunked"
    assert attention_kernel(cpu, torch.float32) == "sdpa"  # the parity path keeps the flash kernel
    assert attention_kernel(cuda, torch.float16) == "sdpa"
    for n in (1, 100, 4096, 16384, 10**6):
        c = query_chunk(n)
        assert 64 <= c <= 256 and c % 64 == 0
    assert query_chunk(16384) == 256 and query_chunk(512 * 512) * 512 * 512 <= 1 << 25
    with pytest.raises(ValueError, match="unknown attention kernel"):
        global_attention(*(torch.zeros(1, 1, 4, 4),) * 3, kernel="xformers")


def test_chunked_bf16_equals_the_unbuffered_form_bitwise():
    """Reused score buffers change nothing: every chunk (the short last one too, batch > 1) as plain ops."""
    g = torch.Generator().manual_seed(3)
    n = 2 * query_chunk(600) + 37
    q, k, v = (torch.randn(2, 1, n, 32, generator=g).bfloat16() for _ in range(3))
    out = chunked_attention(q, k, v)
    step, ref = query_chunk(n), []
    kt = k.transpose(-2, -1).contiguous()  # as the kernel lays it out: a strided k takes another
    # GEMM kernel on some CPUs (AVX2), whose bf16 rounding differs in the last bit
    for s in range(0, n, step):
        scores = (q[..., s : s + step, :] * 32**-0.5) @ kt
        ref.append(torch.softmax(scores, dim=-1) @ v)
    assert torch.equal(out, torch.cat(ref, dim=-2))
