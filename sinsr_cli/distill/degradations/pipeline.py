"""The second-order degradation itself: ``degrade(hr, cfg, generator) -> lr``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .config import DegradationConfig, StageConfig
from .draws import _bernoulli, _choice, _rand, _uniform, _uniform_scalar, _work_dtype
from .jpeg import jpeg_compress
from .kernels import sample_blur_kernels, sample_final_sinc_kernels
from .noise import add_gaussian_noise, add_poisson_noise, round_to_uint8
from .resize import filter2d, resize


def _random_scale(stage: StageConfig, generator: torch.Generator | None) -> float:
    kind = _choice(stage.resize_probs, generator)  # up, down, keep
    if kind == 0:
        return _uniform_scalar(1.0, stage.resize_range[1], generator)
    if kind == 1:
        return _uniform_scalar(stage.resize_range[0], 1.0, generator)
    return 1.0


def _random_mode(cfg: DegradationConfig, generator: torch.Generator | None) -> str:
    return cfg.resize_modes[_choice([1.0] * len(cfg.resize_modes), generator)]


def _random_noise(x: Tensor, stage: StageConfig, generator: torch.Generator | None) -> Tensor:
    """Gaussian (p ``gaussian_noise_prob``, once per batch) or Poisson noise, per-sample level."""
    b = x.shape[0]
    gaussian = _bernoulli(stage.gaussian_noise_prob, generator)
    if gaussian:
        level = _uniform(b, *stage.noise_range, generator, x.device)
    else:
        level = _uniform(b, *stage.poisson_scale_range, generator, x.device)
    gray = _rand(b, generator, x.device) < stage.gray_noise_prob
    if gaussian:
        return add_gaussian_noise(x, level, gray, generator=generator)
    return add_poisson_noise(x, level, gray, generator=generator)


def _random_jpeg(x: Tensor, jpeg_range: tuple[float, float], cfg: DegradationConfig,
                 generator: torch.Generator | None) -> Tensor:
    quality = _uniform(x.shape[0], *jpeg_range, generator, x.device)
    return jpeg_compress(x.clamp(0, 1), quality, pad_mode=cfg.jpeg_pad_mode)


def degrade(
    hr: Tensor,
    cfg: DegradationConfig | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The official SinSR (Real-ESRGAN second-order) degradation of a batch.

    ``hr``: ``[B, 3, H, W]`` in [0, 1], H and W multiples of ``cfg.scale``. Returns the LR batch
    ``[B, 3, H / s, W / s]`` on the 8-bit grid in [0, 1], in ``hr``'s device and dtype. The same
    ``generator`` state gives the same result.
    """
    cfg = cfg or DegradationConfig()
    if hr.dim() != 4 or hr.shape[1] != 3:
        raise ValueError(f"expected RGB images [B, 3, H, W], got shape {tuple(hr.shape)}")
    b, _, h, w = hr.shape
    sf = cfg.scale
    if h % sf or w % sf or min(h, w) < 8 * sf:
        raise ValueError(f"image sides must be multiples of {sf} and at least {8 * sf}, got {h}x{w}")
    x = hr.to(_work_dtype(hr.dtype))
    dev = x.device

    # per-sample kernels, drawn first as the official dataset does
    kernel1 = sample_blur_kernels(b, cfg.stage1.blur, generator, dev)
    kernel2 = sample_blur_kernels(b, cfg.stage2.blur, generator, dev)
    final_kernel = sample_final_sinc_kernels(b, cfg, generator, dev)

    # first stage: blur, resize by a random factor, noise, JPEG
    if _bernoulli(cfg.stage1.blur_prob, generator):
        x = filter2d(x, kernel1)
    x = resize(x, _random_mode(cfg, generator), scale_factor=_random_scale(cfg.stage1, generator))
    x = _random_noise(x, cfg.stage1, generator)
    x = _random_jpeg(x, cfg.stage1.jpeg_range, cfg, generator)

    # second stage: blur (sometimes), resize to a random fraction of the LR size, noise
    if _bernoulli(cfg.second_order_prob, generator):
        if _bernoulli(cfg.stage2.blur_prob, generator):
            x = filter2d(x, kernel2)
        scale = _random_scale(cfg.stage2, generator)
        size = (int(h / sf * scale), int(w / sf * scale))
        x = resize(x, _random_mode(cfg, generator), size=size)
        x = _random_noise(x, cfg.stage2, generator)

    # final: [resize to H/s + sinc] and JPEG, in a random order
    lr_size = (h // sf, w // sf)
    if _bernoulli(cfg.final_resize_first_prob, generator):
        x = filter2d(resize(x, _random_mode(cfg, generator), size=lr_size), final_kernel)
        x = _random_jpeg(x, cfg.stage2.jpeg_range, cfg, generator)
    else:
        x = _random_jpeg(x, cfg.stage2.jpeg_range, cfg, generator)
        x = filter2d(resize(x, _random_mode(cfg, generator), size=lr_size), final_kernel)

    return round_to_uint8(x).to(device=hr.device, dtype=hr.dtype)


__all__ = ["degrade"]
