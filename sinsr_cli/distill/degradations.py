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
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

KERNEL_TYPES: tuple[str, ...] = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
)
RESIZE_MODES: tuple[str, ...] = ("area", "bilinear", "bicubic")
JpegPad = Literal["constant", "replicate"]


# -- configuration -------------------------------------------------------------------------


def _check_range(name: str, r: Sequence[float], lo: float = -math.inf, hi: float = math.inf) -> None:
    if len(r) != 2 or not (lo <= r[0] <= r[1] <= hi):
        raise ValueError(f"{name} must be (low, high) with {lo} <= low <= high <= {hi}, got {r}")


def _check_prob(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p}")


def _check_sizes(name: str, sizes: Sequence[int], pad_to: int) -> None:
    if pad_to % 2 != 1 or not sizes or any(k % 2 != 1 or not 1 <= k <= pad_to for k in sizes):
        raise ValueError(f"{name} must be odd sizes up to an odd pad size ({pad_to}), got {tuple(sizes)}")


def _check_probs(name: str, ps: Sequence[float], n: int) -> None:
    if len(ps) != n or any(p < 0 for p in ps) or abs(sum(ps) - 1.0) > 1e-6:
        raise ValueError(f"{name} must be {n} non-negative probabilities summing to 1, got {ps}")


@dataclass(frozen=True)
class BlurKernelConfig:
    """How one stage draws its blur kernel (official ``data.train.params``).

    ``kernel_sizes`` are the odd supports drawn uniformly; every kernel is zero-padded to
    ``pad_to``. With ``sinc_prob`` the kernel is a circular low-pass (sinc) filter whose cutoff is
    uniform in ``sinc_cutoff_small`` for sizes below ``sinc_large_from`` and in
    ``sinc_cutoff_large`` otherwise; else a Gaussian-family kernel of a type drawn with
    ``kernel_probs``.

    The official dataset draws sizes from ``range(3, blur_kernel_size, 2)``: 3..19 padded to 21
    for the first stage and 3..13 padded to 15 for the second (its comment's "7 to 21" is the
    Real-ESRGAN range, not what the code does).
    """

    kernel_sizes: tuple[int, ...] = tuple(range(3, 21, 2))
    pad_to: int = 21
    kernel_types: tuple[str, ...] = KERNEL_TYPES
    kernel_probs: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sigma_range: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    sinc_prob: float = 0.1
    sinc_cutoff_small: tuple[float, float] = (math.pi / 3, math.pi)
    sinc_cutoff_large: tuple[float, float] = (math.pi / 5, math.pi)
    sinc_large_from: int = 13

    def __post_init__(self) -> None:
        _check_sizes("kernel_sizes", self.kernel_sizes, self.pad_to)
        unknown = set(self.kernel_types) - set(KERNEL_TYPES)
        if unknown:
            raise ValueError(f"unknown kernel types {sorted(unknown)} (use {', '.join(KERNEL_TYPES)})")
        _check_probs("kernel_probs", self.kernel_probs, len(self.kernel_types))
        _check_range("sigma_range", self.sigma_range, lo=1e-6)
        _check_range("betag_range", self.betag_range, lo=1e-6)
        _check_range("betap_range", self.betap_range, lo=1e-6)
        _check_prob("sinc_prob", self.sinc_prob)
        _check_range("sinc_cutoff_small", self.sinc_cutoff_small, lo=1e-6, hi=math.pi)
        _check_range("sinc_cutoff_large", self.sinc_cutoff_large, lo=1e-6, hi=math.pi)


@dataclass(frozen=True)
class StageConfig:
    """One degradation stage: blur (with ``blur_prob``), random resize, noise, JPEG range.

    ``resize_probs`` are the up/down/keep probabilities; up draws a scale in
    ``[1, resize_range[1]]``, down in ``[resize_range[0], 1]``. Gaussian noise (``sigma`` in
    0-255 units, drawn from ``noise_range``) is chosen with ``gaussian_noise_prob``, else Poisson
    noise with a scale from ``poisson_scale_range``; either is grey with ``gray_noise_prob``
    per sample. The first stage ends with JPEG at a quality from ``jpeg_range``; the second
    stage's ``jpeg_range`` is the one the final step uses (official ``jpeg_range2``).
    """

    blur: BlurKernelConfig = field(default_factory=BlurKernelConfig)
    blur_prob: float = 1.0
    resize_probs: tuple[float, float, float] = (0.2, 0.7, 0.1)
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[float, float] = (30.0, 95.0)

    def __post_init__(self) -> None:
        _check_prob("blur_prob", self.blur_prob)
        _check_probs("resize_probs (up, down, keep)", self.resize_probs, 3)
        _check_range("resize_range", self.resize_range, lo=1e-6)
        if not self.resize_range[0] <= 1.0 <= self.resize_range[1]:
            raise ValueError(f"resize_range must contain 1, got {self.resize_range}")
        _check_prob("gaussian_noise_prob", self.gaussian_noise_prob)
        _check_range("noise_range", self.noise_range, lo=0.0)
        _check_range("poisson_scale_range", self.poisson_scale_range, lo=0.0)
        _check_prob("gray_noise_prob", self.gray_noise_prob)
        _check_range("jpeg_range", self.jpeg_range, lo=1.0, hi=100.0)


def _stage2_default() -> StageConfig:
    return StageConfig(
        blur=BlurKernelConfig(kernel_sizes=tuple(range(3, 15, 2)), pad_to=15, sigma_range=(0.2, 1.5)),
        blur_prob=0.8,
        resize_probs=(0.3, 0.4, 0.3),
        resize_range=(0.3, 1.2),
        noise_range=(1.0, 25.0),
        poisson_scale_range=(0.05, 2.5),
    )


