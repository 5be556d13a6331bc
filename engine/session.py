"""Sessions and graph scopes shared by every driver."""
import contextlib

import tensorflow as tf

from nets.layout import gpu_available

tf1 = tf.compat.v1


def session_config(gpu_index=0):
    """One GPU per process (its Horovod local rank), memory grown as needed."""
    config = tf1.ConfigProto(allow_soft_placement=True)
    config.gpu_options.allow_growth = True
    if gpu_available():
        config.gpu_options.visible_device_list = str(gpu_index)
    return config


def layout_scope(layout):
    """TF's CPU kernels run only NHWC: an NCHW graph on a machine without a GPU is compiled
    with XLA, which runs either layout."""
    if layout.channels_last or gpu_available():
        return contextlib.nullcontext()
    from tensorflow.python.compiler.xla import jit
    return jit.experimental_jit_scope(True)
