"""EXIF and ICC: orientation read and reset, metadata carried from a source to its output.

``_reset_orientation`` sets the Orientation entry to 1 by hand, in place: Pillow's ``Exif``
(like piexif, unmaintained since 2019) can only re-serialise the whole block, which moves the
maker notes, whose internal offsets (Canon's, among others) then point at the wrong bytes.
exiv2 edits in place but is a compiled dependency for one two-byte write.
"""

from __future__ import annotations

import struct

import numpy as np
from PIL import Image

ORIENTATION = 0x0112
EXIF_IFD, GPS_IFD = 0x8769, 0x8825
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
        if tag in exif:
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


def _reset_orientation(raw: bytes) -> bytes | None:
    """Orientation set to 1 in place, byte for byte (maker notes keep offsets); None if broken."""
    data = bytearray(raw if raw.startswith(b"Exif\x00\x00") else b"Exif\x00\x00" + raw)
    base = 6
    try:
        bo = {b"II": "<", b"MM": ">"}[bytes(data[base : base + 2])]
        (ifd,) = struct.unpack_from(bo + "I", data, base + 4)
        (count,) = struct.unpack_from(bo + "H", data, base + ifd)
        for i in range(count):
            entry = base + ifd + 2 + 12 * i
            tag, typ, n = struct.unpack_from(bo + "HHI", data, entry)
            if tag == ORIENTATION:
                if n != 1 or typ not in (3, 4):  # SHORT or LONG
                    return None
                struct.pack_into(bo + ("H" if typ == 3 else "I"), data, entry + 8, 1)
                break
    except (KeyError, struct.error):
        return None
    return bytes(data)


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