@dataclass(frozen=True)
class DegradationConfig:
    """Every parameter of the official SinSR degradation (``configs/SinSR.yaml``); defaults = official.

    ``final_sinc_prob``: the final step filters with a sinc kernel (size from
    ``final_sinc_sizes``, cutoff uniform in ``final_sinc_cutoff``, padded to
    ``final_sinc_pad_to``), else with a unit pulse. ``final_resize_first_prob`` picks the order
    "resize + sinc, then JPEG" over "JPEG, then resize + sinc". ``jpeg_pad_mode`` pads images to
    a multiple of 16 before JPEG: ``constant`` (zeros, as the official DiffJPEG) or
    ``replicate`` (as libjpeg).
    """

    scale: int = 4
    gt_size: int = 256
    stage1: StageConfig = field(default_factory=StageConfig)
    second_order_prob: float = 0.5
    stage2: StageConfig = field(default_factory=_stage2_default)
    final_sinc_prob: float = 0.8
    final_sinc_sizes: tuple[int, ...] = tuple(range(3, 15, 2))
    final_sinc_pad_to: int = 15
    final_sinc_cutoff: tuple[float, float] = (math.pi / 3, math.pi)
    final_resize_first_prob: float = 0.5
    resize_modes: tuple[str, ...] = RESIZE_MODES
    jpeg_pad_mode: JpegPad = "constant"

    def __post_init__(self) -> None:
        if self.scale < 1:
            raise ValueError(f"scale must be >= 1, got {self.scale}")
        if self.gt_size < 1 or self.gt_size % self.scale:
            raise ValueError(f"gt_size must be a positive multiple of scale={self.scale}, got {self.gt_size}")
        _check_prob("second_order_prob", self.second_order_prob)
        _check_prob("final_sinc_prob", self.final_sinc_prob)
        _check_prob("final_resize_first_prob", self.final_resize_first_prob)
        _check_sizes("final_sinc_sizes", self.final_sinc_sizes, self.final_sinc_pad_to)
        _check_range("final_sinc_cutoff", self.final_sinc_cutoff, lo=1e-6, hi=math.pi)
        bad = set(self.resize_modes) - set(RESIZE_MODES)
        if not self.resize_modes or bad:
            raise ValueError(f"resize_modes must be drawn from {RESIZE_MODES}, got {self.resize_modes}")
        if self.jpeg_pad_mode not in ("constant", "replicate"):
            raise ValueError(f"jpeg_pad_mode must be 'constant' or 'replicate', got {self.jpeg_pad_mode!r}")

    @classmethod
    def official(cls) -> "DegradationConfig":
        """The parameters of the official ``configs/SinSR.yaml`` (the defaults)."""
        return cls()

    @classmethod
    def imagenet_test(cls) -> "DegradationConfig":
        """The ResShift paper's ImageNet-Test recipe (``configs/degradation_testing_realesrgan.yaml``).

        A first-order Real-ESRGAN degradation of 256 px HR crops: blur with an isotropic (p 0.6) or
        anisotropic (p 0.4) Gaussian of support 3..11 padded to 13 x 13, sigma in [0.2, 0.8]
        (sinc with p 0.1); a random resize in [0.5, 1.5]; Gaussian noise 1-15 or Poisson 0.05-0.3;
        JPEG 70-95; no second stage (``second_order_prob`` 0); then the final step: resize to
        64 px (+ a sinc filter of support 3 or 5 with p 0.2) and JPEG 80-100 in a random order.
        """
        kernels = ["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"]
        data_params = {
            "blur_kernel_size": 13, "kernel_list": kernels, "kernel_prob": [0.6, 0.4, 0, 0, 0, 0],
            "sinc_prob": 0.1, "blur_sigma": [0.2, 0.8], "betag_range": [1.0, 1.5], "betap_range": [1, 1.2],
            "blur_kernel_size2": 7, "kernel_list2": kernels, "kernel_prob2": [0.6, 0.4, 0, 0, 0, 0],
            "sinc_prob2": 0.0, "blur_sigma2": [0.2, 0.5], "betag_range2": [0.5, 0.8], "betap_range2": [1, 1.2],
            "final_sinc_prob": 0.2, "gt_size": 256,
        }
        degradation = {
            "sf": 4, "gt_size": 256,
            "resize_prob": [0.2, 0.7, 0.1], "resize_range": [0.5, 1.5], "gaussian_noise_prob": 0.5,
            "noise_range": [1, 15], "poisson_scale_range": [0.05, 0.3], "gray_noise_prob": 0.4,
            "jpeg_range": [70, 95],
            "second_order_prob": 0.0, "second_blur_prob": 0.2,
            "resize_prob2": [0.3, 0.4, 0.3], "resize_range2": [0.8, 1.2], "gaussian_noise_prob2": 0.5,
            "noise_range2": [1, 10], "poisson_scale_range2": [0.05, 0.2], "gray_noise_prob2": 0.4,
            "jpeg_range2": [80, 100],
        }
        return cls.from_official(degradation, data_params)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DegradationConfig":
        """Inverse of ``to_dict`` (lists become tuples; unknown keys are an error)."""

        def build(kind: type, m: Mapping[str, Any]) -> Any:
            names = {f.name: f for f in dataclasses.fields(kind)}
            unknown = set(m) - set(names)
            if unknown:
                raise ValueError(f"unknown {kind.__name__} fields: {sorted(unknown)}")
            kw: dict[str, Any] = {}
            for k, v in m.items():
                if k == "blur":
                    kw[k] = build(BlurKernelConfig, v)
                elif k in ("stage1", "stage2"):
                    kw[k] = build(StageConfig, v)
                elif isinstance(v, list):
                    kw[k] = tuple(v)
                else:
                    kw[k] = v
            return kind(**kw)

        return build(cls, d)

    @classmethod
    def from_official(
        cls, degradation: Mapping[str, Any], data_params: Mapping[str, Any]
    ) -> "DegradationConfig":
        """Build from the official YAML's ``degradation`` and ``data.train.params`` mappings.

        The official dataset draws kernel sizes from ``range(3, blur_kernel_size, 2)`` and pads
        them to ``blur_kernel_size``; the final sinc filter uses the second stage's sizes.
        """
        if degradation.get("resize_back", False):
            raise ValueError("resize_back=True is not supported (SinSR trains without it)")
        if degradation.get("use_sharp", False):
            raise ValueError("use_sharp=True (USM-sharpened targets) is not supported")
        if not isinstance(degradation.get("sf", 4), int):
            raise ValueError("a random scale factor (sf as a range) is not supported")

        def pair(v: Sequence[float]) -> tuple[float, float]:
            return (float(v[0]), float(v[1]))

        def blur(suffix: str) -> BlurKernelConfig:
            size = int(data_params[f"blur_kernel_size{suffix}"])
            return BlurKernelConfig(
                kernel_sizes=tuple(range(3, size, 2)),
                pad_to=size,
                kernel_types=tuple(data_params[f"kernel_list{suffix}"]),
                kernel_probs=tuple(float(p) for p in data_params[f"kernel_prob{suffix}"]),
                sigma_range=pair(data_params[f"blur_sigma{suffix}"]),
                betag_range=pair(data_params[f"betag_range{suffix}"]),
                betap_range=pair(data_params[f"betap_range{suffix}"]),
                sinc_prob=float(data_params[f"sinc_prob{suffix}"]),
            )

        def stage(suffix: str, blur_prob: float) -> StageConfig:
            g = degradation
            return StageConfig(
                blur=blur(suffix),
                blur_prob=blur_prob,
                resize_probs=tuple(float(p) for p in g[f"resize_prob{suffix}"]),  # type: ignore[arg-type]
                resize_range=pair(g[f"resize_range{suffix}"]),
                gaussian_noise_prob=float(g[f"gaussian_noise_prob{suffix}"]),
                noise_range=pair(g[f"noise_range{suffix}"]),
                poisson_scale_range=pair(g[f"poisson_scale_range{suffix}"]),
                gray_noise_prob=float(g[f"gray_noise_prob{suffix}"]),
                jpeg_range=pair(g[f"jpeg_range{suffix}"]),
            )

        stage2 = stage("2", float(degradation["second_blur_prob"]))
        return cls(
            scale=int(degradation.get("sf", 4)),
            gt_size=int(degradation.get("gt_size", data_params.get("gt_size", 256))),
            stage1=stage("", 1.0),
            second_order_prob=float(degradation["second_order_prob"]),
            stage2=stage2,
            final_sinc_prob=float(data_params["final_sinc_prob"]),
            final_sinc_sizes=stage2.blur.kernel_sizes,
            final_sinc_pad_to=stage2.blur.pad_to,
        )


