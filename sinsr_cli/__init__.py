"""sinsr: one-step diffusion super-resolution (SinSR / ResShift).

Public API: :func:`load_pipeline` builds a pipeline from zoo names or checkpoint files,
:func:`upscale` upscales a PIL image or a tensor.

The names are imported on first use (PEP 562), not here: importing torch takes seconds, and
``sinsr --help``, ``--version`` and ``sinsr models`` must not pay for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .api import upscale
    from .pipeline import SRPipeline, load_pipeline

_LAZY = {"upscale": "api", "load_pipeline": "pipeline", "SRPipeline": "pipeline"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["__version__", "load_pipeline", "upscale", "SRPipeline"]
