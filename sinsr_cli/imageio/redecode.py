"""Exact 16-bit samples of files Pillow decodes only to 8 bits, by decoding their tiles again
with other rawmodes (Pillow's unpackers each keep one byte of a 16-bit sample)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import IO, Any

import numpy as np
from PIL import Image, ImageFile

from .pillowlimit import pillow_size_check_off

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
    im: Image.Image, f: IO[bytes], rawmode: str
) -> tuple[np.ndarray, np.ndarray | None, bool, int] | None:
    """Full 16-bit samples of a PNG/TIFF that Pillow only exposes as 8-bit RGB(A); None if not one.

    Pillow keeps the high byte of each 16-bit sample. Decoding the same tiles again with the
    opposite byte order keeps the low byte instead; high * 256 + low is exact. 16-bit gray+alpha
    PNG ("LA;16B", 4 bytes per pixel) decoded as plain "RGBA" yields all four bytes at once.
    """
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


def _redecode(f: IO[bytes], new_rawmode: Callable[[str], str]) -> np.ndarray | None:
    """Decode the open file ``f`` again, each tile's rawmode mapped through ``new_rawmode``;
    None on failure."""
    try:
        with pillow_size_check_off():
            im = Image.open(f)
        with im:
            tiles = []
            for t in im.tile:
                rm = _args_rawmode(t[3])
                if rm is None:
                    return None
                args = new_rawmode(rm) if isinstance(t[3], str) else (new_rawmode(rm), *t[3][1:])
                tiles.append(t._replace(args=args) if hasattr(t, "_replace") else (*t[:3], args))
            im.tile = tiles
            im.load()
            return np.array(im)
    except Exception:  # the first decode succeeded; if this trick fails, fall back to 8-bit
        return None
