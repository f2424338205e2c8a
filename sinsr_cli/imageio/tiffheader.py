"""What a TIFF declares that Pillow does not act on. Read without Pillow: for a file Pillow cannot
identify, an unsupported layout (float or 32-bit samples) told from a corrupt file; for one it
decodes plane by plane, the byte order its per-plane tiles do not carry. From Pillow's tags: the
sample range and polarity of deep gray, which Pillow passes on unscaled and uninverted."""

from __future__ import annotations

import struct
from typing import IO

from PIL import Image

__all__ = ["TIFF_BYTE_ORDERS", "deep_gray_levels", "tiff_byte_order", "tiff_layout"]

#: a TIFF header's first two bytes -> the struct prefix of its numbers (files and EXIF blocks)
TIFF_BYTE_ORDERS = {b"II": "<", b"MM": ">"}

_TIFF_SAMPLE_FORMATS = {1: "unsigned integer", 2: "signed integer", 3: "floating point", 4: "undefined", 5: "complex integer", 6: "complex float"}


def deep_gray_levels(im: Image.Image) -> tuple[int, bool]:
    """(the white or black sample value, whether it is white at 0) of a TIFF Pillow decodes as
    16/32-bit or float gray: 9..15-bit samples come as 0..2**bits-1 in "I;16", and Pillow inverts
    MinIsWhite (PhotometricInterpretation 0) only up to 8 bits. (65535, False) for other images."""
    tags = getattr(im, "tag_v2", None)
    if im.format != "TIFF" or tags is None:
        return 65535, False
    bits = tags.get(258)  # BitsPerSample
    depth = bits[0] if isinstance(bits, tuple) and len(bits) == 1 else 16
    top = (1 << depth) - 1 if 8 < depth < 16 else 65535
    return top, tags.get(262) == 0  # PhotometricInterpretation: MinIsWhite


def tiff_byte_order(f: IO[bytes]) -> str | None:
    """The struct prefix of ``f``'s samples, "<" (b"II") or ">" (b"MM"); None if not a TIFF."""
    try:
        f.seek(0)
        return TIFF_BYTE_ORDERS.get(f.read(2))
    except OSError:
        return None


def tiff_layout(f: IO[bytes]) -> str | None:
    """"3 samples of 32-bit floating point" when ``f``'s first TIFF directory parses whole (so
    the file is intact and only its layout is unsupported), else None."""
    try:
        f.seek(0)
        head = f.read(8)
        order = TIFF_BYTE_ORDERS.get(head[:2])
        if order is None or len(head) < 8 or struct.unpack(order + "H", head[2:4])[0] != 42:
            return None
        f.seek(struct.unpack(order + "I", head[4:8])[0])
        (n,) = struct.unpack(order + "H", f.read(2))
        tags: dict[int, tuple[int, ...]] = {}
        for _ in range(n):
            entry = f.read(12)
            tag, kind, count = struct.unpack(order + "HHI", entry[:8])
            size = {3: 2, 4: 4}.get(kind)  # SHORT or LONG values only: the ones read here
            if size is None or tag not in (258, 277, 339):
                continue
            data = entry[8:12]
            if size * count > 4:
                here = f.tell()
                f.seek(struct.unpack(order + "I", data)[0])
                data = f.read(size * count)
                f.seek(here)
            tags[tag] = struct.unpack(order + ("H" if size == 2 else "I") * count, data[: size * count])
    except (struct.error, OSError, ValueError):
        return None
    bits = sorted(set(tags.get(258, (1,))))
    samples = tags.get(277, (1,))[0]
    kind = _TIFF_SAMPLE_FORMATS.get(tags.get(339, (1,))[0], "unknown")
    return f"{samples} sample(s) of {'/'.join(map(str, bits))}-bit {kind}"
