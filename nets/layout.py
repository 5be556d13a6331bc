"""Tensor layout: NCHW (the fast layout on GPUs) or NHWC (the only one TF's CPU kernels run).

Every layer and denoising operation takes a `Layout`: the same weights give the same numbers in both, only axes differ.
"""
import contextlib
from dataclasses import dataclass

import tensorflow as tf

FORMATS = ("NCHW", "NHWC")


@dataclass(frozen=True)
class Layout:
    data_format: str

    def __post_init__(self):
        if self.data_format not in FORMATS:
            raise ValueError("data format must be one of {}, got '{}'".format(FORMATS, self.data_format))

    @property
    def channels_last(self):
        return self.data_format == "NHWC"

    @property
    def channel_axis(self):
        return 3 if self.channels_last else 1

    @property
    def spatial_axes(self):
        return (1, 2) if self.channels_last else (2, 3)

    def channels(self, x):
        return int(x.shape[self.channel_axis])

    def from_nhwc(self, x):
        """An NHWC tensor (the input images) in this layout."""
        return x if self.channels_last else tf.transpose(x, [0, 3, 1, 2])

    def to_nhwc(self, x):
        return x if self.channels_last else tf.transpose(x, [0, 2, 3, 1])

    def flatten_positions(self, x):
        """[B, N, C] for NHWC, [B, C, N] for NCHW (both a free reshape), N = H * W."""
        shape = tf.shape(x)
        if self.channels_last:
            return tf.reshape(x, [shape[0], shape[1] * shape[2], shape[3]])
        return tf.reshape(x, [shape[0], shape[1], shape[2] * shape[3]])

    def spatial_size(self, x):
        """(H, W) as scalar tensors."""
        shape = tf.shape(x)
        return shape[self.spatial_axes[0]], shape[self.spatial_axes[1]]


def gpu_available():
    return bool(tf.config.list_physical_devices("GPU"))


def grouped_conv_kernels():
    """Whether TF has grouped-convolution kernels here, gradients included: on a GPU, and on a
    CPU with oneDNN (on by default only on CPUs with AVX-512); TF's own CPU kernels have none."""
    if gpu_available():
        return True
    try:
        from tensorflow.python.util import _pywrap_util_port
        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return False


def layout_scope(layout):
    """TF's CPU kernels run only NHWC: without a GPU, an NCHW graph is compiled with XLA, which runs either."""
    if layout.channels_last or gpu_available():
        return contextlib.nullcontext()
    from tensorflow.python.compiler.xla import jit
    return jit.experimental_jit_scope(True)


def resolve_data_format(choice="auto"):
    """'auto' picks NCHW when a GPU is visible, else NHWC; 'NCHW'/'NHWC' force one."""
    if choice == "auto":
        return "NCHW" if gpu_available() else "NHWC"
    if choice not in FORMATS:
        raise ValueError("--data-format must be auto, NCHW or NHWC, got '{}'".format(choice))
    return choice
