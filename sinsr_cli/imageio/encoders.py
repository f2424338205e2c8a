"""Encoders for what Pillow cannot write: 16-bit colour PNG, and TIFF (16-bit colour, EXIF).

The pixels go through well-kept libraries: imagecodecs (libpng, adaptive row filters, zlib at
the caller's level) for 16-bit PNG, tifffile (Adobe deflate, horizontal predictor, ICC profile,
the EXIF tags of IFD0) for TIFF. Two small pieces are written here because no library offers
them (checked: imagecodecs 2026.3, tifffile 2026.3, pypng 0.20220715, opencv 5.0):

* the iCCP and eXIf chunks of a 16-bit PNG: imagecodecs and OpenCV write pixels only, pypng has
  no iCCP/eXIf, and Pillow, which writes both, cannot write 16-bit colour. ``_png_chunk`` is the
  whole PNG chunk format (length, type, data, CRC-32); the chunks go right after IHDR.
* the EXIF and GPS sub-directories of a TIFF: tifffile writes no IFD-type tags, so it writes
  placeholder ExifTag/GPSTag entries that ``_append_sub_ifds`` points at directories serialised
  by Pillow at the end of the file.
"""

from __future__ import annotations

import io
import struct
import zlib
from fractions import Fraction
from typing import IO, Any

import numpy as np
from PIL import Image, TiffImagePlugin

from .metadata import EXIF_IFD, GPS_IFD, ORIENTATION, TIFF_EXIF_TAGS, icc_space

#: IFD0 metadata tags tifffile writes from its own arguments rather than from ``extratags``
_DESCRIPTION, _SOFTWARE, _XRES, _YRES, _RESUNIT = 270, 305, 282, 283, 296
_ICC_PROFILE = 34675
_SUB_IFD_NAMES = {EXIF_IFD: "ExifTag", GPS_IFD: "GPSTag"}
_TIFF_ROWS_BYTES = 1 << 18  # bytes of raw samples per strip
_TIFF_DEFLATE_LEVEL = 6


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png16(f: IO[bytes], pixels: np.ndarray, icc: bytes | None, exif: bytes | None, level: int) -> None:
    """16-bit PNG of uint16 ``[H, W, C]`` (C: gray, gray+alpha, RGB, RGBA) with zlib at ``level``,
    plus the ICC profile and EXIF."""
    import imagecodecs  # only 16-bit PNG writes pay for its import

    png = memoryview(imagecodecs.png_encode(pixels[..., 0] if pixels.shape[2] == 1 else pixels, level=int(level)))
    after_ihdr = 8 + 25  # signature, then IHDR: length, type, 13 bytes of data, CRC
    if bytes(png[12:16]) != b"IHDR":  # pragma: no cover - libpng always starts with IHDR
        raise ValueError("unexpected PNG layout from imagecodecs")
    f.write(png[:after_ihdr])
    if icc:
        f.write(_png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc)))
    if exif:
        f.write(_png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif))
    f.write(png[after_ihdr:])


def encode_tiff(
    f: IO[bytes], pixels: np.ndarray, icc: bytes | None, exif: bytes | None, *, bigtiff: bool | None = None
) -> None:
    """TIFF of uint8/uint16 ``[H, W, C]``: Adobe deflate with the horizontal predictor, the ICC
    profile, and EXIF (camera/author tags in IFD0, EXIF and GPS sub-IFDs). EXIF that cannot be
    serialised is left out. 16-bit gray+alpha is widened to RGBA so Pillow can read it back.
    ``bigtiff`` None lets tifffile decide (BigTIFF past 4 GB)."""
    if pixels.dtype == np.uint16 and pixels.shape[2] == 2:
        pixels = np.concatenate([np.repeat(pixels[..., :1], 3, axis=2), pixels[..., 1:]], axis=2)
        icc = icc if icc is not None and icc_space(icc) == b"RGB " else None
    try:
        buf = _tiff(pixels, icc, exif, bigtiff)
    except Exception:
        if not exif:
            raise
        buf = _tiff(pixels, icc, None, bigtiff)  # an EXIF value that does not fit its TIFF type
    f.write(buf.getbuffer())


