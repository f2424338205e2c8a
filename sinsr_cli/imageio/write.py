"""Writing: float arrays in [0, 1] -> PNG/JPEG/WebP/TIFF files, atomically, in the source's style."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image

from ..errors import one_line
from ..files import OutputExists, atomic_path
from .encoders import encode_png16, encode_tiff
from .errors import ImageWriteError, SinsrIOError, os_reason
from .formats import format_of, parse_format, size_refusal
from .metadata import exif_for_size, icc_space
from .pixels import as_unit_float, luma, quantize
from .read import LoadedImage

_JPEG_MAX_EXIF = 65533  # one APP1 segment

#: zlib level for PNG: 1 (fastest), which is what the official code writes (OpenCV's
#: ``cv2.imwrite`` default, IMWRITE_PNG_COMPRESSION = 1). Level 6 (Pillow's default) makes files
#: a few percent smaller and takes several times longer, the slowest step of a GPU folder run.
PNG_COMPRESS_LEVEL = 1


def write_image(
    path: str | os.PathLike[str],
    rgb: np.ndarray,
    alpha: np.ndarray | None = None,
    *,
    like: LoadedImage | None = None,
    format: str | None = None,  # noqa: A002  (mirrors the CLI's --format)
    quality: int = 95,
    strip_metadata: bool = False,
    bit_depth: int | None = None,
    png_compress_level: int = PNG_COMPRESS_LEVEL,
    replace: bool = True,
) -> Path:
    """Atomically write float ``rgb`` ``[H, W, 3]`` (or ``[H, W]`` gray) in [0, 1], optional alpha.

    The format is the extension's (``formats.format_of``); ``format`` (png|jpg|jpeg|webp|tif|tiff)
    overrides it. ``like`` supplies the ICC
    profile, EXIF, grayscale-ness and bit depth of the source. ``bit_depth`` (8 or 16) overrides
    ``like``; 16 is PNG/TIFF only. ``quality`` (1-100) is for JPEG/WebP. Alpha is dropped for
    JPEG. ``png_compress_level`` (0-9) trades PNG size for time. ``replace=False`` writes only
    where no file is there by the end (``files.OutputExists`` otherwise: another run wrote it). Raises ``ImageWriteError``
    (one line) if the file cannot be written; an EXIF block too large for JPEG is one whose
    ``setting`` is "strip_metadata", an image too large for the format (``formats.size_refusal``)
    one whose ``setting`` is "format".
    """
    p = Path(path)
    try:
        kind = parse_format(format) if format is not None else format_of(p)
    except ValueError as e:
        raise ImageWriteError(p, str(e)) from None
    fmt = kind.name
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    if not 0 <= int(png_compress_level) <= 9:
        raise ValueError(f"png_compress_level must be in 0..9, got {png_compress_level}")
    color = as_unit_float(rgb, "rgb")
    if color.ndim == 2:
        color = color[..., None]
    if color.ndim != 3 or color.shape[2] not in (1, 3):
        raise ValueError(f"rgb must be [H, W, 3] or [H, W], got shape {tuple(np.shape(rgb))}")
    a = None if alpha is None or not kind.alpha else as_unit_float(alpha, "alpha")
    if a is not None and a.shape != color.shape[:2]:
        raise ValueError(f"alpha shape {a.shape} does not match image {color.shape[:2]}")
    too_large = size_refusal(kind, color.shape[1], color.shape[0])
    if too_large is not None:  # the encoder's own refusal is a stray libjpeg line, or Pillow's wording
        raise ImageWriteError(p, f"the image is {too_large}", setting="format")

    gray = kind.gray and (color.shape[2] == 1 or (like is not None and like.grayscale))
    if gray and color.shape[2] == 3:
        color = luma(color)[..., None]
    elif not gray and color.shape[2] == 1:
        color = np.repeat(color, 3, axis=2)

    depth = bit_depth if bit_depth is not None else (like.bit_depth if like is not None else 8)
    if depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {depth}")
    if depth == 16 and not kind.deep:
        if bit_depth == 16:
            raise ImageWriteError(p, f"{fmt} cannot store 16-bit samples; use png or tif")
        depth = 8

    planes = color if a is None else np.concatenate([color, a[..., None]], axis=2)
    scale, dtype = (65535, np.uint16) if depth == 16 else (255, np.uint8)
    pixels = quantize(planes, scale, dtype)

    icc = exif = None
    if like is not None and not strip_metadata:
        icc, exif = like.icc_profile, like.exif
    if icc is not None and icc_space(icc) != (b"GRAY" if gray else b"RGB "):
        icc = None
    if exif is not None:  # the source's pixel size, if it records one, is not this file's
        exif = exif_for_size(exif, pixels.shape[1], pixels.shape[0])
    if fmt == "JPEG" and exif is not None and len(exif) > _JPEG_MAX_EXIF:
        raise ImageWriteError(
            p,
            f"EXIF block is {len(exif)} bytes, too large for JPEG (max {_JPEG_MAX_EXIF}); "
            "write it without metadata",
            setting="strip_metadata",
        )

    try:
        with _atomic_open(p, replace) as f:
            if fmt == "PNG" and depth == 16:
                encode_png16(f, pixels, icc, exif, png_compress_level)
            elif fmt == "TIFF":
                encode_tiff(f, pixels, icc, exif)
            else:
                _encode_pillow(f, pixels, fmt, quality, icc, exif, png_compress_level)
    except (SinsrIOError, OutputExists):
        raise
    except OSError as e:
        raise ImageWriteError(p, f"cannot write: {os_reason(e)}") from None
    except ValueError as e:  # Pillow rejects an option or a metadata block
        raise ImageWriteError(p, f"cannot encode as {fmt}: {one_line(e, 160)}") from None
    return p


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` atomically (temp file, fsync, rename); ImageWriteError on failure."""
    p = Path(path)
    try:
        with _atomic_open(p) as f:
            f.write(data)
    except SinsrIOError:
        raise
    except OSError as e:
        raise ImageWriteError(p, f"cannot write: {os_reason(e)}") from None
    return p


@contextmanager
def _atomic_open(p: Path, replace: bool = True) -> Iterator[IO[bytes]]:
    """A file in ``p``'s directory that replaces ``p`` only if the body finishes; removed otherwise.

    The temporary name starts with "." so input discovery skips leftovers of a killed run.
    """
    with atomic_path(p, fsync=False, replace=replace) as tmp, open(tmp, "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def _encode_pillow(
    f: IO[bytes], pixels: np.ndarray, fmt: str, quality: int, icc: bytes | None, exif: bytes | None,
    png_level: int = PNG_COMPRESS_LEVEL,
) -> None:
    """8-bit PNG/JPEG/WebP through Pillow; ``pixels`` is uint8 ``[H, W, C]``, C in 1..4."""
    im = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
    params: dict[str, Any] = {}
    if fmt == "PNG":
        params["compress_level"] = int(png_level)
    elif fmt == "JPEG":
        params.update(quality=int(quality), subsampling=0 if quality >= 90 else 2)
    elif fmt == "WEBP":
        params.update(quality=int(quality), method=4)
    if icc:
        params["icc_profile"] = icc
    if exif:
        params["exif"] = exif
    im.save(f, format=fmt, **params)
