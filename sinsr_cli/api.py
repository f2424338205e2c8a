"""A small Python API: upscale a PIL image or a tensor in one call."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from .config import DEFAULT_SEED
from .engine import Engine
from .imageio import image_to_tensor, pil_rgb, tensor_to_image, to_uint8
from .pipeline import SRPipeline, load_pipeline, not_an_image
from .plan import Tiling, make_plan

#: ``upscale``'s loading arguments and their defaults: with ``pipeline=`` they would be ignored
_LOAD_DEFAULTS = {"model": "sinsr-v1", "vq": None, "device": "auto", "dtype": "auto"}


def upscale(
    image: Image.Image | torch.Tensor,
    *,
    pipeline: SRPipeline | None = None,
    model: str | Path = "sinsr-v1",
    vq: str | Path | None = None,
    steps: int | None = None,
    sampler: str | None = None,
    seed: int | str | None = DEFAULT_SEED,
    tile: int | None = None,
    device: str = "auto",
    dtype: str = "auto",
) -> Image.Image | torch.Tensor:
    """Upscale x4. A PIL image gives a PIL RGB image, upright (its EXIF orientation applied, as
    the CLI does); a float ``[B,3,H,W]``/``[3,H,W]`` tensor in [0,1] gives an ordinary float32
    tensor of the same rank (integer tensors are refused, values past [0,1] clamped). Pass
    ``pipeline`` to reuse loaded models across calls; ``model``, ``vq``, ``device`` and
    ``dtype`` only say how to load one, so with ``pipeline`` they are refused. ``tile``: None
    (the default) plans tiles as the CLI's ``--tile auto`` does (the whole image when that is
    cheapest), 0 runs the image whole, > 0 runs LR tiles of that size; out of memory, the tile
    is halved."""
    if not isinstance(image, (Image.Image, torch.Tensor)):
        raise not_an_image("image", image, "a PIL image or a float tensor [3,H,W]/[B,3,H,W] in [0,1]")
    if pipeline is None:
        pipeline = load_pipeline(model, vq, device=device, dtype=dtype)
    elif not isinstance(pipeline, SRPipeline):
        raise TypeError(
            f"pipeline must be an SRPipeline (from load_pipeline), got {type(pipeline).__name__}; "
            "to name a model, pass model= instead"
        )
    else:
        given = {"model": model, "vq": vq, "device": device, "dtype": dtype}
        ignored = [k for k, v in given.items() if v != _LOAD_DEFAULTS[k]]
        if ignored:
            raise ValueError(
                f"{', '.join(ignored)} apply only when upscale loads the pipeline itself; "
                "with pipeline= given, load it with them (load_pipeline) or move it (pipeline.to)"
            )
    plan = make_plan(pipeline.preset, steps=steps, sampler=sampler, seed=seed, tiling=Tiling(tile))
    engine = Engine(pipeline)
    if isinstance(image, Image.Image):
        x = image_to_tensor(pil_rgb(image))
        out = engine(x, plan)
        return Image.fromarray(to_uint8(tensor_to_image(out, in_place=True)), "RGB")
    squeeze = image.ndim == 3
    out = engine(image[None] if squeeze else image, plan)
    out = out.clone()  # Engine's result is an inference tensor: in-place ops and autograd refuse it
    return out[0] if squeeze else out
