"""Backbones and denoising operations. Nothing here knows about data, attacks or Horovod."""
from .architectures import ARCHITECTURES, ArchSpec, build_spec
from .backbone import logits, preprocess
from .denoise import DENOISE_OPS, denoising_block
from .layout import Layout, resolve_data_format

__all__ = ["ARCHITECTURES", "ArchSpec", "build_spec", "logits", "preprocess", "DENOISE_OPS",
           "denoising_block", "Layout", "resolve_data_format"]