def _tiff(pixels: np.ndarray, icc: bytes | None, exif: bytes | None, bigtiff: bool | None) -> io.BytesIO:
    import tifffile

    h, w, c = pixels.shape
    tags, subs = _tiff_metadata(exif)
    if icc:
        tags["extratags"].append((_ICC_PROFILE, 7, len(icc), icc, True))  # UNDEFINED bytes
    buf = io.BytesIO()
    tifffile.imwrite(
        buf,
        pixels[..., 0] if c == 1 else pixels,
        photometric="rgb" if c >= 3 else "minisblack",
        planarconfig="contig",
        extrasamples=("unassalpha",) if c in (2, 4) else None,
        compression="zlib",
        compressionargs={"level": _TIFF_DEFLATE_LEVEL},
        predictor=True,
        rowsperstrip=max(1, _TIFF_ROWS_BYTES // (w * c * pixels.dtype.itemsize)),
        metadata=None,  # no tifffile JSON in ImageDescription
        byteorder="<",
        bigtiff=bigtiff,
        **tags,
    )
    if subs:
        _append_sub_ifds(buf, subs)
    return buf


def _tiff_metadata(exif: bytes | None) -> tuple[dict[str, Any], dict[int, dict[int, Any]]]:
    """tifffile keyword arguments carrying ``exif``'s IFD0 metadata tags, and its sub-IFDs."""
    extratags: list[tuple[Any, ...]] = []
    tags: dict[str, Any] = {"software": False, "extratags": extratags}
    if not exif:
        return tags, {}
    ex = Image.Exif()
    ex.load(exif)
    for tag in TIFF_EXIF_TAGS:
        if tag not in ex:
            continue
        value = ex[tag]
        if tag == _DESCRIPTION:
            tags["description"] = _ascii(value)
        elif tag == _SOFTWARE:
            tags["software"] = _ascii(value)
        elif tag in (_XRES, _YRES):
            tags.setdefault("resolution", [(1, 1), (1, 1)])[tag - _XRES] = _rational(value)
        elif tag == _RESUNIT:
            tags["resolutionunit"] = int(value)
        elif tag == ORIENTATION:
            extratags.append((tag, 3, 1, int(value), True))  # SHORT
        else:  # the other carried tags are ASCII
            extratags.append((tag, 2, None, _ascii(value), True))
    subs = {}
    for tag, name in _SUB_IFD_NAMES.items():
        sub = ex.get_ifd(tag)
        if sub:
            subs[tag] = dict(sub)
            # by name: tifffile filters IFD-pointer tags given by code; the value is set later
            extratags.append((name, 4, 1, 0, True))
    if "resolution" in tags:
        tags["resolution"] = tuple(tags["resolution"])
    return tags, subs


def _ascii(value: Any) -> bytes:
    return value.encode("ascii", "replace") if isinstance(value, str) else bytes(value)


def _rational(value: Any) -> tuple[int, int]:
    if hasattr(value, "numerator") and getattr(value, "denominator", 0):
        return int(value.numerator), int(value.denominator)
    r = Fraction(float(value)).limit_denominator(2**32 - 1)
    return r.numerator, r.denominator


def _append_sub_ifds(buf: io.BytesIO, subs: dict[int, dict[int, Any]]) -> None:
    """Write ``subs`` (tag -> entries) at the end of the TIFF in ``buf``, each serialised by
    Pillow, and point IFD0's placeholder entries at them."""
    data = buf.getbuffer()
    bigtiff = bytes(data[2:4]) == b"+\x00"
    count_fmt, entry_size, off_fmt = ("<Q", 20, "<Q") if bigtiff else ("<H", 12, "<I")
    (ifd0,) = struct.unpack_from(off_fmt, data, 8 if bigtiff else 4)
    (n,) = struct.unpack_from(count_fmt, data, ifd0)
    value_at = {}  # where each placeholder's value (the sub-IFD's offset) lies
    for i in range(n):
        entry = ifd0 + struct.calcsize(count_fmt) + entry_size * i
        (tag,) = struct.unpack_from("<H", data, entry)
        if tag in subs:
            value_at[tag] = entry + entry_size - struct.calcsize(off_fmt)
    del data  # a live view would stop the buffer from growing
    head = b"II+\x00\x08\x00\x00\x00" + bytes(8) if bigtiff else b"II*\x00" + bytes(4)
    buf.seek(0, io.SEEK_END)
    for tag, entries in subs.items():
        if buf.tell() % 2:
            buf.write(b"\x00")  # a directory starts on a word boundary
        offset = buf.tell()
        ifd = TiffImagePlugin.ImageFileDirectory_v2(head, group=tag)
        for key, value in entries.items():
            ifd[key] = value
        buf.write(ifd.tobytes(offset))
        end = buf.tell()
        buf.seek(value_at[tag])
        buf.write(struct.pack(off_fmt, offset))
        buf.seek(end)
