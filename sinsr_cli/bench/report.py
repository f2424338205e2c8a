"""Render a :class:`~sinsr_cli.bench.results.BenchReport`: JSON, CSV, Markdown, and the summary
table the CLI shows with rich.

* JSON (``schema: "sinsr-bench/1"``): dataset, protocol, environment, settings, and per run a
  summary plus every image's scores. Non-finite numbers (PSNR of identical images) are ``null``.
* CSV: one row per (run, image), long format; the summary is in the JSON and Markdown.
* Markdown: the summary table (best value per metric in bold), the comparison sheet if any,
  per-image scores, protocol, settings, environment and messages.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files import unwritable_reason, within
from ..imageio import atomic_write_bytes
from ..text import printable
from .dataset import LR_RECIPES, BenchDataset
from .metrics import LOWER_IS_BETTER
from .results import BenchReport, RunResult

__all__ = [
    "METRIC_LABELS",
    "check_outputs",
    "SummaryTable",
    "format_metric",
    "report_to_dict",
    "summary_table",
    "to_csv",
    "to_json",
    "to_markdown",
    "write_text",
]

METRIC_LABELS = {"psnr": "PSNR", "ssim": "SSIM", "lpips": "LPIPS", "clipiqa": "CLIPIQA", "musiq": "MUSIQ", "niqe": "NIQE"}
_DECIMALS = {"psnr": 2, "ssim": 4, "lpips": 4, "clipiqa": 4, "musiq": 2, "niqe": 3}


def _finite(x: Any) -> Any:
    """Floats that JSON cannot hold (inf, nan) -> None, recursively."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _path(p: Path | None) -> str | None:
    return None if p is None else os.fspath(p)


def _run_dict(run: RunResult, report: BenchReport) -> dict[str, Any]:
    items = report.dataset.items
    by_name = {it.name: it for it in items}
    return {
        "label": run.label,
        "kind": run.kind,
        "model": run.model,
        "preset": run.preset,
        "steps": run.steps,
        "sampler": run.sampler,
        "load_s": run.load_s,
        "warmup": run.warmup,
        "peak_memory_bytes": run.peak_memory_bytes,
        "error": run.error,
        "summary": run.summary(report.metric_names),
        "images": [
            {
                "name": r.name,
                "lr": _path(by_name[r.name].lr),
                "hr": _path(by_name[r.name].hr),
                "lr_size": list(r.lr_size),
                "sr_size": list(r.sr_size),
                "latency_s": r.latency_s,
                **{k: r.metrics.get(k) for k in report.metric_names},
                "saved": _path(r.saved),
            }
            for r in run.images
        ],
    }


def report_to_dict(report: BenchReport, *, command: Sequence[str] | None = None) -> dict[str, Any]:
    """The JSON document (see the module docstring), with non-finite numbers as None."""
    ds = report.dataset
    doc: dict[str, Any] = {
        "schema": report.schema,
        "created": report.created,
        "command": list(command) if command is not None else None,
        "wall_s": report.wall_s,
        "dataset": {
            "mode": ds.mode,
            "lr_dir": _path(ds.lr_root),
            "hr_dir": _path(ds.hr_root),
            "images": len(ds.items),
            "images_found": ds.total,
            "lr_recipe": ds.lr_recipe,
            "lr_recipe_description": None if ds.lr_recipe is None else LR_RECIPES[ds.lr_recipe],
        },
        "metrics": list(report.metric_names),
        "lower_is_better": [m for m in report.metric_names if m in LOWER_IS_BETTER],
        "protocol": report.protocol,
        "environment": report.environment,
        "settings": report.settings,
        "runs": [_run_dict(r, report) for r in report.runs],
        "messages": list(report.messages),
    }
    return _finite(doc)


def to_json(report: BenchReport, *, command: Sequence[str] | None = None) -> str:
    return json.dumps(report_to_dict(report, command=command), indent=2, allow_nan=False) + "\n"


