"""PSNR/SSIM on the BT.601 Y channel (pyiqa protocol) and the learned-metrics adapter."""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import DATA
from sinsr_cli.bench import metrics as M

skimage_metrics = pytest.importorskip("skimage.metrics")

SET5 = DATA / "set5"


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _noisy_pair(
    b: int, h: int, w: int, sigma: float = 0.1, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """HR uniform noise; SR = HR + Gaussian noise clamped to [0, 1] (positively correlated)."""
    g = _gen(seed)
    hr = torch.rand(b, 3, h, w, generator=g, dtype=torch.float64)
    sr = (hr + sigma * torch.randn(hr.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return sr, hr


def _y_np(x: torch.Tensor) -> np.ndarray:
    """[1, 3, H, W] -> H x W float64 Y in [0, 1] (unquantised)."""
    return M.rgb_to_y(x)[0, 0].numpy()


def _y255_np(x: torch.Tensor) -> np.ndarray:
    """[1, 3, H, W] -> H x W float64 Y on [0, 255], rounded as the SSIM protocol does."""
    return np.round(_y_np(x) * 255.0)


def _skimage_ssim(sr: torch.Tensor, hr: torch.Tensor) -> float:
    # skimage filters the whole image (reflect padding) but averages only the map cropped by the
    # filter radius (5 px for an 11-tap, sigma 1.5 window): exactly our 'valid' region. Same
    # window, constants and population covariance; the only difference is float summation order
    # (separable conv vs scipy's separable correlate), ~1e-13: atol 1e-9 leaves ample room.
    return skimage_metrics.structural_similarity(
        _y255_np(sr), _y255_np(hr), gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=255.0,
    )


def _skimage_psnr(sr: torch.Tensor, hr: torch.Tensor) -> float:
    return skimage_metrics.peak_signal_noise_ratio(_y_np(hr), _y_np(sr), data_range=1.0)


# ----------------------------------------------------------------------------- colour


@pytest.mark.parametrize(
    ("rgb", "expected_y255"),
    [
        ((0.0, 0.0, 0.0), 16.0),
        ((1.0, 1.0, 1.0), 235.0),
        ((1.0, 0.0, 0.0), 16.0 + 65.481),
        ((0.0, 1.0, 0.0), 16.0 + 128.553),
        ((0.0, 0.0, 1.0), 16.0 + 24.966),
        ((0.5, 0.25, 0.75), 16.0 + 65.481 * 0.5 + 128.553 * 0.25 + 24.966 * 0.75),
    ],
)
def test_rgb_to_y_is_bt601_studio_range(rgb, expected_y255):
    x = torch.tensor(rgb, dtype=torch.float64).view(1, 3, 1, 1).expand(2, 3, 4, 5)
    y = M.rgb_to_y(x)
    assert y.shape == (2, 1, 4, 5) and y.dtype == torch.float64
    torch.testing.assert_close(y, torch.full_like(y, expected_y255 / 255.0), rtol=0, atol=1e-15)


def test_gaussian_window_matches_fspecial():
    g = M.gaussian_window()
    assert g.shape == (11,) and g.dtype == torch.float64
    assert float(g.sum()) == pytest.approx(1.0, abs=1e-15)
    # fspecial('gaussian', 11, 1.5), computed directly in 2-D
    t = torch.arange(11, dtype=torch.float64) - 5
    h = torch.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * 1.5**2))
    torch.testing.assert_close(torch.outer(g, g), h / h.sum(), rtol=1e-14, atol=0)


# ----------------------------------------------------------------------------- hand-computed


def test_identical_images_psnr_inf_ssim_one():
    _, hr = _noisy_pair(3, 24, 31)
    assert torch.isinf(M.psnr_y(hr, hr)).all()
    ones = torch.ones(3, dtype=torch.float64)
    torch.testing.assert_close(M.ssim_y(hr, hr), ones, rtol=0, atol=1e-12)


@pytest.mark.parametrize("d", [1 / 255, 0.01, 0.1])
def test_constant_y_offset_gives_exact_psnr(d):
    g = _gen(1)
    hr = 0.2 + 0.5 * torch.rand(2, 3, 16, 20, generator=g, dtype=torch.float64)
    # Adding c to R, G and B adds c * 219/255 to Y: choose c for a Y offset of exactly d.
    sr = hr + d * 255.0 / 219.0
    expected = 10 * math.log10(1 / d**2)
    expected_t = torch.full((2,), expected, dtype=torch.float64)
    torch.testing.assert_close(M.psnr_y(sr, hr), expected_t, rtol=0, atol=1e-9)


def test_psnr_and_ssim_return_per_image_scores():
    sr, hr = _noisy_pair(2, 32, 32)
    sr[1] = hr[1]  # second image perfect
    p, s = M.psnr_y(sr, hr), M.ssim_y(sr, hr)
    assert p.shape == s.shape == (2,)
    assert math.isfinite(p[0]) and math.isinf(p[1])
    assert s[0] < 1 and s[1] == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(M.psnr_y(sr[:1], hr[:1]), p[:1])
    torch.testing.assert_close(M.ssim_y(sr[:1], hr[:1]), s[:1])


def test_float32_and_uint8_inputs_match_float64():
    sr, hr = _noisy_pair(1, 20, 24)
    sr8, hr8 = (sr * 255).round().to(torch.uint8), (hr * 255).round().to(torch.uint8)
    ref_p = M.psnr_y(sr8.double() / 255, hr8.double() / 255)
    ref_s = M.ssim_y(sr8.double() / 255, hr8.double() / 255)
    torch.testing.assert_close(M.psnr_y(sr8, hr8), ref_p)
    torch.testing.assert_close(M.ssim_y(sr8, hr8), ref_s)
    f32 = M.psnr_y(sr8.float() / 255, hr8.float() / 255)
    assert f32.dtype == torch.float64
    torch.testing.assert_close(f32, ref_p, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- skimage cross-check


@pytest.mark.parametrize(
    ("h", "w", "sigma", "seed"), [(32, 32, 0.05, 0), (41, 67, 0.1, 1), (64, 23, 0.2, 2)]
)
def test_psnr_and_ssim_match_skimage_on_random_images(h, w, sigma, seed):
    sr, hr = _noisy_pair(1, h, w, sigma, seed)
    # skimage has no clamp on the contrast-structure term: compare like for like only where
    # that clamp is inactive, and check it is.
    _, cs = M._ssim_terms(M._y255(sr), M._y255(hr))
    assert float(cs.min()) > 0
    assert float(M.psnr_y(sr, hr)[0]) == pytest.approx(_skimage_psnr(sr, hr), abs=1e-9)
    assert float(M.ssim_y(sr, hr)[0]) == pytest.approx(_skimage_ssim(sr, hr), abs=1e-9)


def test_ssim_clamps_negative_contrast_structure_like_pyiqa():
    _, hr = _noisy_pair(1, 40, 40)
    inverted = 1.0 - hr  # anti-correlated everywhere
    ours = float(M.ssim_y(inverted, hr)[0])
    assert _skimage_ssim(inverted, hr) < -0.5  # plain SSIM is strongly negative here
    assert 0.0 <= ours < 0.01  # pyiqa's relu on the cs map floors it at zero


def test_ssim_works_on_8bit_rounded_y():
    # Grey 8-bit pixels k/255 give Y*255 = 16 + 219k/255, at least 0.5/255 from a rounding tie;
    # a 1e-6 nudge moves Y*255 by 2.2e-4, so the rounded Y, hence SSIM, must not change.
    k = torch.randint(0, 255, (1, 1, 24, 24), generator=_gen(2)).double()  # k <= 254: +1e-6 <= 1
    hr = (k / 255).expand(1, 3, 24, 24)
    assert float(M.ssim_y(hr + 1e-6, hr)[0]) == 1.0
    assert float(M.psnr_y(hr + 1e-6, hr)[0]) < 200  # PSNR does not quantise


# ----------------------------------------------------------------------------- crop_border


def test_crop_border_crops_then_computes():
    sr, hr = _noisy_pair(2, 40, 48, 0.02)
    sr[..., :4, :] = 1 - hr[..., :4, :]  # damage only the border
    sr[..., :, -4:] = 0.0
    inner = (..., slice(4, -4), slice(4, -4))
    for fn in (M.psnr_y, M.ssim_y):
        cropped, inner_only = fn(sr, hr, crop_border=4), fn(sr[inner], hr[inner])
        torch.testing.assert_close(cropped, inner_only, rtol=0, atol=0)
    assert (M.psnr_y(sr, hr, crop_border=4) > M.psnr_y(sr, hr) + 3).all()
    assert (M.ssim_y(sr, hr, crop_border=4) > M.ssim_y(sr, hr)).all()


@pytest.mark.parametrize("crop_border", [-1, 1.5, True])
def test_bad_crop_border_raises(crop_border):
    sr, hr = _noisy_pair(1, 16, 16)
    with pytest.raises(ValueError, match="crop_border"):
        M.psnr_y(sr, hr, crop_border=crop_border)


def test_too_small_after_crop_raises():
    sr, hr = _noisy_pair(1, 20, 20)
    M.psnr_y(sr, hr, crop_border=5)
    with pytest.raises(ValueError, match="at least 11x11"):
        M.ssim_y(sr, hr, crop_border=5)


# ----------------------------------------------------------------------------- input checks


def test_bad_inputs_raise_actionable_errors():
    sr, hr = _noisy_pair(1, 16, 16)
    with pytest.raises(ValueError, match="shapes differ"):
        M.psnr_y(sr, hr[..., :15])
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        M.ssim_y(sr[:, :1], hr[:, :1])
    with pytest.raises(ValueError, match="clamp"):
        M.psnr_y(sr * 1.5, hr)
    with pytest.raises(ValueError, match="floating"):
        M.psnr_y(sr.to(torch.int32), hr.to(torch.int32))


def test_numpy_wrappers_match_tensor_path():
    sr, hr = _noisy_pair(1, 30, 22)
    sr8 = (sr[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    hr8 = (hr[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    t_sr = torch.from_numpy(sr8).permute(2, 0, 1)[None]
    t_hr = torch.from_numpy(hr8).permute(2, 0, 1)[None]
    assert M.psnr_y_numpy(sr8, hr8, 2) == float(M.psnr_y(t_sr, t_hr, 2)[0])
    assert M.ssim_y_numpy(sr8, hr8, 2) == float(M.ssim_y(t_sr, t_hr, 2)[0])
    as_float = M.ssim_y_numpy(sr8 / 255.0, hr8 / 255.0)
    assert as_float == pytest.approx(M.ssim_y_numpy(sr8, hr8), abs=1e-12)
    with pytest.raises(ValueError, match="H x W x 3"):
        M.psnr_y_numpy(sr8[..., 0], hr8[..., 0])


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), sigma=st.floats(0.0, 0.5))
def test_scores_are_symmetric_and_bounded(seed, sigma):
    sr, hr = _noisy_pair(1, 13, 15, sigma, seed)
    s_ab, s_ba = M.ssim_y(sr, hr), M.ssim_y(hr, sr)
    torch.testing.assert_close(s_ab, s_ba, rtol=0, atol=1e-12)
    assert 0.0 <= float(s_ab[0]) <= 1.0 + 1e-12
    torch.testing.assert_close(M.psnr_y(sr, hr), M.psnr_y(hr, sr), rtol=0, atol=0)


# ----------------------------------------------------------------------------- real pairs


def _read(path: Path) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as im:
        arr = np.array(im.convert("RGB"))
    return torch.from_numpy(arr).permute(2, 0, 1)[None].to(torch.float64) / 255.0


def _set5_pairs() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    if not (SET5 / "hr").is_dir() or not (SET5 / "lr").is_dir():
        pytest.skip(f"Set5 not found under {SET5} (set SINSR_DATA)")
    pairs = []
    for hr_path in sorted((SET5 / "hr").glob("*.png")):  # paired by file name, never by position
        lr_path = SET5 / "lr" / hr_path.name
        if not lr_path.exists():
            continue
        lr, hr = _read(lr_path), _read(hr_path)
        sr = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
        sr = (sr * 255).round() / 255  # as saved to an 8-bit PNG
        assert sr.shape == hr.shape, hr_path.name
        pairs.append((hr_path.stem, sr, hr))
    if not pairs:
        pytest.skip(f"no LR/HR pairs in {SET5}")
    return pairs


def test_set5_bicubic_x4_is_plausible_and_matches_skimage():
    psnrs, ssims = [], []
    for name, sr, hr in _set5_pairs():
        p, s = float(M.psnr_y(sr, hr)[0]), float(M.ssim_y(sr, hr)[0])
        assert p == pytest.approx(_skimage_psnr(sr, hr), abs=1e-9), name
        # The cs clamp bites in some windows of real images (butterfly): compare skimage with the
        # unclamped map, and the clamped score with the same map clamped.
        lum, cs = M._ssim_terms(M._y255(sr), M._y255(hr))
        assert float((lum * cs).mean()) == pytest.approx(_skimage_ssim(sr, hr), abs=1e-9), name
        assert s == pytest.approx(float((lum * cs.clamp_min(0)).mean()), abs=1e-15), name
        assert 20 < p < 40 and 0.6 < s < 0.95, (name, p, s)
        psnrs.append(p)
        ssims.append(s)
        cropped = float(M.psnr_y(sr, hr, crop_border=4)[0])
        inner = (..., slice(4, -4), slice(4, -4))
        assert cropped == pytest.approx(_skimage_psnr(sr[inner], hr[inner]), abs=1e-9), name
    assert 25 < float(np.mean(psnrs)) < 35  # bicubic x4 on Set5 is ~28-29 dB Y-PSNR
    assert 0.7 < float(np.mean(ssims)) < 0.9


# ----------------------------------------------------------------------------- protocol


def test_protocol_states_constants_and_crop():
    assert set(M.PROTOCOL) >= {"y", "psnr", "ssim"}
    assert "65.481" in M.PROTOCOL["y"] and "16-235" in M.PROTOCOL["y"]
    assert "data range 1" in M.PROTOCOL["psnr"] and "crop_border=0" in M.PROTOCOL["psnr"]
    ssim = M.protocol(crop_border=4)["ssim"]
    facts = ("11x11", "sigma 1.5", "'valid'", "no downsampling", "(0.01*255)^2", "crop_border=4")
    for fact in facts:
        assert fact in ssim
    assert M.SSIM_C1 == pytest.approx(6.5025) and M.SSIM_C2 == pytest.approx(58.5225)


# ----------------------------------------------------------------------------- learned metrics


def test_metric_kinds_are_exposed():
    assert M.FULL_REFERENCE | M.NO_REFERENCE == set(M.LEARNED_METRICS)
    assert not M.FULL_REFERENCE & M.NO_REFERENCE
    assert "lpips" in M.FULL_REFERENCE and "niqe" in M.LOWER_IS_BETTER


def test_learned_metrics_without_pyiqa_return_messages(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyiqa", None)  # import fails even where pyiqa is installed
    metrics, messages = M.load_learned_metrics(["lpips", "clipiqa", "musiq", "niqe"], "cpu")
    assert metrics == {}
    assert len(messages) == 1
    assert "pyiqa is not installed" in messages[0] and "sinsr-cli[metrics]" in messages[0]
    assert "lpips, clipiqa, musiq, niqe" in messages[0]


def test_learned_metrics_with_broken_pyiqa_dependency(monkeypatch):
    class BrokenPyiqa:  # import pyiqa fails inside it, as with a missing torchvision
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name == "pyiqa":
                raise ModuleNotFoundError("No module named 'torchvision'", name="torchvision")
            return None

    monkeypatch.delitem(sys.modules, "pyiqa", raising=False)
    monkeypatch.setattr(sys, "meta_path", [BrokenPyiqa, *sys.meta_path])
    metrics, messages = M.load_learned_metrics(["niqe"], "cpu")
    assert metrics == {}
    assert messages == [
        "pyiqa could not be imported (ModuleNotFoundError: No module named 'torchvision') "
        "(skipping niqe)"
    ]


def test_learned_metrics_with_nothing_requested():
    assert M.load_learned_metrics([], "cpu") == ({}, [])


def test_unknown_learned_metric_raises():
    with pytest.raises(ValueError, match="choose from"):
        M.load_learned_metrics(["lpips", "fid"], "cpu")


class _FakeMetric:
    def __init__(self, name: str):
        self.name = name

    def __call__(self, x: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        score = x.mean(dim=(1, 2, 3)) if ref is None else (x - ref).abs().mean(dim=(1, 2, 3))
        return score[:, None]  # pyiqa returns [B, 1] for some metrics


def test_learned_metrics_adapter_with_fake_pyiqa(monkeypatch):
    fake = types.ModuleType("pyiqa")

    def create_metric(name, device=None):
        if name == "musiq":
            raise OSError("could not download koniq10k weights:\nconnection refused")
        return _FakeMetric(name)

    fake.create_metric = create_metric
    monkeypatch.setitem(sys.modules, "pyiqa", fake)

    metrics, messages = M.load_learned_metrics(["LPIPS", "niqe", "musiq"], torch.device("cpu"))
    assert set(metrics) == {"lpips", "niqe"}
    assert messages == [
        "musiq: weights unavailable (offline?): "
        "OSError: could not download koniq10k weights: connection refused"
    ]

    sr, hr = _noisy_pair(3, 16, 16)
    lp = metrics["lpips"]
    assert lp.full_reference and lp.lower_better
    out = lp(sr, hr)
    assert out.shape == (3,) and out.dtype == torch.float64
    with pytest.raises(ValueError, match="full-reference"):
        lp(sr, None)
    nq = metrics["niqe"]
    assert not nq.full_reference
    torch.testing.assert_close(nq(sr), nq(sr, hr))  # no-reference: HR ignored


@pytest.mark.skipif(
    not any(p for p in sys.path if (Path(p) / "pyiqa" / "__init__.py").exists()),
    reason="pyiqa not installed (pip install 'sinsr-cli[metrics]')",
)
def test_matches_pyiqa_when_installed():
    pyiqa = pytest.importorskip("pyiqa")
    sr, hr = _noisy_pair(2, 48, 40, seed=3)
    sr, hr = sr.float(), hr.float()
    opts = {"test_y_channel": True, "color_space": "ycbcr", "device": "cpu"}
    ref_p = pyiqa.create_metric("psnr", **opts)(sr, hr)
    ref_s = pyiqa.create_metric("ssim", **opts)(sr, hr)
    # pyiqa works in float32 and adds eps=1e-8 to the MSE; its SSIM rounds a float32 Y.
    torch.testing.assert_close(M.psnr_y(sr, hr), ref_p.double().reshape(-1), rtol=0, atol=2e-4)
    torch.testing.assert_close(M.ssim_y(sr, hr), ref_s.double().reshape(-1), rtol=0, atol=1e-5)
