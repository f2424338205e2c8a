"""sinsr_cli.imageio: decoding, metadata, 16-bit, alpha, errors, atomic writes, input discovery."""

from __future__ import annotations

import errno
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, ImageCms, ImageFile, ImageOps

from conftest import DATA as SHARED_DATA
from sinsr_cli import imageio
from sinsr_cli.imageio import encoders
from sinsr_cli.imageio import (
    DEFAULT_MAX_PIXELS,
    ImageReadError,
    ImageWriteError,
    InputItem,
    LoadedImage,
    SinsrIOError,
    atomic_write_bytes,
    collect_inputs,
    image_to_tensor,
    output_path,
    pair_by_stem,
    read_image,
    sniff_format,
    tensor_to_image,
    write_image,
)

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
RNG = np.random.default_rng(0)


DATA = SHARED_DATA if SHARED_DATA.is_dir() else None
needs_data = pytest.mark.skipif(DATA is None, reason="shared test images not present")


# ----------------------------------------------------------------------------- helpers


def rand8(h: int, w: int, c: int) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, c), dtype=np.uint8)


def rand16(h: int, w: int, c: int) -> np.ndarray:
    return RNG.integers(0, 65536, (h, w, c), dtype=np.uint16)


def save(path: Path, im: Image.Image, fmt: str | None = None, **params) -> Path:
    im.save(path, format=fmt, **params)
    return path


def exif_bytes(orientation: int | None = None, make: str = "Canon") -> bytes:
    ex = Image.Exif()
    ex[0x010F] = make
    if orientation is not None:
        ex[0x0112] = orientation
    ex[0x8769] = {0x9003: "2021:02:03 04:05:06"}
    return ex.tobytes()


def one_line(err: pytest.ExceptionInfo, path: Path | str) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: ")
    return msg


