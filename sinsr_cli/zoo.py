"""The model zoo as data: each model sinsr can download, where its original file lives, its
licence; and the errors of a model that cannot be had. No I/O here: ``hub`` caches and
verifies, ``fetch`` downloads, ``mirror`` writes an upload-ready copy.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from .config import PRESETS, VQ_PRESETS, UNetConfig, VQConfig
from .errors import one_line

_SINSR = "CC BY-NC-SA 4.0"
_SLAB = "S-Lab License 1.0"
_SINSR_REL = "https://github.com/wyf0912/SinSR/releases/download/v1.0/"
_RESSHIFT_REL = "https://github.com/zsyOAOA/ResShift/releases/download/v2.0/"
#: where each licence's text is (the authors' repositories carry their LICENSE files)
LICENCE_URLS = {
    _SINSR: "https://creativecommons.org/licenses/by-nc-sa/4.0/legalcode",
    _SLAB: "https://github.com/zsyOAOA/ResShift/blob/master/LICENSE",
}
#: the Hugging Face model-card ``license`` field for each licence
HF_LICENCE = {_SINSR: "cc-by-nc-sa-4.0", _SLAB: "other"}


class WeightsUnavailable(Exception):
    """Weights cannot be found, fetched or verified. The message is one line a user can act on."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message, limit=2000))


class WeightsMissing(WeightsUnavailable):
    """A zoo model is not in the cache and could not be fetched (offline, no network, the source
    failed). Unlike a wrong name this is not a usage error: the command itself was fine."""


@dataclass(frozen=True)
class ZooEntry:
    """One downloadable model.

    ``sha256`` is the expected hash of the release file at ``url`` and ``hub_sha256`` of the Hub
    file; ``None`` (nothing published) means trust on first use. ``repo_id`` is a Hub repo that
    really holds this model ("" for none: today no public one does); ``SINSR_HUB_REPO``
    overrides it for every model.
    """

    name: str
    kind: str  # "unet" | "vq"
    preset: str  # key of config.PRESETS, or of config.VQ_PRESETS for kind "vq"
    repo_id: str
    hub_filename: str
    revision: str
    url: str
    sha256: str | None
    licence: str
    description: str
    hub_sha256: str | None = None

    @property
    def architecture(self) -> UNetConfig | VQConfig:
        """The architecture this model has (its preset's): a file of another size is not it."""
        return PRESETS[self.preset].unet if self.kind == "unet" else VQ_PRESETS[self.preset]

    @property
    def filename(self) -> str:
        """The release file's name (``SinSR_v1.pth``): what a manual download is called."""
        return urllib.parse.unquote(urllib.parse.urlsplit(self.url).path.rsplit("/", 1)[-1])


def _entry(name: str, kind: str, url: str, licence: str, description: str) -> ZooEntry:
    return ZooEntry(
        name=name,
        kind=kind,
        preset=name,
        repo_id="",
        hub_filename=name.replace("-", "_") + ".safetensors",
        revision="main",
        url=url,
        sha256=None,
        licence=licence,
        description=description,
    )


ZOO: tuple[ZooEntry, ...] = (
    _entry(
        "sinsr-v1",
        "unet",
        _SINSR_REL + "SinSR_v1.pth",
        _SINSR,
        "SinSR v1: one-step x4 real-world SR; the authors' model for RealSet65 and ImageNet-Test",
    ),
    _entry(
        "sinsr-v2",
        "unet",
        _SINSR_REL + "SinSR_v2.pth",
        _SINSR,
        "SinSR v2: one-step x4, an early-stopped run; the authors' model for RealSR",
    ),
    _entry(
        "resshift-v1",
        "unet",
        _RESSHIFT_REL + "resshift_realsrx4_s15_v1.pth",
        _SLAB,
        "ResShift v1: 15-step x4 SR (SinSR's teacher)",
    ),
    _entry("resshift-v2", "unet", _RESSHIFT_REL + "resshift_realsrx4_s15_v2.pth", _SLAB, "ResShift v2: 15-step x4 SR"),
    _entry("resshift-v3", "unet", _RESSHIFT_REL + "resshift_realsrx4_s4_v3.pth", _SLAB, "ResShift v3: 4-step x4 SR"),
    _entry("vq-f4", "vq", _RESSHIFT_REL + "autoencoder_vq_f4.pth", _SLAB, "VQ-f4 autoencoder (needed by every UNet)"),
)


def zoo_entry(name: str) -> ZooEntry:
    """The entry called ``name``; ``ValueError`` naming the known models otherwise."""
    for e in ZOO:
        if e.name == name:
            return e
    raise ValueError(f"unknown model {name!r}{did_you_mean(name)}; known models: {', '.join(e.name for e in ZOO)}")


def did_you_mean(name: str) -> str:
    """``" (did you mean 'sinsr-v1'?)"`` for a near miss of a zoo name (case, a dash, a typo), or ""."""
    import difflib

    names = [e.name for e in ZOO]
    close = difflib.get_close_matches(name.strip().lower(), names, n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


__all__ = [
    "HF_LICENCE", "LICENCE_URLS", "ZOO", "WeightsMissing", "WeightsUnavailable", "ZooEntry", "did_you_mean", "zoo_entry",
]
