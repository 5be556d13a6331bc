"""Feature-denoising operations and the denoising block (docs/FACTS.md Sec. 1).

`operations` holds the paper's definitions and the registry; `attention`, `window` and `median` register fast kernels
for some of them when imported here.
"""
from . import attention, median, window  # noqa: F401  (registers the fast kernels)
from .operations import DENOISE_OPS, FAST_KERNELS, Operation, denoising_block, denoising_operation, fast_kernel

__all__ = ["DENOISE_OPS", "FAST_KERNELS", "Operation", "denoising_block", "denoising_operation", "fast_kernel"]
