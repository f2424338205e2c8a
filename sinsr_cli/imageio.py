"""Image files in and out: decode to float arrays, encode back, find inputs, pair LR/HR by name.

Every pixel array here is float32 in [0, 1]: colour is ``[H, W, 3]``, alpha is ``[H, W]``.
Reading applies EXIF orientation, keeps alpha, ICC profile, EXIF (Orientation reset to 1),
whether the source was grayscale and whether it was 16-bit, so ``write_image(..., like=src)``
writes a file that looks like its source. Writes are atomic: a temporary file next to the
target, fsync, ``os.replace``. Every failure a user can fix raises a ``SinsrIOError`` whose
``str()`` is one line, ``"<path>: <reason>"``; nothing here prints.

Policies (documented for the CLI):
  * ``max_pixels``: the declared width x height is checked *before* decoding (Pillow's own
    process-wide limit is switched off around our calls; ours is the only one). ``None`` disables.
  * Any size is read, down to 1 x 1 (the pipeline pads sides too small to reflect by replication).
  * Multi-frame files (GIF, APNG, multi-page TIFF): the first frame only.
  * 16-bit: grayscale and RGB/RGBA PNG and TIFF are read losslessly (/65535) and, with
    ``bit_depth=16`` or ``like.bit_depth == 16``, written back as 16-bit PNG/TIFF (rounded).
    Pillow mode ``I`` is read as [0, 65535], mode ``F`` as [0, 1] (both clipped), both 16-bit.
  * JPEG has no alpha: alpha passed to a JPEG write is dropped (the CLI should warn).
    WebP has no grayscale: grayscale goes out as RGB. JPEG/WebP are always 8-bit.
  * Grayscale output (``like.grayscale`` or a 2-D array) is the Rec. 601 luma of the RGB.
  * CMYK is converted to sRGB through its ICC profile when littlecms can (the sRGB profile
    is then carried), otherwise naively (no profile carried). An ICC profile whose colour
    space does not match the written pixels (GRAY vs RGB) is not written.
  * EXIF that cannot be parsed is not carried. 16-bit gray+alpha TIFF is written as RGBA
    (Pillow cannot read 16-bit gray+alpha TIFF back).
"""

from __future__ import annotations

import errno
import glob
import io
import itertools
import os
import secrets
import struct
import sys
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageFile, TiffImagePlugin, UnidentifiedImageError

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageReadError",
    "ImageWriteError",
    "InputItem",
    "LoadedImage",
    "SinsrIOError",
    "atomic_write_bytes",
    "collect_inputs",
    "image_to_tensor",
    "output_path",
    "pair_by_stem",
    "read_image",
    "sniff_format",
    "tensor_to_image",
    "write_image",
]

DEFAULT_MAX_PIXELS = 178_956_970  # the size at which Pillow itself refuses to open a file

_FORMAT_ALIASES = {
    "png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP", "tif": "TIFF", "tiff": "TIFF"
}
_EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tif"}
_OUTPUT_FOR_CONTENT = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "WEBP": "WEBP", "TIFF": "TIFF"}
_GRAY16_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_JPEG_MAX_EXIF = 65533  # one APP1 segment
_ORIENTATION = 0x0112
_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
# IFD0 tags of a TIFF that are camera/author metadata rather than image structure.
_TIFF_EXIF_TAGS = (270, 271, 272, 274, 282, 283, 296, 305, 306, 315, 33432)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # Rec. 601, as Pillow's RGB -> L


class SinsrIOError(Exception):
    """A file cannot be read, written or placed; ``str()`` is one line: ``"<path>: <reason>"``."""

    def __init__(self, path: str | os.PathLike[str] | None, reason: str) -> None:
        self.path = None if path is None else Path(path)
        self.reason = " ".join(str(reason).split())
        super().__init__(self.reason if path is None else f"{os.fspath(path)}: {self.reason}")

    def __reduce__(self) -> tuple[Any, ...]:  # survive multiprocessing
        return (type(self), (self.path, self.reason))


class ImageReadError(SinsrIOError):
    """An input cannot be decoded: missing, unreadable, not an image, corrupt, too big or small."""


class ImageWriteError(SinsrIOError):
    """An output image cannot be encoded or saved (bad format, permission, disk full, ...)."""