def png16_bytes(a: np.ndarray, trns: tuple[int, ...] | None = None) -> bytes:
    """An independent 16-bit PNG encoder cycling through all five filter types."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w, c = a.shape
    rows = a.astype(">u2").reshape(h, -1).view(np.uint8).astype(int)
    bpp, prev, out = 2 * c, np.zeros(rows.shape[1], int), []
    for y in range(h):
        r, kind = rows[y], y % 5
        left = np.concatenate([np.zeros(bpp, int), r[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, int), prev[:-bpp]])
        pred = [0 * r, left, prev, (left + prev) // 2, None][kind]
        if kind == 4:
            p = left + prev - upleft
            pa, pb, pc = abs(p - left), abs(p - prev), abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
        out.append(bytes([kind]) + ((r - pred) % 256).astype(np.uint8).tobytes())
        prev = r
    ihdr = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
    extra = chunk(b"tRNS", struct.pack(">3H", *trns)) if trns else b""
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra
        + chunk(b"IDAT", zlib.compress(b"".join(out))) + chunk(b"IEND", b"")
    )


def raw_tiff16_bytes(a: np.ndarray, order: bytes, orientation: int = 1) -> bytes:
    """An independent uncompressed 16-bit RGB(A) TIFF, little (II) or big (MM) endian."""
    h, w, c = a.shape
    e = "<" if order == b"II" else ">"
    data = a.astype(e + "u2").tobytes()
    bps_at = 8 + len(data)
    ifd_at = bps_at + 2 * c
    tags = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, c, bps_at), (259, 3, 1, 1), (262, 3, 1, 2),
            (273, 4, 1, 8), (277, 3, 1, c), (278, 4, 1, h), (279, 4, 1, len(data)), (284, 3, 1, 1)]
    if c == 4:
        tags.append((338, 3, 1, 2))
    if orientation != 1:
        tags.insert(10, (274, 3, 1, orientation))
    ifd = struct.pack(e + "H", len(tags))
    for tag, typ, count, value in tags:
        inline = typ == 3 and count == 1
        ifd += struct.pack(e + "HHI", tag, typ, count)
        ifd += struct.pack(e + "HH", value, 0) if inline else struct.pack(e + "I", value)
    ifd += struct.pack(e + "I", 0)
    header = order + struct.pack(e + "HI", 42, ifd_at)
    return header + data + struct.pack(e + f"{c}H", *([16] * c)) + ifd


def pil_exif(path: Path) -> Image.Exif:
    with Image.open(path) as im:
        return im.getexif()


# ----------------------------------------------------------------------------- reading basics


def test_rgb_png_round_trip_is_exact(tmp_path: Path) -> None:
    a = rand8(9, 13, 3)
    src = save(tmp_path / "a.png", Image.fromarray(a))
    img = read_image(src)
    assert img.rgb.dtype == np.float32 and img.rgb.shape == (9, 13, 3)
    assert img.size == (13, 9)
    assert (img.format, img.bit_depth, img.grayscale, img.path) == ("PNG", 8, False, src)
    assert img.alpha is None
    np.testing.assert_array_equal(np.rint(img.rgb * 255), a)
    out = write_image(tmp_path / "b.png", img.rgb, like=img)
    np.testing.assert_array_equal(np.asarray(Image.open(out)), a)


def test_content_decides_format_not_extension(tmp_path: Path) -> None:
    a = rand8(6, 5, 3)
    png_as_jpg = save(tmp_path / "x.jpg", Image.fromarray(a), "PNG")
    jpg_as_png = save(tmp_path / "y.png", Image.fromarray(a), "JPEG")
    assert read_image(png_as_jpg).format == "PNG"
    np.testing.assert_array_equal(np.rint(read_image(png_as_jpg).rgb * 255), a)
    assert read_image(jpg_as_png).format == "JPEG"
    assert sniff_format(png_as_jpg) == "PNG" and sniff_format(jpg_as_png) == "JPEG"
    (tmp_path / "t.png").write_text("hello")
    assert sniff_format(tmp_path / "t.png") is None
    assert sniff_format(tmp_path) is None
    assert sniff_format(tmp_path / "missing.png") is None


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied_and_reset(tmp_path: Path, orientation: int) -> None:
    a = rand8(4, 7, 3)  # non-square, so rotations show in the shape
    src = save(tmp_path / "o.png", Image.fromarray(a), exif=exif_bytes(orientation))
    expected = np.asarray(ImageOps.exif_transpose(Image.open(src)).convert("RGB"))
    img = read_image(src)
    np.testing.assert_array_equal(np.rint(img.rgb * 255), expected)
    carried = Image.Exif()
    carried.load(img.exif)
    assert carried[0x0112] == 1 and carried[0x010F] == "Canon"
    assert carried.get_ifd(0x8769)[0x9003] == "2021:02:03 04:05:06"
    out = write_image(tmp_path / "out.png", img.rgb, like=img)
    assert pil_exif(out)[0x0112] == 1


def test_jpeg_orientation_swaps_size(tmp_path: Path) -> None:
    src = save(tmp_path / "r.jpg", Image.fromarray(rand8(8, 16, 3)), exif=exif_bytes(6))
    img = read_image(src)
    assert img.size == (8, 16)
    out = write_image(tmp_path / "r_out.jpg", img.rgb, like=img)
    assert pil_exif(out)[0x0112] == 1 and Image.open(out).size == (8, 16)


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp", "tif"])
def test_icc_and_exif_carried_or_stripped(tmp_path: Path, fmt: str) -> None:
    pixels = Image.fromarray(rand8(8, 8, 3))
    src = save(tmp_path / "src.jpg", pixels, exif=exif_bytes(3), icc_profile=SRGB)
    img = read_image(src)
    assert img.icc_profile == SRGB and img.exif is not None
    out = write_image(tmp_path / f"out.{fmt}", img.rgb, like=img)
    with Image.open(out) as im:
        assert im.info.get("icc_profile") == SRGB
        ex = im.getexif()
        assert ex[0x010F] == "Canon" and ex.get(0x0112, 1) == 1
        assert ex.get_ifd(0x8769)[0x9003] == "2021:02:03 04:05:06"
    bare = write_image(tmp_path / f"bare.{fmt}", img.rgb, like=img, strip_metadata=True)
    with Image.open(bare) as im:
        assert not im.info.get("icc_profile")
        assert 0x010F not in im.getexif() and "exif" not in im.info


def test_jpeg_refuses_oversized_exif(tmp_path: Path) -> None:
    ex = Image.Exif()
    ex[0x010E] = "x" * 70_000  # ImageDescription; fine in PNG, too big for one JPEG segment
    img = LoadedImage(np.zeros((4, 4, 3), np.float32), None, False, 8, "PNG", None, ex.tobytes(), None)
    assert write_image(tmp_path / "ok.png", img.rgb, like=img).exists()
    with pytest.raises(ImageWriteError) as err:
        write_image(tmp_path / "big.jpg", img.rgb, like=img)
    msg = one_line(err, tmp_path / "big.jpg")
    assert "too large for JPEG" in msg and "--" not in msg  # library terms; the CLI names the flag
    assert err.value.setting == "strip_metadata"
    assert write_image(tmp_path / "big.jpg", img.rgb, like=img, strip_metadata=True).exists()


def test_icc_of_wrong_colour_space_is_not_written(tmp_path: Path) -> None:
    gray_icc = SRGB[:16] + b"GRAY" + SRGB[20:]
    img = LoadedImage(np.zeros((4, 4, 3), np.float32), None, False, 8, "PNG", gray_icc, None, None)
    out = write_image(tmp_path / "o.png", img.rgb, like=img)
    assert "icc_profile" not in Image.open(out).info


def test_tiff_source_exif_keeps_metadata_not_structure(tmp_path: Path) -> None:
    src = tmp_path / "s.tif"
    Image.fromarray(rand8(5, 6, 3)).save(src, exif=exif_bytes(8))  # Pillow writes an EXIF IFD
    img = read_image(src)
    assert img.size == (5, 6)
    ex = Image.Exif()
    ex.load(img.exif)
    assert ex[0x010F] == "Canon" and ex.get(0x0112, 1) == 1
    assert 273 not in ex and 256 not in ex  # StripOffsets / ImageWidth of the source are not metadata


def test_carried_metadata_describes_the_output_not_the_source(tmp_path: Path) -> None:
    """A TIFF description of the source's array (tifffile's shape JSON, ImageJ's header) is not
    carried into a larger output (tifffile then reads a shape that is not the page's); a text
    description is. EXIF PixelXDimension/PixelYDimension say the written size, after the
    Orientation-6 turn, in every format; the other EXIF entries keep their bytes."""
    big = np.kron(rand16(12, 16, 3), np.ones((4, 4, 1), np.uint16))  # a 4x "upscale", 64x48
    for name, description, kept in (("shaped.tif", None, False), ("imagej.tif", "ImageJ=1.11a\nimages=1\n", False),
                                    ("text.tif", "Harbour at dawn", True)):
        tifffile.imwrite(tmp_path / name, rand16(12, 16, 3), description=description,
                         metadata=None if description else {})
        img = read_image(tmp_path / name)
        out = write_image(tmp_path / f"out_{name}", big.astype(np.float32) / 65535, like=img)
        with tifffile.TiffFile(out) as t:
            assert t.pages[0].description == (description if kept else "")
            assert t.series[0].shape == t.pages[0].shape == (48, 64, 3)
    ex = Image.Exif()
    ex[0x0112] = 6
    ex[0x8769] = {0x9003: "2021:02:03 04:05:06", 0xA002: 16, 0xA003: 12}
    src = save(tmp_path / "photo.jpg", Image.fromarray(rand8(12, 16, 3)), exif=ex.tobytes())
    img = read_image(src)
    assert img.size == (12, 16)
    up = np.kron(img.rgb, np.ones((4, 4, 1), np.float32))
    for ext in ("jpg", "png", "webp", "tif"):
        out = write_image(tmp_path / f"photo_x4.{ext}", up, like=img)
        with Image.open(out) as im:
            got = im.getexif()
            sub = got.get_ifd(0x8769)
            assert im.size == (48, 64) and got.get(0x0112, 1) == 1
        assert (sub[0xA002], sub[0xA003], sub[0x9003]) == (48, 64, "2021:02:03 04:05:06"), ext


def test_exif_pixel_size_edit_is_in_place(tmp_path: Path) -> None:
    """A SHORT entry stays SHORT, becomes LONG past 65535; nothing else moves (offsets kept)."""
    ex = Image.Exif()
    ex[0x010F] = "Canon"
    ex[0x8769] = {0xA002: 16, 0xA003: 12, 0x927C: b"maker notes with offsets"}
    raw = ex.tobytes()
    for width, height in ((640, 480), (70_000, 3)):
        edited = imageio.metadata.exif_for_size(raw, width, height)
        assert len(edited) == len(raw)
        assert sum(a != b for a, b in zip(raw, edited)) <= 12  # two 12-byte entries, value bytes only
        back = Image.Exif()
        back.load(edited)
        sub = back.get_ifd(0x8769)
        assert (sub[0xA002], sub[0xA003], sub[0x927C], back[0x010F]) == (width, height, b"maker notes with offsets", "Canon")
    assert imageio.metadata.exif_for_size(b"Exif\x00\x00junk", 1, 1) == b"Exif\x00\x00junk"


# ----------------------------------------------------------------------------- alpha, modes, depth


def test_rgba_alpha_round_trip(tmp_path: Path) -> None:
    a = rand8(6, 7, 4)
    img = read_image(save(tmp_path / "a.png", Image.fromarray(a)))
    np.testing.assert_array_equal(np.rint(img.alpha * 255), a[..., 3])
    out = write_image(tmp_path / "b.png", img.rgb, img.alpha, like=img)
    np.testing.assert_array_equal(np.asarray(Image.open(out)), a)
    webp = write_image(tmp_path / "b.webp", img.rgb, img.alpha, like=img, quality=90)
    assert Image.open(webp).mode == "RGBA"


def test_la_stays_gray_with_alpha(tmp_path: Path) -> None:
    a = rand8(5, 6, 2)
    img = read_image(save(tmp_path / "la.png", Image.fromarray(a)))
    assert img.grayscale and img.bit_depth == 8
    np.testing.assert_array_equal(np.rint(img.rgb[..., 1] * 255), a[..., 0])
    np.testing.assert_array_equal(np.rint(img.alpha * 255), a[..., 1])
    for ext in ("png", "tif"):
        out = write_image(tmp_path / f"o.{ext}", img.rgb, img.alpha, like=img)
        with Image.open(out) as im:
            assert im.mode == "LA"
            np.testing.assert_array_equal(np.asarray(im), a)


def test_palette_and_trns_transparency(tmp_path: Path) -> None:
    idx = RNG.integers(0, 4, (5, 5), dtype=np.uint8)
    pal = Image.fromarray(idx, "L").convert("P")
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9])
    for name, fmt in (("p.png", "PNG"), ("p.gif", "GIF")):
        img = read_image(save(tmp_path / name, pal, fmt, transparency=2))
        np.testing.assert_array_equal(img.alpha, (idx != 2).astype(np.float32))
        assert not img.grayscale
    rgb = rand8(4, 4, 3)
    rgb[0, 0] = (1, 2, 3)
    img = read_image(save(tmp_path / "t.png", Image.fromarray(rgb), transparency=(1, 2, 3)))
    assert img.alpha[0, 0] == 0 and img.alpha.sum() == 15
    gray = rand8(4, 4, 1)[..., 0]
    gray[gray == 77] = 78
    gray[1, 1] = 77
    img = read_image(save(tmp_path / "l.png", Image.fromarray(gray), transparency=77))
    assert img.grayscale and img.alpha[1, 1] == 0 and img.alpha.sum() == 15


def gray_png_bytes(a: np.ndarray, bits: int, trns: int) -> bytes:
    """An independent 1/2/4-bit gray PNG of samples ``a`` (0..2**bits-1) with a tRNS value."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w = a.shape
    per_byte = 8 // bits
    padded = np.zeros((h, -(-w // per_byte) * per_byte), np.uint8)
    padded[:, :w] = a
    groups = padded.reshape(h, -1, per_byte).astype(int)
    packed = sum(groups[..., i] << (8 - bits * (i + 1)) for i in range(per_byte)).astype(np.uint8)
    raw = b"".join(b"\x00" + row.tobytes() for row in packed)
    ihdr = struct.pack(">IIBBBBB", w, h, bits, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"tRNS", struct.pack(">H", trns))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_low_bit_gray_png_transparent_value(tmp_path: Path, bits: int) -> None:
    """The tRNS value of a 1-, 2- or 4-bit gray PNG is a sample value (Pillow reports 1-bit
    white as 255 and 2/4-bit values unscaled): white and black transparency both come out."""
    top = (1 << bits) - 1
    a = RNG.integers(0, top + 1, (5, 11)).astype(np.uint8)
    a[0, :2] = (0, top)
    for trns in (0, top):
        src = tmp_path / f"g{bits}_{trns}.png"
        src.write_bytes(gray_png_bytes(a, bits, trns))
        img = read_image(src)
        assert img.grayscale and img.bit_depth == 8
        np.testing.assert_array_equal(np.rint(img.rgb[..., 0] * top), a)
        np.testing.assert_array_equal(img.alpha, (a != trns).astype(np.float32))
    mask = np.zeros((4, 6), bool)
    mask[:, :3] = True  # Pillow's own writer, white transparent
    img = read_image(save(tmp_path / "mask.png", Image.fromarray(mask), transparency=1))
    np.testing.assert_array_equal(img.alpha, (~mask).astype(np.float32))


def test_one_bit_and_float_and_int_modes(tmp_path: Path) -> None:
    bits = RNG.integers(0, 2, (6, 8)).astype(bool)
    img = read_image(save(tmp_path / "b.png", Image.fromarray(bits)))
    assert img.grayscale and img.bit_depth == 8
    np.testing.assert_array_equal(img.rgb[..., 0], bits.astype(np.float32))
    f = np.linspace(-0.5, 1.5, 24, dtype=np.float32).reshape(4, 6)
    img = read_image(save(tmp_path / "f.tif", Image.fromarray(f, "F")))
    assert img.grayscale and img.bit_depth == 16
    np.testing.assert_allclose(img.rgb[..., 0], np.clip(f, 0, 1))
    i = np.array([[-5, 0, 1000], [65535, 70000, 3]], dtype=np.int32)
    img = read_image(save(tmp_path / "i.tif", Image.fromarray(i, "I")))
    np.testing.assert_array_equal(np.rint(img.rgb[..., 0] * 65535), np.clip(i, 0, 65535))


def test_cmyk_converts_to_rgb(tmp_path: Path) -> None:
    a = rand8(6, 6, 3)
    cmyk = Image.fromarray(a).convert("CMYK")
    for name, extra in (("c.jpg", {}), ("c2.jpg", {"icc_profile": b"not a real profile" * 10})):
        img = read_image(save(tmp_path / name, cmyk, quality=100, **extra))
        assert img.icc_profile is None and img.rgb.shape == (6, 6, 3) and not img.grayscale
        assert np.abs(img.rgb * 255 - a).mean() < 6  # naive CMYK round trip through JPEG


def test_an_intact_tiff_pillow_cannot_decode_says_its_layout(tmp_path: Path) -> None:
    """Float or 32-bit samples: the file is fine, its layout is unsupported (not "corrupt"); a
    TIFF cut inside its header is still corrupt."""
    tifffile.imwrite(tmp_path / "f.tif", np.random.default_rng(0).random((10, 14, 3)).astype(np.float32))
    tifffile.imwrite(tmp_path / "u.tif", np.zeros((4, 4), np.uint32), byteorder=">")
    for name, layout in (("f.tif", "3 sample(s) of 32-bit floating point"), ("u.tif", "1 sample(s) of 32-bit unsigned integer")):
        with pytest.raises(ImageReadError) as e:
            read_image(tmp_path / name)
        assert str(e.value) == f"{tmp_path / name}: unsupported TIFF layout ({layout}); save it as 8- or 16-bit integer samples"
    (tmp_path / "cut.tif").write_bytes((tmp_path / "f.tif").read_bytes()[:12])
    with pytest.raises(ImageReadError, match="truncated or corrupt TIFF file"):
        read_image(tmp_path / "cut.tif")


def test_tiff_12bit_gray_and_min_is_white_are_the_picture(tmp_path: Path) -> None:
    """12-bit gray comes from Pillow as 0..4095 in "I;16": scaled by 4095, not 65535 (1/16 as
    bright). MinIsWhite deep gray, which Pillow inverts only up to 8 bits, is inverted (16-bit,
    raw or compressed, and float); 8-bit MinIsWhite stays right. Other 9..15-bit layouts, which
    Pillow cannot decode, are refused in one line."""
    ramp = np.tile(np.linspace(0, 1, 16), (12, 1))
    g12 = np.round(ramp * 4095).astype(np.uint16)
    tifffile.imwrite(tmp_path / "g12.tif", g12, bitspersample=12)
    img = read_image(tmp_path / "g12.tif")
    assert img.grayscale and img.bit_depth == 16 and img.rgb.max() == 1.0
    np.testing.assert_array_equal(np.rint(img.rgb[..., 0] * 4095), g12)
    with Image.open(tmp_path / "g12.tif") as im:  # upscale() of an opened PIL image agrees
        np.testing.assert_array_equal(imageio.pil_rgb(im), img.rgb)
    g16, g8 = np.round(ramp * 65535).astype(np.uint16), np.round(ramp * 255).astype(np.uint8)
    for name, data, scale, extra in (("w16.tif", g16, 65535, {}), ("w16z.tif", g16, 65535, {"compression": "zlib"}),
                                     ("w8.tif", g8, 255, {}), ("wf.tif", ramp.astype(np.float32), 1, {})):
        tifffile.imwrite(tmp_path / name, data, photometric="miniswhite", **extra)
        got = read_image(tmp_path / name).rgb[..., 0]
        np.testing.assert_allclose(got, 1 - data.astype(np.float64) / scale, atol=1e-6, err_msg=name)
    tifffile.imwrite(tmp_path / "g10.tif", np.round(ramp * 1023).astype(np.uint16), bitspersample=10)
    with pytest.raises(ImageReadError) as err:
        read_image(tmp_path / "g10.tif")
    assert "unsupported TIFF layout (1 sample(s) of 10-bit unsigned integer)" in one_line(err, tmp_path / "g10.tif")


def test_gray16_png_and_tiff_stay_16bit_gray(tmp_path: Path) -> None:
    g = rand16(7, 5, 1)[..., 0]
    img = read_image(save(tmp_path / "g.png", Image.fromarray(g)))
    assert img.grayscale and img.bit_depth == 16
    np.testing.assert_array_equal(np.rint(img.rgb[..., 2] * 65535), g)
    for ext in ("png", "tif"):
        out = write_image(tmp_path / f"o.{ext}", img.rgb, like=img)
        with Image.open(out) as im:
            assert im.mode.startswith("I;16")
            np.testing.assert_array_equal(np.asarray(im), g)


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_png16_colour_read_exactly(tmp_path: Path, channels: int) -> None:
    a = rand16(6, 9, channels)
    src = tmp_path / "d.png"
    src.write_bytes(png16_bytes(a))
    img = read_image(src)
    assert img.bit_depth == 16 and img.grayscale == (channels == 2)
    color = a[..., :1] if channels == 2 else a[..., :3]
    np.testing.assert_array_equal(np.rint(img.rgb * 65535), np.broadcast_to(color, (6, 9, 3)))
    if channels % 2 == 0:
        np.testing.assert_array_equal(np.rint(img.alpha * 65535), a[..., -1])
    out = write_image(tmp_path / "o.png", img.rgb, img.alpha, like=img)
    assert out.read_bytes()[24] == 16  # IHDR bit depth
    again = read_image(out)
    np.testing.assert_array_equal(again.rgb, img.rgb)
    assert again.grayscale == img.grayscale
    if img.alpha is not None:
        np.testing.assert_array_equal(again.alpha, img.alpha)


def test_png16_trns_alpha(tmp_path: Path) -> None:
    a = rand16(4, 4, 3)
    a[2, 3] = (1000, 2000, 3000)
    src = tmp_path / "t.png"
    src.write_bytes(png16_bytes(a, trns=(1000, 2000, 3000)))
    img = read_image(src)
    assert img.bit_depth == 16 and img.alpha[2, 3] == 0 and img.alpha.sum() == 15


@pytest.mark.parametrize("channels", [3, 4])
def test_tiff16_colour_round_trip(tmp_path: Path, channels: int) -> None:
    a = rand16(5, 7, channels)
    for order in (b"II", b"MM"):
        src = tmp_path / f"raw_{order.decode()}.tif"
        src.write_bytes(raw_tiff16_bytes(a, order))
        img = read_image(src)
        assert img.bit_depth == 16 and img.format == "TIFF"
        np.testing.assert_array_equal(np.rint(img.rgb * 65535), a[..., :3])
    src.write_bytes(raw_tiff16_bytes(a, b"MM", orientation=6))
    np.testing.assert_array_equal(np.rint(read_image(src).rgb * 65535), np.rot90(a[..., :3], -1))
    out = write_image(tmp_path / "o.tiff", img.rgb, img.alpha, like=img)
    with Image.open(out) as im:
        assert im.tile[0][3][0].startswith("RGB")  # Pillow sees a 16-bit RGB(A) TIFF
    again = read_image(out)
    np.testing.assert_array_equal(np.rint(again.rgb * 65535), a[..., :3])
    if channels == 4:
        np.testing.assert_array_equal(np.rint(again.alpha * 65535), a[..., 3])


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("layout", [{}, {"rowsperstrip": 2}, {"tile": (16, 16)}, {"compression": "zlib"}])
def test_tiff16_planar_read_exactly(tmp_path: Path, channels: int, layout: dict) -> None:
    """Separate 16-bit planes (PlanarConfiguration 2), either byte order, one strip, several
    strips, tiles (an edge tile narrower than the rest): the exact samples and alpha (Pillow's
    own decoding keeps one byte of each sample). Compressed (libtiff): the high bytes, as 16-bit."""
    a = rand16(20, 37, channels)
    a[:, 18:, 3 % channels] = 0  # a transparent right half when there is alpha
    for order in "<>":
        src = tmp_path / f"p{order == '<'}.tif"
        extra = ["unassalpha"] if channels == 4 else None
        tifffile.imwrite(src, np.moveaxis(a, 2, 0), planarconfig="separate", photometric="rgb",
                         extrasamples=extra, byteorder=order, **layout)
        img = read_image(src)
        assert img.bit_depth == 16 and not img.grayscale
        want = (a >> 8) * 257 if "compression" in layout else a
        np.testing.assert_array_equal(np.rint(img.rgb * 65535), want[..., :3])
        if channels == 4:
            np.testing.assert_array_equal(np.rint(img.alpha * 65535), want[..., 3])
        else:
            assert img.alpha is None


def test_tiff16_planar_oriented_cut_or_cmyk(tmp_path: Path) -> None:
    """An Orientation tag turns the planes like any TIFF; a file cut inside its last plane is
    corrupt; 16-bit CMYK planes, which Pillow cannot unpack, are refused in one line, not noise."""
    a = rand16(6, 9, 3)
    src = tmp_path / "o.tif"
    tifffile.imwrite(src, np.moveaxis(a, 2, 0), planarconfig="separate", photometric="rgb",
                     extratags=[(274, 3, 1, 6, True)])
    np.testing.assert_array_equal(np.rint(read_image(src).rgb * 65535), np.rot90(a, -1))
    cut = tmp_path / "cut.tif"
    data = src.read_bytes()
    cut.write_bytes(data[: data.index(np.moveaxis(a, 2, 0)[2].tobytes()) + 60])  # 30 samples of B
    with pytest.raises(ImageReadError) as err:
        read_image(cut)
    assert "truncated or corrupt image file" in one_line(err, cut)
    cmyk = tmp_path / "cmyk.tif"
    tifffile.imwrite(cmyk, np.moveaxis(rand16(6, 9, 4), 2, 0), planarconfig="separate", photometric="separated")
    with pytest.raises(ImageReadError) as err:
        read_image(cmyk)
    assert one_line(err, cmyk).endswith(
        "unsupported TIFF layout (4 sample(s) of 16-bit unsigned integer, CMYK in separate planes); "
        "save it with interleaved samples (or compressed)"
    )


@pytest.mark.parametrize("ext", ["png", "tif"])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16bit_round_trip_keeps_alpha_icc_and_exif(tmp_path: Path, ext: str, channels: int) -> None:
    """16-bit output (pixels by imagecodecs / tifffile, the PNG's ICC and EXIF chunks and the
    TIFF's EXIF sub-IFD by hand): samples, alpha, profile and EXIF come back exactly."""
    a = rand16(6, 9, channels)
    gray = channels <= 2
    icc = SRGB[:16] + b"GRAY" + SRGB[20:] if gray else SRGB
    color = np.broadcast_to(a[..., :1] if gray else a[..., :3], (6, 9, 3))
    alpha = a[..., -1].astype(np.float32) / 65535 if channels % 2 == 0 else None
    like = LoadedImage(color.astype(np.float32) / 65535, alpha, gray, 16, "PNG", icc, exif_bytes(1), None)
    out = write_image(tmp_path / f"o.{ext}", like.rgb, alpha, like=like)
    back = read_image(out)
    widened = ext == "tif" and channels == 2  # 16-bit gray+alpha TIFF goes out as RGBA
    assert back.bit_depth == 16 and back.grayscale == (gray and not widened)
    np.testing.assert_array_equal(np.rint(back.rgb * 65535), color)
    if alpha is not None:
        np.testing.assert_array_equal(back.alpha, alpha)
    assert back.icc_profile == (None if widened else icc)
    ex = Image.Exif()
    ex.load(back.exif)
    assert ex[0x010F] == "Canon" and ex.get_ifd(0x8769)[0x9003] == "2021:02:03 04:05:06"
    if ext == "tif":  # a TIFF other readers take too
        stored = np.concatenate([color, a[..., -1:]], axis=2) if alpha is not None else color
        np.testing.assert_array_equal(tifffile.imread(out), stored[..., 0] if channels == 1 else stored)


def test_bigtiff_keeps_exif(tmp_path: Path) -> None:
    """tifffile switches to BigTIFF past 4 GB; the EXIF sub-IFDs follow it (forced here)."""
    a = rand16(5, 7, 3)
    ex = Image.Exif()
    ex.load(exif_bytes(1))
    ex[0x8825] = {1: "N", 2: (1.0, 2.0, 3.0)}  # and a GPS sub-IFD
    with open(tmp_path / "big.tif", "wb") as f:
        encoders.encode_tiff(f, a, SRGB, ex.tobytes(), bigtiff=True)
    with tifffile.TiffFile(tmp_path / "big.tif") as tif:
        assert tif.is_bigtiff and tif.pages[0].tags["ExifTag"].value["DateTimeOriginal"] == "2021:02:03 04:05:06"
        np.testing.assert_array_equal(tif.asarray(), a)
    back = read_image(tmp_path / "big.tif")
    got = Image.Exif()
    got.load(back.exif)
    assert got[0x010F] == "Canon" and got.get_ifd(0x8825)[1] == "N" and back.icc_profile == SRGB


def test_tiff_exif_that_cannot_be_written_is_left_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise TypeError("a value Pillow cannot serialise")

    monkeypatch.setattr(encoders, "_append_sub_ifds", refuse)
    img = LoadedImage(RNG.random((4, 5, 3), dtype=np.float32), None, False, 16, "TIFF", SRGB, exif_bytes(1), None)
    back = read_image(write_image(tmp_path / "o.tif", img.rgb, like=img))
    assert back.exif is None and back.icc_profile == SRGB and back.bit_depth == 16


def test_bit_depth_choice(tmp_path: Path) -> None:
    x = RNG.random((4, 5, 3), dtype=np.float32)
    deep = LoadedImage(x, None, False, 16, "PNG", None, None, None)
    assert read_image(write_image(tmp_path / "a.png", x, like=deep)).bit_depth == 16
    assert read_image(write_image(tmp_path / "b.png", x, like=deep, bit_depth=8)).bit_depth == 8
    assert read_image(write_image(tmp_path / "c.png", x, bit_depth=16)).bit_depth == 16
    assert read_image(write_image(tmp_path / "d.jpg", x, like=deep)).bit_depth == 8  # silently 8-bit
    with pytest.raises(ImageWriteError) as err:
        write_image(tmp_path / "e.jpg", x, bit_depth=16)
    assert "16-bit" in one_line(err, tmp_path / "e.jpg")
    with pytest.raises(ValueError):
        write_image(tmp_path / "f.png", x, bit_depth=12)


def test_jpeg_drops_alpha_and_gray_like_writes_gray(tmp_path: Path) -> None:
    x = RNG.random((6, 6, 3), dtype=np.float32)
    out = write_image(tmp_path / "a.jpg", x, np.ones((6, 6), np.float32))
    assert Image.open(out).mode == "RGB"
    gray_like = LoadedImage(x, None, True, 8, "PNG", None, None, None)
    for ext, mode in (("png", "L"), ("jpg", "L"), ("tif", "L"), ("webp", "RGB")):
        assert Image.open(write_image(tmp_path / f"g.{ext}", x, like=gray_like)).mode == mode
    assert Image.open(write_image(tmp_path / "two_d.png", x[..., 0])).mode == "L"


@settings(max_examples=20, deadline=None)
@given(hnp.arrays(np.float32, st.tuples(st.integers(2, 9), st.integers(2, 9), st.just(3)),
                  elements=st.floats(-0.5, 1.5, width=32)), st.sampled_from([8, 16]))
def test_quantisation_error_is_half_a_step(
    tmp_path_factory: pytest.TempPathFactory, x: np.ndarray, depth: int
) -> None:
    path = tmp_path_factory.mktemp("q") / "x.png"
    back = read_image(write_image(path, x, bit_depth=depth)).rgb
    step = 1 / (255 if depth == 8 else 65535)
    assert np.abs(back - np.clip(x, 0, 1)).max() <= step / 2 + 1e-7


# ----------------------------------------------------------------------------- size limits


def header_only_png(w: int, h: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10))


def test_declared_size_checked_before_decoding(tmp_path: Path) -> None:
    bomb = tmp_path / "x.png"
    bomb.write_bytes(header_only_png(30000, 30000))
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageReadError) as err:
        read_image(bomb)
    msg = one_line(err, bomb)
    assert "30000x30000 (900 MP)" in msg and "limit of 179 MP" in msg and "--" not in msg
    assert err.value.setting == "max_pixels"  # the CLI maps it to --max-pixels
    assert Image.MAX_IMAGE_PIXELS == before
    assert DEFAULT_MAX_PIXELS == 178_956_970


def test_max_pixels_is_ours_not_pillows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = save(tmp_path / "a.png", Image.fromarray(rand8(20, 20, 3)))
    with pytest.raises(ImageReadError, match="exceeds the limit of 399 px"):
        read_image(src, max_pixels=399)
    assert read_image(src, max_pixels=400).size == (20, 20)
    tif = save(tmp_path / "a.tif", Image.fromarray(rand8(20, 20, 3)))  # checked again on load
    gif = save(tmp_path / "a.gif", Image.fromarray(rand8(20, 20, 3)).convert("P"))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # Pillow's global would refuse these files
    for path in (src, tif, gif):
        assert read_image(path, max_pixels=None).size == (20, 20)
        assert read_image(path).size == (20, 20)
    assert sniff_format(src) == "PNG"
    assert Image.MAX_IMAGE_PIXELS == 10


def test_one_pixel_images_are_read(tmp_path: Path) -> None:
    tiny = save(tmp_path / "a.png", Image.new("RGB", (1, 1), (10, 20, 30)))
    img = read_image(tiny)
    assert img.size == (1, 1) and img.rgb.shape == (1, 1, 3)
    assert read_image(save(tmp_path / "b.png", Image.new("L", (1, 5)))).size == (1, 5)


# ----------------------------------------------------------------------------- read errors


def test_read_errors_are_one_line(tmp_path: Path) -> None:
    noisy = Image.fromarray(rand8(64, 64, 3))
    png = save(tmp_path / "full.png", noisy).read_bytes()
    jpg = save(tmp_path / "full.jpg", noisy, quality=95).read_bytes()
    cases = {
        "missing.png": (None, "no such file"),
        "empty.png": (b"", "empty file (0 bytes)"),
        "notes.txt": (b"just some text\n" * 20, "not an image"),
        "cut.png": (png[: len(png) // 2], "truncated or corrupt image file"),
        "cut.jpg": (jpg[: len(jpg) // 2], "truncated or corrupt image file"),
        "junk.png": (png[:8] + RNG.bytes(200), "truncated or corrupt PNG file"),
        "junk.jpg": (b"\xff\xd8\xff\xe0" + bytes(200), "truncated or corrupt"),
    }
    for name, (content, reason) in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(ImageReadError) as err:
            read_image(path)
        assert reason in one_line(err, path), name
    with pytest.raises(ImageReadError) as err:
        read_image(tmp_path)
    assert "is a directory" in one_line(err, tmp_path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read anything")
def test_unreadable_file(tmp_path: Path) -> None:
    path = save(tmp_path / "a.png", Image.new("RGB", (4, 4)))
    path.chmod(0)
    try:
        with pytest.raises(ImageReadError) as err:
            read_image(path)
        assert "permission denied" in one_line(err, path)
    finally:
        path.chmod(0o644)


def test_permission_error_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save(tmp_path / "a.png", Image.new("RGB", (4, 4)))

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(imageio.read.Image, "open", denied)  # what chmod 000 does for non-root users
    with pytest.raises(ImageReadError) as err:
        read_image(path)
    assert one_line(err, path).endswith(": permission denied")
    items, skipped = collect_inputs([path])
    assert items == [] and skipped == [(path, "permission denied")]


def test_errors_pickle() -> None:
    err = pickle.loads(pickle.dumps(ImageReadError(Path("a.png"), "bad\nthing", setting="max_pixels")))
    assert isinstance(err, ImageReadError) and err.path == Path("a.png") and err.setting == "max_pixels"
    assert str(err) == "a.png: bad thing"


# ----------------------------------------------------------------------------- writing


def test_quality_and_format_aliases(tmp_path: Path) -> None:
    x = RNG.random((32, 32, 3), dtype=np.float32)
    for ext in ("jpg", "webp"):
        small = write_image(tmp_path / f"q30.{ext}", x, quality=30).stat().st_size
        large = write_image(tmp_path / f"q95.{ext}", x, quality=95).stat().st_size
        assert small < large
    aliases = {"jpeg": "JPEG", "JPG": "JPEG", "tiff": "TIFF", ".png": "PNG", "webp": "WEBP"}
    for alias, pil in aliases.items():
        out = write_image(tmp_path / "any.name", x, format=alias)
        assert sniff_format(out) == pil
    assert sniff_format(write_image(tmp_path / "e.TIF", x)) == "TIFF"
    with pytest.raises(ImageWriteError) as err:
        write_image(tmp_path / "a.gif", x)
    assert "png, jpg, webp or tif" in one_line(err, tmp_path / "a.gif")
    with pytest.raises(ImageWriteError, match="unknown output format 'bmp'"):
        write_image(tmp_path / "a.png", x, format="bmp")
    with pytest.raises(ValueError):
        write_image(tmp_path / "a.png", (x * 255).astype(np.uint8))
    with pytest.raises(ValueError):
        write_image(tmp_path / "a.png", x, np.ones((3, 3), np.float32))


def test_write_clamps_and_creates_parents(tmp_path: Path) -> None:
    x = np.array([[[-1, 0.5, 2]] * 2] * 2, dtype=np.float32)
    x[0, 0, 0] = np.nan
    out = write_image(tmp_path / "deep" / "er" / "a.png", x)
    np.testing.assert_array_equal(np.asarray(Image.open(out))[1, 1], [0, 128, 255])
    assert np.asarray(Image.open(out))[0, 0, 0] == 0


def leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".tmp"))


def test_failed_write_leaves_nothing_and_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = RNG.random((8, 8, 3), dtype=np.float32)
    target = tmp_path / "a.png"
    target.write_bytes(b"old")

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(ImageWriteError) as err:
        write_image(target, x)
    assert "no space left on device" in one_line(err, target)
    with pytest.raises(ImageWriteError, match="no space left"):
        atomic_write_bytes(tmp_path / "b.bin", b"data")
    monkeypatch.undo()

    def explode(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(imageio.write, "_encode_pillow", explode)
    with pytest.raises(KeyboardInterrupt):
        write_image(target, x)
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == [] and not (tmp_path / "b.bin").exists()


def test_unwritable_destinations(tmp_path: Path) -> None:
    x = np.zeros((4, 4, 3), np.float32)
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(ImageWriteError) as err:  # the parent "directory" is a file
        write_image(blocker / "out.png", x)
    assert "not a directory" in one_line(err, blocker / "out.png")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ImageWriteError) as err:
        write_image(tmp_path / "dir.png", x)
    assert "is a directory" in one_line(err, tmp_path / "dir.png")
    assert leftovers(tmp_path) == []


def test_atomic_write_bytes_respects_umask(tmp_path: Path) -> None:
    out = atomic_write_bytes(tmp_path / "x" / "a.bin", b"abc")
    assert out.read_bytes() == b"abc"
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


# ----------------------------------------------------------------------------- tensors


def test_tensor_helpers() -> None:
    x = RNG.random((5, 7, 3), dtype=np.float32)
    t = image_to_tensor(x)
    assert t.shape == (1, 3, 5, 7) and t.dtype == torch.float32
    np.testing.assert_array_equal(tensor_to_image(t), x)
    np.testing.assert_array_equal(tensor_to_image(t[0]), x)
    nan, inf = float("nan"), float("inf")
    wild = torch.tensor([[[-1.0, 2.0]], [[nan, 0.5]], [[0.25, inf]]], dtype=torch.float64)
    kept = wild.clone()
    out = tensor_to_image(wild)
    assert out.dtype == np.float32 and out.shape == (1, 2, 3)
    np.testing.assert_array_equal(out[0], [[0, 0, 0.25], [1, 0.5, 1]])
    assert torch.equal(wild.nan_to_num(), kept.nan_to_num())  # input untouched
    y = wild.float()[None]  # a model output the caller no longer needs: sanitised where it lies
    view = tensor_to_image(y, in_place=True)
    np.testing.assert_array_equal(view, out)
    np.testing.assert_array_equal(y[0].permute(1, 2, 0).numpy(), out)
    assert np.shares_memory(view, y.numpy())
    with pytest.raises(ValueError):
        tensor_to_image(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError):
        image_to_tensor(np.zeros((4, 4), np.float32))


# ----------------------------------------------------------------------------- inputs and outputs


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    img = Image.fromarray(rand8(4, 4, 3))
    save(root / "b.png", img)
    save(root / "a.jpeg", img, "PNG")  # PNG content, JPEG name
    save(root / "sub" / "c.jpg", img)
    save(root / "sub" / "deeper" / "d.webp", img)
    save(root / ".hidden" / "e.png", img)
    save(root / ".f.png", img)
    (root / "readme.txt").write_text("not an image")
    return root


def test_collect_directory_recursive_and_flat(tree: Path) -> None:
    items, skipped = collect_inputs([tree])
    assert [i.rel.as_posix() for i in items] == ["a.jpeg", "b.png", "sub/c.jpg", "sub/deeper/d.webp"]
    assert all(i.path == tree / i.rel for i in items)
    assert skipped == [(tree / "readme.txt", "not an image")]
    flat, _ = collect_inputs([str(tree)], recursive=False)
    assert [i.rel.as_posix() for i in flat] == ["a.jpeg", "b.png"]


def test_a_linked_folder_met_while_walking_is_noted_not_followed(tree: Path) -> None:
    (tree / "sub" / "loop").symlink_to(tree)  # followed, it would never end
    (tree / "linked").symlink_to(tree / "sub" / "deeper")
    (tree.parent / "elsewhere").mkdir()
    (tree / "outside").symlink_to(tree.parent / "elsewhere")
    items, skipped = collect_inputs([tree])
    assert [i.rel.as_posix() for i in items] == ["a.jpeg", "b.png", "sub/c.jpg", "sub/deeper/d.webp"]
    back = "a link to a folder: not followed (it leads back into the folder being searched)"
    assert dict(skipped) == {
        tree / "readme.txt": "not an image", tree / "linked": back, tree / "sub" / "loop": back,
        tree / "outside": "a link to a folder: not followed, name it to include it",
    }
    named, _ = collect_inputs([tree / "linked"])  # named, it is walked
    assert [i.rel.as_posix() for i in named] == ["d.webp"]


def test_collect_files_globs_dedup_and_missing(tree: Path) -> None:
    (tree / "link.png").symlink_to(tree / "b.png")
    items, skipped = collect_inputs(
        [tree / "b.png", tree / "sub", str(tree / "**" / "*.jp*g"), tree / "b.png", tree / "nope.png",
         str(tree / "*.gif"), tree / ".f.png", tree / "link.png"]
    )
    rels = {i.path.relative_to(tree).as_posix(): i.rel.as_posix() for i in items}
    assert rels == {"a.jpeg": "a.jpeg", "b.png": "b.png", "sub/c.jpg": "c.jpg",
                    "sub/deeper/d.webp": "deeper/d.webp", ".f.png": ".f.png"}
    assert [i.path for i in items] == sorted(i.path for i in items)
    assert dict(skipped) == {tree / "nope.png": "no such file or directory",
                             tree / "*.gif": "no files match this pattern"}


def test_output_path_rules(tree: Path, tmp_path: Path) -> None:
    items, _ = collect_inputs([tree])
    by_rel = {i.rel.as_posix(): i for i in items}
    a, c = by_rel["a.jpeg"], by_rel["sub/c.jpg"]

    def where(item: InputItem, output: Path | None, suffix: str, fmt: str | None, one: bool) -> Path:
        return output_path(item, output=output, suffix=suffix, format=fmt, single_input_file=one)

    # next to the input; extension from the real content (a.jpeg holds PNG)
    assert where(a, None, "_sinsr", None, False) == tree / "a_sinsr.png"
    assert where(c, None, "_sinsr", "tiff", False) == tree / "sub" / "c_sinsr.tif"
    out = tmp_path / "out"
    assert where(c, out, "", None, False) == out / "sub" / "c.jpg"
    assert where(c, out, "_x", "webp", False) == out / "sub" / "c_x.webp"
    # -o FILE for one input file; a name without an image extension is a directory
    single = InputItem(c.path, Path("c.jpg"))
    assert where(single, tmp_path / "r.png", "_s", None, True) == tmp_path / "r.png"
    assert where(single, tmp_path / "r.png", "_s", None, False) == tmp_path / "r.png" / "c_s.jpg"
    assert where(single, tmp_path / "res", "", None, True) == tmp_path / "res" / "c.jpg"
    with pytest.raises(SinsrIOError, match="does not match"):
        output_path(single, output=tmp_path / "r.png", suffix="", format="jpg", single_input_file=True)
    with pytest.raises(SinsrIOError, match="unknown output format"):
        output_path(single, output=None, suffix="_s", format="gif", single_input_file=True)
    # never the input itself
    b = by_rel["b.png"]
    for kwargs in ({"output": None}, {"output": tree}, {"output": b.path}):
        with pytest.raises(SinsrIOError) as err:
            output_path(b, suffix="", format=None, single_input_file=True, **kwargs)
        assert "overwrite the input" in one_line(err, b.path)


def test_pair_by_stem_matches_names_not_positions(tmp_path: Path) -> None:
    lr, hr = tmp_path / "lr", tmp_path / "hr"
    (lr / "x").mkdir(parents=True)
    (hr / "x").mkdir(parents=True)
    img = Image.fromarray(rand8(4, 4, 3))
    for name in ("a.png", "c.png", "x/d.png", "z.png"):
        save(lr / name, img)
    for name in ("b.jpg", "c.jpg", "x/d.webp", "d.png", "zz.png"):
        save(hr / name, img)
    pairs, lr_only, hr_only = pair_by_stem(lr, hr)
    assert pairs == [(lr / "c.png", hr / "c.jpg"), (lr / "x/d.png", hr / "x/d.webp")]
    assert lr_only == [lr / "a.png", lr / "z.png"]
    assert hr_only == [hr / "b.jpg", hr / "d.png", hr / "zz.png"]
    save(lr / "c.jpg", img)
    with pytest.raises(SinsrIOError, match="two images share the name 'c'"):
        pair_by_stem(lr, hr)
    with pytest.raises(SinsrIOError, match="not a directory"):
        pair_by_stem(tmp_path / "nope", hr)


# ----------------------------------------------------------------------------- real images


@pytest.mark.parametrize("kind", ["png8", "png16_rgb", "png16_gray_alpha", "tiff16", "jpeg_exif", "corrupt"])
def test_read_opens_the_file_once(tmp_path: Path, opens, kind: str) -> None:
    """Header, pixels, the second pass that recovers 16-bit colour and the format check of a
    corrupt file all read one handle."""
    path = tmp_path / "x.img"
    if kind == "png8":
        save(path, Image.fromarray(rand8(6, 9, 3)), "PNG")
    elif kind == "png16_rgb":
        path.write_bytes(png16_bytes(rand16(6, 9, 3)))
    elif kind == "png16_gray_alpha":
        path.write_bytes(png16_bytes(rand16(6, 9, 2)))
    elif kind == "tiff16":
        path.write_bytes(raw_tiff16_bytes(rand16(6, 9, 4), b"MM", orientation=6))
    elif kind == "jpeg_exif":
        save(path, Image.fromarray(rand8(6, 9, 3)), "JPEG", exif=exif_bytes(6), icc_profile=SRGB)
    else:
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    made = opens(path)  # writing the test file
    if kind == "corrupt":
        with pytest.raises(ImageReadError, match="corrupt PNG"):
            read_image(path)
    else:
        assert read_image(path).bit_depth == (16 if "16" in kind else 8)
    assert opens(path) - made == 1


def test_discovery_carries_format_and_size(tmp_path: Path, opens) -> None:
    """collect_inputs looks at each header once; output_path then needs no file access."""
    (tmp_path / "in").mkdir()
    src = save(tmp_path / "in" / "a.jpg", Image.fromarray(rand8(6, 9, 3)), "PNG")  # PNG named .jpg
    made = opens(src)
    items, _ = collect_inputs([tmp_path / "in"])
    assert items == [InputItem(src, Path("a.jpg"), size=(9, 6), format="PNG")]
    target = output_path(items[0], output=None, suffix="_x4", format=None, single_input_file=True)
    assert target == src.with_name("a_x4.png") and opens(src) - made == 1


@needs_data
def test_real_images_smoke() -> None:
    assert DATA is not None
    pairs, lr_only, hr_only = pair_by_stem(DATA / "set5" / "lr", DATA / "set5" / "hr")
    assert len(pairs) == 5 and not lr_only and not hr_only
    lr_path, hr_path = pairs[0]
    lr, hr = read_image(lr_path), read_image(hr_path)
    assert (hr.size[0], hr.size[1]) == (4 * lr.size[0], 4 * lr.size[1])
    flower = read_image(DATA / "realset65" / "flower2.jpeg")
    assert flower.format == "PNG" and flower.alpha is not None
    assert read_image(DATA / "realset65" / "im_lq2.png").format == "JPEG"
    items, skipped = collect_inputs([DATA / "realset65"])
    assert len(items) == 65 and skipped == []
    item = next(i for i in items if i.rel.name == "flower2.jpeg")
    target = output_path(item, output=None, suffix="_sinsr", format=None, single_input_file=False)
    assert target.name == "flower2_sinsr.png"


@pytest.mark.parametrize("dirty", [False, True])
def test_write_in_row_blocks_matches_whole_array_formula(tmp_path, monkeypatch, dirty):
    """Sanitising and quantising run in row blocks; the result and the caller's array are unchanged."""
    monkeypatch.setattr(imageio.pixels, "_BLOCK_ELEMS", 7 * 5 * 3)  # blocks of 7 rows: not a divisor of 40
    rgb = RNG.random((40, 5, 3), dtype=np.float32)
    if dirty:
        rgb[3, 1, 0], rgb[11, 2, 1], rgb[25, 4, 2], rgb[39, 0, 0] = np.nan, np.inf, -0.5, 1.7
    before = rgb.copy()
    imageio.write_image(tmp_path / "o.png", rgb)
    expected = np.rint(np.clip(np.nan_to_num(before, nan=0.0, posinf=1.0, neginf=0.0), 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o.png")), expected)
    np.testing.assert_array_equal(rgb, before)


@pytest.mark.parametrize("depth", [8, 16])
def test_png_is_written_at_the_fast_level_by_default(tmp_path, depth):
    """Level 1, as the official code's cv2.imwrite: same pixels as level 9, the default's bytes."""
    rng = np.random.default_rng(0)
    rgb = np.clip(rng.normal(0.5, 0.1, (40, 48, 3)), 0, 1).astype(np.float32)
    fast = imageio.write_image(tmp_path / "default.png", rgb, bit_depth=depth)
    one = imageio.write_image(tmp_path / "one.png", rgb, bit_depth=depth, png_compress_level=1)
    nine = imageio.write_image(tmp_path / "nine.png", rgb, bit_depth=depth, png_compress_level=9)
    assert imageio.PNG_COMPRESS_LEVEL == 1 and fast.read_bytes() == one.read_bytes()
    assert np.array_equal(np.asarray(Image.open(one)), np.asarray(Image.open(nine)))
    with pytest.raises(ValueError, match="png_compress_level"):
        imageio.write_image(tmp_path / "bad.png", rgb, png_compress_level=10)
