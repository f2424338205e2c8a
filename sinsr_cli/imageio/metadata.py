"""EXIF and ICC: orientation read and reset, metadata carried from a source to its output.

``_reset_orientation`` sets the Orientation entry to 1 by hand, in place: Pillow's ``Exif``
(like piexif, unmaintained since 2019) can only re-serialise the whole block, which moves the
maker notes, whose internal offsets (Canon's, among others) then point at the wrong bytes.
exiv2 edits in place but is a compiled dependency for one two-byte write. ``exif_for_size``
sets the recorded pixel size to the output's the same way. A TIFF's ImageDescription that
describes its pixel array (tifffile's shape, ImageJ, OME-XML) is not carried: readers would
apply it to the larger output (tifffile reports a shape that is not the page's).
"""

from __future__ import annotations

import struct

import numpy as np
from PIL import Image

from .tiffheader import TIFF_BYTE_ORDERS

ORIENTATION = 0x0112
EXIF_IFD, GPS_IFD = 0x8769, 0x8825
_DESCRIPTION = 270
_IMAGE_SIZE = (256, 257)  # IFD0 ImageWidth/ImageLength, where an EXIF block has them
_PIXEL_SIZE = (0xA002, 0xA003)  # Exif sub-IFD PixelXDimension/PixelYDimension
# IFD0 tags of a TIFF that are camera/author metadata rather than image structure.
TIFF_EXIF_TAGS = (270, 271, 272, 274, 282, 283, 296, 305, 306, 315, 33432)
_RESOLUTION, _RESOLUTION_UNIT = (282, 283), 296


def _is_one(value: object) -> bool:
    try:
        return float(value) == 1.0  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError):
        return False


def orientation_and_exif(im: Image.Image) -> tuple[int, bytes | None]:
    """(EXIF orientation 1..8, EXIF bytes to carry with Orientation reset to 1, or None)."""
    try:
        exif = im.getexif()
        orientation = int(exif.get(ORIENTATION, 1))
    except Exception:  # unreadable EXIF: keep pixels as stored, carry nothing
        return 1, None
    orientation = orientation if 1 <= orientation <= 8 else 1
    if im.format == "TIFF":  # getexif() is the TIFF's own directory: keep only the metadata tags
        return orientation, _tiff_exif(exif)
    raw = im.info.get("exif")
    return orientation, _reset_orientation(raw) if isinstance(raw, bytes) and raw else None


def _tiff_exif(exif: Image.Exif) -> bytes | None:
    out = Image.Exif()
    for tag in TIFF_EXIF_TAGS:
        if tag in exif and not (tag == _DESCRIPTION and _describes_pixels(exif[tag])):
            out[tag] = exif[tag]
    for tag in (EXIF_IFD, GPS_IFD):
        try:
            sub = exif.get_ifd(tag)
        except Exception:
            sub = {}
        if sub:
            out[tag] = dict(sub)
    if out.get(_RESOLUTION_UNIT) == 1 and all(_is_one(out.get(tag, 1)) for tag in _RESOLUTION):
        for tag in (*_RESOLUTION, _RESOLUTION_UNIT):  # "1:1, no unit": what writers put when they
            out.pop(tag, None)  # know nothing (TIFF requires the tags; tifffile writes them)
    if not len(out):
        return None
    if ORIENTATION in out:
        out[ORIENTATION] = 1
    try:
        return out.tobytes()
    except Exception:
        return None


def _describes_pixels(text: object) -> bool:
    """An ImageDescription that readers take for the pixel array's layout (tifffile's rules)."""
    if not isinstance(text, str):
        return False
    return (
        (text[:1] == "{" and '"shape":' in text)
        or text.startswith(("shape=", "ImageJ=", "SCIFIO="))
        or text[-10:].strip().endswith(("OME>", "</scn>"))
    )


def _reset_orientation(raw: bytes) -> bytes | None:
    """Orientation set to 1 in place, byte for byte (maker notes keep offsets); None if broken."""
    data = bytearray(raw if raw.startswith(b"Exif\x00\x00") else b"Exif\x00\x00" + raw)
    try:
        bo, ifd0 = _header(data, 6)
        entry = _entries(data, 6, ifd0, bo).get(ORIENTATION)
        if entry is not None:
            _, typ, n = struct.unpack_from(bo + "HHI", data, entry)
            if n != 1 or typ not in (3, 4):  # SHORT or LONG
                return None
            struct.pack_into(bo + ("H" if typ == 3 else "I"), data, entry + 8, 1)
    except (KeyError, struct.error):
        return None
    return bytes(data)


def exif_for_size(exif: bytes, width: int, height: int) -> bytes:
    """``exif`` recording ``width`` x ``height`` where it records a pixel size (Exif
    PixelXDimension/PixelYDimension, IFD0 ImageWidth/ImageLength), edited in place like the
    Orientation reset; unchanged if it records none or does not parse."""
    data = bytearray(exif)
    base = 6 if data.startswith(b"Exif\x00\x00") else 0
    try:
        bo, ifd0 = _header(data, base)
        top = _entries(data, base, ifd0, bo)
        targets = [(top.get(tag), value) for tag, value in zip(_IMAGE_SIZE, (width, height))]
        if EXIF_IFD in top:
            (sub,) = struct.unpack_from(bo + "I", data, top[EXIF_IFD] + 8)
            found = _entries(data, base, sub, bo)
            targets += [(found.get(tag), value) for tag, value in zip(_PIXEL_SIZE, (width, height))]
        for entry, value in targets:
            if entry is not None:
                _set_count(data, bo, entry, value)
    except (KeyError, struct.error):
        return exif
    return bytes(data)


def _header(data: bytearray, base: int) -> tuple[str, int]:
    """(struct byte order, offset of IFD0) of the TIFF block at ``base``; KeyError if none."""
    bo = TIFF_BYTE_ORDERS[bytes(data[base : base + 2])]
    return bo, struct.unpack_from(bo + "I", data, base + 4)[0]


def _entries(data: bytearray, base: int, ifd: int, bo: str) -> dict[int, int]:
    """tag -> offset in ``data`` of its 12-byte entry, for the directory at ``ifd``."""
    (count,) = struct.unpack_from(bo + "H", data, base + ifd)
    at = [base + ifd + 2 + 12 * i for i in range(count)]
    return {struct.unpack_from(bo + "H", data, entry)[0]: entry for entry in at}


def _set_count(data: bytearray, bo: str, entry: int, value: int) -> None:
    """One SHORT (when it was one and ``value`` fits) or LONG ``value`` into the entry; its old
    out-of-line value, if any, is left unreferenced."""
    _, typ, _ = struct.unpack_from(bo + "HHI", data, entry)
    if typ == 3 and value <= 0xFFFF:
        struct.pack_into(bo + "HIHH", data, entry + 2, 3, 1, value, 0)
    else:
        struct.pack_into(bo + "HII", data, entry + 2, 4, 1, value)


def orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF orientation to ``[H, W, ...]`` like PIL.ImageOps.exif_transpose."""
    if orientation == 2:
        return a[:, ::-1]
    if orientation == 3:
        return a[::-1, ::-1]
    if orientation == 4:
        return a[::-1]
    if orientation == 5:
        return a.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(a, -1)
    if orientation == 7:
        return a.swapaxes(0, 1)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(a, 1)
    return a


def icc_space(icc: bytes) -> bytes | None:
    """The ICC header's data colour space ("RGB ", "GRAY", "CMYK", ...)."""
    return icc[16:20] if len(icc) >= 20 else None