@dataclass
class LoadedImage:
    """A decoded image plus what is needed to write the result back in the same style."""

    rgb: np.ndarray  # float32 [H, W, 3] in [0, 1]; grayscale replicated to 3 channels
    alpha: np.ndarray | None  # float32 [H, W] in [0, 1], or None
    grayscale: bool  # the source had no colour (1, L, LA, I;16, I, F)
    bit_depth: int  # 8 or 16
    format: str  # Pillow's name for the content ("PNG", "JPEG", "MPO", "WEBP", "TIFF", ...)
    icc_profile: bytes | None
    exif: bytes | None  # "Exif\0\0" + TIFF block, Orientation already 1
    path: Path | None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as Pillow reports sizes."""
        return self.rgb.shape[1], self.rgb.shape[0]


@dataclass(frozen=True)
class InputItem:
    """One input image; ``rel`` is its path below the input root, mirrored under ``-o DIR``.

    ``size`` is the (width, height) its header declares, when known (before EXIF rotation).
    """

    path: Path
    rel: Path
    size: tuple[int, int] | None = None


# --------------------------------------------------------------------------- reading


def read_image(
    path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> LoadedImage:
    """Decode an image file to upright float32 RGB ``[H, W, 3]`` in [0, 1] plus alpha and metadata.

    The format comes from the content, not the extension. Raises ``ImageReadError`` when the file
    is missing, unreadable, empty, not an image, declares more than ``max_pixels`` pixels
    (checked before decoding; ``None`` disables), or is truncated
    or corrupt (partial decodes are never returned).
    """
    p = Path(path)
    _check_is_file(p)
    with _open(p) as im:
        w, h = im.size
        if max_pixels is not None and w * h > max_pixels:
            raise ImageReadError(
                p,
                f"declared size {w}x{h} ({_mp(w * h)}) exceeds the limit of {_mp(max_pixels)}; "
                "raise it with --max-pixels",
            )
        fmt = im.format or "UNKNOWN"
        rawmode = _tile_rawmode(im)
        _load(im, p)
        color, alpha, grayscale, bit_depth, icc = _decode(im, p, rawmode)
        orientation, exif = _orientation_and_exif(im)  # after load(): Pillow rotates TIFFs itself
    color = _orient(color, orientation)
    if alpha is not None:
        alpha = _orient(alpha, orientation)
    if color.shape[2] == 1:
        color = np.repeat(color, 3, axis=2)
    return LoadedImage(
        rgb=np.ascontiguousarray(color, dtype=np.float32),
        alpha=None if alpha is None else np.ascontiguousarray(alpha, dtype=np.float32),
        grayscale=grayscale,
        bit_depth=bit_depth,
        format=fmt,
        icc_profile=icc or None,
        exif=exif,
        path=p,
    )


def sniff_format(path: str | os.PathLike[str]) -> str | None:
    """Pillow's format name for the file's content ("PNG", "JPEG", ...), or None if not an image.

    Only the header is read; the extension is ignored, so a PNG named ``.jpg`` reports "PNG".
    """
    fmt, _, _ = _sniff(Path(path))
    return fmt


def _sniff(p: Path) -> tuple[str | None, str, tuple[int, int] | None]:
    """(format, "", size) for an image; (None, reason, None) otherwise. Never raises for a bad file."""
    try:
        if p.is_dir():
            return None, "is a directory", None
        if p.stat().st_size == 0:
            return None, "empty file", None
        with _pillow_size_check_off():
            im = Image.open(p)
        with im:
            return im.format, "", im.size
    except UnidentifiedImageError:
        return None, "not an image", None
    except OSError as e:
        return None, _os_reason(e) if e.errno is not None else "not an image", None
    except Exception:  # any header Pillow cannot parse means "not an image we can read"
        return None, "not an image", None


_PIL_LIMIT_LOCK = threading.RLock()


@contextmanager
def _pillow_size_check_off() -> Iterator[None]:
    """Disable Pillow's process-wide decompression-bomb check; ``max_pixels`` is enforced by us."""
    with _PIL_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _check_is_file(p: Path) -> None:
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ImageReadError(p, "no such file") from None
    except OSError as e:
        raise ImageReadError(p, _os_reason(e)) from None
    if p.is_dir():
        raise ImageReadError(p, "is a directory, not an image file")
    if st.st_size == 0:
        raise ImageReadError(p, "empty file (0 bytes)")