# -- random draws (always through the generator, on its device) ------------------------------


def _gen_device(generator: torch.Generator | None, fallback: torch.device) -> torch.device:
    return generator.device if generator is not None else fallback


def _rand(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """``n`` uniforms in [0, 1), float32, drawn on the generator's device, returned on ``device``."""
    u = torch.rand(n, generator=generator, device=_gen_device(generator, device))
    return u.to(device)


def _uniform(
    n: int, low: float, high: float, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    return low + (high - low) * _rand(n, generator, device)


def _uniform_scalar(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(_rand(1, generator, torch.device("cpu")))


def _bernoulli(p: float, generator: torch.Generator | None) -> bool:
    return float(_rand(1, generator, torch.device("cpu"))) < p


def _choice(probs: Sequence[float], generator: torch.Generator | None) -> int:
    """Index drawn with probabilities ``probs`` (one batch-level draw)."""
    u = float(_rand(1, generator, torch.device("cpu"))) * sum(probs)
    acc = 0.0
    for i, p in enumerate(probs):
        acc += p
        if u < acc:
            return i
    return max(i for i, p in enumerate(probs) if p > 0)


def _choice_batch(
    n: int, probs: Sequence[float], generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """``n`` indices drawn with probabilities ``probs``, int64 on ``device``."""
    gdev = _gen_device(generator, device)
    cdf = torch.tensor(probs, dtype=torch.float64).cumsum(0)
    cdf = (cdf / cdf[-1]).to(device=gdev, dtype=torch.float32)
    u = torch.rand(n, generator=generator, device=gdev)
    idx = torch.searchsorted(cdf, u, right=True).clamp_max(len(probs) - 1)
    return idx.to(device)


def _randn(shape: Sequence[int], generator: torch.Generator | None, like: Tensor) -> Tensor:
    z = torch.randn(*shape, generator=generator, device=_gen_device(generator, like.device), dtype=like.dtype)
    return z.to(like.device)


def _poisson(rate: Tensor, generator: torch.Generator | None) -> Tensor:
    dev = _gen_device(generator, rate.device)
    return torch.poisson(rate.to(dev), generator=generator).to(rate.device)


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# -- blur kernels ----------------------------------------------------------------------------


def _grid(size: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Column and row offsets from the centre of a ``size x size`` grid, each ``[size, size]``."""
    ax = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    rows, cols = torch.meshgrid(ax, ax, indexing="ij")
    return cols, rows


def _support_mask(size: int, support: Tensor) -> Tensor:
    """``[n, size, size]`` mask of the centred ``support x support`` window for each ``support[n]``."""
    cols, rows = _grid(size, support.device, torch.float32)
    half = (support // 2).to(torch.float32).view(-1, 1, 1)
    return (cols.abs() <= half) & (rows.abs() <= half)


def _shape_kernels(
    size: int,
    support: Tensor,
    sigma_x: Tensor,
    sigma_y: Tensor,
    theta: Tensor,
    beta: Tensor,
    plateau: Tensor,
) -> Tensor:
    """Gaussian-family kernels ``[n, size, size]``, zero outside ``support``, each summing to 1.

    With ``q = p^T S^-1 p``, ``S = R(theta) diag(sigma_x^2, sigma_y^2) R(theta)^T`` and ``p`` =
    (column, row) offset: generalized Gaussian ``exp(-q^beta / 2)`` (beta=1 is the Gaussian),
    plateau ``1 / (1 + q^beta)``.
    """
    n = support.shape[0]
    cols, rows = _grid(size, support.device, torch.float32)
    view = (n, 1, 1)
    c, s = torch.cos(theta).view(view), torch.sin(theta).view(view)
    u = (c * cols + s * rows) / sigma_x.view(view)  # coordinates along the rotated axes
    v = (-s * cols + c * rows) / sigma_y.view(view)
    qb = (u * u + v * v).pow(beta.view(view))
    k = torch.where(plateau.view(view), 1.0 / (qb + 1.0), torch.exp(-0.5 * qb))
    k = k * _support_mask(size, support)
    return k / k.sum(dim=(-2, -1), keepdim=True)


def _sinc_kernels(size: int, support: Tensor, cutoff: Tensor) -> Tensor:
    """Circular low-pass kernels ``[n, size, size]``: ``w J1(w r) / (2 pi r)``, ``w^2 / (4 pi)`` at r=0."""
    n = support.shape[0]
    cols, rows = _grid(size, support.device, torch.float32)
    r = torch.sqrt(cols * cols + rows * rows).expand(n, size, size)
    w = cutoff.view(n, 1, 1).to(torch.float32)
    r_safe = torch.where(r > 0, r, torch.ones_like(r))
    k = torch.where(
        r > 0,
        w * torch.special.bessel_j1(w * r_safe) / (2 * math.pi * r_safe),
        w * w / (4 * math.pi),
    )
    k = k * _support_mask(size, support)
    return k / k.sum(dim=(-2, -1), keepdim=True)


def _one(v: float, device: torch.device | None) -> Tensor:
    return torch.tensor([float(v)], dtype=torch.float32, device=device)


def _check_size(size: int) -> None:
    if size < 1 or size % 2 != 1:
        raise ValueError(f"kernel size must be a positive odd number, got {size}")


def generalized_gaussian_kernel(
    size: int,
    sigma_x: float,
    sigma_y: float | None = None,
    theta: float = 0.0,
    beta: float = 1.0,
    *,
    device: torch.device | str | None = None,
) -> Tensor:
    """Generalized Gaussian ``exp(-(p^T S^-1 p)^beta / 2)``, ``[size, size]`` float32, sum 1.

    ``sigma_y=None`` gives the isotropic kernel; ``theta`` (radians) rotates the anisotropic one.
    ``beta=1`` is the Gaussian (the official parametrisation).
    """
    _check_size(size)
    dev = torch.device(device) if device is not None else None
    sy = sigma_x if sigma_y is None else sigma_y
    th = 0.0 if sigma_y is None else theta
    support = torch.tensor([size], device=dev)
    return _shape_kernels(
        size, support, _one(sigma_x, dev), _one(sy, dev), _one(th, dev), _one(beta, dev),
        torch.tensor([False], device=dev),
    )[0]


def gaussian_kernel(
    size: int,
    sigma_x: float,
    sigma_y: float | None = None,
    theta: float = 0.0,
    *,
    device: torch.device | str | None = None,
) -> Tensor:
    """Isotropic (``sigma_y=None``) or rotated anisotropic Gaussian, ``[size, size]`` float32, sum 1."""
    return generalized_gaussian_kernel(size, sigma_x, sigma_y, theta, 1.0, device=device)


def plateau_kernel(
    size: int,
    sigma_x: float,
    sigma_y: float | None = None,
    theta: float = 0.0,
    beta: float = 1.0,
    *,
    device: torch.device | str | None = None,
) -> Tensor:
    """Plateau kernel ``1 / (1 + (p^T S^-1 p)^beta)``, ``[size, size]`` float32, sum 1."""
    _check_size(size)
    dev = torch.device(device) if device is not None else None
    sy = sigma_x if sigma_y is None else sigma_y
    th = 0.0 if sigma_y is None else theta
    support = torch.tensor([size], device=dev)
    return _shape_kernels(
        size, support, _one(sigma_x, dev), _one(sy, dev), _one(th, dev), _one(beta, dev),
        torch.tensor([True], device=dev),
    )[0]


def sinc_kernel(size: int, cutoff: float, *, device: torch.device | str | None = None) -> Tensor:
    """Circular low-pass (2-D sinc) kernel with ``cutoff`` in radians (pi = Nyquist), sum 1."""
    _check_size(size)
    if not 0 < cutoff <= math.pi:
        raise ValueError(f"sinc cutoff must be in (0, pi], got {cutoff}")
    dev = torch.device(device) if device is not None else None
    return _sinc_kernels(size, torch.tensor([size], device=dev), _one(cutoff, dev))[0]


def pad_kernel(kernel: Tensor, size: int) -> Tensor:
    """Zero-pad ``[..., k, k]`` kernels (odd k) to ``[..., size, size]`` keeping them centred."""
    k = kernel.shape[-1]
    if size < k or (size - k) % 2:
        raise ValueError(f"cannot centre a {k}x{k} kernel in {size}x{size}")
    p = (size - k) // 2
    return F.pad(kernel, (p, p, p, p))


def pulse_kernel(size: int, *, device: torch.device | str | None = None) -> Tensor:
    """The identity filter: a unit pulse at the centre of ``[size, size]``."""
    _check_size(size)
    k = torch.zeros(size, size, device=device)
    k[size // 2, size // 2] = 1.0
    return k


def _half_split_beta(
    n: int, beta_range: tuple[float, float], generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """Official shape draw: with p 0.5 uniform in [low, 1], else uniform in [1, high]."""
    below = _rand(n, generator, device) < 0.5
    u = _rand(n, generator, device)
    lo, hi = beta_range
    return torch.where(below, lo + (1.0 - lo) * u, 1.0 + (hi - 1.0) * u)


def random_mixed_kernels(
    n: int,
    blur: BlurKernelConfig,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    support: Tensor | None = None,
) -> Tensor:
    """``n`` Gaussian-family kernels ``[n, blur.pad_to, blur.pad_to]`` float32, each summing to 1.

    Per kernel: a type from ``blur.kernel_types`` with ``blur.kernel_probs``; ``sigma_x`` (and for
    aniso types ``sigma_y`` and a rotation in [-pi, pi]) uniform in ``blur.sigma_range``; beta
    from ``betag_range`` (generalized) or ``betap_range`` (plateau) by the half-split rule.
    ``support`` (odd sizes ``[n]``) defaults to a uniform draw from ``blur.kernel_sizes``.
    """
    dev = torch.device(device) if device is not None else _gen_device(generator, torch.device("cpu"))
    gdev = _gen_device(generator, dev)
    if support is None:
        support = torch.tensor(blur.kernel_sizes, device=gdev)[
            _choice_batch(n, [1.0] * len(blur.kernel_sizes), generator, gdev)
        ]
    kind = _choice_batch(n, blur.kernel_probs, generator, gdev)
    names = blur.kernel_types
    is_aniso = torch.tensor([t.endswith("aniso") for t in names], device=gdev)[kind]
    is_gen = torch.tensor([t.startswith("generalized") for t in names], device=gdev)[kind]
    is_plat = torch.tensor([t.startswith("plateau") for t in names], device=gdev)[kind]
    sigma_x = _uniform(n, *blur.sigma_range, generator, gdev)
    sigma_y = torch.where(is_aniso, _uniform(n, *blur.sigma_range, generator, gdev), sigma_x)
    theta = torch.where(is_aniso, _uniform(n, -math.pi, math.pi, generator, gdev), torch.zeros_like(sigma_x))
    beta_g = _half_split_beta(n, blur.betag_range, generator, gdev)
    beta_p = _half_split_beta(n, blur.betap_range, generator, gdev)
    beta = torch.where(is_gen, beta_g, torch.where(is_plat, beta_p, torch.ones_like(beta_g)))
    k = _shape_kernels(blur.pad_to, support.to(gdev), sigma_x, sigma_y, theta, beta, is_plat)
    return k.to(dev)


def sample_blur_kernels(
    n: int,
    blur: BlurKernelConfig,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """One stage's per-sample kernels ``[n, blur.pad_to, blur.pad_to]`` float32 (sum 1 each).

    Size uniform from ``blur.kernel_sizes``; with ``blur.sinc_prob`` a sinc kernel (cutoff by the
    official size rule), else ``random_mixed_kernels``.
    """
    dev = torch.device(device) if device is not None else _gen_device(generator, torch.device("cpu"))
    gdev = _gen_device(generator, dev)
    sizes = torch.tensor(blur.kernel_sizes, device=gdev)
    support = sizes[_choice_batch(n, [1.0] * len(sizes), generator, gdev)]
    use_sinc = _rand(n, generator, gdev) < blur.sinc_prob
    large = support >= blur.sinc_large_from
    cutoff = torch.where(
        large,
        _uniform(n, *blur.sinc_cutoff_large, generator, gdev),
        _uniform(n, *blur.sinc_cutoff_small, generator, gdev),
    )
    mixed = random_mixed_kernels(n, blur, generator, gdev, support=support)
    sinc = _sinc_kernels(blur.pad_to, support, cutoff)
    return torch.where(use_sinc.view(n, 1, 1), sinc, mixed).to(dev)


def sample_final_sinc_kernels(
    n: int,
    cfg: DegradationConfig,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """The final step's kernels ``[n, P, P]`` (P = ``cfg.final_sinc_pad_to``): sinc or unit pulse."""
    dev = torch.device(device) if device is not None else _gen_device(generator, torch.device("cpu"))
    gdev = _gen_device(generator, dev)
    use_sinc = _rand(n, generator, gdev) < cfg.final_sinc_prob
    sizes = torch.tensor(cfg.final_sinc_sizes, device=gdev)
    support = sizes[_choice_batch(n, [1.0] * len(sizes), generator, gdev)]
    cutoff = _uniform(n, *cfg.final_sinc_cutoff, generator, gdev)
    sinc = _sinc_kernels(cfg.final_sinc_pad_to, support, cutoff)
    pulse = pulse_kernel(cfg.final_sinc_pad_to, device=gdev).expand_as(sinc)
    return torch.where(use_sinc.view(n, 1, 1), sinc, pulse).to(dev)


# -- filtering and resizing ------------------------------------------------------------------


def filter2d(x: Tensor, kernel: Tensor) -> Tensor:
    """Correlate each image with its own kernel (like ``cv2.filter2D``), reflect-padded.

    ``x``: ``[B, C, H, W]``; ``kernel``: ``[k, k]``, ``[1, k, k]`` (shared) or ``[B, k, k]`` with
    odd k. Returns ``[B, C, H, W]`` in ``x``'s dtype. Images no larger than ``k // 2`` fall back to
    replicate padding (reflection needs more pixels than the pad).
    """
    if x.dim() != 4:
        raise ValueError(f"expected images [B, C, H, W], got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    if kernel.dim() == 2:
        kernel = kernel[None]
    k = kernel.shape[-1]
    if kernel.dim() != 3 or kernel.shape[-2] != k or k % 2 != 1 or kernel.shape[0] not in (1, b):
        raise ValueError(f"expected odd square kernels [1 or {b}, k, k], got shape {tuple(kernel.shape)}")
    p = k // 2
    mode = "reflect" if p < min(h, w) else "replicate"
    padded = F.pad(x.reshape(1, b * c, h, w), (p, p, p, p), mode=mode)
    weight = kernel.to(device=x.device, dtype=x.dtype)[:, None].expand(b, c, k, k).reshape(b * c, 1, k, k)
    return F.conv2d(padded, weight, groups=b * c).view(b, c, h, w)


def resize(
    x: Tensor,
    mode: str,
    size: tuple[int, int] | None = None,
    scale_factor: float | None = None,
) -> Tensor:
    """``F.interpolate`` with ``area``/``bilinear``/``bicubic`` (no antialias, half-pixel centres).

    Give either ``size`` or ``scale_factor`` (output ``floor(H * s)``; the factor itself maps
    coordinates, as the official pipeline does). ``[B, C, H, W]`` -> ``[B, C, H', W']``.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r} (use {', '.join(RESIZE_MODES)})")
    if (size is None) == (scale_factor is None):
        raise ValueError("give exactly one of size or scale_factor")
    h, w = x.shape[-2:]
    out = size if size is not None else (int(h * scale_factor), int(w * scale_factor))  # type: ignore
    if min(out) < 1:
        raise ValueError(f"resizing {h}x{w} gives an empty image ({out[0]}x{out[1]}); use larger inputs")
    align = None if mode == "area" else False
    if size is not None:
        return F.interpolate(x, size=size, mode=mode, align_corners=align)
    return F.interpolate(x, scale_factor=scale_factor, mode=mode, align_corners=align)


def _area_matrix(n_in: int, n_out: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``[n_out, n_in]`` weights of an exact box (pixel-area) downscale, rows summing to 1."""
    s = n_in / n_out
    edges = torch.arange(n_out + 1, device=device, dtype=torch.float64) * s
    lo, hi = edges[:-1, None], edges[1:, None]
    j = torch.arange(n_in, device=device, dtype=torch.float64)[None]
    overlap = (torch.minimum(hi, j + 1) - torch.maximum(lo, j)).clamp_min(0)
    return (overlap / s).to(dtype)


def area_downscale(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Exact pixel-area downscale (``cv2.INTER_AREA`` for shrinking), ``[..., H, W]`` -> ``[..., h, w]``."""
    h, w = x.shape[-2:]
    if size[0] > h or size[1] > w or min(size) < 1:
        raise ValueError(f"area_downscale only shrinks: {h}x{w} -> {size[0]}x{size[1]}")
    rows = _area_matrix(h, size[0], x.device, x.dtype)
    cols = _area_matrix(w, size[1], x.device, x.dtype)
    return rows @ x @ cols.T


def _cubic(x: Tensor) -> Tensor:
    """Keys cubic with a = -0.5 (MATLAB ``imresize``'s bicubic kernel), support [-2, 2]."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    near = 1.5 * ax3 - 2.5 * ax2 + 1
    far = -0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2
    return torch.where(ax <= 1, near, torch.where(ax <= 2, far, torch.zeros_like(ax)))


def _matlab_bicubic_matrix(n_in: int, n_out: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``[n_out, n_in]`` weights of MATLAB ``imresize(..., 'bicubic')`` along one axis.

    Output pixel ``i`` (1-based) samples input coordinate ``u = i / s + (1 - 1 / s) / 2`` with
    ``s = n_out / n_in``; when shrinking the kernel is stretched by ``1 / s`` (antialiasing).
    Taps are normalised to sum to 1, then taps outside the image are folded back onto it by
    symmetric reflection (edge repeated), as MATLAB's ``contributions`` does. Built in float64.
    """
    s = n_out / n_in
    width = 4.0 / s if s < 1 else 4.0
    u = torch.arange(1, n_out + 1, dtype=torch.float64) / s + 0.5 * (1 - 1 / s)
    left = torch.floor(u - width / 2)
    taps = left[:, None] + torch.arange(math.ceil(width) + 2, dtype=torch.float64)[None]
    dist = u[:, None] - taps
    weights = s * _cubic(s * dist) if s < 1 else _cubic(dist)
    weights = weights / weights.sum(1, keepdim=True)
    idx = (taps.long() - 1) % (2 * n_in)  # 0-based, then mirror [0..n-1, n-1..0]
    idx = torch.where(idx < n_in, idx, 2 * n_in - 1 - idx)
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    m.scatter_add_(1, idx, weights)
    return m.to(device=device, dtype=dtype)


def matlab_bicubic_resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """MATLAB ``imresize(x, [h w], 'bicubic')`` (antialiased when shrinking), before ``im2uint8``.

    The classic bicubic SR benchmarks (Set5, Set14, DIV2K ``X4``) are made this way from
    mod-cropped HR images. ``[..., H, W]`` -> ``[..., h, w]``, not clamped or rounded; the maths
    runs in float32 (float64 for float64 input) and comes back in the input's dtype.
    """
    h, w = x.shape[-2:]
    if min(size) < 1:
        raise ValueError(f"resizing {h}x{w} to {size[0]}x{size[1]} gives an empty image")
    xw = x.to(_work_dtype(x.dtype))
    rows = _matlab_bicubic_matrix(h, size[0], xw.device, xw.dtype)
    cols = _matlab_bicubic_matrix(w, size[1], xw.device, xw.dtype)
    return (rows @ xw @ cols.T).to(x.dtype)


def shortest_side_center_crop(img: Tensor, size: int) -> Tensor:
    """Scale the shorter side to ``size`` (bilinear, as ``cv2.INTER_LINEAR``) and cut the central square.

    The ResShift ImageNet-Test preprocessing of an HR image (albumentations ``SmallestMaxSize`` +
    ``CenterCrop``): the longer side becomes ``round(L * size / S)``. ``[B, C, H, W]`` ->
    ``[B, C, size, size]``.
    """
    h, w = img.shape[-2:]
    if min(h, w) < 2:
        raise ValueError(f"image is {w}x{h}; it needs at least 2 pixels on each side")
    if min(h, w) != size:
        k = size / min(h, w)
        nh, nw = (size, max(size, round(w * k))) if h <= w else (max(size, round(h * k)), size)
        img = resize(img.to(_work_dtype(img.dtype)), "bilinear", size=(nh, nw)).to(img.dtype)
        h, w = nh, nw
    top, left = (h - size) // 2, (w - size) // 2
    return img[..., top:top + size, left:left + size]


# -- noise -----------------------------------------------------------------------------------


def _per_sample(v: Tensor | float | bool, b: int, like: Tensor) -> Tensor:
    """A scalar or ``[B]`` value (bools become 0/1) as ``[B, 1, 1, 1]`` in ``like``'s device and dtype."""
    t = torch.as_tensor(v).to(device=like.device, dtype=like.dtype).reshape(-1)
    if t.numel() not in (1, b):
        raise ValueError(f"expected a scalar or {b} per-sample values, got {t.numel()}")
    return t.view(-1, 1, 1, 1).expand(b, 1, 1, 1)


def round_to_uint8(x: Tensor) -> Tensor:
    """``clamp(round(x * 255), 0, 255) / 255``: the 8-bit grid in [0, 1]."""
    return torch.clamp(torch.round(x * 255.0), 0, 255) / 255.0


def _gray(x: Tensor) -> Tensor:
    """ITU-R 601 luma ``[B, 1, H, W]`` (weights 0.2989, 0.587, 0.114) of RGB ``[B, 3, H, W]``."""
    w = torch.tensor([0.2989, 0.587, 0.114], device=x.device, dtype=x.dtype)
    return (x * w.view(1, 3, 1, 1)).sum(1, keepdim=True)


def _levels(img: Tensor) -> Tensor:
    """Per sample, the number of distinct 8-bit values rounded up to a power of two, ``[B,1,1,1]``."""
    b = img.shape[0]
    idx = torch.round(img * 255.0).long().clamp(0, 255).reshape(b, -1)
    hist = torch.zeros(b, 256, device=img.device, dtype=img.dtype).scatter_(1, idx, 1.0)
    count = hist.sum(1)
    return torch.exp2(torch.ceil(torch.log2(count))).view(b, 1, 1, 1)


def add_gaussian_noise(
    x: Tensor,
    sigma: Tensor | float,
    gray: Tensor | bool = False,
    *,
    generator: torch.Generator | None = None,
    clip: bool = True,
) -> Tensor:
    """Add Gaussian noise with std ``sigma / 255`` (scalar or ``[B]``), grey where ``gray`` (``[B]``).

    Grey noise is one field shared by the three channels. ``[B, C, H, W]`` in [0, 1] -> same,
    clamped to [0, 1] when ``clip``.
    """
    b, c, h, w = x.shape
    s = _per_sample(sigma, b, x) / 255.0
    g = _per_sample(gray, b, x) > 0.5
    colour = _randn((b, c, h, w), generator, x)
    mono = _randn((b, 1, h, w), generator, x)
    out = x + torch.where(g, mono.expand(b, c, h, w), colour) * s
    return out.clamp(0, 1) if clip else out


def add_poisson_noise(
    x: Tensor,
    scale: Tensor | float,
    gray: Tensor | bool = False,
    *,
    generator: torch.Generator | None = None,
    clip: bool = True,
) -> Tensor:
    """Add shot noise: ``scale * (Poisson(v * r) / v - r)`` with ``r`` the 8-bit-rounded image.

    ``v`` is the number of distinct 8-bit values in the sample rounded up to a power of two (as
    scikit-image's ``random_noise``); grey samples draw the noise from the luma and share it
    across channels. ``scale`` and ``gray`` are scalars or ``[B]``. ``[B, 3, H, W]`` in [0, 1] ->
    same, clamped when ``clip``. The noise has mean zero, so the mean is kept before clamping.
    """
    b, c, h, w = x.shape
    s = _per_sample(scale, b, x)
    g = _per_sample(gray, b, x) > 0.5
    rgb = round_to_uint8(x)
    v = _levels(rgb)
    colour = _poisson(rgb * v, generator) / v - rgb
    luma = round_to_uint8(_gray(x))
    vg = _levels(luma)
    mono = _poisson(luma * vg, generator) / vg - luma
    out = x + torch.where(g, mono.expand(b, c, h, w), colour) * s
    return out.clamp(0, 1) if clip else out


# -- JPEG ------------------------------------------------------------------------------------

# ITU-T T.81 Annex K quantisation tables, natural order: row = vertical frequency.
_LUMA_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
_CHROMA_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
) + ((99,) * 8,) * 4
# JFIF full-range RGB <-> YCbCr (Cb, Cr offset by 128).
_RGB_TO_YCC = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
_YCC_TO_RGB = ((1.0, 0.0, 1.402), (1.0, -0.344136, -0.714136), (1.0, 1.772, 0.0))


def jpeg_quality_to_factor(quality: Tensor) -> Tensor:
    """libjpeg's table scaling as a factor: ``50 / q`` below 50, ``2 - q / 50`` from 50 on."""
    if bool((quality <= 0).any()) or bool((quality > 100).any()):
        raise ValueError("JPEG quality must be in (0, 100]")
    return torch.where(quality < 50, 50.0 / quality, 2.0 - quality / 50.0)


def _dct_matrix(device: torch.device, dtype: torch.dtype) -> Tensor:
    """Orthonormal 8-point DCT-II ``A[u, x]``: the JPEG FDCT of a block ``f`` is ``A f A^T``."""
    x = torch.arange(8, dtype=torch.float64)
    u = x[:, None]
    a = torch.cos((2 * x[None] + 1) * u * math.pi / 16) * math.sqrt(2 / 8)
    a[0] = math.sqrt(1 / 8)
    return a.to(device=device, dtype=dtype)


def _jpeg_plane(plane: Tensor, table: Tensor, dct: Tensor) -> Tensor:
    """Level-shift, 8x8 DCT, quantise with ``table`` ``[B, 8, 8]``, dequantise and invert.

    ``plane``: ``[B, C, H, W]`` in 0-255 with H, W multiples of 8.
    """
    b, c, h, w = plane.shape
    blocks = plane.reshape(b, c, h // 8, 8, w // 8, 8).transpose(3, 4)  # [B, C, h/8, w/8, 8, 8]
    coef = dct @ (blocks - 128.0) @ dct.T
    q = table.view(b, 1, 1, 1, 8, 8)
    coef = torch.round(coef / q) * q
    rec = dct.T @ coef @ dct + 128.0
    return rec.transpose(3, 4).reshape(b, c, h, w)


def jpeg_compress(x: Tensor, quality: Tensor | float, *, pad_mode: JpegPad = "constant") -> Tensor:
    """Baseline JPEG round trip in torch (4:2:0, standard tables), per-sample ``quality`` in (0, 100].

    RGB -> YCbCr, 2x2 average chroma subsampling, 8x8 DCT, quantisation by the Annex K tables
    times ``jpeg_quality_to_factor(quality)`` (kept in [1, 255] as libjpeg does, but not rounded:
    qualities may be fractional), rounding, then the inverse with nearest-neighbour chroma
    upsampling. Images are padded to a multiple of 16 with ``pad_mode``. ``[B, 3, H, W]`` in [0, 1]
    -> same shape in [0, 1] (not rounded to 8 bits).
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected RGB images [B, 3, H, W], got shape {tuple(x.shape)}")
    if pad_mode not in ("constant", "replicate"):
        raise ValueError(f"pad_mode must be 'constant' or 'replicate', got {pad_mode!r}")
    b, _, h, w = x.shape
    in_dtype = x.dtype
    x = x.to(_work_dtype(in_dtype))
    dev, dt = x.device, x.dtype
    q = torch.as_tensor(quality, dtype=dt).to(dev).reshape(-1).expand(b)
    factor = jpeg_quality_to_factor(q).view(b, 1, 1)
    luma_table = (torch.tensor(_LUMA_TABLE, device=dev, dtype=dt) * factor).clamp(1, 255)
    chroma_table = (torch.tensor(_CHROMA_TABLE, device=dev, dtype=dt) * factor).clamp(1, 255)
    dct = _dct_matrix(dev, dt)

    ph, pw = (-h) % 16, (-w) % 16
    x = F.pad(x, (0, pw, 0, ph), mode=pad_mode)
    to_ycc = torch.tensor(_RGB_TO_YCC, device=dev, dtype=dt)
    shift = torch.tensor([0.0, 128.0, 128.0], device=dev, dtype=dt).view(1, 3, 1, 1)
    ycc = torch.einsum("ij,bjhw->bihw", to_ycc, x * 255.0) + shift
    y = _jpeg_plane(ycc[:, :1], luma_table, dct)
    cbcr = _jpeg_plane(F.avg_pool2d(ycc[:, 1:], 2), chroma_table, dct)
    cbcr = cbcr.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
    to_rgb = torch.tensor(_YCC_TO_RGB, device=dev, dtype=dt)
    rgb = torch.einsum("ij,bjhw->bihw", to_rgb, torch.cat([y, cbcr], 1) - shift)
    return (rgb.clamp(0, 255) / 255.0)[..., :h, :w].to(in_dtype)


# -- the pipeline ----------------------------------------------------------------------------


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


# -- HR preprocessing, paired crop, training-pair pool ---------------------------------------


def _randint(high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [0, high]."""
    dev = _gen_device(generator, torch.device("cpu"))
    return int(torch.randint(0, high + 1, (1,), generator=generator, device=dev))


def rescale_gt(
    img: Tensor,
    gt_size: int = 256,
    generator: torch.Generator | None = None,
    *,
    hflip: bool = True,
) -> Tensor:
    """The official ``rescale_gt`` preprocessing of one HR image.

    Flip horizontally with p 0.5 (when ``hflip``), reflect-pad sides shorter than ``gt_size``,
    crop a random square of side ``max(min(H, W), gt_size)`` and shrink it to ``gt_size`` by pixel
    area (``cv2.INTER_AREA``). ``[3, H, W]`` in [0, 1] -> ``[3, gt_size, gt_size]``.
    """
    if img.dim() != 3:
        raise ValueError(f"expected one image [C, H, W], got shape {tuple(img.shape)}")
    if hflip and _bernoulli(0.5, generator):
        img = img.flip(-1)
    h, w = img.shape[-2:]
    side = max(min(h, w), gt_size)
    while h < side or w < side:  # reflect (no edge repeat), at most doubling a side per pass
        ph, pw = max(0, side - h), max(0, side - w)
        if (ph and h < 2) or (pw and w < 2):  # a 1-pixel side cannot be reflected
            img = F.pad(img[None], (0, pw, 0, ph), mode="replicate")[0]
        else:
            img = F.pad(img[None], (0, min(pw, w - 1), 0, min(ph, h - 1)), mode="reflect")[0]
        h, w = img.shape[-2:]
    top, left = _randint(h - side, generator), _randint(w - side, generator)
    img = img[:, top:top + side, left:left + side]
    if side != gt_size:
        img = area_downscale(img, (gt_size, gt_size))
    return img


def random_crop_pair(
    hr: Tensor,
    lq: Tensor,
    gt_size: int = 256,
    scale: int = 4,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Crop aligned patches: ``hr`` ``[B, C, gt, gt]`` and ``lq`` ``[B, C, gt/s, gt/s]``.

    One random offset for the whole batch (as the official ``paired_random_crop``), chosen on the
    LR grid and multiplied by ``scale`` for the HR crop.
    """
    if gt_size % scale:
        raise ValueError(f"gt_size {gt_size} must be a multiple of scale {scale}")
    hh, hw = hr.shape[-2:]
    lh, lw = lq.shape[-2:]
    if (hh, hw) != (lh * scale, lw * scale):
        raise ValueError(f"HR {hh}x{hw} is not {scale}x the LR {lh}x{lw}")
    lq_size = gt_size // scale
    if lh < lq_size or lw < lq_size:
        raise ValueError(f"LR {lh}x{lw} is smaller than the patch {lq_size}x{lq_size}")
    top, left = _randint(lh - lq_size, generator), _randint(lw - lq_size, generator)
    lq = lq[..., top:top + lq_size, left:left + lq_size]
    hr = hr[..., top * scale:top * scale + gt_size, left * scale:left * scale + gt_size]
    return hr, lq


class TrainingPairPool:
    """The official training-pair pool (``_dequeue_and_enqueue``): mixes samples across batches.

    Until ``size`` samples are stored, each batch is stored and returned as is. Once full, the pool
    is shuffled, its first B samples are returned and replaced by the incoming batch. ``size``
    must be a multiple of the batch size (official: 10 x batch).
    """

    def __init__(self, size: int, generator: torch.Generator | None = None) -> None:
        if size < 1:
            raise ValueError(f"pool size must be positive, got {size}")
        self.size = size
        self.generator = generator
        self._lq: Tensor | None = None
        self._gt: Tensor | None = None
        self._filled = 0

    def __len__(self) -> int:
        return self._filled

    @property
    def is_full(self) -> bool:
        return self._filled == self.size

    @torch.no_grad()
    def __call__(self, lq: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
        """Push a batch (``lq`` ``[B, ...]``, ``gt`` ``[B, ...]``) and get a batch of the same size."""
        b = lq.shape[0]
        if gt.shape[0] != b:
            raise ValueError(f"lq and gt batch sizes differ: {b} vs {gt.shape[0]}")
        if self._lq is None or self._gt is None:
            if self.size % b:
                raise ValueError(f"pool size {self.size} must be a multiple of the batch size {b}")
            self._lq = lq.new_zeros((self.size, *lq.shape[1:]))
            self._gt = gt.new_zeros((self.size, *gt.shape[1:]))
        if self._lq.shape[1:] != lq.shape[1:] or self._gt.shape[1:] != gt.shape[1:]:
            raise ValueError("every batch pushed to a pool must have the same sample shapes")
        if not self.is_full:
            self._lq[self._filled:self._filled + b] = lq.detach()
            self._gt[self._filled:self._filled + b] = gt.detach()
            self._filled += b
            return lq, gt
        dev = _gen_device(self.generator, torch.device("cpu"))
        perm = torch.randperm(self.size, generator=self.generator, device=dev).to(self._lq.device)
        self._lq, self._gt = self._lq[perm], self._gt[perm]
        out_lq, out_gt = self._lq[:b].clone(), self._gt[:b].clone()
        self._lq[:b] = lq.detach()
        self._gt[:b] = gt.detach()
        return out_lq, out_gt


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
