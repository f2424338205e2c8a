"""Exact 16-bit samples of files Pillow decodes only to 8 bits, by decoding their tiles again
with other rawmodes (Pillow's unpackers each keep one byte of a 16-bit sample).

Pillow reads an uncompressed TIFF of separate planes (PlanarConfiguration 2) as one tile per
plane with single-band rawmodes ("R", "G", ...) that take 8 bits per sample, so 16-bit planes
come out as noise; "R;16B"/"R;16L" take the right byte and stride, and which byte is the high
one is the file's byte order. Compressed planar files go through libtiff, which unpacks each
plane with a rawmode of its own choosing: only their high bytes can be had (8-bit precision).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageFile

from ..errors import one_line
from .errors import ImageReadError
from .pillowlimit import pillow_size_check_off
from .tiffheader import tiff_byte_order, tiff_layout

__all__ = ["decode_16bit", "tile_rawmode"]

_SWAP_ENDIAN = {"B": "L", "L": "B", "N": "B" if sys.byteorder == "little" else "L"}


def tile_rawmode(im: ImageFile.ImageFile) -> str | None:
    """The raw (on-disk) pixel layout Pillow will unpack, e.g. "RGB;16B"; None if unknown."""
    tile = getattr(im, "tile", None)
    return _args_rawmode(tile[0][3]) if tile else None


def _args_rawmode(args: Any) -> str | None:
    if isinstance(args, str):
        return args
    if isinstance(args, tuple) and args and isinstance(args[0], str):
        return args[0]
    return None


def decode_16bit(
    im: Image.Image, p: Path, f: IO[bytes], rawmode: str
) -> tuple[np.ndarray, np.ndarray | None, bool, int] | None:
    """Full 16-bit samples of a PNG/TIFF that Pillow only exposes as 8-bit RGB(A); None if not one.

    Pillow keeps the high byte of each 16-bit sample. Decoding the same tiles again with the
    opposite byte order keeps the low byte instead; high * 256 + low is exact. 16-bit gray+alpha
    PNG ("LA;16B", 4 bytes per pixel) decoded as plain "RGBA" yields all four bytes at once.
    Raises ``ImageReadError`` for 16-bit planes this cannot decode (CMYK), rather than noise.
    """
    if _is_planar_16bit(im, rawmode):
        return _planar_16bit(im, p, f)
    if rawmode == "LA;16B":
        raw = _redecode(f, lambda _: "RGBA")
        if raw is None:
            return None
        v = raw.astype(np.uint16)
        gray, alpha = (v[..., 0] << 8) | v[..., 1], (v[..., 2] << 8) | v[..., 3]
        g, a = gray[..., None].astype(np.float32) / 65535, alpha.astype(np.float32) / 65535
        return g, a, True, 16
    base, _, depth = rawmode.partition(";")
    if base not in ("RGB", "RGBA", "RGBX") or depth[:-1] != "16" or depth[-1:] not in _SWAP_ENDIAN:
        return None  # 8-bit, or premultiplied "RGBa;16" whose bytes are not plain samples
    if getattr(im, "tag_v2", {}).get(284) == 2:  # libtiff's planes: the high byte again
        low = np.asarray(im)
    else:
        low = _redecode(f, lambda rm: rm[:-1] + _SWAP_ENDIAN[rm[-1]])
    if low is None:
        return None
    v = (np.asarray(im).astype(np.uint16) << 8) | low.astype(np.uint16)
    alpha = None
    if v.shape[2] == 4:
        alpha = v[..., 3].astype(np.float32) / 65535
    else:
        trns = im.info.get("transparency")
        if isinstance(trns, tuple) and len(trns) == 3:  # PNG tRNS holds 16-bit values here
            alpha = np.any(v != np.array(trns), axis=2).astype(np.float32)
    return v[..., :3].astype(np.float32) / 65535, alpha, False, 16


def _is_planar_16bit(im: Image.Image, rawmode: str) -> bool:
    """An uncompressed TIFF of separate 16-bit planes, which Pillow unpacks 8 bits a sample."""
    tags = getattr(im, "tag_v2", None)
    if tags is None or len(rawmode) != 1 or tags.get(284) != 2:  # PlanarConfiguration
        return False
    bits = tags.get(258)  # BitsPerSample
    return isinstance(bits, tuple) and set(bits) == {16}


def _planar_16bit(im: Image.Image, p: Path, f: IO[bytes]) -> tuple[np.ndarray, np.ndarray | None, bool, int]:
    """The planes decoded twice, high byte then low byte, as the 16-bit RGB(A) they hold."""
    order = tiff_byte_order(f)
    if im.mode not in ("RGB", "RGBA") or order is None:  # Pillow has no 16-bit "C", "M", ... unpackers
        reason = f"unsupported TIFF layout ({tiff_layout(f)}, {im.mode} in separate planes)"
        raise ImageReadError(p, reason + "; save it with interleaved samples (or compressed)")
    high, low = (";16B", ";16L") if order == ">" else (";16L", ";16B")
    try:
        hi = _decode_again(f, lambda rm: rm + high)
        lo = _decode_again(f, lambda rm: rm + low)
    except Exception as e:  # the 8-bit pass reads half of each plane: the rest can be missing
        raise ImageReadError(p, f"truncated or corrupt image file ({one_line(e, 160)})") from None
    v = (hi.astype(np.uint16) << 8) | lo.astype(np.uint16)
    alpha = v[..., 3].astype(np.float32) / 65535 if v.shape[2] == 4 else None
    return v[..., :3].astype(np.float32) / 65535, alpha, False, 16


def _redecode(f: IO[bytes], new_rawmode: Callable[[str], str]) -> np.ndarray | None:
    """``_decode_again``, or None on failure: the first decode succeeded, so the caller falls
    back to its 8-bit samples."""
    try:
        return _decode_again(f, new_rawmode)
    except Exception:
        return None


def _decode_again(f: IO[bytes], new_rawmode: Callable[[str], str]) -> np.ndarray:
    """Decode the open file ``f`` again, each tile's rawmode mapped through ``new_rawmode``."""
    with pillow_size_check_off():
        im = Image.open(f)
    with im:
        tiles = []
        for t in im.tile:
            rm = _args_rawmode(t[3])
            if rm is None:
                raise ValueError(f"tile without a rawmode: {t[3]!r}")
            args = new_rawmode(rm) if isinstance(t[3], str) else (new_rawmode(rm), *t[3][1:])
            tiles.append(t._replace(args=args) if hasattr(t, "_replace") else (*t[:3], args))
        im.tile = tiles
        im.load()
        return np.array(im)