def _open(p: Path) -> ImageFile.ImageFile:
    try:
        with _pillow_size_check_off():
            return Image.open(p)
    except UnidentifiedImageError:
        claimed = _magic_format(p)
        if claimed:
            reason = f"truncated or corrupt {claimed} file (header cannot be parsed)"
            raise ImageReadError(p, reason) from None
        raise ImageReadError(p, "not an image (unrecognised file format)") from None
    except OSError as e:
        if e.errno is not None:
            raise ImageReadError(p, _os_reason(e)) from None
        raise ImageReadError(p, f"truncated or corrupt image file ({_detail(e)})") from None
    except Exception as e:  # plugins raise SyntaxError, ValueError, struct.error ... on bad headers
        raise ImageReadError(p, f"truncated or corrupt image file ({_detail(e)})") from None


_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF8", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)


def _magic_format(p: Path) -> str | None:
    """The format a file's first bytes claim, to tell "corrupt PNG" from "not an image"."""
    try:
        with open(p, "rb") as f:
            head = f.read(16)
    except OSError:
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in _MAGIC if head.startswith(magic)), None)


def _load(im: ImageFile.ImageFile, p: Path) -> None:
    """Decode all pixels now, so a truncated file raises instead of loading partially."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # set by other code: it would make truncation silent
        raise ImageReadError(
            p, "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True; refusing to decode partial images"
        )
    w, h = im.size
    with _PIL_LIMIT_LOCK:  # the true value, not one another thread has switched off for a moment
        limit = Image.MAX_IMAGE_PIXELS
    try:
        if limit is not None and w * h > limit:  # TIFF/GIF repeat Pillow's check while decoding
            with _pillow_size_check_off():
                im.load()
        else:
            im.load()
    except MemoryError:
        raise ImageReadError(p, f"not enough memory to decode a {w}x{h} image") from None
    except Exception as e:  # any decoder failure on this file means the file is bad
        raise ImageReadError(p, f"truncated or corrupt image file ({_detail(e)})") from None


def _tile_rawmode(im: ImageFile.ImageFile) -> str | None:
    """The raw (on-disk) pixel layout Pillow will unpack, e.g. "RGB;16B"; None if unknown."""
    tile = getattr(im, "tile", None)
    return _args_rawmode(tile[0][3]) if tile else None


def _args_rawmode(args: Any) -> str | None:
    if isinstance(args, str):
        return args
    if isinstance(args, tuple) and args and isinstance(args[0], str):
        return args[0]
    return None


def _decode(
    im: Image.Image, p: Path, rawmode: str | None
) -> tuple[np.ndarray, np.ndarray | None, bool, int, bytes | None]:
    """Loaded image -> (colour [H, W, 1|3], alpha [H, W] | None, grayscale, bit_depth, icc)."""
    mode = im.mode
    icc: bytes | None = im.info.get("icc_profile") or None
    trns = im.info.get("transparency")
    if mode in _GRAY16_MODES:
        g = np.asarray(im).astype(np.float32)
        alpha = (g != trns).astype(np.float32) if isinstance(trns, int) else None
        return g[..., None] / 65535, alpha, True, 16, icc
    if mode == "I":
        i = np.clip(np.asarray(im), 0, 65535).astype(np.float32)
        return i[..., None] / 65535, None, True, 16, icc
    if mode == "F":
        f = np.nan_to_num(np.asarray(im, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        return np.clip(f, 0, 1)[..., None], None, True, 16, icc
    if mode in ("1", "L"):
        g8 = np.asarray(im.convert("L"))
        alpha = None
        if isinstance(trns, int):
            alpha = (g8 != (trns * 255 if mode == "1" else trns)).astype(np.float32)
        return g8[..., None].astype(np.float32) / 255, alpha, True, 8, icc
    if mode in ("LA", "La"):
        la = np.asarray(im.convert("LA")).astype(np.float32) / 255
        return la[..., :1], la[..., 1], True, 8, icc
    if rawmode is not None and mode in ("RGB", "RGBA"):
        deep = _decode_16bit(im, p, rawmode)
        if deep is not None:
            return deep + (icc,)
    if mode == "CMYK":
        rgb8, icc = _cmyk_to_srgb(im, icc)
        return rgb8.astype(np.float32) / 255, None, False, 8, icc
    if mode == "RGB":
        rgb8 = np.asarray(im)
        alpha = None
        if isinstance(trns, tuple) and len(trns) == 3:
            alpha = np.any(rgb8 != np.array(trns), axis=2).astype(np.float32)
        return rgb8.astype(np.float32) / 255, alpha, False, 8, icc
    has_alpha = mode in ("RGBA", "RGBa", "PA") or trns is not None
    try:
        arr = np.asarray(im.convert("RGBA" if has_alpha else "RGB")).astype(np.float32) / 255
    except ValueError:
        raise ImageReadError(p, f"unsupported colour mode {mode}") from None
    return arr[..., :3], (arr[..., 3] if has_alpha else None), False, 8, icc


_SWAP_ENDIAN = {"B": "L", "L": "B", "N": "B" if sys.byteorder == "little" else "L"}


def _decode_16bit(
    im: Image.Image, p: Path, rawmode: str
) -> tuple[np.ndarray, np.ndarray | None, bool, int] | None:
    """Full 16-bit samples of a PNG/TIFF that Pillow only exposes as 8-bit RGB(A); None if not one.

    Pillow keeps the high byte of each 16-bit sample. Decoding the same tiles again with the
    opposite byte order keeps the low byte instead; high * 256 + low is exact. 16-bit gray+alpha
    PNG ("LA;16B", 4 bytes per pixel) decoded as plain "RGBA" yields all four bytes at once.
    """
    if rawmode == "LA;16B":
        raw = _redecode(p, lambda _: "RGBA")
        if raw is None:
            return None
        v = raw.astype(np.uint16)
        gray, alpha = (v[..., 0] << 8) | v[..., 1], (v[..., 2] << 8) | v[..., 3]
        g, a = gray[..., None].astype(np.float32) / 65535, alpha.astype(np.float32) / 65535
        return g, a, True, 16
    base, _, depth = rawmode.partition(";")
    if base not in ("RGB", "RGBA", "RGBX") or depth[:-1] != "16" or depth[-1:] not in _SWAP_ENDIAN:
        return None  # 8-bit, or premultiplied "RGBa;16" whose bytes are not plain samples
    low = _redecode(p, lambda rm: rm[:-1] + _SWAP_ENDIAN[rm[-1]])
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


def _redecode(p: Path, new_rawmode: Callable[[str], str]) -> np.ndarray | None:
    """Decode ``p`` again, each tile's rawmode mapped through ``new_rawmode``; None on failure."""
    try:
        with _pillow_size_check_off():
            im = Image.open(p)
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


