"""sinsr: one-step diffusion super-resolution (SinSR / ResShift).

Public API: :func:`load_pipeline` builds a pipeline from zoo names or checkpoint files,
:func:`upscale` upscales a PIL image or a tensor; :func:`enable_huge_pages`, called before
``import torch``, gives CPU runs the CLI's huge-page tensors (``sinsr_cli.hugepages``).

The names are imported on first use (PEP 562), not here: importing torch takes seconds, and
``sinsr --help``, ``--version`` and ``sinsr models`` must not pay for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .api import upscale
    from .hugepages import enable_huge_pages
    from .pipeline import SRPipeline, load_pipeline

_LAZY = {"upscale": "api", "enable_huge_pages": "hugepages", "load_pipeline": "pipeline", "SRPipeline": "pipeline"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["__version__", "enable_huge_pages", "load_pipeline", "upscale", "SRPipeline"]
