"""Frozen configuration dataclasses and named presets.

Every number here comes from the official configs (``../shared/reference/architecture.json``).
A config is plain data: it can be written into a checkpoint's metadata (``to_dict``) and read
back (``from_dict``), so every file sinsr writes rebuilds its own model.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping

#: the noise seed when none is given: the official inference scripts' default (``--seed 12345``),
#: so two identical runs give identical pixels
DEFAULT_SEED = 12345


def _tuple(v: Any) -> tuple:
    return tuple(v) if isinstance(v, (list, tuple)) else (v,)


_REQUIRED: Any = object()


def _official(p: Mapping[str, Any], key: str, kind: Callable[[Any], Any], default: Any = _REQUIRED) -> Any:
    """``p[key]`` converted by ``kind``; a missing key or a value ``kind`` refuses is a ValueError
    naming the key, so a bad official config is one line that says which entry to fix."""
    if key not in p and default is _REQUIRED:
        raise ValueError(f"{key!r} is missing")
    value = p.get(key, default)
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key!r} has a bad value {value!r}") from None


def _ints(value: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in _tuple(value))


def _mapping(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"not a mapping: {value!r}")
    return value


def _checked_kwargs(cls: type, d: Mapping[str, Any], tuple_fields: tuple[str, ...]) -> dict[str, Any]:
    """``d`` as constructor kwargs of dataclass ``cls``: unknown names rejected, lists -> tuples."""
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return {k: _tuple(v) if k in tuple_fields else v for k, v in d.items()}


@dataclass(frozen=True)
class UNetConfig:
    """Swin-UNet denoiser (``UNetModelSwin``) hyper-parameters.

    ``in_channels`` counts the latent channels only; ``lq_channels`` (3 when conditioned on the
    LR image) are concatenated to it, so the first conv sees ``in_channels + lq_channels``.
    SinSR's YAML writes ``in_channels: 6`` (latent and LR together); ResShift-v3 writes
    ``in_channels: 3, lq_size: 64``. ``from_official`` normalises both.
    """

    image_size: int = 64
    in_channels: int = 3
    lq_channels: int = 3
    model_channels: int = 160
    out_channels: int = 3
    num_res_blocks: tuple[int, ...] = (2, 2, 2, 2)
    attention_resolutions: tuple[int, ...] = (64, 32, 16, 8)
    channel_mult: tuple[int, ...] = (1, 2, 2, 4)
    num_heads: int = -1
    num_head_channels: int = 32
    use_scale_shift_norm: bool = True
    conv_resample: bool = True
    resblock_updown: bool = False
    swin_depth: int = 2
    swin_embed_dim: int = 192
    window_size: int = 8
    mlp_ratio: float = 4.0
    patch_norm: bool = False

    @property
    def swin_heads(self) -> int:
        if self.num_head_channels == -1:
            return self.num_heads
        return self.swin_embed_dim // self.num_head_channels

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.model_channels

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "UNetConfig":
        kw = _checked_kwargs(cls, d, ("num_res_blocks", "attention_resolutions", "channel_mult"))
        if "num_res_blocks" in kw and len(kw["num_res_blocks"]) == 1:
            n = len(kw.get("channel_mult", cls.channel_mult))
            kw["num_res_blocks"] = kw["num_res_blocks"] * n
        return cls(**kw)

    @classmethod
    def from_official(cls, p: Mapping[str, Any]) -> "UNetConfig":
        """Build from the official ``model.params`` mapping (SinSR or ResShift YAML)."""
        p = dict(p)
        if _official(p, "dims", int, 2) != 2:
            raise ValueError("only dims=2 UNets are supported")
        cond = _official(p, "cond_lq", bool, True)
        in_ch = _official(p, "in_channels", int)
        lq_size = p.get("lq_size")
        image_size = _official(p, "image_size", int, 64)
        if cond and lq_size is None:
            # SinSR / ResShift-v1: in_channels already counts the LR channels
            lq_ch, in_ch = 3, in_ch - 3
        elif cond:
            if _official(p, "lq_size", int) != image_size:
                raise ValueError(
                    f"lq_size {lq_size} != image_size {image_size}: the LR feature extractor "
                    "variant is not supported"
                )
            lq_ch = 3
        else:
            lq_ch = 0
        nrb = _official(p, "num_res_blocks", _ints)
        cm = _official(p, "channel_mult", _ints, (1, 2, 4, 8))
        if not isinstance(p["num_res_blocks"], (list, tuple)):  # one count for every level
            nrb = nrb * len(cm)
        head_channels = _official(p, "num_head_channels", int, -1)
        return cls(
            image_size=image_size,
            in_channels=in_ch,
            lq_channels=lq_ch,
            model_channels=_official(p, "model_channels", int),
            out_channels=_official(p, "out_channels", int),
            num_res_blocks=nrb,
            attention_resolutions=_official(p, "attention_resolutions", _ints),
            channel_mult=cm,
            num_heads=-1 if head_channels > 0 else _official(p, "num_heads", int, 1),
            num_head_channels=head_channels,
            use_scale_shift_norm=_official(p, "use_scale_shift_norm", bool, False),
            conv_resample=_official(p, "conv_resample", bool, True),
            resblock_updown=_official(p, "resblock_updown", bool, False),
            swin_depth=_official(p, "swin_depth", int, 2),
            swin_embed_dim=_official(p, "swin_embed_dim", int, 96),
            window_size=_official(p, "window_size", int, 8),
            mlp_ratio=_official(p, "mlp_ratio", float, 2.0),
            patch_norm=_official(p, "patch_norm", bool, False),
        )


@dataclass(frozen=True)
class VQConfig:
    """f4 VQ autoencoder (``VQModelTorch``) hyper-parameters."""

    embed_dim: int = 3
    n_embed: int = 8192
    z_channels: int = 3
    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = ()
    resolution: int = 256

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "VQConfig":
        return cls(**_checked_kwargs(cls, d, ("ch_mult", "attn_resolutions")))

    @classmethod
    def from_official(cls, p: Mapping[str, Any]) -> "VQConfig":
        """Build from the official ``autoencoder.params`` mapping."""
        dd = _official(p, "ddconfig", _mapping)
        if _official(dd, "double_z", bool, False):
            raise ValueError("double_z autoencoders (KL) are not VQ-f4 models")
        return cls(
            embed_dim=_official(p, "embed_dim", int),
            n_embed=_official(p, "n_embed", int),
            z_channels=_official(dd, "z_channels", int),
            in_channels=_official(dd, "in_channels", int, 3),
            out_ch=_official(dd, "out_ch", int, 3),
            ch=_official(dd, "ch", int),
            ch_mult=_official(dd, "ch_mult", _ints),
            num_res_blocks=_official(dd, "num_res_blocks", int),
            attn_resolutions=_official(dd, "attn_resolutions", lambda v: _ints(v or ()), ()),
            resolution=_official(dd, "resolution", int, 256),
        )


@dataclass(frozen=True)
class ScheduleConfig:
    """ResShift eta schedule (``diffusion.params``)."""

    steps: int = 15
    kappa: float = 2.0
    min_noise_level: float = 0.04
    etas_end: float = 0.99
    power: float = 0.3
    sf: int = 4
    #: SinSR's schedule code adds sqrt(1e-3) to the etas_start min; ResShift's does not.
    #: Identical for T=15, different for T=4 (see architecture.json). Keep False for v3.
    sinsr_min_clip: bool = False
    normalize_input: bool = True
    latent_flag: bool = True
    scale_factor: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be an integer >= 1 (the schedule's T), got {self.steps!r}")
        # Every released SinSR / ResShift config has latent_flag True and scale_factor 1.0; the
        # other values change the input scaling and the latent range, which sinsr does not
        # implement: refuse them rather than silently sample a different model.
        if not self.latent_flag:
            raise ValueError(
                "latent_flag: false (pixel-space diffusion input scaling) is not supported; "
                "sinsr implements the latent-space models (latent_flag: true)"
            )
        if float(self.scale_factor) != 1.0:
            raise ValueError(
                f"scale_factor: {self.scale_factor} is not supported; sinsr implements "
                "scale_factor 1.0 (the value of every released SinSR / ResShift config)"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ScheduleConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_official(cls, p: Mapping[str, Any]) -> "ScheduleConfig":
        if p.get("schedule_name", "exponential") != "exponential":
            raise ValueError(f"unsupported schedule {p.get('schedule_name')!r}")
        if p.get("predict_type", "xstart") != "xstart":
            raise ValueError("only predict_type=xstart is supported")
        kw = _official(p, "schedule_kwargs", lambda v: _mapping(v or {}), {})
        return cls(
            steps=_official(p, "steps", int),
            kappa=_official(p, "kappa", float),
            min_noise_level=_official(p, "min_noise_level", float),
            etas_end=_official(p, "etas_end", float, 0.99),
            power=_official(kw, "power", float, 0.3),
            sf=_official(p, "sf", int, 4),
            normalize_input=_official(p, "normalize_input", bool, True),
            latent_flag=_official(p, "latent_flag", bool, True),
            scale_factor=_official(p, "scale_factor", lambda v: float(v or 1.0), 1.0),
        )


def check_scale(schedule: ScheduleConfig, vq: VQConfig) -> None:
    """The one rule tying a schedule to its autoencoder: the LR image conditions the latent at its
    own size, so the x``sf`` bicubic image the VQ encodes must come back at the LR size, i.e.
    ``sf`` is the VQ's downscale factor (else every image fails deep in the UNet)."""
    if schedule.sf != vq.downscale:
        raise ValueError(
            f"sf {schedule.sf} (diffusion.params.sf) does not fit the VQ autoencoder, which downscales by "
            f"{vq.downscale}: this model upscales x{vq.downscale} only"
        )