def _cmyk_to_srgb(im: Image.Image, icc: bytes | None) -> tuple[np.ndarray, bytes | None]:
    """CMYK -> 8-bit sRGB, through the embedded profile when littlecms can, else naively."""
    if icc:
        try:
            from PIL import ImageCms
        except ImportError:
            ImageCms = None  # type: ignore[assignment]  # noqa: N806
        if ImageCms is not None:
            try:
                src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
                dst = ImageCms.createProfile("sRGB")
                out = ImageCms.profileToProfile(im, src, dst, outputMode="RGB")
                if out is not None:
                    return np.asarray(out), _srgb_icc()
            except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
                pass
    return np.asarray(im.convert("RGB")), None  # the CMYK profile does not describe RGB pixels


@lru_cache(maxsize=1)
def _srgb_icc() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _orientation_and_exif(im: Image.Image) -> tuple[int, bytes | None]:
    """(EXIF orientation 1..8, EXIF bytes to carry with Orientation reset to 1, or None)."""
    try:
        exif = im.getexif()
        orientation = int(exif.get(_ORIENTATION, 1))
    except Exception:  # unreadable EXIF: keep pixels as stored, carry nothing
        return 1, None
    orientation = orientation if 1 <= orientation <= 8 else 1
    if im.format == "TIFF":  # getexif() is the TIFF's own directory: keep only the metadata tags
        return orientation, _tiff_exif(exif)
    raw = im.info.get("exif")
    return orientation, _reset_orientation(raw) if isinstance(raw, bytes) and raw else None


