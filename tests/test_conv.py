"""nn.conv: the folded nearest-x2 upsample + 3x3 conv equals the two-step form, in any band split."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sinsr_cli.nn.conv import is_channels_last, upsample_conv3x3


@pytest.mark.parametrize(
    "b,ci,co,h,w,band",
    [(1, 3, 5, 7, 9, 1 << 23), (2, 4, 6, 10, 5, 1), (1, 8, 8, 13, 11, 4 * 8 * 12 * 3), (3, 2, 3, 1, 1, 7)],
)
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("with_bias", [True, False])
def test_upsample_conv_equals_nearest_then_conv(b, ci, co, h, w, band, channels_last, with_bias):
    """One band, one row per band, a short last band, 1x1 maps; the output keeps x's layout."""
    g = torch.Generator().manual_seed(h * w + ci)
    x = torch.randn(b, ci, h, w, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    wt = torch.randn(co, ci, 3, 3, generator=g)
    bias = torch.randn(co, generator=g) if with_bias else None
    ref = F.conv2d(F.interpolate(x.double(), scale_factor=2, mode="nearest"), wt.double(),
                   None if bias is None else bias.double(), padding=1)
    out = upsample_conv3x3(x, wt, bias, band_elements=band)
    assert out.shape == ref.shape
    layout = torch.channels_last if is_channels_last(x) else torch.contiguous_format  # 1x1 maps are both
    assert out.is_contiguous(memory_format=layout)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-5 * ref.abs().max().item())
