"""Real-ESRGAN second-order degradation: (HR, LR) training pairs made on the fly, in torch.

This is the pipeline SinSR trains on (``prepare_data`` in the official trainer, with kernels drawn
per sample as in its ``RealESRGANDataset``), written fresh:

    HR -> blur -> resize -> noise -> JPEG                         (first stage)
       -> [p 0.5] blur (p 0.8) -> resize -> noise                (second stage)
       -> either resize to H/4 + sinc, then JPEG; or JPEG, then resize to H/4 + sinc   (p 0.5 each)
       -> clamp(round(x * 255), 0, 255) / 255

Kernels, noise levels and JPEG qualities are drawn per sample; the resize scale and mode, the
choice of Gaussian or Poisson noise, whether the second stage runs and the order of the final
step are drawn once per batch, as in the official code (the ``TrainingPairPool`` then mixes
samples across batches).

Every random draw goes through the ``generator`` argument. Draws are made on the generator's
device and moved to the image's device; pass a generator on the image's device to avoid copies.
All images are ``[B, 3, H, W]`` RGB in ``[0, 1]``; the maths runs in float32 (float64 for float64
input) and the result comes back in the input's dtype and device.

The pieces, one concept per module: ``config`` (parameters), ``draws`` (random numbers),
``kernels``, ``resize``, ``noise``, ``jpeg``, ``pipeline`` (``degrade``) and ``pairs`` (HR crops,
paired crops, the training-pair pool). Their public names are re-exported here.
"""

from __future__ import annotations

from .config import (
    KERNEL_TYPES,
    RESIZE_MODES,
    BlurKernelConfig,
    StageConfig,
    DegradationConfig,
)
from .kernels import (
    gaussian_kernel,
    generalized_gaussian_kernel,
    plateau_kernel,
    sinc_kernel,
    pulse_kernel,
    pad_kernel,
    random_mixed_kernels,
    sample_blur_kernels,
    sample_final_sinc_kernels,
)
from .resize import (
    filter2d,
    resize,
    area_downscale,
    matlab_bicubic_resize,
    shortest_side_center_crop,
)
from .noise import (
    add_gaussian_noise,
    add_poisson_noise,
    round_to_uint8,
)
from .jpeg import (
    jpeg_quality_to_factor,
    jpeg_compress,
)
from .pipeline import (
    degrade,
)
from .pairs import (
    rescale_gt,
    random_crop_pair,
    TrainingPairPool,
)

__all__ = [
    "KERNEL_TYPES",
    "RESIZE_MODES",
    "BlurKernelConfig",
    "StageConfig",
    "DegradationConfig",
    "gaussian_kernel",
    "generalized_gaussian_kernel",
    "plateau_kernel",
    "sinc_kernel",
    "pulse_kernel",
    "pad_kernel",
    "random_mixed_kernels",
    "sample_blur_kernels",
    "sample_final_sinc_kernels",
    "filter2d",
    "resize",
    "area_downscale",
    "matlab_bicubic_resize",
    "shortest_side_center_crop",
    "add_gaussian_noise",
    "add_poisson_noise",
    "jpeg_quality_to_factor",
    "jpeg_compress",
    "round_to_uint8",
    "degrade",
    "rescale_gt",
    "random_crop_pair",
    "TrainingPairPool",
]
