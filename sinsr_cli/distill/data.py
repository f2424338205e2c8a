"""Training data for ``sinsr distill``: HR crops (LR made on the device) or LR/HR pairs.

Reproducibility is by construction, not by saved state: the training stream is a sequence of
*sample keys* k = 0, 1, 2, ... Key k is image ``perm_e[k mod N]`` of epoch ``e = k // N`` (one
permutation per epoch, drawn from the seed), and every random choice made for that sample
(crop, flip) comes from a generator seeded with ``(seed, k)``. Step s of a run with global batch B
consumes keys ``[s*B, (s+1)*B)``; rank r of W takes the slice ``[s*B + r*B/W, s*B + (r+1)*B/W)``.
So the data of a step depends on neither the world size, the number of workers, nor whether the
run was resumed — ``--resume`` only needs the step count.

Images are float32 ``[3, H, W]`` in [0, 1]. The Real-ESRGAN degradation that turns an HR crop into
its LR runs later, batch-wise on the training device (``degradations.degrade``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from ..imageio import ImageReadError, SinsrIOError, collect_inputs, image_to_tensor, pair_by_stem, read_image, refuse_unpaired, refuse_unreadable
from .degradations import random_crop_pair, rescale_gt

CROP_MODES = ("rescale", "random")
_LR_NAMES = ("lr", "LR", "lq", "LQ")
_HR_NAMES = ("hr", "HR", "gt", "GT")


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (splitmix64 chained): stable across processes and runs."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) & 0xFFFFFFFFFFFFFFFF
        x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        x = z ^ (z >> 31)
    return x & 0x7FFFFFFFFFFFFFFF


def generator_for(*parts: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded with :func:`mix_seed` of ``parts``."""
    g = torch.Generator(device=device)
    g.manual_seed(mix_seed(*parts))
    return g


def _size(path: Path) -> tuple[int, int]:
    """(width, height) from the header, as ``read_image`` will orient it (EXIF 5-8 swap)."""
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
            w, h = h, w
    return w, h


def _read(path: Path) -> Tensor:
    return image_to_tensor(read_image(path).rgb)[0]


# -- datasets (indexed by (image index, sample key)) ---------------------------------------------


class HRCrops(Dataset):
    """HR images -> ``{"hr": [3, crop, crop]}`` in [0, 1].

    ``crop_mode="rescale"`` is the official ``rescale_gt``: a random square of side
    ``max(min(H, W), crop)`` shrunk to ``crop`` by area, horizontal flip with p 0.5.
    ``"random"``: a random ``crop`` x ``crop`` window at native resolution (reflect-padded when
    the image is smaller), horizontal flip with p 0.5.
    """

    def __init__(self, paths: Sequence[Path], crop: int = 256, seed: int = 0, crop_mode: str = "rescale") -> None:
        if not paths:
            raise ValueError("no training images")
        if crop_mode not in CROP_MODES:
            raise ValueError(f"unknown crop mode {crop_mode!r} (use {', '.join(CROP_MODES)})")
        self.paths, self.crop, self.seed, self.crop_mode = list(paths), crop, seed, crop_mode

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: tuple[int, int]) -> dict[str, Tensor]:
        index, key = item
        g = generator_for(self.seed, key)
        img = _read(self.paths[index])
        if self.crop_mode == "rescale":
            return {"hr": rescale_gt(img, self.crop, g)}
        if torch.rand(1, generator=g).item() < 0.5:
            img = img.flip(-1)
        img = _pad_to(img, self.crop)
        h, w = img.shape[-2:]
        top = int(torch.randint(0, h - self.crop + 1, (1,), generator=g))
        left = int(torch.randint(0, w - self.crop + 1, (1,), generator=g))
        return {"hr": img[:, top:top + self.crop, left:left + self.crop].contiguous()}


def _pad_to(img: Tensor, size: int) -> Tensor:
    h, w = img.shape[-2:]
    while h < size or w < size:
        ph, pw = max(0, size - h), max(0, size - w)
        mode = "reflect" if (not ph or h > 1) and (not pw or w > 1) else "replicate"
        lim = (min(pw, w - 1), min(ph, h - 1)) if mode == "reflect" else (pw, ph)
        img = torch.nn.functional.pad(img[None], (0, lim[0], 0, lim[1]), mode=mode)[0]
        h, w = img.shape[-2:]
    return img