def _tiff_exif(exif: Image.Exif) -> bytes | None:
    out = Image.Exif()
    for tag in _TIFF_EXIF_TAGS:
        if tag in exif:
            out[tag] = exif[tag]
    for tag in (_EXIF_IFD, _GPS_IFD):
        try:
            sub = exif.get_ifd(tag)
        except Exception:
            sub = {}
        if sub:
            out[tag] = dict(sub)
    if not len(out):
        return None
    if _ORIENTATION in out:
        out[_ORIENTATION] = 1
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
            if tag == _ORIENTATION:
                if n != 1 or typ not in (3, 4):  # SHORT or LONG
                    return None
                struct.pack_into(bo + ("H" if typ == 3 else "I"), data, entry + 8, 1)
                break
    except (KeyError, struct.error):
        return None
    return bytes(data)


def _orient(a: np.ndarray, orientation: int) -> np.ndarray:
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


# --------------------------------------------------------------------------- writing


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
) -> Path:
    """Atomically write float ``rgb`` ``[H, W, 3]`` (or ``[H, W]`` gray) in [0, 1], optional alpha.

    ``format`` (png|jpg|jpeg|webp|tif|tiff) overrides the extension. ``like`` supplies the ICC
    profile, EXIF, grayscale-ness and bit depth of the source. ``bit_depth`` (8 or 16) overrides
    ``like``; 16 is PNG/TIFF only. ``quality`` (1-100) is for JPEG/WebP. Alpha is dropped for
    JPEG. ``png_compress_level`` (0-9) trades PNG size for time. Raises ``ImageWriteError``
    (one line) if the file cannot be written.
    """
    p = Path(path)
    fmt = _output_format(p, format)
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    if not 0 <= int(png_compress_level) <= 9:
        raise ValueError(f"png_compress_level must be in 0..9, got {png_compress_level}")
    color = _as_unit_float(rgb, "rgb")
    if color.ndim == 2:
        color = color[..., None]
    if color.ndim != 3 or color.shape[2] not in (1, 3):
        raise ValueError(f"rgb must be [H, W, 3] or [H, W], got shape {tuple(np.shape(rgb))}")
    a = None if alpha is None or fmt == "JPEG" else _as_unit_float(alpha, "alpha")
    if a is not None and a.shape != color.shape[:2]:
        raise ValueError(f"alpha shape {a.shape} does not match image {color.shape[:2]}")

    gray = color.shape[2] == 1 or (like is not None and like.grayscale)
    if fmt == "WEBP":
        gray = False
    if gray and color.shape[2] == 3:
        color = (color @ _LUMA)[..., None]
    elif not gray and color.shape[2] == 1:
        color = np.repeat(color, 3, axis=2)

    depth = bit_depth if bit_depth is not None else (like.bit_depth if like is not None else 8)
    if depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {depth}")
    if depth == 16 and fmt not in ("PNG", "TIFF"):
        if bit_depth == 16:
            raise ImageWriteError(p, f"{fmt} cannot store 16-bit samples; use png or tif")
        depth = 8

    planes = color if a is None else np.concatenate([color, a[..., None]], axis=2)
    scale, dtype = (65535, np.uint16) if depth == 16 else (255, np.uint8)
    pixels = _quantize(planes, scale, dtype)

    icc = exif = None
    if like is not None and not strip_metadata:
        icc, exif = like.icc_profile, like.exif
    if icc is not None and _icc_space(icc) != (b"GRAY" if gray else b"RGB "):
        icc = None
    if fmt == "JPEG" and exif is not None and len(exif) > _JPEG_MAX_EXIF:
        raise ImageWriteError(
            p,
            f"EXIF block is {len(exif)} bytes, too large for JPEG (max {_JPEG_MAX_EXIF}); "
            "use --strip-metadata",
        )

    try:
        with _atomic_open(p) as f:
            if fmt == "PNG" and depth == 16:
                _encode_png16(f, pixels, icc, exif, png_compress_level)
            elif fmt == "TIFF":
                _encode_tiff(f, pixels, icc, exif)
            else:
                _encode_pillow(f, pixels, fmt, quality, icc, exif, png_compress_level)
    except SinsrIOError:
        raise
    except OSError as e:
        raise ImageWriteError(p, f"cannot write: {_os_reason(e)}") from None
    except ValueError as e:  # Pillow rejects an option or a metadata block
        raise ImageWriteError(p, f"cannot encode as {fmt}: {_detail(e)}") from None
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
        raise ImageWriteError(p, f"cannot write: {_os_reason(e)}") from None
    return p


