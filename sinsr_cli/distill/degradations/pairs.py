"""HR preprocessing and training pairs: the official ``rescale_gt`` crop, aligned LR/HR crops and
the official training-pair pool.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .draws import _bernoulli, _gen_device
from .resize import area_downscale


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


__all__ = ["rescale_gt", "random_crop_pair", "TrainingPairPool"]