class PairCrops(Dataset):
    """LR/HR pairs -> ``{"hr": [3, crop, crop], "lq": [3, crop/s, crop/s]}`` in [0, 1].

    One aligned random crop (offset on the LR grid) and a shared horizontal flip. The HR must be
    exactly ``scale`` times the LR and the LR at least ``crop/scale`` on each side.
    """

    def __init__(self, pairs: Sequence[tuple[Path, Path]], crop: int = 256, scale: int = 4, seed: int = 0) -> None:
        if not pairs:
            raise ValueError("no LR/HR training pairs")
        if crop % scale:
            raise ValueError(f"crop {crop} must be a multiple of the scale {scale}")
        for lr, hr in pairs:  # checked up front (headers only): a worker's error would be opaque
            (lw, lh) = _size(lr)
            _refuse_wrong_scale(lr, hr, (lw, lh), _size(hr), scale)
            if min(lw, lh) < crop // scale:
                raise SinsrIOError(lr, f"{lw}x{lh} is smaller than the LR crop {crop // scale}x{crop // scale}")
        self.pairs, self.crop, self.scale, self.seed = list(pairs), crop, scale, seed

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, item: tuple[int, int]) -> dict[str, Tensor]:
        index, key = item
        g = generator_for(self.seed, key)
        lr_path, hr_path = self.pairs[index]
        lq, hr = _read(lr_path), _read(hr_path)
        try:
            hr, lq = random_crop_pair(hr[None], lq[None], self.crop, self.scale, g)
        except ValueError as e:
            raise SinsrIOError(lr_path, f"cannot crop this pair: {e}") from None
        if torch.rand(1, generator=g).item() < 0.5:
            hr, lq = hr.flip(-1), lq.flip(-1)
        return {"hr": hr[0].contiguous(), "lq": lq[0].contiguous()}


# -- the sharded, resumable sample stream -----------------------------------------------------


class StreamSampler(Sampler):
    """Yields ``(image index, sample key)`` for one rank, forever, from step ``start_step`` on.

    See the module docstring: the keys of step s are ``[s*B, (s+1)*B)`` with ``B = global_batch``,
    this rank takes the ``rank``-th of ``world`` equal slices. Epoch permutations come from
    ``(seed, epoch)``.
    """

    def __init__(self, n: int, global_batch: int, seed: int, rank: int = 0, world: int = 1, start_step: int = 0) -> None:
        if global_batch % world:
            raise ValueError(f"batch {global_batch} is not divisible by the world size {world}")
        self.n, self.batch, self.seed = n, global_batch, seed
        self.rank, self.world, self.start_step = rank, world, start_step
        self._perm: tuple[int, Tensor] | None = None

    def index(self, key: int) -> int:
        epoch, pos = divmod(key, self.n)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, torch.randperm(self.n, generator=generator_for(self.seed, 0xE90C, epoch)))
        return int(self._perm[1][pos])

    def keys(self, step: int) -> range:
        per_rank = self.batch // self.world
        start = step * self.batch + self.rank * per_rank
        return range(start, start + per_rank)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        step = self.start_step
        while True:
            for key in self.keys(step):
                yield self.index(key), key
            step += 1


def stream_loader(
    dataset: Dataset,
    global_batch: int,
    seed: int,
    *,
    rank: int = 0,
    world: int = 1,
    start_step: int = 0,
    workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[dict[str, Tensor]]:
    """An endless iterator of this rank's per-step batches (``[B/W, ...]`` dicts).

    ``workers`` is capped at the CPUs this process may use: more only contend (torch warns),
    and the batches do not depend on the number of workers."""
    workers = min(workers, _usable_cpus())
    sampler = StreamSampler(len(dataset), global_batch, seed, rank, world, start_step)  # type: ignore[arg-type]
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=global_batch // world,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        prefetch_factor=2 if workers > 0 else None,
    )
    return _worker_errors_in_one_line(iter(loader))


