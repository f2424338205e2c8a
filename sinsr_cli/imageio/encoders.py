"""Encoders Pillow lacks: 16-bit colour PNG, and TIFF with 16-bit colour and an EXIF sub-IFD."""

from __future__ import annotations

import struct
import zlib
from typing import IO

import numpy as np
from PIL import Image, TiffImagePlugin

from .metadata import EXIF_IFD, GPS_IFD, TIFF_EXIF_TAGS, icc_space


def _png_chunk(f: IO[bytes], kind: bytes, data: bytes) -> None:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    f.write(struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc))


def encode_png16(
    f: IO[bytes], pixels: np.ndarray, icc: bytes | None, exif: bytes | None, level: int
) -> None:
    """16-bit PNG (Pillow cannot write 16-bit colour): Paeth-filtered rows, zlib at ``level``."""
    h, w, c = pixels.shape
    f.write(b"\x89PNG\r\n\x1a\n")
    _png_chunk(f, b"IHDR", struct.pack(">IIBBBBB", w, h, 16, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0))
    if icc:
        _png_chunk(f, b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc))
    if exif:
        _png_chunk(f, b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif)
    rows = pixels.astype(">u2").reshape(h, w * c).view(np.uint8)
    bpp = 2 * c
    z = zlib.compressobj(int(level))
    prev = np.zeros(rows.shape[1], np.uint8)
    block = max(1, (1 << 20) // rows.shape[1])
    for y in range(0, h, block):
        cur = rows[y : y + block]
        data = z.compress(_paeth_filter(cur, prev, bpp).tobytes())
        if data:
            _png_chunk(f, b"IDAT", data)
        prev = cur[-1]
    _png_chunk(f, b"IDAT", z.flush())
    _png_chunk(f, b"IEND", b"")


def _paeth_filter(cur: np.ndarray, prev: np.ndarray, bpp: int) -> np.ndarray:
    """PNG filter type 4 on byte rows ``[n, L]`` given the row above -> ``[n, 1 + L]``."""
    x = cur.astype(np.int16)
    up = np.vstack([prev[None], cur[:-1]]).astype(np.int16)
    left = np.zeros_like(x)
    left[:, bpp:] = x[:, :-bpp]
    upleft = np.zeros_like(x)
    upleft[:, bpp:] = up[:, :-bpp]
    est = left + up - upleft
    pa, pb, pc = np.abs(est - left), np.abs(est - up), np.abs(est - upleft)
    pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
    out = np.empty((x.shape[0], x.shape[1] + 1), np.uint8)
    out[:, 0] = 4
    out[:, 1:] = ((x - pred) & 0xFF).astype(np.uint8)
    return out


def encode_tiff(f: IO[bytes], pixels: np.ndarray, icc: bytes | None, exif: bytes | None) -> None:
    """Baseline TIFF, 8 or 16 bits per sample, Adobe deflate + horizontal predictor, ICC and EXIF.

    Written by hand because Pillow cannot write 16-bit colour and its libtiff path cannot write
    an EXIF sub-directory. 16-bit gray+alpha is widened to RGBA so Pillow can read it back.
    """
    if pixels.dtype == np.uint16 and pixels.shape[2] == 2:
        pixels = np.concatenate([np.repeat(pixels[..., :1], 3, axis=2), pixels[..., 1:]], axis=2)
        icc = icc if icc is not None and icc_space(icc) == b"RGB " else None
    h, w, c = pixels.shape
    bits = pixels.dtype.itemsize * 8
    x = pixels.astype(pixels.dtype.newbyteorder("<"))
    diff = x.copy()
    diff[:, 1:] -= x[:, :-1]  # predictor 2: per-sample difference to the left, wrapping
    rows_per_strip = max(1, (1 << 18) // (w * c * pixels.dtype.itemsize))
    starts = range(0, h, rows_per_strip)
    strips = [zlib.compress(diff[y : y + rows_per_strip].tobytes(), 6) for y in starts]
    offsets = np.cumsum([0] + [len(s) for s in strips[:-1]]).tolist()

    def directory(with_exif: bool) -> bytes:
        ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II")
        ifd[256], ifd[257] = w, h
        ifd[258] = (bits,) * c
        ifd[259] = 8  # Adobe deflate
        ifd[262] = 2 if c >= 3 else 1  # RGB / BlackIsZero
        ifd[273] = tuple(offsets)  # relative; tobytes() adds the end of the directory
        ifd[277] = c
        ifd[278] = rows_per_strip
        ifd[279] = tuple(len(s) for s in strips)
        ifd[284] = 1  # chunky
        ifd[317] = 2  # horizontal differencing
        ifd[339] = (1,) * c  # unsigned integers
        if c in (2, 4):
            ifd[338] = (2,)  # unassociated alpha
        if icc:
            ifd[34675] = icc
        if with_exif and exif:
            ex = Image.Exif()
            ex.load(exif)
            for tag in TIFF_EXIF_TAGS:
                if tag in ex:
                    ifd[tag] = ex[tag]
            for tag in (EXIF_IFD, GPS_IFD):
                sub = ex.get_ifd(tag)
                if sub:
                    ifd[tag] = dict(sub)
        return ifd.tobytes(8)

    try:
        head = directory(with_exif=True)
    except Exception:  # an EXIF value Pillow cannot serialise: write the image without it
        head = directory(with_exif=False)
    f.write(b"II*\x00" + struct.pack("<I", 8) + head)
    for s in strips:
        f.write(s)
