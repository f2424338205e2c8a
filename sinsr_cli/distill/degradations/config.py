"""The degradation's parameters: blur kernels, the two stages, the final step (frozen dataclasses;
``DegradationConfig.official()`` is the official Real-ESRGAN/SinSR setting, ``imagenet_test()``
ResShift's ImageNet-Test recipe).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence


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


__all__ = ["KERNEL_TYPES", "RESIZE_MODES", "BlurKernelConfig", "StageConfig", "DegradationConfig"]