def _worker_errors_in_one_line(batches: Iterator[dict[str, Tensor]]) -> Iterator[dict[str, Tensor]]:
    """``batches``, with an image error raised in a worker process as the worker raised it.

    torch re-raises a worker's exception as ``Caught ImageReadError in DataLoader worker process
    0. Original Traceback ...`` (a RuntimeError, since our errors take a path and a reason): the
    last line of that traceback is the error's own message."""
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except RuntimeError as e:
            text = str(e)
            last = text.rstrip().splitlines()[-1] if text.strip() else ""
            name, _, message = last.partition(": ")
            if text.startswith("Caught ") and "DataLoader worker" in text and name.endswith(("ImageReadError", "SinsrIOError")):
                raise ImageReadError(None, message) from None
            raise
        yield batch


# -- finding the data -------------------------------------------------------------------------


def find_hr_images(root: str | os.PathLike[str]) -> list[Path]:
    """Every image below ``root`` (recursive, detected by content), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise SinsrIOError(root, "not a directory")
    items, skipped = collect_inputs([root], recursive=True)
    refuse_unreadable(skipped)  # an empty or broken x.png is an error now, not hours into the run
    if not items:
        raise SinsrIOError(root, "no images found (searched recursively)")
    return [i.path for i in items]


def pair_dirs(root: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``root/lr`` (or LR, lq, LQ) and ``root/hr`` (or HR, gt, GT)."""
    root = Path(root)
    if not root.is_dir():
        raise SinsrIOError(root, "not a directory")
    lr = next((root / n for n in _LR_NAMES if (root / n).is_dir()), None)
    hr = next((root / n for n in _HR_NAMES if (root / n).is_dir()), None)
    if lr is None or hr is None:
        raise SinsrIOError(root, "expected sub-folders lr/ and hr/ (or lq/ and gt/) holding images with matching names")
    return lr, hr


def find_pairs(root: str | os.PathLike[str]) -> list[tuple[Path, Path]]:
    """(LR, HR) paths matched by relative path without extension (``imageio.pair_by_stem``)."""
    lr, hr = pair_dirs(root)
    pairs, lr_only, hr_only = pair_by_stem(lr, hr)
    refuse_unpaired(lr, hr, lr_only, hr_only)  # as bench does: half a pair is a mistake
    if not pairs:
        raise SinsrIOError(root, "no LR/HR pairs with matching names")
    return pairs


@dataclass
class ValPair:
    """One validation pair: ``lr [1,3,h,w]``, ``hr [1,3,H,W]`` in [0, 1]."""

    name: str
    lr: Tensor
    hr: Tensor


def load_val_pairs(root: str | os.PathLike[str], limit: int = 0) -> list[ValPair]:
    """The first ``limit`` (0 = all) validation pairs of ``root``, decoded once, kept in memory."""
    pairs = find_pairs(root)
    if limit:
        pairs = pairs[:limit]
    lr_root = pair_dirs(root)[0]
    out = []
    for lr_path, hr_path in pairs:
        lr, hr = _read(lr_path), _read(hr_path)
        _refuse_wrong_scale(lr_path, hr_path, (lr.shape[-1], lr.shape[-2]), (hr.shape[-1], hr.shape[-2]))
        out.append(ValPair(lr_path.relative_to(lr_root).with_suffix("").as_posix(), lr[None], hr[None]))
    return out


def _refuse_wrong_scale(lr: Path, hr: Path, lr_size: tuple[int, int], hr_size: tuple[int, int], scale: int = 4) -> None:
    """The rule of every LR/HR pair (training and validation): the HR is exactly ``scale`` x the LR."""
    (lw, lh), (hw, hh) = lr_size, hr_size
    if (hw, hh) != (lw * scale, lh * scale):
        raise SinsrIOError(hr, f"is {hw}x{hh}, not {scale}x its LR {lr.name} ({lw}x{lh})")


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


__all__ = [
    "CROP_MODES",
    "mix_seed",
    "generator_for",
    "HRCrops",
    "PairCrops",
    "StreamSampler",
    "stream_loader",
    "find_hr_images",
    "pair_dirs",
    "find_pairs",
    "ValPair",
    "load_val_pairs",
]
