"""sinsr: one-step diffusion super-resolution (SinSR / ResShift)."""

__version__ = "0.1.0"
