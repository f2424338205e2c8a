"""Real-ESRGAN degradation: kernels against their formulas, JPEG against Pillow, noise statistics,
and the full pipeline's shapes, range, quantisation, determinism and per-sample randomness."""

from __future__ import annotations

import dataclasses
import io
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import DATA
from sinsr_cli.distill.degradations import (
    BlurKernelConfig,
    DegradationConfig,
    StageConfig,
    TrainingPairPool,
    add_gaussian_noise,
    add_poisson_noise,
    area_downscale,
    degrade,
    filter2d,
    gaussian_kernel,
    generalized_gaussian_kernel,
    jpeg_compress,
    jpeg_quality_to_factor,
    pad_kernel,
    plateau_kernel,
    pulse_kernel,
    random_crop_pair,
    random_mixed_kernels,
    rescale_gt,
    sample_blur_kernels,
    sample_final_sinc_kernels,
    sinc_kernel,
)

DEVICE = torch.device(os.environ.get("SINSR_TEST_DEVICE", "cpu"))
FAST = settings(max_examples=25, deadline=None)


def gen(seed: int) -> torch.Generator:
    return torch.Generator(device=DEVICE).manual_seed(seed)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / ((a.double() - b.double()) ** 2).mean()))


def smooth_image(b: int = 2, h: int = 64, w: int = 64, seed: int = 0) -> torch.Tensor:
    """A natural-ish test image: upsampled noise (smooth regions) plus a few hard edges."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(b, 3, h // 8, w // 8, generator=g)
    img = F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)
    img[..., h // 3:h // 2, :] += 0.3
    img[..., :, w // 4:w // 4 + 3] -= 0.4
    return img.clamp(0, 1).to(DEVICE)


def load_real(name: str = "lenna", box: tuple[int, int, int, int] = (0, 0, 128, 128)):
    from PIL import Image

    path = DATA / "set14" / "hr" / f"{name}.png"
    if not path.exists():
        pytest.skip(f"real image {path} not available")
    im = Image.open(path).convert("RGB").crop(box)
    x = torch.from_numpy(np.array(im)).permute(2, 0, 1)[None].float() / 255
    return im, x.to(DEVICE)


# --- configuration -----------------------------------------------------------------------------

OFFICIAL_DEGRADATION = {  # configs/SinSR.yaml, `degradation`
    "sf": 4, "resize_prob": [0.2, 0.7, 0.1], "resize_range": [0.15, 1.5], "gaussian_noise_prob": 0.5,
    "noise_range": [1, 30], "poisson_scale_range": [0.05, 3.0], "gray_noise_prob": 0.4,
    "jpeg_range": [30, 95], "second_order_prob": 0.5, "second_blur_prob": 0.8,
    "resize_prob2": [0.3, 0.4, 0.3], "resize_range2": [0.3, 1.2], "gaussian_noise_prob2": 0.5,
    "noise_range2": [1, 25], "poisson_scale_range2": [0.05, 2.5], "gray_noise_prob2": 0.4,
    "jpeg_range2": [30, 95], "gt_size": 256, "resize_back": False, "use_sharp": False,
}
_KL = ["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"]
OFFICIAL_DATA = {  # configs/SinSR.yaml, `data.train.params` (degradation part)
    "blur_kernel_size": 21, "kernel_list": _KL, "kernel_prob": [0.45, 0.25, 0.12, 0.03, 0.12, 0.03],
    "sinc_prob": 0.1, "blur_sigma": [0.2, 3.0], "betag_range": [0.5, 4.0], "betap_range": [1, 2.0],
    "blur_kernel_size2": 15, "kernel_list2": _KL, "kernel_prob2": [0.45, 0.25, 0.12, 0.03, 0.12, 0.03],
    "sinc_prob2": 0.1, "blur_sigma2": [0.2, 1.5], "betag_range2": [0.5, 4.0], "betap_range2": [1, 2.0],
    "final_sinc_prob": 0.8, "gt_size": 256,
}


def test_official_config_matches_yaml():
    cfg = DegradationConfig.official()
    assert DegradationConfig.from_official(OFFICIAL_DEGRADATION, OFFICIAL_DATA) == cfg
    assert cfg.scale == 4 and cfg.gt_size == 256
    assert cfg.stage1.blur.kernel_sizes == (3, 5, 7, 9, 11, 13, 15, 17, 19)  # range(3, 21, 2)
    assert cfg.stage1.blur.pad_to == 21 and cfg.stage2.blur.pad_to == 15
    assert cfg.stage1.blur.kernel_probs == (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    assert (cfg.stage1.blur.sinc_prob, cfg.stage2.blur.sinc_prob, cfg.final_sinc_prob) == (0.1, 0.1, 0.8)
    assert cfg.stage2.blur_prob == 0.8 and cfg.second_order_prob == 0.5
    assert cfg.stage2.blur.sigma_range == (0.2, 1.5) and cfg.stage2.noise_range == (1.0, 25.0)


def test_config_round_trips_and_validates():
    cfg = DegradationConfig(jpeg_pad_mode="replicate")
    assert DegradationConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        DegradationConfig.from_dict({"nope": 1})
    with pytest.raises(ValueError, match="kernel_probs"):
        BlurKernelConfig(kernel_probs=(0.5, 0.5, 0.5, 0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="odd"):
        BlurKernelConfig(kernel_sizes=(4,))
    with pytest.raises(ValueError, match="resize_probs"):
        StageConfig(resize_probs=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="use_sharp"):
        DegradationConfig.from_official({**OFFICIAL_DEGRADATION, "use_sharp": True}, OFFICIAL_DATA)


# --- kernels -----------------------------------------------------------------------------------


def numpy_kernel(size, sx, sy, theta, beta=1.0, plateau=False):
    """The kernel formula written out with an explicit covariance matrix (independent of ours)."""
    ax = np.arange(size) - (size - 1) / 2
    xx, yy = np.meshgrid(ax, ax)  # xx: column offset, yy: row offset
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    inv = np.linalg.inv(rot @ np.diag([sx**2, sy**2]) @ rot.T)
    p = np.stack([xx, yy], -1)
    q = np.einsum("...i,ij,...j->...", p, inv, p) ** beta
    k = 1 / (1 + q) if plateau else np.exp(-0.5 * q)
    return k / k.sum()


def bessel_j1(x: np.ndarray) -> np.ndarray:
    """J1 from its integral representation (1/pi) int_0^pi cos(t - x sin t) dt."""
    t = np.linspace(0, np.pi, 20001)
    return np.trapezoid(np.cos(t[None] - np.asarray(x, float)[:, None] * np.sin(t[None])), t, axis=1) / np.pi


@pytest.mark.parametrize(
    "make",
    [
        lambda: gaussian_kernel(9, 1.3),
        lambda: gaussian_kernel(21, 2.0, 0.7, 0.6),
        lambda: generalized_gaussian_kernel(13, 1.1, 2.4, -1.0, beta=3.0),
        lambda: plateau_kernel(7, 0.9, beta=1.7),
        lambda: sinc_kernel(11, 2.0),
    ],
)
def test_kernels_sum_to_one_with_the_right_size(make):
    k = make()
    assert k.dtype == torch.float32 and k.dim() == 2 and k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
    torch.testing.assert_close(k.sum(), torch.tensor(1.0), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "k",
    [
        gaussian_kernel(11, 1.7),
        generalized_gaussian_kernel(11, 1.2, beta=0.6),
        plateau_kernel(11, 1.5, beta=2.0),
        sinc_kernel(11, 1.3),
    ],
    ids=["iso", "generalized_iso", "plateau_iso", "sinc"],
)
def test_isotropic_kernels_have_all_symmetries(k):
    for t in (k.flip(0), k.flip(1), k.T, k.flip(0, 1)):
        torch.testing.assert_close(t, k, atol=1e-7, rtol=0)


def test_anisotropic_kernels_match_the_covariance_formula():
    for sx, sy, th, beta, plateau in [(2.5, 0.6, 0.7, 1.0, False), (1.0, 2.2, -2.1, 2.7, False),
                                     (1.8, 0.5, 1.2, 1.4, True)]:
        fn = plateau_kernel if plateau else generalized_gaussian_kernel
        k = fn(15, sx, sy, th, beta)
        ref = torch.from_numpy(numpy_kernel(15, sx, sy, th, beta, plateau)).float()
        torch.testing.assert_close(k, ref, atol=1e-6, rtol=1e-4)
        torch.testing.assert_close(k.flip(0, 1), k, atol=1e-7, rtol=0)  # point symmetric
        assert not torch.allclose(k, k.T, atol=1e-4)  # but rotated: not symmetric about the diagonal


def test_generalized_gaussian_with_beta_one_is_the_gaussian():
    # the official parametrisation is exp(-(p^T S^-1 p)^beta / 2): beta = 1 is the Gaussian
    torch.testing.assert_close(generalized_gaussian_kernel(13, 2.0, 0.8, 0.4, beta=1.0),
                               gaussian_kernel(13, 2.0, 0.8, 0.4))
    other = generalized_gaussian_kernel(13, 2.0, beta=2.0)
    assert not torch.allclose(other, gaussian_kernel(13, 2.0), atol=1e-4)


def test_sinc_kernel_matches_the_analytic_formula():
    size, w = 13, 1.7
    k = sinc_kernel(size, w).double()
    c = size // 2
    for dy, dx in [(0, 1), (2, 3), (-4, 5), (6, 6)]:
        r = math.hypot(dx, dy)
        expected = (w * bessel_j1(np.array([w * r]))[0] / (2 * math.pi * r)) / (w * w / (4 * math.pi))
        assert float(k[c + dy, c + dx] / k[c, c]) == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_pad_and_pulse():
    k = pad_kernel(gaussian_kernel(7, 1.0), 21)
    assert k.shape == (21, 21) and float(k[:7].abs().sum()) == 0.0
    assert torch.equal(pad_kernel(gaussian_kernel(7, 1.0), 21)[7:14, 7:14], gaussian_kernel(7, 1.0))
    x = smooth_image()
    torch.testing.assert_close(filter2d(x, pulse_kernel(15)), x)
    with pytest.raises(ValueError, match="odd"):
        gaussian_kernel(8, 1.0)


@FAST
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 6))
def test_sampled_kernels_are_normalised_and_supported(seed, n):
    cfg = DegradationConfig()
    for blur in (cfg.stage1.blur, cfg.stage2.blur):
        k = sample_blur_kernels(n, blur, gen(seed), DEVICE)
        assert k.shape == (n, blur.pad_to, blur.pad_to) and k.device.type == DEVICE.type
        assert torch.isfinite(k).all()
        torch.testing.assert_close(k.sum((-2, -1)), torch.ones(n, device=DEVICE), atol=1e-5, rtol=0)
        # the support is at most the largest configured size: the outer ring is zero
        border = (blur.pad_to - max(blur.kernel_sizes)) // 2
        if border:
            assert float(k[:, :border].abs().sum()) == 0.0
    f = sample_final_sinc_kernels(n, cfg, gen(seed), DEVICE)
    assert f.shape == (n, 15, 15)
    torch.testing.assert_close(f.sum((-2, -1)), torch.ones(n, device=DEVICE), atol=1e-5, rtol=0)


def test_kernel_sampling_follows_the_configured_types():
    iso_only = BlurKernelConfig(kernel_probs=(1.0, 0, 0, 0, 0, 0))
    k = random_mixed_kernels(16, iso_only, gen(3), DEVICE)
    torch.testing.assert_close(k, k.transpose(-1, -2), atol=1e-7, rtol=0)
    aniso_only = BlurKernelConfig(kernel_probs=(0, 1.0, 0, 0, 0, 0), kernel_sizes=(21,))
    k = random_mixed_kernels(16, aniso_only, gen(3), DEVICE)
    assert not torch.allclose(k, k.transpose(-1, -2), atol=1e-5)
    no_final_sinc = dataclasses.replace(DegradationConfig(), final_sinc_prob=0.0)
    assert torch.equal(sample_final_sinc_kernels(3, no_final_sinc, gen(0), DEVICE),
                       pulse_kernel(15, device=DEVICE).expand(3, 15, 15))


# --- filtering and resizing --------------------------------------------------------------------


def test_filter2d_applies_each_samples_own_kernel():
    x = smooth_image(b=3)
    k = sample_blur_kernels(3, BlurKernelConfig(), gen(1), DEVICE)
    out = filter2d(x, k)
    for i in range(3):
        torch.testing.assert_close(out[i:i + 1], filter2d(x[i:i + 1], k[i]), atol=1e-6, rtol=0)
    flat = torch.full((3, 3, 32, 32), 0.3, device=DEVICE)
    torch.testing.assert_close(filter2d(flat, k), flat, atol=1e-6, rtol=0)  # reflect padding, sum 1


def test_area_downscale_is_block_mean_and_keeps_constants():
    x = smooth_image(h=64, w=48)
    torch.testing.assert_close(area_downscale(x, (16, 12)), F.avg_pool2d(x, 4), atol=1e-6, rtol=0)
    flat = torch.full((3, 300, 257), 0.7, device=DEVICE)
    expected = torch.full((3, 256, 256), 0.7, device=DEVICE)
    torch.testing.assert_close(area_downscale(flat, (256, 256)), expected)


# --- noise -------------------------------------------------------------------------------------


def test_gaussian_noise_has_the_requested_sigma():
    x = torch.full((2, 3, 128, 128), 0.5, device=DEVICE)
    sigma = torch.tensor([5.0, 20.0], device=DEVICE)
    out = add_gaussian_noise(x, sigma, gray=torch.tensor([False, True]), generator=gen(0))
    noise = (out - x) * 255
    for i in range(2):
        assert float(noise[i].std()) == pytest.approx(float(sigma[i]), rel=0.05)
        assert abs(float(noise[i].mean())) < 0.1 * float(sigma[i])
    assert torch.equal(noise[1, 0], noise[1, 1]) and torch.equal(noise[1, 0], noise[1, 2])  # grey
    assert not torch.equal(noise[0, 0], noise[0, 1])  # colour


def test_poisson_noise_keeps_the_mean_with_the_expected_variance():
    ramp = torch.linspace(0, 1, 256, device=DEVICE)  # all 256 levels: v = 256
    x = ramp.view(1, 1, 1, 256).expand(2, 3, 128, 256).contiguous()
    scale = torch.tensor([1.0, 2.5], device=DEVICE)
    out = add_poisson_noise(x, scale, gray=torch.tensor([False, True]), generator=gen(0), clip=False)
    noise = out - x
    for i in range(2):
        s = float(scale[i])
        assert abs(float(noise[i].mean())) < 3 * s * math.sqrt(0.5 / 256 / noise[i].numel()) + 1e-4
        # Var = s^2 * r / v with r the (already 8-bit) image and v = 256
        assert float(noise[i].var()) == pytest.approx(s * s * float(x[i].mean()) / 256, rel=0.05)
    assert torch.equal(noise[1, 0], noise[1, 2]) and not torch.equal(noise[0, 0], noise[0, 2])
    clipped = add_poisson_noise(x, scale, generator=gen(0))
    assert float(clipped.min()) >= 0 and float(clipped.max()) <= 1


# --- JPEG --------------------------------------------------------------------------------------


def test_quality_factor_follows_libjpeg_scaling():
    q = torch.tensor([10.0, 25.0, 50.0, 75.0, 95.0, 100.0])
    torch.testing.assert_close(jpeg_quality_to_factor(q), torch.tensor([5.0, 2.0, 1.0, 0.5, 0.1, 0.0]))
    with pytest.raises(ValueError, match="quality"):
        jpeg_quality_to_factor(torch.tensor([0.0]))


def test_jpeg_at_quality_100_is_near_identity():
    grey = smooth_image().mean(1, keepdim=True).expand(2, 3, 64, 64).contiguous()  # chroma is flat
    out = jpeg_compress(grey, 100.0)
    assert float((out - grey).abs().max()) < 2.5 / 255 and float((out - grey).abs().mean()) < 0.5 / 255
    # in colour the only other loss is 4:2:0 chroma subsampling (2x2 mean, nearest upsampling)
    colour = smooth_image()
    m = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
                     device=DEVICE)
    ycc = torch.einsum("ij,bjhw->bihw", m, colour)
    chroma = F.interpolate(F.avg_pool2d(ycc[:, 1:], 2), scale_factor=2, mode="nearest")
    subsampled = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(m), torch.cat([ycc[:, :1], chroma], 1))
    out = jpeg_compress(colour, 100.0)
    assert psnr(out, subsampled.clamp(0, 1)) > 45


def test_jpeg_error_grows_as_quality_drops():
    texture = torch.rand(1, 3, 96, 80, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    x = smooth_image(b=1, h=96, w=80, seed=3) * 0.8 + 0.1 * texture
    errors = [float(((jpeg_compress(x, q) - x) ** 2).mean()) for q in (95, 80, 60, 40, 20, 5)]
    assert errors == sorted(errors), errors


def test_jpeg_shapes_range_and_per_sample_quality():
    x = smooth_image(b=2, h=37, w=51)  # not a multiple of 16: padded, then cropped back
    q = torch.tensor([30.0, 90.0], device=DEVICE)
    for pad in ("constant", "replicate"):
        out = jpeg_compress(x, q, pad_mode=pad)
        assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
        assert float(out.min()) >= 0 and float(out.max()) <= 1
        for i in range(2):
            torch.testing.assert_close(out[i:i + 1], jpeg_compress(x[i:i + 1], float(q[i]), pad_mode=pad))
    assert jpeg_compress(x.double(), 50.0).dtype == torch.float64


@pytest.mark.parametrize("name", ["lenna", "baboon", "comic"])
@pytest.mark.parametrize("quality", [30, 75])
def test_jpeg_matches_pillow(name, quality):
    from PIL import Image

    im, x = load_real(name)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, subsampling=2)  # 4:2:0 like ours
    ref = torch.from_numpy(np.array(Image.open(buf).convert("RGB"))).permute(2, 0, 1)[None].float() / 255
    ref = ref.to(DEVICE)
    ours = jpeg_compress(x, float(quality))
    match = psnr(ours, ref)
    assert match > 32, match
    assert match > psnr(x, ref) + 3  # closer to Pillow's decode than the original is
    # the right tables and scaling: a quality 15 points off matches clearly worse
    assert match > psnr(jpeg_compress(x, quality + 15.0), ref) + 2
    assert match > psnr(jpeg_compress(x, quality - 15.0), ref) + 2


# --- the pipeline ------------------------------------------------------------------------------


def is_on_8bit_grid(x: torch.Tensor) -> bool:
    return bool(torch.allclose(x * 255, torch.round(x * 255), atol=1e-3))


def test_degrade_shape_range_and_quantisation():
    x = smooth_image(b=3, h=96, w=64)
    for seed in range(6):
        lq = degrade(x, DegradationConfig(), gen(seed))
        assert lq.shape == (3, 3, 24, 16)
        assert float(lq.min()) >= 0 and float(lq.max()) <= 1
        assert is_on_8bit_grid(lq)


def test_degrade_is_deterministic_per_seed():
    x = smooth_image(b=2)
    a, b, c = degrade(x, generator=gen(7)), degrade(x, generator=gen(7)), degrade(x, generator=gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_degrade_follows_input_device_and_dtype():
    x = smooth_image(b=2)
    for dtype in (torch.float64, torch.float16):
        lq = degrade(x.to(dtype), generator=gen(1))
        assert lq.dtype == dtype and lq.device == x.device and lq.shape == (2, 3, 16, 16)
    torch.testing.assert_close(degrade(x.double(), generator=gen(1)).float(), degrade(x, generator=gen(1)),
                               atol=1.01 / 255, rtol=0)  # float64 vs float32 may flip a rounding


def test_degrade_draws_per_sample_randomness():
    one = smooth_image(b=1)
    x = one.expand(4, 3, 64, 64).contiguous()
    lq = degrade(x, generator=gen(2))
    for i in range(1, 4):
        assert not torch.equal(lq[0], lq[i])


def test_degrade_without_degradations_is_an_area_downscale():
    # near-delta blur, keep size, no noise, quality 100, no second stage, pulse final filter
    sharp = BlurKernelConfig(sigma_range=(0.05, 0.05), kernel_probs=(1.0, 0, 0, 0, 0, 0), sinc_prob=0.0)
    quiet = StageConfig(blur=sharp, resize_probs=(0.0, 0.0, 1.0), noise_range=(0.0, 0.0),
                        poisson_scale_range=(0.0, 0.0), jpeg_range=(100.0, 100.0))
    cfg = DegradationConfig(stage1=quiet, stage2=quiet, second_order_prob=0.0, final_sinc_prob=0.0,
                            resize_modes=("area",))
    grey = smooth_image(b=2).mean(1, keepdim=True).expand(2, 3, 64, 64).contiguous()
    lq = degrade(grey, cfg, gen(0))
    assert float((lq - F.avg_pool2d(grey, 4)).abs().max()) < 3 / 255


def test_degrade_rejects_bad_sizes():
    with pytest.raises(ValueError, match="multiples of 4"):
        degrade(torch.rand(1, 3, 66, 64, device=DEVICE), generator=gen(0))
    with pytest.raises(ValueError, match="RGB"):
        degrade(torch.rand(1, 1, 64, 64, device=DEVICE), generator=gen(0))


# --- HR preprocessing, paired crop, pool -------------------------------------------------------


def test_rescale_gt_crops_a_square_and_shrinks_it():
    big = torch.rand(3, 90, 120, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    out = rescale_gt(big, 64, gen(0))
    assert out.shape == (3, 64, 64) and float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.equal(out, rescale_gt(big, 64, gen(0)))
    small = torch.rand(3, 40, 50, device=DEVICE)
    assert rescale_gt(small, 64, gen(1)).shape == (3, 64, 64)  # reflect-padded up to 64
    flat = torch.full((3, 100, 130), 0.25, device=DEVICE)
    torch.testing.assert_close(rescale_gt(flat, 64, gen(2)), torch.full((3, 64, 64), 0.25, device=DEVICE))
    exact = torch.rand(3, 64, 80, device=DEVICE)  # side 64 = gt_size: a plain crop, maybe flipped
    out = rescale_gt(exact, 64, gen(3))
    crops = [exact[:, :, i:i + 64] for i in range(17)] + [exact.flip(-1)[:, :, i:i + 64] for i in range(17)]
    assert any(torch.equal(out, c) for c in crops)


def test_random_crop_pair_keeps_alignment():
    hr = smooth_image(b=2, h=96, w=128)
    lq = F.avg_pool2d(hr, 4)
    hr_c, lq_c = random_crop_pair(hr, lq, gt_size=64, scale=4, generator=gen(0))
    assert hr_c.shape == (2, 3, 64, 64) and lq_c.shape == (2, 3, 16, 16)
    torch.testing.assert_close(F.avg_pool2d(hr_c, 4), lq_c)
    with pytest.raises(ValueError, match="not 4x"):
        random_crop_pair(hr, lq[..., :-1], 64, 4, gen(0))


def test_training_pair_pool_mixes_batches_and_keeps_pairs():
    b, pool = 2, TrainingPairPool(size=6, generator=gen(0))

    def batch(start: int):
        ids = torch.arange(start, start + b, dtype=torch.float32, device=DEVICE)
        return ids.view(b, 1, 1, 1).expand(b, 3, 4, 4), (ids * 10).view(b, 1, 1, 1).expand(b, 3, 16, 16)

    stored: set[int] = set()
    for step in range(3):  # filling: batches pass through unchanged
        lq, gt = batch(step * b)
        out_lq, out_gt = pool(lq, gt)
        assert torch.equal(out_lq, lq) and torch.equal(out_gt, gt)
        stored |= {step * b, step * b + 1}
    assert pool.is_full and len(pool) == 6
    seen_old = False
    for step in range(3, 10):  # full: out come b earlier samples, in go the new ones
        lq, gt = batch(step * b)
        out_lq, out_gt = pool(lq, gt)
        ids = [int(v) for v in out_lq[:, 0, 0, 0]]
        torch.testing.assert_close(out_gt[:, 0, 0, 0], out_lq[:, 0, 0, 0] * 10)  # pairs stay together
        assert set(ids) <= stored and len(set(ids)) == b
        stored = (stored - set(ids)) | {step * b, step * b + 1}
        seen_old |= any(i < (step - 1) * b for i in ids)
    assert seen_old  # samples wait in the pool across several batches
    with pytest.raises(ValueError, match="multiple"):
        TrainingPairPool(size=5)(*batch(0))
