"""A small Python API: upscale a PIL image or a tensor in one call."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from .config import DEFAULT_SEED
from .engine import Engine
from .imageio import image_to_tensor, pil_rgb, tensor_to_image, to_uint8
from .pipeline import SRPipeline, load_pipeline
from .plan import Tiling, make_plan


def upscale(
    image: Image.Image | torch.Tensor,
    *,
    pipeline: SRPipeline | None = None,
    model: str | Path = "sinsr-v1",
    vq: str | Path | None = None,
    steps: int | None = None,
    sampler: str | None = None,
    seed: int | None = DEFAULT_SEED,
    tile: int | None = None,
    device: str = "auto",
    dtype: str = "auto",
) -> Image.Image | torch.Tensor:
    """Upscale x4. A PIL image gives a PIL RGB image; a ``[B,3,H,W]``/``[3,H,W]`` tensor in [0,1]
    gives a tensor of the same rank. Pass ``pipeline`` to reuse loaded models across calls.
    ``tile``: None (the default) plans tiles as the CLI's ``--tile auto`` does (the whole image
    when that is cheapest), 0 runs the image whole, > 0 runs LR tiles of that size; out of
    memory, the tile is halved."""
    pipe = pipeline or load_pipeline(model, vq, device=device, dtype=dtype)
    plan = make_plan(pipe.preset, steps=steps, sampler=sampler, seed=seed, tiling=Tiling(tile))
    engine = Engine(pipe)
    if isinstance(image, Image.Image):
        x = image_to_tensor(pil_rgb(image))
        out = engine(x, plan)
        return Image.fromarray(to_uint8(tensor_to_image(out, in_place=True)), "RGB")
    squeeze = image.ndim == 3
    x = image[None] if squeeze else image
    out = engine(x, plan)
    return out[0] if squeeze else out
