"""sinsr: one-step diffusion super-resolution (SinSR / ResShift).

Public API: :func:`load_pipeline` builds a pipeline from zoo names or checkpoint files,
:func:`upscale` upscales a PIL image or a tensor.
"""

__version__ = "0.1.0"

from .api import upscale  # noqa: E402
from .pipeline import SRPipeline, load_pipeline  # noqa: E402

__all__ = ["__version__", "load_pipeline", "upscale", "SRPipeline"]
