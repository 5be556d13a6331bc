"""Backbones and denoising operations. Nothing here knows about data, attacks or Horovod."""
from .architectures import ARCHITECTURES, ArchSpec, build_spec
from .backbone import BACKBONES, NetworkOutputs, logits, network, preprocess
from .denoise import DENOISE_OPS, denoising_block, denoising_operation, fast_kernel
from .layout import Layout, resolve_data_format
from .options import BuildOptions

__all__ = ["ARCHITECTURES", "ArchSpec", "BACKBONES", "BuildOptions", "DENOISE_OPS", "Layout", "NetworkOutputs",
           "build_spec", "denoising_block", "denoising_operation", "fast_kernel", "logits", "network", "preprocess",
           "resolve_data_format"]
