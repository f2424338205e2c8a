"""Image-quality metrics for ``sinsr bench`` and ``sinsr distill --val``.

Fidelity metrics (PSNR, SSIM) are computed here, in float64, and reproduce pyiqa's
``create_metric('psnr' | 'ssim', test_y_channel=True, color_space='ycbcr')`` -- the protocol
of the SinSR paper's ``evaluate.py``. :data:`PROTOCOL` (or :func:`protocol` for a given
``crop_border``) states exactly what is computed so reports can embed it.

Learned metrics (LPIPS-alex, CLIPIQA, MUSIQ, NIQE) come from pyiqa when it is installed;
:func:`load_learned_metrics` reports what it could not load instead of raising.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SettingError, one_line

__all__ = [
    "FULL_REFERENCE",
    "LEARNED_METRICS",
    "LOWER_IS_BETTER",
    "NO_REFERENCE",
    "PROTOCOL",
    "LearnedMetric",
    "MetricAccumulator",
    "gaussian_window",
    "load_learned_metrics",
    "protocol",
    "psnr_y",
    "psnr_y_numpy",
    "rgb_to_y",
    "ssim_y",
    "ssim_y_numpy",
]

# ITU-R BT.601 studio-range luma for RGB in [0, 1]:
# Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255, so black -> 16/255 and white -> 235/255
# (pyiqa ``rgb2ycbcr``, MATLAB ``rgb2ycbcr``).
Y_WEIGHTS = (65.481, 128.553, 24.966)
Y_OFFSET = 16.0

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_DATA_RANGE = 255.0  # SSIM runs on Y scaled to [0, 255] and rounded, as pyiqa does
SSIM_C1 = (0.01 * SSIM_DATA_RANGE) ** 2  # 6.5025
SSIM_C2 = (0.03 * SSIM_DATA_RANGE) ** 2  # 58.5225

_RANGE_TOL = 1e-6  # pyiqa's input check: min > -1e-6 and max < 1 + 1e-6


def protocol(crop_border: int = 0) -> dict[str, str]:
    """What :func:`psnr_y` / :func:`ssim_y` compute, one line per item, for embedding in reports."""
    crop = f"crop_border={crop_border} px removed from each side of the RGB image first"
    return {
        "y": (
            "ITU-R BT.601 studio-range luma from RGB in [0, 1]: "
            "Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255 (16-235), float64"
        ),
        "psnr": (
            f"Y channel, unquantised, data range 1: 10*log10(1 / MSE) per image, inf when MSE == 0 "
            f"(pyiqa adds eps=1e-8 to the MSE: 80 dB cap, < 5e-4 dB below 40 dB); {crop}"
        ),
        "ssim": (
            "Y channel scaled to [0, 255] and rounded to integers (half to even); "
            "11x11 Gaussian window sigma 1.5 (MATLAB fspecial, applied separably); "
            "'valid' filtering, no padding; no downsampling; "
            "C1 = (0.01*255)^2, C2 = (0.03*255)^2; contrast-structure term clamped at 0; "
            f"mean of the valid SSIM map per image; float64; {crop}"
        ),
        "reference": (
            "pyiqa create_metric('psnr' | 'ssim', test_y_channel=True, color_space='ycbcr')"
        ),
    }


PROTOCOL: dict[str, str] = protocol(0)


# --------------------------------------------------------------------------- fidelity metrics


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """BT.601 studio-range luma (no rounding).

    ``[B, 3, H, W]`` RGB in [0, 1] -> ``[B, 1, H, W]`` float64 in [16/255, 235/255].
    """
    x = x.to(torch.float64)
    w = torch.tensor(Y_WEIGHTS, dtype=torch.float64, device=x.device).view(1, 3, 1, 1)
    return (Y_OFFSET + (x * w).sum(dim=1, keepdim=True)) / 255.0


def gaussian_window(
    size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Normalised 1-D Gaussian ``[size]`` float64; its outer product is MATLAB's
    ``fspecial('gaussian', size, sigma)``.

    SSIM filters with it separably (rows, then columns): ~8x faster than the 2-D conv pyiqa runs,
    and equal to it up to float rounding (pyiqa stores the 2-D weights in float32, a relative
    difference below 6e-8 per weight). fspecial's ``h < eps * max(h)`` cut-off removes nothing
    at size 11, sigma 1.5 (the corner weight is 1.5e-5 of the centre).
    """
    t = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2.0
    g = torch.exp(-(t * t) / (2.0 * sigma * sigma))
    return g / g.sum()


