"""What ``sinsr bench`` measures and reports, as data: the runs asked for (:class:`RunSpec`,
:func:`plan_runs`), the options, each image's and row's results and the report, and the merge
of a sharded run's reports. ``runner.py`` fills these in, ``report.py`` renders them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..config import DEFAULT_SEED
from ..plan import check_settings
from . import metrics as M
from .dataset import BenchDataset

__all__ = ["SCHEMA", "BenchOptions", "BenchReport", "ImageResult", "RunResult", "RunSpec", "merge_reports", "plan_runs"]

SCHEMA = "sinsr-bench/1"


@dataclass(frozen=True)
class RunSpec:
    """One row to benchmark: ``model`` None is the bicubic baseline; ``steps`` None the default."""

    model: str | None
    steps: int | None = None

    @property
    def is_bicubic(self) -> bool:
        return self.model is None


def plan_runs(models: Sequence[str], steps: Sequence[int | None] = (None,)) -> list[RunSpec]:
    """Bicubic first, then every model x step count, in the order given, without repeats."""
    for s in steps:
        if s is not None:
            check_settings(steps=s)
    runs = [RunSpec(None)]
    for m in dict.fromkeys(models):
        runs += [RunSpec(m, s) for s in dict.fromkeys(steps or (None,))]
    return runs


@dataclass(frozen=True)
class BenchOptions:
    """Everything but the data and the runs. ``learned`` None: every learned metric available."""

    vq: str | None = None
    config: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    sampler: str | None = None
    seed: int = DEFAULT_SEED
    tile: int | None = 0  # 0: whole image; None: auto (planned per image, as `sinsr upscale`)
    tile_overlap: int = 32
    tile_pad: int = 8
    warmup: int = 1
    crop_border: int = 0
    center_crop: int | None = None
    learned: tuple[str, ...] | None = None
    save_dir: Path | None = None
    hr_cache_bytes: int = 1 << 30
    offline: bool | None = None  # None: the environment decides (SINSR_OFFLINE / HF_HUB_OFFLINE)


@dataclass
class ImageResult:
    """One image of one run. ``metrics`` maps metric name -> score (``inf`` PSNR if identical)."""

    name: str
    lr_size: tuple[int, int]  # (width, height)
    sr_size: tuple[int, int]
    latency_s: float
    metrics: dict[str, float] = field(default_factory=dict)
    saved: Path | None = None


@dataclass
class RunResult:
    """One row of the report."""

    label: str
    model: str | None
    steps: int | None  # None for bicubic
    sampler: str | None
    preset: str | None = None
    load_s: float | None = None
    warmup: int = 0
    peak_memory_bytes: int | None = None
    images: list[ImageResult] = field(default_factory=list)
    error: str | None = None

    @property
    def kind(self) -> str:
        return "bicubic" if self.model is None else "model"

    def summary(self, metric_names: Sequence[str]) -> dict[str, float | int | None]:
        """Means of each metric over images, and the speed figures (see :func:`bench_protocol`)."""
        acc = M.MetricAccumulator()
        for r in self.images:
            for k in metric_names:
                if k in r.metrics:
                    acc.update(k, [r.metrics[k]])
        means = acc.means()
        out: dict[str, float | int | None] = {"images": len(self.images)}
        out.update({k: means.get(k) for k in metric_names})
        lat = np.array([r.latency_s for r in self.images], dtype=np.float64)
        total = float(lat.sum()) if lat.size else 0.0
        mpix = sum(r.sr_size[0] * r.sr_size[1] for r in self.images) / 1e6
        out.update(
            latency_s_mean=float(lat.mean()) if lat.size else None,
            latency_s_median=float(np.median(lat)) if lat.size else None,
            latency_s_min=float(lat.min()) if lat.size else None,
            latency_s_max=float(lat.max()) if lat.size else None,
            images_per_s=len(lat) / total if total > 0 else None,
            output_mpix_per_s=mpix / total if total > 0 else None,
        )
        return out


@dataclass
class BenchReport:
    """Everything a report needs; ``report.py`` renders it, nothing here formats."""

    dataset: BenchDataset
    runs: list[RunResult]
    metric_names: list[str]
    protocol: dict[str, str]
    environment: dict[str, Any]
    settings: dict[str, Any]
    messages: list[str]
    wall_s: float
    created: str
    schema: str = SCHEMA

    @property
    def failed(self) -> bool:
        return any(r.error for r in self.runs)


def merge_reports(parts: Sequence[BenchReport]) -> BenchReport:
    """One report from the processes of a sharded run (each ran :func:`run_bench` on its own
    ``images``): every run's images from every process, in dataset order, so the summary of
    each row (computed from its images) is that of one process scoring them all.

    A row's peak memory and load time are the largest any process had (each process holds its
    own model); its error the first reported; a model row missing some images without an error
    (a process that could not run it) gets one. Messages are kept once each, in order; the wall
    time is the slowest process's; the environment is rank 0's.
    """
    base = parts[0]
    if len(parts) == 1:
        return base
    position = {item.name: k for k, item in enumerate(base.dataset.items)}
    runs: dict[str, RunResult] = {}
    for part in parts:
        for run in part.runs:
            row = runs.get(run.label)
            if row is None:
                runs[run.label] = replace(run, images=list(run.images))
                continue
            row.images += run.images
            row.peak_memory_bytes = _most(row.peak_memory_bytes, run.peak_memory_bytes)
            row.load_s = _most(row.load_s, run.load_s)
            row.error = row.error or run.error
            row.preset = row.preset or run.preset
    total = len(base.dataset.items)
    for row in runs.values():
        row.images.sort(key=lambda r: position[r.name])
        if row.error is None and len(row.images) < total:
            row.error = f"{len(row.images)} of {total} images: the other processes did not run this row"
    messages = list(dict.fromkeys(m for part in parts for m in part.messages))
    return replace(
        base,
        runs=list(runs.values()),
        messages=messages,
        wall_s=max(p.wall_s for p in parts),
        settings={**base.settings, "processes": len(parts)},
    )


def _most(a: float | int | None, b: float | int | None) -> float | int | None:
    return b if a is None else a if b is None else max(a, b)
