"""What ``sinsr bench`` runs on: LR images, optionally paired with HR images by name.

Layouts (see :func:`find_dataset`):

* ``DIR`` with ``DIR/lr`` and ``DIR/hr`` sub-folders: paired;
* ``DIR`` (LR) plus ``hr=HR_DIR``: paired;
* anything else (a folder, file or glob of LR images): no-reference.

Or :func:`make_lr_dataset` makes the LR images from HR images with one of :data:`LR_RECIPES`
(the ResShift ImageNet-Test degradation, or MATLAB bicubic x4), writes ``lr/`` and ``hr/``
under a folder and returns that folder as a paired dataset. Each image's random draws are
seeded from its name, so the same HR folder always gives the same LR images, whatever else is
in it.

Pairs are matched by relative path without extension (``imageio.pair_by_stem``), never by sort
order; an image without a partner, or an HR image that is not exactly ``scale`` x its LR, is an
error that names the files, and so is a file named as an image that cannot be read (other
non-images in the folders are ignored). :class:`ImageStore` decodes every image once up front (so a bad
file fails before any model is loaded), keeps LR images in memory as 8/16-bit arrays, and keeps
HR images too while they fit in ``hr_cache_bytes`` (re-reading the rest when needed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SettingError
from ..files import within
from ..imageio import (
    SinsrIOError,
    collect_inputs,
    image_to_tensor,
    pair_by_stem,
    read_image,
    refuse_unpaired,
    refuse_unreadable,
    tensor_to_image,
    write_image,
)

__all__ = [
    "LR_RECIPES",
    "BenchDataset",
    "BenchItem",
    "ImageStore",
    "find_dataset",
    "make_lr_dataset",
    "recipe_seed",
]


@dataclass(frozen=True)
class BenchItem:
    """One benchmark image: ``name`` is its path below the LR root without extension."""

    name: str
    lr: Path
    hr: Path | None


@dataclass(frozen=True)
class BenchDataset:
    """The images of one benchmark, in name order."""

    items: tuple[BenchItem, ...]
    lr_root: Path
    hr_root: Path | None
    total: int  # images found before --limit
    lr_recipe: str | None = None  # how the LR images were made (make_lr_dataset), if sinsr made them

    @property
    def paired(self) -> bool:
        return self.hr_root is not None

    @property
    def mode(self) -> str:
        return "paired" if self.paired else "no-reference"


def find_dataset(
    input: str | os.PathLike[str],  # noqa: A002 - mirrors the CLI argument
    hr: str | os.PathLike[str] | None = None,
    *,
    limit: int | None = None,
) -> BenchDataset:
    """Discover the images to benchmark (see the module docstring for the layouts).

    Args:
        input: a folder holding ``lr/`` and ``hr/``; or the LR folder (with ``hr``); or LR
            images (folder, file or glob) for no-reference mode.
        hr: the HR folder, paired with ``input`` by name.
        limit: keep only the first ``limit`` images in name order.

    Raises:
        SinsrIOError: missing folders, no images, or images without a partner.
        ValueError: ``limit`` < 1.
    """
    if limit is not None and limit < 1:
        raise SettingError("limit", f"limit must be at least 1, got {limit}")
    root = Path(os.path.expanduser(os.fspath(input)))
    if hr is not None:
        lr_dir, hr_dir = root, Path(os.path.expanduser(os.fspath(hr)))
    elif root.is_dir() and (root / "hr").is_dir():
        lr_dir, hr_dir = root / "lr", root / "hr"
        if not lr_dir.is_dir():
            raise SinsrIOError(root, "has an hr/ folder but no lr/ folder next to it")
    else:
        lr_dir, hr_dir = (root / "lr" if (root / "lr").is_dir() else root), None

    if hr_dir is None:
        found, skipped = collect_inputs([lr_dir])
        refuse_unreadable(skipped)
        if not found:
            why = f" ({skipped[0][1]})" if skipped else ""
            raise SinsrIOError(lr_dir, f"no images found{why}")
        stems = [i.rel.with_suffix("").as_posix() for i in found]
        counts = Counter(stems)
        # a.png next to a.jpg: keep the extension in both names so outputs cannot collide
        items = [
            BenchItem(stem if counts[stem] == 1 else i.rel.as_posix(), i.path, None)
            for stem, i in zip(stems, found)
        ]
    else:
        pairs, lr_only, hr_only = pair_by_stem(lr_dir, hr_dir)
        refuse_unpaired(lr_dir, hr_dir, lr_only, hr_only)
        if not pairs:
            raise SinsrIOError(lr_dir, f"no images found to pair with {hr_dir}")
        items = [BenchItem(lr.relative_to(lr_dir).with_suffix("").as_posix(), lr, h) for lr, h in pairs]

    total = len(items)
    if limit is not None:
        items = items[:limit]
    return BenchDataset(tuple(items), lr_dir, hr_dir, total)


# --------------------------------------------------------------------------- LR made from HR

#: ``make_lr_dataset`` recipes: name -> what it does (written into reports)
LR_RECIPES: dict[str, str] = {
    "imagenet-test": (
        "ResShift ImageNet-Test: HR shorter side scaled to 256 (bilinear) and centre-cropped to 256x256, "
        "then the first-order Real-ESRGAN degradation of configs/degradation_testing_realesrgan.yaml "
        "(13x13 iso/aniso Gaussian blur, sigma 0.2-0.8; resize 0.5-1.5; Gaussian noise 1-15 or Poisson "
        "0.05-0.3; JPEG 70-95; resize to 64 (+sinc p 0.2) and JPEG 80-100), 8-bit PNG; "
        "per-image seed from the file name"
    ),
    "bicubic": (
        "HR cropped to a multiple of 4 (bottom/right), LR = MATLAB imresize(HR, 1/4, 'bicubic') "
        "(antialiased Keys a=-0.5), rounded to 8 bits"
    ),
}
_IMAGENET_SIZE = 256
_SCALE = 4  # same as protocol.SCALE: kept here so reading a dataset does not import torch


def recipe_seed(name: str, recipe: str) -> int:
    """The seed of image ``name`` (its path below the HR root, no extension) under ``recipe``.

    A hash of the name, not its position: adding, removing or renaming other files changes no
    other image's LR.
    """
    digest = hashlib.sha256(f"sinsr-bench/{recipe}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _empty_pair_dir(p: Path) -> bool:
    """An empty ``lr/`` or ``hr/`` folder (what an earlier stopped run of ours leaves)."""
    return p.name in ("lr", "hr") and p.is_dir() and not any(p.iterdir())


def _make_pair(rgb: np.ndarray, bit_depth: int, recipe: str, seed: int) -> tuple[np.ndarray, int, np.ndarray]:
    """(HR ``[H, W, 3]``, its bit depth, LR ``[H/4, W/4, 3]``) in [0, 1] for one HR image."""
    import torch

    from ..distill.degradations import (
        DegradationConfig,
        degrade,
        matlab_bicubic_resize,
        round_to_uint8,
        shortest_side_center_crop,
    )

    x = image_to_tensor(rgb)
    if recipe == "imagenet-test":
        hr = shortest_side_center_crop(x, _IMAGENET_SIZE)
        g = torch.Generator().manual_seed(seed)
        lr = degrade(hr, DegradationConfig.imagenet_test(), generator=g)
        return tensor_to_image(round_to_uint8(hr)), 8, tensor_to_image(lr)
    h, w = x.shape[-2:]
    h, w = h - h % _SCALE, w - w % _SCALE
    if min(h, w) < _SCALE:
        raise ValueError(f"is {x.shape[-1]}x{x.shape[-2]}; bicubic x{_SCALE} needs at least {_SCALE} px a side")
    hr = x[..., :h, :w]
    lr = round_to_uint8(matlab_bicubic_resize(hr, (h // _SCALE, w // _SCALE)).clamp(0, 1))
    return tensor_to_image(hr), bit_depth, tensor_to_image(lr)


def make_lr_dataset(
    hr: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    recipe: str,
    *,
    limit: int | None = None,
    on_made: Callable[[int, int], None] | None = None,
) -> BenchDataset:
    """Make ``out_dir/hr`` and ``out_dir/lr`` (PNG) from HR images with ``recipe``; return them paired.

    ``hr`` is a folder, file or glob of HR images; ``limit`` keeps the first N in name order.
    Names keep the HR images' paths below their root (``x/a.jpg`` -> ``lr/x/a.png``). The
    ``imagenet-test`` HR is the 256 x 256 crop the LR was made from; ``bicubic`` keeps the HR
    (cropped to a multiple of 4) at its bit depth.

    Raises:
        SinsrIOError: no images, two images with one name, an unreadable image, or ``out_dir``
            not empty or inside ``hr`` (nothing is overwritten).
        ValueError: an unknown recipe, or ``limit`` < 1.
    """
    if recipe not in LR_RECIPES:
        raise ValueError(f"unknown LR recipe {recipe!r}; use {' or '.join(LR_RECIPES)}")
    if limit is not None and limit < 1:
        raise SettingError("limit", f"limit must be at least 1, got {limit}")
    src = Path(os.path.expanduser(os.fspath(hr)))
    found, skipped = collect_inputs([src])
    if not found:
        why = f" ({skipped[0][1]})" if skipped else ""
        raise SinsrIOError(src, f"no HR images found{why}")
    names = [i.rel.with_suffix("").as_posix() for i in found]
    twice = sorted(n for n, c in Counter(names).items() if c > 1)
    if twice:
        raise SinsrIOError(src, f"two images share the name {twice[0]!r}; LR files are named by it")
    out = Path(os.path.expanduser(os.fspath(out_dir)))
    if within(os.path.realpath(out), os.path.realpath(src)):
        raise SinsrIOError(out, f"is inside the HR images ({src}): the pairs would be found as inputs next time")
    if out.exists() and (not out.is_dir() or any(not _empty_pair_dir(p) for p in out.iterdir())):
        raise SinsrIOError(out, "already exists and is not empty; give an empty or new folder")
    order = sorted(range(len(found)), key=lambda k: names[k])
    if limit is not None:
        order = order[:limit]
    existed = {p: p.exists() for p in (out, out / "lr", out / "hr")}
    try:
        for n, k in enumerate(order):
            item, name = found[k], names[k]
            img = read_image(item.path)
            try:
                hr_rgb, depth, lr_rgb = _make_pair(img.rgb, img.bit_depth, recipe, recipe_seed(name, recipe))
            except ValueError as e:
                raise SinsrIOError(item.path, str(e)) from None
            write_image(out / "hr" / f"{name}.png", hr_rgb, bit_depth=depth)
            write_image(out / "lr" / f"{name}.png", lr_rgb, bit_depth=8)
            if on_made is not None:
                on_made(n + 1, len(order))
    except BaseException:  # stopped half-way: take back what it made, so a rerun finds the folder as it was
        for sub in (out / "lr", out / "hr"):  # out was empty or absent (checked above): all in them is ours
            shutil.rmtree(sub, ignore_errors=True)
            if existed[sub]:
                sub.mkdir(exist_ok=True)
        if not existed[out]:
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    ds = find_dataset(out)
    return dataclasses.replace(ds, total=len(found), lr_recipe=recipe)


# --------------------------------------------------------------------------- decoded images


def _compact(rgb: np.ndarray, bit_depth: int) -> np.ndarray:
    """Float32 ``[H, W, 3]`` k/255 (or k/65535) values -> the uint8 (uint16) array they came from."""
    if bit_depth == 16:
        return np.rint(rgb * np.float32(65535)).astype(np.uint16)
    return np.rint(rgb * np.float32(255)).astype(np.uint8)


def _expand(a: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_compact`: float32 in [0, 1], bit-identical to ``read_image``'s."""
    return a.astype(np.float32) / (65535 if a.dtype == np.uint16 else 255)