def to_csv(report: BenchReport) -> str:
    """One row per (run, image): identifiers, sizes, latency and every metric."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    head = ["run", "kind", "model", "steps", "sampler", "image", "lr", "hr", "sr_width", "sr_height", "latency_s"]
    writer.writerow(head + list(report.metric_names))
    by_name = {it.name: it for it in report.dataset.items}
    for run in report.runs:
        for r in run.images:
            item = by_name[r.name]
            row: list[Any] = [
                run.label, run.kind, run.model or "", run.steps if run.steps is not None else "",
                run.sampler or "", r.name, _path(item.lr), _path(item.hr) or "",
                r.sr_size[0], r.sr_size[1], repr(r.latency_s),
            ]
            row += [_csv_number(r.metrics.get(k)) for k in report.metric_names]
            writer.writerow(row)
    return buf.getvalue()


def _csv_number(x: float | None) -> str:
    if x is None:
        return ""
    return repr(float(x)) if math.isfinite(x) else ("inf" if x > 0 else "nan" if x != x else "-inf")


def check_outputs(
    files: Mapping[str, Path | None], dataset: BenchDataset, images: tuple[str, Path | None] = ("images", None)
) -> None:
    """Refuse, before any model runs, report files that could not be written (a benchmark's
    results would be lost at its end), two reports on one path, a report on one of the
    benchmark's images, and saved SR images inside its LR or HR folder. ``files``: label (the
    flag that names it) -> path; ``images``: (label, folder) of the saved SR images."""
    inputs = {_real(p) for item in dataset.items for p in (item.lr, item.hr) if p is not None}
    roots = [_real(r) for r in (dataset.lr_root, dataset.hr_root) if r is not None]
    label, image_dir = images
    seen: dict[str, str] = {}
    for flag, path in files.items():
        if path is None:
            continue
        reason = unwritable_reason(path)
        key = _real(path)
        if reason is None and key in inputs:
            reason = "is one of the benchmark's images"
        if reason is None and key in seen:
            reason = f"is also the {seen[key]} file"
        if reason is None and image_dir is not None and within(key, _real(image_dir)):
            reason = f"is inside {label} {image_dir}, where the SR images go; choose a path outside it"
        if reason is None and path.suffix.lower() == ".png" and any(within(key, r) for r in roots):
            # an image there would be an input of the next run of the same command
            reason = "is inside the benchmark's images; choose a path outside them"
        if reason is not None:
            raise ValueError(f"{flag} {path}: {reason}")
        seen[key] = flag
    if image_dir is not None:
        reason = unwritable_reason(image_dir / "x.png")
        where = os.path.realpath(image_dir)
        for root in (dataset.lr_root, dataset.hr_root):
            if reason is None and root is not None and within(where, _real(root)):
                reason = f"is inside the benchmark's images ({root}); choose a folder outside them"
        if reason is not None:
            raise ValueError(f"{label} {image_dir}: {reason}")


def _real(path: Path) -> str:
    return os.path.realpath(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomically write a report file (parents created). A path from a name that was not UTF-8
    is written back as its original bytes, so the CSV names the file that exists."""
    return atomic_write_bytes(Path(path), text.encode("utf-8", "surrogateescape"))


# --------------------------------------------------------------------------- summary table


def format_metric(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.{_DECIMALS.get(name, 4)}f}"


def _seconds(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x * 1e3:.1f} ms" if x < 1 else f"{x:.2f} s"


