"""The SR pipeline: pad -> bicubic x4 -> VQ encode -> sample -> VQ decode -> crop.

``SRPipeline.__call__`` is the one visible loop over the path (one model call; tiling, the
out-of-memory retry and progress are ``engine.Engine``'s); the pieces (``encode``,
``sample_latent``, ``decode``) are public so ``bench`` and ``distill`` reuse them rather than
re-implementing the path. Images are float ``[B, 3, H, W]`` in [0, 1] (checked and clamped
where they enter: :func:`to_model_range`); the models see [-1, 1].
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
import torch
import torch.nn.functional as F

from .config import ModelPreset, VQConfig, check_scale
from .devices import as_dtype, make_generator, resolve_device, resolve_dtype
from .diffusion.sampler import ONE_STEP, Callback, Denoiser, get_sampler, randn_like
from .diffusion.schedule import Schedule, make_schedule, respace
from .models.swin_unet import SwinUNet
from .models.vq_f4 import VQModel, max_image_pixels
from .plan import OneStepOnly, make_plan

#: the official sampler pads the LR image to a multiple of this (``desired_min_size``)
PAD_MULTIPLE = 64


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad bottom/right to a multiple (reflect as officially; replicate where reflect cannot)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)


def memory_format_for(device: torch.device) -> torch.memory_format:
    """channels_last on CPU (oneDNN's native layout: no reorders around each conv, 1x1 convs as
    GEMMs), contiguous elsewhere."""
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def place_vq(vq: VQModel, device: torch.device, dtype: torch.dtype) -> VQModel:
    """Move the autoencoder to ``device`` in ``dtype``, all but its codebook (kept float32: a
    bf16 round trip would move the codes, and the nearest-code search decides indices)."""
    vq.to(device=device, memory_format=memory_format_for(device))
    for part in vq.children():
        if part is not vq.quantize:
            part.to(dtype=dtype)
    return vq


def encode_lq(vq: VQModel, lq: torch.Tensor, scale: int) -> torch.Tensor:
    """LR ``[-1,1]`` -> ``z_y = encode(bicubic x4)`` (float32, not quantised)."""
    up = bicubic_up(lq.float(), scale)  # float32 resampling; the encoder casts
    return vq.encode(up).float().contiguous()


#: how an HWC numpy image becomes the float CHW tensor the pipeline takes
NUMPY_HINT = "convert a [H,W,3] uint8 numpy array with torch.from_numpy(a).permute(2, 0, 1).float() / 255"


def not_an_image(name: str, value: object, accepted: str) -> TypeError:
    """The TypeError for ``value`` given as ``name`` where ``accepted`` is wanted, with the
    conversion to use when it is a numpy array (for ``to_model_range`` and ``upscale``)."""
    hint = f"; {NUMPY_HINT}" if type(value).__module__ == "numpy" else ""
    return TypeError(f"{name} must be {accepted}, got {type(value).__name__}{hint}")


def to_model_range(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``[B,3,H,W]`` float images in [0, 1] -> float32 on ``device`` in the models' [-1, 1] (a new
    tensor): where every image enters, so the rule is here once. Integer, bool and complex
    tensors are refused (``read_image``'s uint8 0..255 would reach the model as up to 507),
    values past [0, 1] clamped (the model was trained on [0, 1] only), NaN/Inf refused (they
    would come out as NaN)."""
    if not isinstance(images, torch.Tensor):
        raise not_an_image("images", images, "a float tensor [B,3,H,W] in [0,1]")
    if not images.is_floating_point():
        raise TypeError(
            f"images must be a floating-point tensor in [0,1], got {images.dtype}; "
            "for 0..255 pixels pass x.float() / 255"
        )
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images [B,3,H,W], got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("the batch is empty: images has shape (0, 3, H, W)")
    if images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"an image has no pixels: images has shape {tuple(images.shape)}")
    x = images.to(device, torch.float32, non_blocking=True, copy=True)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("input contains NaN/Inf: images must be finite values in [0,1]")
    return x.clamp_(0, 1).mul_(2).sub_(1)