@contextmanager
def _atomic_open(p: Path) -> Iterator[IO[bytes]]:
    """A file in ``p``'s directory that replaces ``p`` only if the body finishes; removed otherwise.

    The temporary name starts with "." so input discovery skips leftovers of a killed run.
    """
    parent = p.parent
    parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        tmp = parent / f".{p.name}.{secrets.token_hex(4)}.tmp"
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            fd = os.open(tmp, flags, 0o666)  # 0o666 & ~umask, like any new file
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 random collisions
        raise ImageWriteError(p, "cannot create a temporary file next to it")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


def _output_format(p: Path, format: str | None) -> str:  # noqa: A002
    name = format if format is not None else p.suffix
    key = name.lower().lstrip(".")
    if key not in _FORMAT_ALIASES:
        what = (
            f"unknown output format {format!r}"
            if format is not None
            else f"cannot tell the format from {p.suffix!r}"
        )
        raise ImageWriteError(p, f"{what}; use png, jpg, webp or tif")
    return _FORMAT_ALIASES[key]


#: float elements per row block when sanitising / quantising (16 MiB of float32)
_BLOCK_ELEMS = 1 << 22


def _row_blocks(arr: np.ndarray) -> Iterator[slice]:
    """Slices of whole rows of about ``_BLOCK_ELEMS`` elements: full-size temporaries of an
    8192^2 output would be 0.8 GB each, blocks keep them in cache-sized pieces."""
    rows = max(1, _BLOCK_ELEMS // max(1, arr[:1].size))
    for r in range(0, arr.shape[0], rows):
        yield slice(r, r + rows)


def _as_unit_float(x: np.ndarray, name: str) -> np.ndarray:
    """float32 in [0, 1] with NaN -> 0, +inf -> 1; the input itself when already so (no copy)."""
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name} must be a float array in [0, 1], got dtype {arr.dtype}")
    if arr.size == 0:
        return arr.astype(np.float32)
    if arr.dtype == np.float32 and all(arr[b].min() >= 0.0 and arr[b].max() <= 1.0 for b in _row_blocks(arr)):
        return arr  # NaN fails both comparisons; the caller's array is never modified
    out = np.empty(arr.shape, np.float32)
    for b in _row_blocks(arr):
        blk = np.nan_to_num(arr[b].astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        np.clip(blk, 0.0, 1.0, out=out[b])
    return out


def _quantize(x: np.ndarray, scale: int, dtype: type) -> np.ndarray:
    """``rint(x * scale)`` as ``dtype``, in row blocks (float32 is exact for 16 bits)."""
    out = np.empty(x.shape, dtype)
    for b in _row_blocks(x):
        blk = x[b] * np.float32(scale)
        np.rint(blk, out=blk)
        out[b] = blk
    return out


def _icc_space(icc: bytes) -> bytes | None:
    """The ICC header's data colour space ("RGB ", "GRAY", "CMYK", ...)."""
    return icc[16:20] if len(icc) >= 20 else None


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


def _png_chunk(f: IO[bytes], kind: bytes, data: bytes) -> None:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    f.write(struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc))


