"""Blur kernels: isotropic/anisotropic (generalised) Gaussians, plateau, sinc, pulse; drawn per
sample as the official ``random_mixed_kernels``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import BlurKernelConfig, DegradationConfig
from .draws import _choice_batch, _gen_device, _rand, _uniform


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


__all__ = ["gaussian_kernel", "generalized_gaussian_kernel", "plateau_kernel", "sinc_kernel", "pulse_kernel", "pad_kernel", "random_mixed_kernels", "sample_blur_kernels", "sample_final_sinc_kernels"]