def from_model_range(out: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped, in place (``out`` is the caller's own: no output-sized temporaries)."""
    return out.mul_(0.5).add_(0.5).clamp_(0, 1)


def bicubic_up(x: torch.Tensor, scale: int) -> torch.Tensor:
    """``F.interpolate(bicubic, align_corners=False)``, no antialias, no clamp (as officially)."""
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)


@dataclass
class SRPipeline:
    """A loaded model pair. Build with :func:`load_pipeline` or directly from modules."""

    unet: SwinUNet
    vq: VQModel
    preset: ModelPreset
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    #: builds the models again from their files in float32 (``load_pipeline`` sets it), for a
    #: copy in another precision: converting already-rounded weights would keep their rounding
    reload: Callable[[], tuple[SwinUNet, VQModel]] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_scale(self.preset.schedule, self.vq.cfg)
        self.device = resolve_device(self.device)  # a name ("cpu", "cuda:1") works as well
        self.dtype = as_dtype(self.dtype)
        self.schedule: Schedule = make_schedule(self.preset.schedule)
        self.scale = self.preset.schedule.sf
        self.unet.eval().requires_grad_(False)
        self.vq.eval().requires_grad_(False)

    # -- configuration ---------------------------------------------------------------------

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | str | None = None) -> "SRPipeline":
        """Move both models; GroupNorm statistics stay float32 inside the layers. ``device`` and
        ``dtype`` take what :func:`load_pipeline` takes (``"cuda"``, ``"bf16"``, ``"auto"``).

        In low precision the VQ codebook stays float32 (the nearest-code search decides
        discrete indices; rounding the codebook or the latent flips them). On CPU the conv
        weights go channels_last, so every feature map after the first conv is NHWC (oneDNN's
        native layout: no reorders around each conv, and 1x1 convs become plain GEMMs).
        """
        device = resolve_device(device) if device is not None else self.device
        dtype = resolve_dtype(dtype, device) if dtype is not None else self.dtype
        self.unet.to(device=device, dtype=dtype, memory_format=memory_format_for(device))
        place_vq(self.vq, device, dtype)
        self.device, self.dtype = device, dtype
        return self

    @property
    def pad_multiple(self) -> int:
        return math.lcm(PAD_MULTIPLE, self.unet.size_multiple)

    def schedule_for(self, steps: int | None, sampler: str) -> Schedule:
        """The full schedule for one-step / T steps, else the official respacing to ``steps``."""
        if sampler == ONE_STEP:
            return self.schedule
        return respace(self.schedule, steps or self.preset.default_steps)

    # -- the path --------------------------------------------------------------------------

    def encode(self, lq: torch.Tensor) -> torch.Tensor:
        """LR ``[-1,1]`` -> ``z_y = encode(bicubic x4)`` (float32, not quantised)."""
        return encode_lq(self.vq, lq, self.scale)

    def denoiser(self, lq: torch.Tensor) -> Denoiser:
        """Bind the LR conditioning: ``(x, t) -> x0`` running the UNet in the pipeline dtype."""
        lq_m = lq.to(self.dtype)

        def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.unet(x.to(self.dtype), t, lq_m).float().contiguous()

        return fn

    def sample_latent(
        self,
        lq: torch.Tensor,
        *,
        steps: int | None = None,
        sampler: str = ONE_STEP,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        callback: Callback | None = None,
    ) -> torch.Tensor:
        """LR ``[-1,1]`` (padded) -> x0 latent, float32."""
        z_y = self.encode(lq)
        if noise is None:
            noise = randn_like(z_y, generator)
        sched = self.schedule_for(steps, sampler)
        return get_sampler(sampler)(self.denoiser(lq), z_y, sched, noise, generator, callback)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent -> image in [-1, 1] (quantised decode, clamped)."""
        # quantised in float32 inside (nearest code of the float32 latent), decoded in self.dtype
        return self.vq.decode(z.float()).clamp(-1, 1).contiguous()

    def upscale_pm1(
        self,
        lq: torch.Tensor,
        *,
        steps: int | None = None,
        sampler: str = ONE_STEP,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        callback: Callback | None = None,
    ) -> torch.Tensor:
        """``[B,3,h,w]`` in [-1,1], any size -> ``[B,3,4h,4w]`` in [-1,1]: pad, sample, decode, crop."""
        padded, (h, w) = pad_to_multiple(lq, self.pad_multiple)
        z0 = self.sample_latent(padded, steps=steps, sampler=sampler, generator=generator, noise=noise, callback=callback)
        return self.decode(z0)[..., : h * self.scale, : w * self.scale]

    @torch.no_grad()  # not inference_mode: the caller gets an ordinary tensor, at no copy
    def __call__(
        self,
        images: torch.Tensor,
        *,
        steps: int | None = None,
        sampler: str | None = None,
        seed: int | str | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``[B,3,H,W]`` in [0,1] -> ``[B,3,4H,4W]`` in [0,1] (float32, on the pipeline device),
        in one model call.

        ``steps=1`` (or a one-step preset by default) is SinSR's single step; more steps use
        ``sampler`` (default: the preset's, ``ancestral`` for ResShift); ``seed`` None is
        ``DEFAULT_SEED``, ``"random"`` a fresh one (``plan.make_plan`` checks them all), and
        ``generator``, when given, is drawn from instead. Tiles, the out-of-memory retry and
        progress are ``engine.Engine``'s (``sinsr_cli.upscale`` uses it): this is the model path.

        A batch draws its noise from one generator, image after image: only the first image
        equals a one-image run with the same seed (the others are not independent draws of that
        seed). Integer tensors are refused, values past [0,1] clamped (:func:`to_model_range`).
        Runs under ``no_grad``: the result is an ordinary tensor (in-place ops, autograd work).
        """
        lq = to_model_range(images, self.device)
        plan = make_plan(self.preset, steps=steps, sampler=sampler, seed=seed)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator (or use seed=), got {type(generator).__name__}")
        if generator is None:
            generator = make_generator(plan.seed, "cpu")
        out = self.upscale_pm1(lq, steps=plan.steps, sampler=plan.sampler, generator=generator).float()
        return from_model_range(out)

    def with_dtype(self, dtype: torch.dtype) -> "SRPipeline":
        """A copy in ``dtype`` that shares no module, parameter or buffer with this one.

        For a retry in another precision (fp32 after fp16 NaN): switching the shared pipeline and
        back would leak into anyone else holding it, and leave it switched when the retry fails.
        Weights loaded in fp16/bf16 are rounded; a copy made from them would keep that rounding
        (and fp16's clipping), so where the pipeline knows its files the copy is loaded from them.
        """
        with torch.inference_mode(False):  # plain tensors, even when asked from inside a run
            if self.reload is not None and self.dtype != torch.float32:
                unet, vq = self.reload()
            else:
                unet, vq = copy.deepcopy(self.unet), copy.deepcopy(self.vq)
            return SRPipeline(unet, vq, self.preset, reload=self.reload).to(self.device, dtype)

    def max_input_pixels(self, batch: int = 1) -> int:
        """The most LR pixels (padded H * W) one model call may take: every feature map stays
        under 2^31 elements. The autoencoder's largest map, at ``scale`` times the input, bounds
        it (``vq_f4.max_image_pixels``); the UNet's maps, at LR size, are far smaller."""
        return max_image_pixels(self.vq.cfg, batch) // self.scale**2

    def max_tile(self, tile_pad: int = 8, batch: int = 1) -> int:
        """The largest LR tile whose model input (tile + context, a multiple of
        :attr:`pad_multiple`) fits :meth:`max_input_pixels`: 688 px for sinsr-v1 + vq-f4 with
        8 px of context (a 704 px input; 725 px would pass the limit)."""
        m = self.pad_multiple
        side = math.isqrt(self.max_input_pixels(batch)) // m * m
        return max(m // 2, side - 2 * max(tile_pad, 0))

    def context_pad(self, tile: int, tile_pad: int) -> int:
        """At least ``tile_pad``, grown so that tile + 2 * pad is a multiple of the padding.

        The model pads its input to a multiple of 64 anyway (a 256 px tile with 8 px of
        context is a 272 px input padded to 320); filling that margin with real neighbours
        instead of reflections costs nothing and gives the tile more context.
        """
        tile_pad = max(tile_pad, 0)
        return tile_pad + ((-(tile + 2 * tile_pad)) % self.pad_multiple) // 2

    def resolve_sampler(self, steps: int | None, sampler: str | None) -> str:
        """The sampler a run of this preset at ``steps`` uses (``plan.resolve_sampling`` decides;
        a one-step student refuses other step counts and samplers with ``OneStepOnly``)."""
        return make_plan(self.preset, steps=steps, sampler=sampler).sampler


def build_models(preset: ModelPreset, vq_cfg: VQConfig) -> tuple[SwinUNet, VQModel]:
    """Random-weight models of a preset (benchmarks, tests)."""
    return SwinUNet(preset.unet), VQModel(vq_cfg)


def load_pipeline(
    model: str | Path = "sinsr-v1",
    vq: str | Path | None = None,
    *,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    config: str | Path | None = None,
    offline: bool | None = None,
) -> SRPipeline:
    """Build a pipeline from zoo names or checkpoint files (``.safetensors`` or official ``.pth``).

    ``config`` is an official YAML / JSON giving ``model.params``, ``autoencoder.params`` and/or
    ``diffusion.params`` for checkpoints that are not presets (the checkpoint still says whether
    it is a one-step student). A config that cannot be used is a ``CheckpointError`` (a
    ValueError) naming the file and the key, raised here rather than at the first image.
    """
    from .weights import CheckpointError, load_unet, load_vq

    for name, value in (("model", model), ("vq", vq)):
        if not (isinstance(value, (str, os.PathLike)) or (name == "vq" and value is None)):
            raise TypeError(f"{name} must be a zoo name or a checkpoint path, got {type(value).__name__}")
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    unet, preset = load_unet(model, config=config, offline=offline)
    vq_model = load_vq(vq or "vq-f4", config=config, offline=offline)

    def reload() -> tuple[SwinUNet, VQModel]:  # the files are cached by now: never the network
        return load_unet(model, config=config, offline=True)[0], load_vq(vq or "vq-f4", config=config, offline=True)

    try:
        pipe = SRPipeline(unet, vq_model, preset, reload=reload)
    except ValueError as e:  # the pair does not fit (check_scale): say which files
        raise CheckpointError(f"{config or model} with {vq or 'vq-f4'}: {e}") from e
    return pipe.to(dev, dt)


__all__ = ["OneStepOnly", "SRPipeline", "load_pipeline", "build_models", "pad_to_multiple", "bicubic_up"]
