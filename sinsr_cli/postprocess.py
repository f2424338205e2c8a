"""Pixels after the model: back to gray, the output scale, the alpha channel.

Policies:
  * Scale: the model's native x4, then, when ``scale != 4``, a Lanczos resample (Pillow, float32
    per channel, clipped to [0, 1]) to exactly ``round(scale * w) x round(scale * h)`` (Python's
    ``round``): :func:`output_size`, :func:`resample`.
  * Grayscale: the model sees the gray replicated to RGB; the result is turned back into
    Rec. 601 luma (``imageio.luma``) before resampling, so gray stays gray (and 16-bit stays
    16-bit via ``write_image(like=...)``).
  * Alpha (:func:`upscale_alpha`): ``"resize"`` (default) Lanczos-resamples the source alpha
    straight to the output size: masks stay clean and it costs nothing; ``"model"`` runs the
    alpha replicated to three channels through the model (like Real-ESRGAN's default) and keeps
    the channel mean. An all-opaque alpha is kept as all-opaque without work.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from .errors import SettingError
from .imageio import luma

__all__ = ["MAX_OUTPUT_PIXELS", "finish_color", "output_size", "resample", "upscale_alpha"]

#: the largest output :func:`output_size` allows (2^32 pixels)
MAX_OUTPUT_PIXELS = 1 << 32


def output_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """``(round(scale * width), round(scale * height))``; SettingError("scale") when a side would be
    0 or the image more than :data:`MAX_OUTPUT_PIXELS`."""
    w, h = round(scale * width), round(scale * height)
    if w < 1 or h < 1:
        raise SettingError("scale", f"scale {scale:g} would make a {width}x{height} image {w}x{h} pixels")
    if w * h > MAX_OUTPUT_PIXELS:  # 51 GB as float32 RGB: a typo, not a photo
        raise SettingError(
            "scale", f"scale {scale:g} would make a {width}x{height} image {w}x{h} pixels (more than {MAX_OUTPUT_PIXELS:,})"
        )
    return w, h


def resample(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Lanczos resize of float ``[H, W]`` or ``[H, W, C]`` to ``size`` = (width, height), in [0, 1].

    Each channel is resized as a Pillow mode "F" (float32) image, so 16-bit precision survives;
    the Lanczos overshoot is clipped.
    """
    w, h = size
    if a.shape[1] == w and a.shape[0] == h:
        return np.asarray(a, dtype=np.float32)
    planes = a[..., None] if a.ndim == 2 else a
    out = np.empty((h, w, planes.shape[2]), dtype=np.float32)
    for c in range(planes.shape[2]):
        im = Image.fromarray(np.ascontiguousarray(planes[..., c], dtype=np.float32))  # mode "F"
        out[..., c] = np.asarray(im.resize((w, h), Image.Resampling.LANCZOS))
    np.clip(out, 0.0, 1.0, out=out)
    return out[..., 0] if a.ndim == 2 else out


def finish_color(rgb: np.ndarray, size: tuple[int, int], *, grayscale: bool) -> np.ndarray:
    """The model's ``[h, w, 3]`` output -> ``[H, W, 3]`` (or ``[H, W]`` luma for a gray source)
    at ``size`` = (width, height)."""
    return resample(luma(rgb) if grayscale else rgb, size)


def upscale_alpha(
    alpha: np.ndarray, size: tuple[int, int], mode: str, model: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """The source alpha ``[h, w]`` -> ``[H, W]`` at ``size``: all-opaque stays so for free,
    ``"model"`` runs ``model`` (``[h, w, 3]`` -> ``[sh, sw, 3]``) on it as gray, else Lanczos."""
    if float(alpha.min()) >= 1.0:
        return np.ones((size[1], size[0]), dtype=np.float32)
    if mode == "model":
        return resample(model(np.repeat(alpha[..., None], 3, axis=2)).mean(axis=2), size)
    return resample(alpha, size)
