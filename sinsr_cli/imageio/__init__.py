"""Image files in and out: decode to float arrays, encode back, find inputs, pair LR/HR by name.

Modules by job: ``read`` (decode), ``write`` (encode, atomic files), ``encoders`` (what Pillow
cannot write), ``metadata`` (EXIF/ICC), ``discover`` (inputs, output paths, pairing),
``formats`` (output format names), ``pixels`` (array conventions, tensors), ``errors``.

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
    A TIFF of separate planes is exact when uncompressed; compressed, Pillow gives only the high
    byte of each sample (8-bit precision, still 16-bit out); 16-bit CMYK planes are refused.
    Pillow mode ``I`` is read as [0, 65535], mode ``F`` as [0, 1] (both clipped), both 16-bit.
    12-bit gray TIFF is read as [0, 4095]; MinIsWhite gray TIFF is inverted at every depth.
  * JPEG has no alpha: alpha passed to a JPEG write is dropped (the CLI should warn).
    WebP has no grayscale: grayscale goes out as RGB. JPEG/WebP are always 8-bit.
  * Grayscale output (``like.grayscale`` or a 2-D array) is the Rec. 601 luma of the RGB.
  * CMYK is converted to sRGB through its ICC profile when littlecms can (the sRGB profile
    is then carried), otherwise naively (no profile carried). An ICC profile whose colour
    space does not match the written pixels (GRAY vs RGB) is not written.
  * EXIF that cannot be parsed is not carried. The pixel size EXIF records (PixelXDimension,
    PixelYDimension) is set to the written image's; a TIFF ImageDescription describing the
    source's pixel array (tifffile's shape JSON, ImageJ, OME-XML) is not carried.
  * 16-bit gray+alpha TIFF is written as RGBA (Pillow cannot read 16-bit gray+alpha TIFF back).
"""

from __future__ import annotations

from .discover import InputItem, collect_inputs, named_as_image, output_path, pair_by_stem, refuse_unpaired, refuse_unreadable
from .errors import ImageReadError, ImageWriteError, SinsrIOError
from .formats import FORMAT_NAMES, IMAGE_EXTENSIONS, Format, choose_output_format, format_named, format_of, parse_format, size_refusal
from .pixels import image_to_tensor, luma, tensor_to_image, to_uint8
from .read import DEFAULT_MAX_PIXELS, LoadedImage, pil_rgb, read_image, sniff_format
from .write import PNG_COMPRESS_LEVEL, atomic_write_bytes, write_image

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FORMAT_NAMES",
    "IMAGE_EXTENSIONS",
    "PNG_COMPRESS_LEVEL",
    "Format",
    "ImageReadError",
    "ImageWriteError",
    "InputItem",
    "LoadedImage",
    "SinsrIOError",
    "atomic_write_bytes",
    "choose_output_format",
    "collect_inputs",
    "format_named",
    "format_of",
    "image_to_tensor",
    "luma",
    "output_path",
    "pair_by_stem",
    "named_as_image",
    "refuse_unpaired",
    "refuse_unreadable",
    "parse_format",
    "pil_rgb",
    "read_image",
    "size_refusal",
    "sniff_format",
    "tensor_to_image",
    "to_uint8",
    "write_image",
]