@dataclass(frozen=True)
class ModelPreset:
    """A named model: its UNet architecture, its schedule and default sampling.

    ``one_step`` marks a distilled student (SinSR): its only meaningful output is the x0 of
    the single step from x_T (at t = 0 it predicts the learned inversion, i.e. noise), so
    other step counts and samplers are refused (``plan.resolve_sampling``).
    """

    name: str
    unet: UNetConfig
    schedule: ScheduleConfig
    default_steps: int
    #: "onestep" for distilled students; "ancestral" for ResShift teachers
    default_sampler: str
    description: str = ""
    one_step: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unet": self.unet.to_dict(),
            "schedule": self.schedule.to_dict(),
            "default_steps": self.default_steps,
            "default_sampler": self.default_sampler,
            "description": self.description,
            "one_step": self.one_step,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelPreset":
        return cls(
            name=str(d["name"]),
            unet=UNetConfig.from_dict(d["unet"]),
            schedule=ScheduleConfig.from_dict(d["schedule"]),
            default_steps=int(d["default_steps"]),
            default_sampler=str(d["default_sampler"]),
            description=str(d.get("description", "")),
            # files written before the field existed: a one-step default sampler meant a student
            one_step=bool(d.get("one_step", d["default_sampler"] == "onestep")),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


# -- presets -------------------------------------------------------------------------------

SINSR_UNET = UNetConfig()  # full size: 118,593,583 parameters
T15 = ScheduleConfig(steps=15, kappa=2.0, min_noise_level=0.04, sinsr_min_clip=True)
T4 = ScheduleConfig(steps=4, kappa=2.0, min_noise_level=0.2, sinsr_min_clip=False)
VQ_F4 = VQConfig()  # 55,322,782 parameters

PRESETS: dict[str, ModelPreset] = {
    "sinsr-v1": ModelPreset(
        "sinsr-v1", SINSR_UNET, T15, 1, "onestep",
        "SinSR v1, one step (the paper's RealSet65 and ImageNet-Test model)", one_step=True,
    ),
    "sinsr-v2": ModelPreset(
        "sinsr-v2", SINSR_UNET, T15, 1, "onestep",
        "SinSR v2, one step (early-stopped; the authors' RealSR model)", one_step=True,
    ),
    "resshift-v1": ModelPreset(
        "resshift-v1", SINSR_UNET, T15, 15, "ancestral", "ResShift v1, 15 steps (SinSR teacher)"
    ),
    "resshift-v2": ModelPreset("resshift-v2", SINSR_UNET, T15, 15, "ancestral", "ResShift v2, 15 steps"),
    "resshift-v3": ModelPreset("resshift-v3", SINSR_UNET, T4, 4, "ancestral", "ResShift v3, 4 steps"),
}

VQ_PRESETS: dict[str, VQConfig] = {"vq-f4": VQ_F4}


def differences(got: Any, expected: Any, limit: int = 3) -> str:
    """How config ``got`` differs from ``expected`` (same dataclass), for a one-line refusal:
    ``"model_channels 32 (expected 160), ..."``; "" when equal."""
    diff = [
        f"{f.name} {getattr(got, f.name)!r} (expected {getattr(expected, f.name)!r})"
        for f in dataclasses.fields(expected)
        if getattr(got, f.name) != getattr(expected, f.name)
    ]
    return ", ".join(diff[:limit]) + (f" and {len(diff) - limit} more" if len(diff) > limit else "")


def tiny_unet() -> UNetConfig:
    """A UNet of the same classes small enough for unit tests (milliseconds on CPU)."""
    return UNetConfig(
        model_channels=32,
        num_res_blocks=(1, 1),
        attention_resolutions=(64, 32),
        channel_mult=(1, 2),
        num_head_channels=16,
        swin_depth=2,
        swin_embed_dim=32,
        window_size=8,
        mlp_ratio=2.0,
        image_size=64,
    )


def tiny_vq() -> VQConfig:
    """A VQ-f4 of the same classes small enough for unit tests."""
    return VQConfig(n_embed=64, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1)


def tiny_preset(name: str = "tiny", steps: int = 15) -> ModelPreset:
    sched = T15 if steps == 15 else dataclasses.replace(T4, steps=steps)
    return ModelPreset(name, tiny_unet(), sched, 1, "onestep", "tiny test model")


__all__ = [
    "differences",
    "UNetConfig",
    "VQConfig",
    "ScheduleConfig",
    "ModelPreset",
    "check_scale",
    "DEFAULT_SEED",
    "PRESETS",
    "VQ_PRESETS",
    "tiny_unet",
    "tiny_vq",
    "tiny_preset",
]
