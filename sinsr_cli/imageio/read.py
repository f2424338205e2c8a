"""Reading: one image file -> upright float32 RGB in [0, 1], alpha, and what writing it back needs.

See the package docstring for the policies (size limit, 16-bit, CMYK, multi-frame, EXIF).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from ..errors import one_line
from .errors import ImageReadError, megapixels, os_reason
from .metadata import orient, orientation_and_exif
from .pillowlimit import PIL_LIMIT_LOCK, pillow_size_check_off
from .redecode import decode_16bit, tile_rawmode
from .tiffheader import deep_gray_levels, tiff_layout

DEFAULT_MAX_PIXELS = 178_956_970  # the size at which Pillow itself refuses to open a file
_GRAY16_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


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
    frames: int = 1  # frames or pages in the file (animated GIF/WebP/APNG, multi-page TIFF); the first is read

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as Pillow reports sizes."""
        return self.rgb.shape[1], self.rgb.shape[0]


def read_image(
    path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> LoadedImage:
    """Decode an image file to upright float32 RGB ``[H, W, 3]`` in [0, 1] plus alpha and metadata.

    The format comes from the content, not the extension. Raises ``ImageReadError`` when the file
    is missing, unreadable, empty, not an image, declares more than ``max_pixels`` pixels
    (checked before decoding; ``None`` disables; the error's ``setting`` is "max_pixels"), or is
    truncated or corrupt (partial decodes are never returned). The file is opened once: every
    decoding pass and the format check of a corrupt file read the same handle.
    """
    p = Path(path)
    _check_is_file(p)
    try:
        f = open(p, "rb")  # noqa: SIM115 - closed by the with below; the only open of this file
    except OSError as e:
        raise ImageReadError(p, os_reason(e)) from None
    with f, _open(p, f) as im:
        w, h = im.size
        if max_pixels is not None and w * h > max_pixels:
            raise ImageReadError(
                p,
                f"declared size {w}x{h} ({megapixels(w * h)}) exceeds the limit of {megapixels(max_pixels)}",
                setting="max_pixels",
            )
        fmt = im.format or "UNKNOWN"
        # MPO's further frames are a phone's previews or depth maps, not part of the picture
        frames = 1 if fmt == "MPO" else int(getattr(im, "n_frames", 1) or 1)
        rawmode = tile_rawmode(im)
        _load(im, p)
        color, alpha, grayscale, bit_depth, icc = _decode(im, p, rawmode, f)
        orientation, exif = orientation_and_exif(im)  # after load(): Pillow rotates TIFFs itself
    color = orient(color, orientation)
    if alpha is not None:
        alpha = orient(alpha, orientation)
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
        frames=frames,
    )


def sniff_format(path: str | os.PathLike[str]) -> str | None:
    """Pillow's format name for the file's content ("PNG", "JPEG", ...), or None if not an image.

    Only the header is read; the extension is ignored, so a PNG named ``.jpg`` reports "PNG".
    """
    return sniff(Path(path)).format


class Probe(NamedTuple):
    """What one look at a file's header tells: its content format and declared size, or why
    it is not an image."""

    format: str | None  # Pillow's name ("PNG", "JPEG", "MPO", ...); None: not an image
    size: tuple[int, int] | None  # (width, height) declared, before EXIF rotation
    reason: str = ""  # why it is not an image ("not an image", "empty file", ...)


def sniff(p: Path) -> Probe:
    """Open ``p`` once and read its header (no pixels). Never raises for a bad file."""
    try:
        if p.is_dir():
            return Probe(None, None, "is a directory")
        if p.stat().st_size == 0:
            return Probe(None, None, "empty file")
        with pillow_size_check_off():
            im = Image.open(p)
        with im:
            return Probe(im.format, im.size)
    except UnidentifiedImageError:
        return Probe(None, None, "not an image")
    except OSError as e:
        return Probe(None, None, os_reason(e) if e.errno is not None else "not an image")
    except Exception:  # any header Pillow cannot parse means "not an image we can read"
        return Probe(None, None, "not an image")


def _check_is_file(p: Path) -> None:
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ImageReadError(p, "no such file") from None
    except OSError as e:
        raise ImageReadError(p, os_reason(e)) from None
    if p.is_dir():
        raise ImageReadError(p, "is a directory, not an image file")
    if st.st_size == 0:
        raise ImageReadError(p, "empty file (0 bytes)")


