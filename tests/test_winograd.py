"""Winograd F(4x4, 3x3) convolutions: equal to the direct conv, and used only where they pay."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sinsr_cli.nn import winograd
from sinsr_cli.nn.winograd import Conv3x3, winograd_conv3x3, winograd_weight


def _cl(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(
    "b,ci,co,h,w,band",
    [(1, 3, 5, 7, 9, 100), (2, 8, 6, 10, 12, 1 << 21), (2, 16, 16, 1, 1, 64), (1, 4, 4, 2, 3, 1),
     (3, 6, 2, 13, 6, 500), (1, 5, 7, 4, 8, 300), (1, 128, 64, 17, 5, 3000)],
)
def test_equals_the_direct_conv(b, ci, co, h, w, band):
    """Sides that are and are not multiples of 4, 1-pixel maps, batches, one band or many (the
    short last band too). F(4x4, 3x3) rounds a few times worse than the direct conv (seen up to
    7e-6 of the output's range with unit-variance weights and maps): bound it at 2e-5."""
    g = torch.Generator().manual_seed(ci * h + w)
    x = _cl(torch.randn(b, ci, h, w, generator=g))
    wt, bias = torch.randn(co, ci, 3, 3, generator=g), torch.randn(co, generator=g)
    ref = F.conv2d(x.double(), wt.double(), bias.double(), padding=1)
    out = winograd_conv3x3(x, winograd_weight(wt), bias, band_elements=band)
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last)
    atol = 2e-5 * ref.abs().max().item()
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=atol)
    nobias = winograd_conv3x3(x, winograd_weight(wt), None, band_elements=band)
    torch.testing.assert_close(nobias.double(), ref - bias.double()[:, None, None], rtol=0, atol=atol)


def test_weight_transform_is_g_w_gt():
    w = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    g = torch.tensor([[float(v) for v in row] for row in winograd._G], dtype=torch.float64)
    u = winograd_weight(w).view(6, 6, 3, 2)
    torch.testing.assert_close(u[:, :, 1, 0], g @ w[0, 1] @ g.T)


def test_conv3x3_takes_winograd_only_where_it_pays(monkeypatch):
    big, small = Conv3x3(256, 256), Conv3x3(64, 256)
    x = _cl(torch.randn(1, 256, 4, 4))
    assert list(big.state_dict()) == list(torch.nn.Conv2d(256, 256, 3, padding=1).state_dict())
    with torch.no_grad():
        assert big.uses_winograd(x)
        assert not big.uses_winograd(x.contiguous())  # NCHW: oneDNN's own layout
        assert not big.uses_winograd(x.bfloat16())  # halving and adding in bf16 loses bits
        assert not small.uses_winograd(_cl(torch.randn(1, 64, 4, 4)))  # 64 channels: not measured faster
    assert not big.uses_winograd(x)  # autograd: the plain conv
    with torch.inference_mode():
        assert big.uses_winograd(x)
        torch.testing.assert_close(big(x), F.conv2d(x, big.weight, big.bias, padding=1), rtol=0, atol=1e-4)


def test_conv3x3_sees_weight_changes():
    """The cached transform follows in-place updates and load_state_dict."""
    conv = Conv3x3(256, 256)
    x = _cl(torch.randn(1, 256, 6, 6))
    with torch.no_grad():
        conv(x)
        conv.weight.mul_(2)
        torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, conv.bias, padding=1), rtol=0, atol=1e-4)
        conv.load_state_dict({"weight": torch.randn(256, 256, 3, 3) * 0.02, "bias": torch.zeros(256)})
        torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, conv.bias, padding=1), rtol=0, atol=1e-4)


def _forced_parity(monkeypatch, fixture: Path) -> None:
    """Run a parity fixture with every 3x3 ResBlock conv (UNet and VQ) forced onto Winograd."""
    from sinsr_cli.parity import run_fixture

    calls = []
    real = winograd.winograd_conv3x3
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 0)
    monkeypatch.setattr(winograd, "winograd_conv3x3", lambda *a, **k: calls.append(1) or real(*a, **k))
    rep = run_fixture(fixture)
    assert calls, "the fixture's convs did not take the Winograd path"
    assert rep["ok"], {k: v for k, v in rep["errors"].items() if not v.get("ok")}


def test_vq_parity_holds_with_winograd_in_every_block(monkeypatch):
    """The official-code autoencoder fixture (tests/fixtures) stays within the parity bounds."""
    _forced_parity(monkeypatch, Path(__file__).parent / "fixtures" / "vq_small.safetensors")


def test_full_parity_holds_with_winograd_in_every_block(monkeypatch, reference_dir):
    """The official-code UNet + VQ + sampler fixture (../shared/reference) likewise."""
    _forced_parity(monkeypatch, reference_dir / "parity_small.safetensors")


def test_pending_cache_bytes_counts_kernels_until_cached():
    """What a memory budget must reserve before the first call: 36 * Cin * Cout floats per
    Winograd conv, nothing for direct convs, nothing once the kernel is cached."""
    model = torch.nn.Sequential(Conv3x3(128, 256), Conv3x3(64, 128), torch.nn.Conv2d(256, 256, 3))
    assert winograd.pending_cache_bytes(model) == 36 * 128 * 256 * 4
    with torch.inference_mode():
        model[0](_cl(torch.randn(1, 128, 4, 4)))
    assert winograd.pending_cache_bytes(model) == 0
    with torch.no_grad():
        model[0].weight.mul_(2)  # a changed weight: its kernel is transformed again
    assert winograd.pending_cache_bytes(model) == 36 * 128 * 256 * 4
    assert winograd.pending_cache_bytes(model.bfloat16()) == 0  # bf16 keeps the direct conv
