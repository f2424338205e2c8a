"""How every number of ``sinsr bench`` is produced: the x4 scale, the bicubic baseline row
and the protocol lines written into every report (pairing, quantisation, metrics, timing).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from . import metrics as M

__all__ = ["BICUBIC", "BICUBIC_PROTOCOL", "SCALE", "bench_protocol", "bicubic_upscale"]

SCALE = 4
BICUBIC = "bicubic"

#: what the bicubic baseline row is, written into every report
BICUBIC_PROTOCOL = (
    "Pillow Image.resize(BICUBIC) x4 of the LR, per channel on float32 ('F' mode): Keys cubic "
    "a=-0.5 (as MATLAB imresize), no antialiasing when enlarging, edge taps renormalised; "
    "clipped to [0, 1] and quantised to 8 bits like the model outputs"
)


def bicubic_upscale(lr: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """The baseline row: ``[h, w, 3]`` float in [0, 1] -> ``[scale*h, scale*w, 3]`` float32 in [0, 1].

    See :data:`BICUBIC_PROTOCOL`. Float32 per channel, so 16-bit inputs keep their precision.
    """
    h, w = lr.shape[:2]
    out = np.empty((h * scale, w * scale, 3), dtype=np.float32)
    for c in range(3):
        plane = Image.fromarray(np.ascontiguousarray(lr[..., c], dtype=np.float32), mode="F")
        out[..., c] = np.asarray(plane.resize((w * scale, h * scale), Image.Resampling.BICUBIC))
    return np.clip(out, 0.0, 1.0, out=out)


def bench_protocol(crop_border: int, memory_kind: str, paired: bool) -> dict[str, str]:
    """How every number in a report was produced, one line per item."""
    out: dict[str, str] = {}
    out["pairing"] = (
        "LR and HR matched by relative path without extension (never by sort order); "
        f"HR must be exactly {SCALE}x LR" if paired else "no-reference: LR images only"
    )
    out["sr_quantisation"] = (
        "every SR image (model or bicubic) is clamped to [0, 1] and rounded to 8 bits (round half "
        "to even), exactly the pixels a saved PNG holds, before any metric"
    )
    out["bicubic"] = BICUBIC_PROTOCOL
    if paired:
        out.update(M.protocol(crop_border))
    out["learned"] = (
        "pyiqa create_metric(name) defaults on the 8-bit SR (and HR for lpips, LPIPS-alex v0.1); "
        "lower is better for lpips and niqe, higher for the others"
    )
    out["mean"] = "arithmetic mean over images of the per-image scores"
    out["latency"] = (
        "per image, after the warm-up passes (on CUDA one more per distinct LR size): CPU tensor in -> "
        "CPU tensor out, device synchronised "
        "before and after; excludes file decoding, encoding and metrics"
    )
    out["throughput"] = "images/s = images / sum of latencies; output MP/s likewise in output megapixels"
    out["load"] = "load_pipeline (read checkpoint, build, move to device), device synchronised"
    mem = {
        "cuda-max-allocated": "torch.cuda.max_memory_allocated during warm-up and SR calls (SR weights included; "
        "the learned metrics' models and their work excluded)",
        "peak-rss": "peak resident set size of the process (VmHWM) during warm-up and SR calls, reset per call "
        "(includes whatever is resident: weights, loaded metric models, cached images)",
        "peak-rss-process": "peak resident set size of the process so far (ru_maxrss; cannot be reset per run)",
    }
    out["peak_memory"] = mem.get(memory_kind, memory_kind)
    out["seed"] = "one seed for every image and run: an image's result does not depend on its position"
    return out