def _encode_png16(
    f: IO[bytes], pixels: np.ndarray, icc: bytes | None, exif: bytes | None, level: int = PNG_COMPRESS_LEVEL
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


def _encode_tiff(f: IO[bytes], pixels: np.ndarray, icc: bytes | None, exif: bytes | None) -> None:
    """Baseline TIFF, 8 or 16 bits per sample, Adobe deflate + horizontal predictor, ICC and EXIF.

    Written by hand because Pillow cannot write 16-bit colour and its libtiff path cannot write
    an EXIF sub-directory. 16-bit gray+alpha is widened to RGBA so Pillow can read it back.
    """
    if pixels.dtype == np.uint16 and pixels.shape[2] == 2:
        pixels = np.concatenate([np.repeat(pixels[..., :1], 3, axis=2), pixels[..., 1:]], axis=2)
        icc = icc if icc is not None and _icc_space(icc) == b"RGB " else None
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
            for tag in _TIFF_EXIF_TAGS:
                if tag in ex:
                    ifd[tag] = ex[tag]
            for tag in (_EXIF_IFD, _GPS_IFD):
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


# --------------------------------------------------------------------------- tensors


def image_to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """``[H, W, 3]`` float in [0, 1] -> ``[1, 3, H, W]`` float32 CPU tensor (a copy)."""
    import torch

    a = np.asarray(rgb, dtype=np.float32)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected an [H, W, 3] array, got shape {a.shape}")
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]


def tensor_to_image(t: torch.Tensor) -> np.ndarray:
    """``[1, 3, H, W]`` or ``[3, H, W]`` (any device/dtype) -> ``[H, W, 3]`` float32 in [0, 1]."""
    import torch

    if t.ndim == 4:
        if t.shape[0] != 1:
            raise ValueError(f"expected a batch of one image, got shape {tuple(t.shape)}")
        t = t[0]
    if t.ndim != 3 or t.shape[0] != 3:
        raise ValueError(f"expected [1, 3, H, W] or [3, H, W], got shape {tuple(t.shape)}")
    x = t.detach().to(device="cpu", dtype=torch.float32)
    x = torch.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0).clamp(0.0, 1.0)
    return x.permute(1, 2, 0).contiguous().numpy()


# --------------------------------------------------------------------------- inputs and outputs


def collect_inputs(
    inputs: Sequence[str | os.PathLike[str]], *, recursive: bool = True
) -> tuple[list[InputItem], list[tuple[Path, str]]]:
    """Expand files, directories and glob patterns into image inputs, detected by content.

    Returns ``(images, skipped)``: images sorted by path and de-duplicated (same real file once),
    each with ``rel`` below the root it came from (a directory, a glob's fixed prefix, or just the
    file name); skipped is ``[(path, reason)]`` for non-images ("not an image"), unreadable files
    and inputs that do not exist or match nothing. Hidden files and directories (".name") found
    while walking are ignored silently; a hidden file named explicitly is used.
    """
    found: list[InputItem] = []
    skipped: list[tuple[Path, str]] = []

    def consider(path: Path, rel: Path) -> None:
        fmt, reason, size = _sniff(path)
        if fmt is None:
            skipped.append((path, reason))
        else:
            found.append(InputItem(path=path, rel=rel, size=size))

    def walk(root: Path, prefix: Path) -> None:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
            for name in sorted(filenames):
                if not name.startswith("."):
                    path = Path(dirpath) / name
                    consider(path, prefix / path.relative_to(root))

    for raw in inputs:
        given = Path(os.path.expanduser(os.fspath(raw)))
        if given.is_dir():
            walk(given, Path())
        elif given.exists():
            consider(given, Path(given.name))
        elif _has_magic(os.fspath(given)):
            root = _glob_root(given)
            matches = sorted(glob.glob(os.fspath(given), recursive=True))
            if not matches:
                skipped.append((given, "no files match this pattern"))
            for m in map(Path, matches):
                if m.is_dir():
                    walk(m, m.relative_to(root))
                else:
                    consider(m, m.relative_to(root))
        else:
            skipped.append((given, "no such file or directory"))

    unique: dict[str, InputItem] = {}
    for item in found:
        unique.setdefault(os.path.normcase(os.path.realpath(item.path)), item)
    return sorted(unique.values(), key=lambda i: i.path), sorted(skipped)


def _has_magic(s: str) -> bool:
    return any(c in s for c in "*?[")


def _glob_root(pattern: Path) -> Path:
    """The leading part of a glob pattern without wildcards: what matches are made relative to."""
    return Path(*itertools.takewhile(lambda part: not _has_magic(part), pattern.parts))