def _center_box(h: int, w: int, crop: int | None) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the central ``crop`` x ``crop`` box (clipped to the image)."""
    if not crop:
        return 0, 0, h, w
    ch, cw = min(crop, h), min(crop, w)
    return (h - ch) // 2, (w - cw) // 2, ch, cw


class ImageStore:
    """Decoded images of a :class:`BenchDataset`, validated once.

    ``lr(i)`` is ``[h, w, 3]`` float32 in [0, 1], what ``imageio.read_image`` returns
    (bit-identical for 8- and 16-bit integer files); ``hr(i)`` is ``[scale*h, scale*w, 3]``
    uint8/uint16, the integers of the file. Both are optionally cut to the central ``center_crop`` LR pixels and the HR region under them.
    Alpha is ignored: the models and the metrics see colour only.
    """

    def __init__(
        self,
        dataset: BenchDataset,
        *,
        scale: int = 4,
        center_crop: int | None = None,
        hr_cache_bytes: int = 1 << 30,
        on_read: Callable[[int, int], None] | None = None,
    ) -> None:
        if center_crop is not None and center_crop < 2:
            raise SettingError("center_crop", f"center_crop must be at least 2 LR pixels, got {center_crop}")
        self.dataset = dataset
        self.scale = scale
        self.center_crop = center_crop
        self._lr: list[np.ndarray] = []
        self._boxes: list[tuple[int, int, int, int]] = []
        self._hr: list[np.ndarray | None] = []
        budget = hr_cache_bytes
        mismatched: list[str] = []
        for n, item in enumerate(dataset.items):
            lr = read_image(item.lr)
            h, w = lr.rgb.shape[:2]
            box = _center_box(h, w, center_crop)
            self._boxes.append(box)
            self._lr.append(_compact(self._cut(lr.rgb, box, 1), lr.bit_depth))
            cached = None
            if item.hr is not None:
                ref = read_image(item.hr)
                hh, hw = ref.rgb.shape[:2]
                if (hh, hw) != (scale * h, scale * w):
                    mismatched.append(
                        f"{item.hr} is {hw}x{hh} but {item.lr.name} is {w}x{h} "
                        f"(HR must be exactly {scale}x LR: {scale * w}x{scale * h})"
                    )
                else:
                    cut = _compact(self._cut(ref.rgb, box, scale), ref.bit_depth)
                    if cut.nbytes <= budget:
                        budget -= cut.nbytes
                        cached = cut
            self._hr.append(cached)
            if on_read is not None:
                on_read(n + 1, len(dataset.items))
        if mismatched:
            more = f" (and {len(mismatched) - 1} more)" if len(mismatched) > 1 else ""
            raise SinsrIOError(None, mismatched[0] + more)

    @staticmethod
    def _cut(rgb: np.ndarray, box: tuple[int, int, int, int], s: int) -> np.ndarray:
        top, left, h, w = box
        if (top, left) == (0, 0) and rgb.shape[:2] == (h * s, w * s):
            return rgb
        return rgb[top * s : (top + h) * s, left * s : (left + w) * s]

    def __len__(self) -> int:
        return len(self._lr)

    def lr(self, i: int) -> np.ndarray:
        """LR image ``i``: ``[h, w, 3]`` float32 in [0, 1]."""
        return _expand(self._lr[i])

    def lr_size(self, i: int) -> tuple[int, int]:
        """(width, height) of LR image ``i`` as benchmarked (after ``center_crop``)."""
        return self._lr[i].shape[1], self._lr[i].shape[0]

    def hr(self, i: int) -> np.ndarray | None:
        """HR image ``i`` as stored: ``[scale*h, scale*w, 3]`` uint8 (uint16 for 16-bit files),
        or None in no-reference mode. Integers, so metrics see exactly k/255 (k/65535)."""
        item = self.dataset.items[i]
        if item.hr is None:
            return None
        cached = self._hr[i]
        if cached is not None:
            return cached
        ref = read_image(item.hr)
        return _compact(self._cut(ref.rgb, self._boxes[i], self.scale), ref.bit_depth)