def _rate(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if x >= 100 else f"{x:.2f}" if x >= 1 else f"{x:.3f}"


def _mib(x: int | None) -> str:
    return "-" if x is None else f"{x / 2**20:,.0f} MiB"


@dataclass
class SummaryTable:
    """Plain strings, one row per run; ``best[r][c]`` marks the best value in a metric column."""

    headers: list[str]
    rows: list[list[str]]
    best: list[list[bool]]
    failed: list[bool]


def summary_table(report: BenchReport) -> SummaryTable:
    """Run, steps, each metric's mean (with its better direction), load, latency, throughput, memory."""
    names = report.metric_names
    headers = ["run", "steps"]
    headers += [f"{METRIC_LABELS.get(m, m)} {'↓' if m in LOWER_IS_BETTER else '↑'}" for m in names]
    headers += ["load", "latency/img", "img/s", "peak mem"]
    summaries = [r.summary(names) for r in report.runs]
    best_value: dict[str, float] = {}
    for m in names:
        values = [
            float(s[m]) for s, r in zip(summaries, report.runs)
            if s.get(m) is not None and not r.error and not math.isnan(float(s[m]))  # type: ignore[arg-type]
        ]
        if values:
            best_value[m] = min(values) if m in LOWER_IS_BETTER else max(values)
    rows, best, failed = [], [], []
    for run, s in zip(report.runs, summaries):
        row = [run.label, "-" if run.steps is None else str(run.steps)]
        mark = [False, False]
        for m in names:
            v = s.get(m)
            row.append(format_metric(m, v))  # type: ignore[arg-type]
            mark.append(v is not None and not run.error and m in best_value and float(v) == best_value[m])  # type: ignore[arg-type]
        ips = s.get("images_per_s")
        row += [
            "-" if run.load_s is None else f"{run.load_s:.2f} s",
            _seconds(s.get("latency_s_mean")),  # type: ignore[arg-type]
            _rate(ips),  # type: ignore[arg-type]
            _mib(run.peak_memory_bytes),
        ]
        mark += [False] * 4
        if run.error:
            row[2:] = ["failed"] + ["-"] * (len(row) - 3)
        rows.append(row)
        best.append(mark)
        failed.append(bool(run.error))
    return SummaryTable(headers, rows, best, failed)


# --------------------------------------------------------------------------- markdown


def _md_escape(text: str) -> str:
    return printable(str(text)).replace("|", "\\|")


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]], bold: Sequence[Sequence[bool]] | None = None) -> str:
    lines = ["| " + " | ".join(_md_escape(h) for h in headers) + " |"]
    lines.append("|" + "|".join(":--" if i == 0 else "--:" for i in range(len(headers))) + "|")
    for r, row in enumerate(rows):
        cells = [
            f"**{_md_escape(c)}**" if bold is not None and bold[r][i] else _md_escape(c) for i, c in enumerate(row)
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_markdown(report: BenchReport, *, sheet: str | None = None, title: str | None = None) -> str:
    """A shareable report; ``sheet`` is the comparison PNG's path relative to the Markdown file."""
    ds, env, st = report.dataset, report.environment, report.settings
    name = title or (ds.lr_root.parent.name if ds.lr_root.name == "lr" else ds.lr_root.name)
    table = summary_table(report)
    out = [f"# sinsr bench: {printable(name)}", ""]
    crop = f", central {st['center_crop']} px LR crops" if st.get("center_crop") else ""
    out.append(
        f"{len(ds.items)} {'image pairs' if ds.paired else 'images'} ({ds.mode}, x{st['scale']}{crop}) · "
        f"{env['device']} ({env['device_name']}), {env['dtype']}, torch {env['torch']} · "
        f"{report.wall_s:.1f} s wall · {report.created}"
    )
    out += ["", _md_table(table.headers, table.rows, table.best), ""]
    if report.metric_names:
        out.append(
            "Means over images; ↑ higher is better, ↓ lower is better; the best value per metric is in bold."
        )
    else:
        out.append("No metrics: no HR images and no learned no-reference metric available (timing only).")
    if sheet:
        out += ["", f"![comparison sheet: bicubic, each run{', HR' if ds.paired else ''}]({sheet})"]
    failed = [r for r in report.runs if r.error]
    if failed:
        out += ["", "Failed runs:", ""] + [f"- `{r.label}`: {_md_escape(r.error or '')}" for r in failed]

    if report.metric_names and any(r.images for r in report.runs):
        key = report.metric_names[:2]
        runs = [r for r in report.runs if r.images]
        headers = ["image"] + [r.label for r in runs]
        scores = {r.label: {i.name: i for i in r.images} for r in runs}
        rows = []
        for item in ds.items:
            row = [item.name]
            for r in runs:
                res = scores[r.label].get(item.name)
                row.append(
                    "-" if res is None else " / ".join(format_metric(k, res.metrics.get(k)) for k in key)
                )
            rows.append(row)
        label = " / ".join(METRIC_LABELS.get(k, k) for k in key)
        out += ["", f"<details><summary>Per-image {label}</summary>", "", _md_table(headers, rows), "", "</details>"]

    out += ["", "## Protocol", ""]
    out += [f"- **{k}**: {_md_escape(v)}" for k, v in report.protocol.items()]
    out += ["", "## Settings", ""]
    out += [f"- {k}: `{printable(str(v))}`" for k, v in st.items() if v is not None]
    out += [f"- lr_dir: `{printable(str(ds.lr_root))}`"] + ([f"- hr_dir: `{printable(str(ds.hr_root))}`"] if ds.hr_root else [])
    if ds.lr_recipe is not None:
        out += [f"- LR made by sinsr: `{ds.lr_recipe}`: {_md_escape(LR_RECIPES[ds.lr_recipe])}"]
    model_lines = [
        f"- {_md_escape(r.label)}: model `{printable(str(r.model))}`, preset `{r.preset}`, sampler `{r.sampler}`"
        for r in report.runs if r.model is not None
    ]
    out += model_lines
    out += ["", "## Environment", ""]
    out += [f"- {k}: `{v}`" for k, v in env.items()]
    if report.messages:
        out += ["", "## Messages", ""] + [f"- {_md_escape(m)}" for m in report.messages]
    return "\n".join(out) + "\n"