def output_path(
    item: InputItem,
    *,
    output: Path | None,
    suffix: str,
    format: str | None,  # noqa: A002
    single_input_file: bool,
) -> Path:
    """Where the result for ``item`` goes; never the input file itself (SinsrIOError).

    * ``output`` None: next to the input, ``<stem><suffix><ext>``.
    * ``output`` is a file path (only when ``single_input_file``, ``output`` is not an existing
      directory and has an image extension): exactly ``output``.
    * otherwise ``output`` is a directory: ``output / item.rel`` with ``<stem><suffix><ext>``.
    ``ext`` comes from ``format`` (png|jpg|webp|tif and aliases) or else the input's real content
    format (JPEG/MPO -> .jpg, PNG, WEBP, TIFF -> .tif; anything else -> .png).
    """
    if format is not None:
        key = format.lower().lstrip(".")
        if key not in _FORMAT_ALIASES:
            raise SinsrIOError(None, f"unknown output format {format!r}; use png, jpg, webp or tif")
        fmt = _FORMAT_ALIASES[key]
    else:
        fmt = _OUTPUT_FOR_CONTENT.get(sniff_format(item.path) or "", "PNG")
    ext = _EXTENSIONS[fmt]

    out_ext = output.suffix.lower().lstrip(".") if output is not None else ""
    if output is None:
        target = item.path.with_name(item.path.stem + suffix + ext)
    elif single_input_file and not output.is_dir() and out_ext in _FORMAT_ALIASES:
        if format is not None and _FORMAT_ALIASES[out_ext] != fmt:
            raise SinsrIOError(output, f"extension does not match the requested format {format!r}")
        target = output
    else:
        target = output / item.rel.parent / (item.rel.stem + suffix + ext)
    if _same_file(target, item.path):
        raise SinsrIOError(
            item.path,
            "the output would overwrite the input; use a suffix or another output directory",
        )
    return target


def _same_file(a: Path, b: Path) -> bool:
    if os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b)):
        return True
    try:
        return a.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def pair_by_stem(
    lr_dir: str | os.PathLike[str], hr_dir: str | os.PathLike[str]
) -> tuple[list[tuple[Path, Path]], list[Path], list[Path]]:
    """Match LR and HR images by relative path without extension (recursive), never by position.

    Returns ``(pairs, lr_only, hr_only)``, each sorted. ``a.png`` pairs with ``a.jpg``; ``x/a``
    does not pair with ``a``. Raises SinsrIOError if a folder is missing or holds two images
    with the same stem (e.g. ``a.png`` and ``a.jpg``), which would make pairing ambiguous.
    """
    sides = []
    for d in (Path(lr_dir), Path(hr_dir)):
        if not d.is_dir():
            raise SinsrIOError(d, "not a directory")
        items, _ = collect_inputs([d], recursive=True)
        by_stem: dict[str, Path] = {}
        for item in items:
            key = item.rel.with_suffix("").as_posix()
            if key in by_stem:
                names = f"{by_stem[key].name}, {item.path.name}"
                raise SinsrIOError(
                    d, f"two images share the name {key!r} ({names}); pairing is ambiguous"
                )
            by_stem[key] = item.path
        sides.append(by_stem)
    lr, hr = sides
    pairs = [(lr[k], hr[k]) for k in sorted(lr.keys() & hr.keys())]
    lr_only = sorted(lr[k] for k in lr.keys() - hr.keys())
    hr_only = sorted(hr[k] for k in hr.keys() - lr.keys())
    return pairs, lr_only, hr_only


# --------------------------------------------------------------------------- messages


_OS_REASONS = {
    errno.ENOENT: "no such file or directory",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOSPC: "no space left on device (disk full)",
    errno.EROFS: "read-only file system",
    errno.EISDIR: "is a directory",
    errno.ENOTDIR: "a parent path is not a directory",
    errno.EEXIST: "a parent path is a file, not a directory",
    errno.ENAMETOOLONG: "file name too long",
    getattr(errno, "EDQUOT", -1): "disk quota exceeded",
}


def _os_reason(e: OSError) -> str:
    return _OS_REASONS.get(e.errno or 0) or e.strerror or _detail(e)


def _detail(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _mp(pixels: int) -> str:
    return f"{pixels / 1e6:.0f} MP" if pixels >= 10**6 else f"{pixels} px"