def _compute_device(x: torch.Tensor) -> torch.device:
    # MPS has no float64; compute those on the CPU.
    return torch.device("cpu") if x.device.type == "mps" else x.device


def check_crop_border(crop_border: int) -> None:
    """``crop_border`` an int >= 0 (SettingError otherwise), checked up front by the runner too."""
    if isinstance(crop_border, bool) or not isinstance(crop_border, int) or crop_border < 0:
        raise SettingError("crop_border", f"crop_border must be >= 0 (an int), got {crop_border!r}")


def _prepare_pair(
    sr: torch.Tensor, hr: torch.Tensor, crop_border: int, min_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate, crop, and return both as float64 ``[B, 3, h, w]`` in [0, 1]."""
    if sr.shape != hr.shape:
        raise ValueError(f"SR and HR shapes differ: {tuple(sr.shape)} vs {tuple(hr.shape)}")
    if sr.ndim != 4 or sr.shape[1] != 3:
        raise ValueError(f"expected RGB batches [B, 3, H, W], got {tuple(sr.shape)}")
    check_crop_border(crop_border)
    h, w = sr.shape[-2] - 2 * crop_border, sr.shape[-1] - 2 * crop_border
    if min(h, w) < min_size:
        raise ValueError(
            f"image {sr.shape[-2]}x{sr.shape[-1]} with crop_border={crop_border} leaves "
            f"{h}x{w} px; need at least {min_size}x{min_size}"
        )
    device = _compute_device(sr)
    out = []
    for name, x in (("SR", sr), ("HR", hr)):
        if x.dtype == torch.uint8:
            x = x.to(device=device, dtype=torch.float64) / 255.0
        elif x.is_floating_point():
            x = x.to(device=device, dtype=torch.float64)
        else:
            raise ValueError(f"{name} must be a floating tensor in [0, 1] or uint8, got {x.dtype}")
        lo, hi = float(x.min()), float(x.max())
        if not (lo > -_RANGE_TOL and hi < 1.0 + _RANGE_TOL):
            raise ValueError(
                f"{name} values must lie in [0, 1] (got min={lo:.4g}, max={hi:.4g}); "
                "clamp (and quantise) the image as it would be saved before scoring"
            )
        if crop_border:
            x = x[..., crop_border:-crop_border, crop_border:-crop_border]
        out.append(x)
    return out[0], out[1]


def psnr_y(sr: torch.Tensor, hr: torch.Tensor, crop_border: int = 0) -> torch.Tensor:
    """PSNR on the BT.601 Y channel, data range 1 (see :data:`PROTOCOL`).

    Args:
        sr, hr: ``[B, 3, H, W]`` RGB in [0, 1] (float of any precision, or uint8 in [0, 255]).
        crop_border: pixels removed from each side before scoring (4 = BasicSR convention at x4).

    Returns:
        ``[B]`` float64 dB on the input's device; ``inf`` where the Y channels are identical.
    """
    x, y = _prepare_pair(sr, hr, crop_border, min_size=1)
    mse = (rgb_to_y(x) - rgb_to_y(y)).pow(2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(1.0 / mse)  # 1/0 = inf -> inf dB


def _y255(x: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` in [0, 1] -> Y in [16, 235] rounded to integers (half to even), float64."""
    return torch.round(rgb_to_y(x) * 255.0)


def _ssim_terms(y1: torch.Tensor, y2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Luminance and (unclamped) contrast-structure maps over the 'valid' region.

    ``y1, y2``: ``[B, 1, H, W]`` float64 on a [0, 255] scale -> two ``[B, 1, H-10, W-10]`` maps.
    """
    g = gaussian_window(device=y1.device)
    # The five local moments as channels of one tensor, filtered together: 'valid', no padding.
    stack = torch.cat([y1, y2, y1 * y1, y2 * y2, y1 * y2], dim=1)
    rows = g.view(1, 1, SSIM_WINDOW, 1).expand(5, 1, SSIM_WINDOW, 1)
    cols = g.view(1, 1, 1, SSIM_WINDOW).expand(5, 1, 1, SSIM_WINDOW)
    mu1, mu2, e11, e22, e12 = F.conv2d(F.conv2d(stack, rows, groups=5), cols, groups=5).unbind(1)
    var1, var2, cov = e11 - mu1 * mu1, e22 - mu2 * mu2, e12 - mu1 * mu2
    luminance = (2.0 * mu1 * mu2 + SSIM_C1) / (mu1 * mu1 + mu2 * mu2 + SSIM_C1)
    contrast_structure = (2.0 * cov + SSIM_C2) / (var1 + var2 + SSIM_C2)
    return luminance[:, None], contrast_structure[:, None]


def ssim_y(sr: torch.Tensor, hr: torch.Tensor, crop_border: int = 0) -> torch.Tensor:
    """SSIM on the 8-bit-rounded BT.601 Y channel, as pyiqa's ``ssim`` (see :data:`PROTOCOL`).

    Args:
        sr, hr: ``[B, 3, H, W]`` RGB in [0, 1] (float of any precision, or uint8 in [0, 255]);
            at least 11x11 after cropping.
        crop_border: pixels removed from each side before scoring.

    Returns:
        ``[B]`` float64 in [0, 1] on the input's device (1 for identical images).
    """
    x, y = _prepare_pair(sr, hr, crop_border, min_size=SSIM_WINDOW)
    luminance, contrast_structure = _ssim_terms(_y255(x), _y255(y))
    return (luminance * contrast_structure.clamp_min(0.0)).mean(dim=(1, 2, 3))


def _numpy_to_batch(img: np.ndarray, name: str) -> torch.Tensor:
    """``H x W x 3`` uint8 / uint16 / float in [0, 1] -> ``[1, 3, H, W]`` float64 in [0, 1]."""
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{name} must be an H x W x 3 RGB array, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float64) / 255.0
    elif arr.dtype == np.uint16:
        arr = arr.astype(np.float64) / 65535.0
    elif np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    else:
        raise ValueError(f"{name} must be uint8, uint16 or float in [0, 1], got {arr.dtype}")
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None]


def psnr_y_numpy(sr: np.ndarray, hr: np.ndarray, crop_border: int = 0) -> float:
    """:func:`psnr_y` for one ``H x W x 3`` RGB pair (uint8, uint16, or float in [0, 1])."""
    return float(psnr_y(_numpy_to_batch(sr, "SR"), _numpy_to_batch(hr, "HR"), crop_border)[0])


def ssim_y_numpy(sr: np.ndarray, hr: np.ndarray, crop_border: int = 0) -> float:
    """:func:`ssim_y` for one ``H x W x 3`` RGB pair (uint8, uint16, or float in [0, 1])."""
    return float(ssim_y(_numpy_to_batch(sr, "SR"), _numpy_to_batch(hr, "HR"), crop_border)[0])


# --------------------------------------------------------------------------- learned metrics

FULL_REFERENCE = frozenset({"lpips"})
NO_REFERENCE = frozenset({"clipiqa", "musiq", "niqe"})
LEARNED_METRICS = ("lpips", "clipiqa", "musiq", "niqe")
LOWER_IS_BETTER = frozenset({"lpips", "niqe"})  # psnr, ssim, clipiqa, musiq: higher is better

_INSTALL_HINT = "pip install 'sinsr-cli[metrics]'"


@dataclass(frozen=True)
class LearnedMetric:
    """A pyiqa metric behind ``(sr, hr | None) -> [B]`` float64.

    ``sr``/``hr``: ``[B, 3, H, W]`` RGB in [0, 1]. Full-reference metrics raise ``ValueError``
    without ``hr``; no-reference metrics ignore it.
    """

    name: str
    full_reference: bool
    lower_better: bool
    model: Callable[..., torch.Tensor]
    device: torch.device

    def __call__(self, sr: torch.Tensor, hr: torch.Tensor | None = None) -> torch.Tensor:
        if self.full_reference and hr is None:
            raise ValueError(f"{self.name} is full-reference: it needs the HR image")
        with torch.no_grad():
            x = sr.to(device=self.device, dtype=torch.float32)
            if self.full_reference:
                assert hr is not None
                out = self.model(x, hr.to(device=self.device, dtype=torch.float32))
            else:
                out = self.model(x)
        scores = torch.as_tensor(out).detach().reshape(-1)
        if scores.numel() != sr.shape[0]:
            raise RuntimeError(
                f"{self.name} returned {scores.numel()} scores for a batch of {sr.shape[0]}"
            )
        return scores.to(device=_compute_device(sr), dtype=torch.float64)


def load_learned_metrics(
    names: Sequence[str], device: torch.device | str
) -> tuple[dict[str, LearnedMetric], list[str]]:
    """Build the requested pyiqa metrics that can be built here.

    Args:
        names: any of :data:`LEARNED_METRICS` (``lpips`` is LPIPS-alex v0.1).
        device: where the networks run.

    Returns:
        ``(metrics, messages)``: callables for the metrics that loaded, and one line per thing
        that could not be loaded (pyiqa missing or broken, weights unavailable). A missing
        package or missing weights never raises; an unknown name raises ``ValueError``.
    """
    requested = list(dict.fromkeys(n.lower() for n in names))
    unknown = [n for n in requested if n not in LEARNED_METRICS]
    if unknown:
        raise ValueError(
            f"unknown learned metric(s) {', '.join(unknown)}; "
            f"choose from {', '.join(LEARNED_METRICS)}"
        )
    if not requested:
        return {}, []
    skipping = f"(skipping {', '.join(requested)})"
    try:
        import pyiqa
    except ModuleNotFoundError as e:
        if e.name is not None and e.name.split(".")[0] == "pyiqa":
            return {}, [f"pyiqa is not installed: {_INSTALL_HINT} {skipping}"]
        return {}, [f"pyiqa could not be imported ({one_line(e, typed=True)}) {skipping}"]
    except Exception as e:  # pyiqa imports torchvision, timm, ...: any of them may be broken
        return {}, [f"pyiqa could not be imported ({one_line(e, typed=True)}) {skipping}"]

    dev = torch.device(device)
    metrics: dict[str, LearnedMetric] = {}
    messages: list[str] = []
    for name in requested:
        try:
            model = pyiqa.create_metric(name, device=dev)
        except Exception as e:  # download / file / checkpoint errors all mean "no weights"
            messages.append(f"{name}: weights unavailable (offline?): {one_line(e, typed=True)}")
            continue
        metrics[name] = LearnedMetric(
            name=name,
            full_reference=name in FULL_REFERENCE,
            lower_better=name in LOWER_IS_BETTER,
            model=model,
            device=dev,
        )
    return metrics, messages


# --------------------------------------------------------------------------- averaging


class MetricAccumulator:
    """Per-metric running means over images (``inf`` PSNR makes that mean ``inf``)."""

    def __init__(self) -> None:
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def update(self, name: str, scores: torch.Tensor | Sequence[float]) -> None:
        """Add per-image ``scores`` (``[B]``) for ``name``."""
        values = torch.as_tensor(scores, dtype=torch.float64).reshape(-1).tolist()
        self._sums[name] = self._sums.get(name, 0.0) + math.fsum(values)
        self._counts[name] = self._counts.get(name, 0) + len(values)

    def means(self) -> dict[str, float]:
        """``{name: mean over images}`` in insertion order."""
        return {k: self._sums[k] / self._counts[k] for k in self._sums if self._counts[k]}

    def counts(self) -> dict[str, int]:
        return dict(self._counts)
