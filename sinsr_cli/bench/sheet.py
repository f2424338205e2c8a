"""The comparison sheet: for a few images, the same crop from bicubic | each run | HR, side by side.

The crop (``crop`` x ``crop`` SR pixels) is the most detailed window of the reference (HR, or the
bicubic image in no-reference mode): the largest sum of absolute luma gradients on a grid with a
quarter-crop stride. Crops are enlarged ``zoom`` times with nearest neighbour (and at least up to
``min_cell`` px) so pixels stay visible. Under each crop: that image's first two metrics for that
run. The images not on the sheet are named in its last line.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import SettingError
from ..imageio import luma, to_uint8, write_image
from ..text import printable
from .dataset import ImageStore
from .report import format_metric
from .results import BenchReport, RunResult

__all__ = ["SheetCollector", "detail_box"]

_BG = (255, 255, 255)
_FG = (20, 20, 20)
_MISSING = (200, 200, 200)
_PAD = 6


def detail_box(rgb: np.ndarray, crop: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the ``crop`` x ``crop`` window with the most gradient energy.

    ``rgb``: ``[H, W, 3]`` uint8/uint16/float. The window is clipped to the image.
    """
    gray = luma(rgb.astype(np.float64))
    h, w = gray.shape
    ch, cw = min(crop, h), min(crop, w)
    energy = np.zeros((h, w))
    energy[:, 1:] += np.abs(np.diff(gray, axis=1))
    energy[1:, :] += np.abs(np.diff(gray, axis=0))
    integral = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    stride = max(1, min(ch, cw) // 4)
    tops = sorted(set(range(0, h - ch + 1, stride)) | {h - ch})
    lefts = sorted(set(range(0, w - cw + 1, stride)) | {w - cw})
    t = np.array(tops)[:, None]
    left = np.array(lefts)[None, :]
    sums = integral[t + ch, left + cw] - integral[t, left + cw] - integral[t + ch, left] + integral[t, left]
    i, j = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return tops[i], lefts[j], ch, cw


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> str:
    """``text`` on one line (a name's newline shown as ``\\n``), cut with "…" to ``width`` px."""
    text = printable(text)
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


class SheetCollector:
    """Keeps the crops while the bench runs (pass it as ``run_bench(on_output=...)``), then renders.

    Args:
        store: the benchmark's images (the HR crops come from it).
        images: how many images, spread evenly over the dataset in name order.
        crop: crop side in SR pixels.
        zoom: nearest-neighbour enlargement of every crop.
        min_cell: crops smaller than this are enlarged (nearest) to at least this size.
    """

    def __init__(
        self, store: ImageStore, *, images: int = 4, crop: int = 128, zoom: int = 1, min_cell: int = 128
    ) -> None:
        if crop < 8:
            raise SettingError("sheet_crop", f"sheet_crop must be at least 8 px, got {crop}")
        if not 1 <= zoom <= 16:
            raise SettingError("sheet_zoom", f"sheet_zoom must be in 1..16, got {zoom}")
        n = len(store)
        count = max(0, min(images, n))
        self.indices = sorted({int(round(k)) for k in np.linspace(0, n - 1, count)}) if count else []
        self.store = store
        self.crop = crop
        self.zoom = zoom
        self.min_cell = min_cell
        self.boxes: dict[int, tuple[int, int, int, int]] = {}
        self.hr: dict[int, np.ndarray] = {}
        self.crops: dict[str, dict[int, np.ndarray]] = {}
        for i in self.indices:
            hr = store.hr(i)
            if hr is not None:
                hr8 = hr if hr.dtype == np.uint8 else to_uint8(hr.astype(np.float32) / 65535)
                self.boxes[i] = detail_box(hr8, crop)
                self.hr[i] = self._cut(hr8, self.boxes[i])

    @property
    def left_out(self) -> list[str]:
        """Names of the images not on the sheet, in name order."""
        shown = set(self.indices)
        return [item.name for i, item in enumerate(self.store.dataset.items) if i not in shown]

    def left_out_text(self, limit: int = 12) -> str:
        names = self.left_out
        more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
        return ", ".join(printable(n) for n in names[:limit]) + more

    @staticmethod
    def _cut(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        top, left, h, w = box
        return np.ascontiguousarray(rgb[top : top + h, left : left + w])

    def __call__(self, run: RunResult, index: int, sr: np.ndarray) -> None:
        if index not in self.indices:
            return
        if index not in self.boxes:  # no HR: the first run (bicubic) sets the window
            self.boxes[index] = detail_box(sr, self.crop)
        self.crops.setdefault(run.label, {})[index] = self._cut(sr, self.boxes[index])

    def state(self) -> tuple[dict[int, tuple[int, int, int, int]], dict[str, dict[int, np.ndarray]]]:
        """What this process collected (windows and crops), to send to rank 0 of a sharded run."""
        return self.boxes, self.crops

    def merge(self, state: tuple[dict[int, tuple[int, int, int, int]], dict[str, dict[int, np.ndarray]]]) -> None:
        """Add another process's :meth:`state` (its images' windows and crops)."""
        boxes, crops = state
        for i, box in boxes.items():
            self.boxes.setdefault(i, box)
        for label, by_image in crops.items():
            self.crops.setdefault(label, {}).update(by_image)

    # -- rendering -------------------------------------------------------------------------

    def render(self, report: BenchReport) -> np.ndarray:
        """The sheet as ``[H, W, 3]`` uint8: a header row, then one row per image."""
        runs = list(report.runs)
        columns: list[tuple[str, RunResult | None]] = [(r.label, r) for r in runs]
        if self.hr:
            columns.append(("HR", None))
        sizes = [self.boxes[i][2:] for i in self.indices if i in self.boxes] or [(self.crop, self.crop)]
        ch, cw = max(s[0] for s in sizes), max(s[1] for s in sizes)
        zoom = max(self.zoom, -(-self.min_cell // max(1, min(ch, cw))))
        cell_h, cell_w = ch * zoom, cw * zoom
        font, small = _font(14), _font(12)
        line = 18
        key = report.metric_names[:2]
        caption = line if key else 0
        width = _PAD + len(columns) * (cell_w + _PAD)
        row_h = line + cell_h + caption + _PAD
        footer = line if self.left_out else 0
        height = _PAD + line + len(self.indices) * row_h + footer
        canvas = Image.new("RGB", (width, max(height, 2 * line)), _BG)
        draw = ImageDraw.Draw(canvas)
        for c, (label, _) in enumerate(columns):
            x = _PAD + c * (cell_w + _PAD)
            draw.text((x, _PAD), _fit(draw, label, cell_w, font), fill=_FG, font=font)
        results = {r.label: {res.name: res for res in r.images} for r in runs}
        for row, i in enumerate(self.indices):
            y = _PAD + line + row * row_h
            name = self.store.dataset.items[i].name
            draw.text((_PAD, y + 2), _fit(draw, name, width - 2 * _PAD, small), fill=_FG, font=small)
            y += line
            for c, (label, run) in enumerate(columns):
                x = _PAD + c * (cell_w + _PAD)
                crop = self.hr.get(i) if run is None else self.crops.get(label, {}).get(i)
                if crop is None:
                    draw.rectangle((x, y, x + cell_w - 1, y + cell_h - 1), fill=_MISSING)
                else:
                    tile = Image.fromarray(crop).resize((crop.shape[1] * zoom, crop.shape[0] * zoom), Image.Resampling.NEAREST)
                    canvas.paste(tile, (x, y))
                if run is not None and key:
                    res = results.get(label, {}).get(name)
                    if res is not None:
                        text = " ".join(
                            format_metric(k, res.metrics.get(k)) + (" dB" if k == "psnr" else "") for k in key
                        )
                        draw.text((x, y + cell_h + 2), _fit(draw, text, cell_w, small), fill=_FG, font=small)
        if footer:
            text = f"not shown: {self.left_out_text()}"
            draw.text((_PAD, height - line), _fit(draw, text, width - 2 * _PAD, small), fill=_FG, font=small)
        return np.asarray(canvas)

    def save(self, path: str | os.PathLike[str], report: BenchReport) -> Path:
        """Render and write a PNG (atomically, through ``imageio.write_image``)."""
        sheet = self.render(report)
        return write_image(Path(path), sheet.astype(np.float32) / 255, format="png")