def _open(p: Path, f: IO[bytes]) -> ImageFile.ImageFile:
    """Pillow's view of the open file ``f`` (named ``p`` in errors); header only, no pixels."""
    try:
        with pillow_size_check_off():
            return Image.open(f)
    except UnidentifiedImageError:
        claimed = _magic_format(f)
        layout = tiff_layout(f) if claimed == "TIFF" else None
        if layout:  # a whole TIFF in a layout Pillow does not decode (float, 64-bit samples, ...)
            reason = f"unsupported TIFF layout ({layout}); save it as 8- or 16-bit integer samples"
            raise ImageReadError(p, reason) from None
        if claimed:
            reason = f"truncated or corrupt {claimed} file (header cannot be parsed)"
            raise ImageReadError(p, reason) from None
        raise ImageReadError(p, "not an image (unrecognised file format)") from None
    except OSError as e:
        if e.errno is not None:
            raise ImageReadError(p, os_reason(e)) from None
        raise ImageReadError(p, f"truncated or corrupt image file ({one_line(e, 160)})") from None
    except Exception as e:  # plugins raise SyntaxError, ValueError, struct.error ... on bad headers
        raise ImageReadError(p, f"truncated or corrupt image file ({one_line(e, 160)})") from None


_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF8", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)


def _magic_format(f: IO[bytes]) -> str | None:
    """The format a file's first bytes claim, to tell "corrupt PNG" from "not an image"."""
    try:
        f.seek(0)
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
    with PIL_LIMIT_LOCK:  # the true value, not one another thread has switched off for a moment
        limit = Image.MAX_IMAGE_PIXELS
    try:
        if limit is not None and w * h > limit:  # TIFF/GIF repeat Pillow's check while decoding
            with pillow_size_check_off():
                im.load()
        else:
            im.load()
    except MemoryError:
        raise ImageReadError(p, f"not enough memory to decode a {w}x{h} image") from None
    except Exception as e:  # any decoder failure on this file means the file is bad
        raise ImageReadError(p, f"truncated or corrupt image file ({one_line(e, 160)})") from None


def _decode(
    im: Image.Image, p: Path, rawmode: str | None, f: IO[bytes]
) -> tuple[np.ndarray, np.ndarray | None, bool, int, bytes | None]:
    """Loaded image -> (colour [H, W, 1|3], alpha [H, W] | None, grayscale, bit_depth, icc)."""
    mode = im.mode
    icc: bytes | None = im.info.get("icc_profile") or None
    trns = im.info.get("transparency")
    deep = _deep_gray(im)
    if deep is not None:  # 16/32-bit or float gray; only 16-bit PNG gray has a transparent value
        alpha = (np.asarray(im) != trns).astype(np.float32) if mode in _GRAY16_MODES and isinstance(trns, int) else None
        return deep[..., None], alpha, True, 16, icc
    if mode in ("1", "L"):
        g8 = np.asarray(im.convert("L"))
        alpha = None
        if isinstance(trns, int):
            alpha = (g8 != _gray8_level(trns, mode, rawmode)).astype(np.float32)
        return g8[..., None].astype(np.float32) / 255, alpha, True, 8, icc
    if mode in ("LA", "La"):
        la = np.asarray(im.convert("LA")).astype(np.float32) / 255
        return la[..., :1], la[..., 1], True, 8, icc
    if rawmode is not None:  # 16-bit colour; CMYK only to refuse 16-bit planes
        deep = decode_16bit(im, p, f, rawmode)
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


def _gray8_level(trns: int, mode: str, rawmode: str | None) -> int:
    """A 1/2/4/8-bit gray PNG's transparent value on the 0..255 scale of its "L" pixels: Pillow
    reports a 1-bit one as 0 or 255 (older Pillows 0 or 1), a 2- or 4-bit one unscaled."""
    if mode == "1":
        return 255 if trns else 0
    top = {"L;2": 3, "L;4": 15}.get(rawmode or "")
    return trns * (255 // top) if top is not None and trns <= top else trns


def pil_rgb(im: Image.Image) -> np.ndarray:
    """An in-memory PIL image as float32 RGB ``[H, W, 3]`` in [0, 1], alpha dropped, upright: as
    the file reader does, its EXIF orientation is applied (``ImageOps.exif_transpose``), 16-bit
    and 32-bit gray (``I;16``, ``I``) scaled from 0..65535 and float (``F``) taken as 0..1
    (``convert("RGB")`` saturates them to white)."""
    im.load()  # before the orientation: Pillow rotates TIFFs itself on load
    orientation, _ = orientation_and_exif(im)
    g = _deep_gray(im)
    rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255 if g is None else np.repeat(g[..., None], 3, axis=2)
    return rgb if orientation == 1 else np.ascontiguousarray(orient(rgb, orientation))


def _deep_gray(im: Image.Image) -> np.ndarray | None:
    """``[H, W]`` float32 in [0, 1] of a 16/32-bit (0..65535) or float (0..1) gray image; None
    for any other mode (Pillow's own conversions are right for those). A TIFF's 12-bit (9..15)
    samples are scaled from their own range and MinIsWhite is inverted, which Pillow does not."""
    top, inverted = deep_gray_levels(im)
    if im.mode in _GRAY16_MODES or im.mode == "I":
        v = np.clip(np.asarray(im).astype(np.float32), 0, top)
        return (top - v if inverted else v) / top
    if im.mode == "F":
        g = np.clip(np.nan_to_num(np.asarray(im, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0), 0, 1)
        return 1 - g if inverted else g
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
