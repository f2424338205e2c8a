"""What a TIFF declares in its header and first directory, read without Pillow: for a file Pillow
cannot identify, it tells an unsupported layout (float or 32-bit samples) from a corrupt file;
for one it decodes plane by plane, the byte order Pillow's per-plane tiles do not carry."""

from __future__ import annotations

import struct
from typing import IO

__all__ = ["tiff_byte_order", "tiff_layout"]

_TIFF_SAMPLE_FORMATS = {1: "unsigned integer", 2: "signed integer", 3: "floating point", 4: "undefined", 5: "complex integer", 6: "complex float"}


def tiff_byte_order(f: IO[bytes]) -> str | None:
    """The struct prefix of ``f``'s samples, "<" (b"II") or ">" (b"MM"); None if not a TIFF."""
    try:
        f.seek(0)
        return {b"II": "<", b"MM": ">"}.get(f.read(2))
    except OSError:
        return None


def tiff_layout(f: IO[bytes]) -> str | None:
    """"3 samples of 32-bit floating point" when ``f``'s first TIFF directory parses whole (so
    the file is intact and only its layout is unsupported), else None."""
    try:
        f.seek(0)
        head = f.read(8)
        order = {b"II": "<", b"MM": ">"}.get(head[:2])
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
