"""Pillow's process-wide decompression-bomb limit, switched off around our own decoding.

``read.read_image`` enforces its own ``max_pixels`` before decoding; Pillow's global check
(``Image.MAX_IMAGE_PIXELS``) would refuse the same files again, with a warning or an error of
its own, so every ``Image.open`` and ``load`` here runs with it off, under one lock so that
other threads see the true value again afterwards.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image

__all__ = ["PIL_LIMIT_LOCK", "pillow_size_check_off"]

PIL_LIMIT_LOCK = threading.RLock()


@contextmanager
def pillow_size_check_off() -> Iterator[None]:
    """Disable Pillow's process-wide decompression-bomb check; ``max_pixels`` is enforced by us."""
    with PIL_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved
