"""Small helpers for graph-mode tests: run a builder in a fresh graph, randomise weights."""
import functools

import numpy as np
import tensorflow as tf

from nets.layout import layout_scope
from nets import Layout

tf1 = tf.compat.v1


def randomize_variables(session, seed=0, scale=0.3):
    """Give every variable random values (BN variances positive), so no zero-init hides a bug."""
    rng = np.random.RandomState(seed)
    for var in tf1.global_variables():
        shape = var.shape.as_list()
        value = rng.normal(0, scale, shape)
        if var.op.name.endswith("variance/EMA"):
            value = np.abs(value) + 0.5
        var.load(value.astype(np.float32), session)


def run_graph(build, feeds_np, data_format="NHWC", init=None):
    """build(layout, *placeholders) -> fetches; runs once in a new graph and returns numpy results.

    NCHW graphs are compiled with XLA on a CPU-only machine (nets.layout.layout_scope).
    `init(session)` runs after variable initialisation (e.g. to load known weights).
    """
    layout = Layout(data_format)
    with tf.Graph().as_default():
        placeholders = [tf1.placeholder(tf.as_dtype(a.dtype), a.shape) for a in feeds_np]
        with layout_scope(layout):
            fetches = build(layout, *placeholders)
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            if init:
                init(session)
            return session.run(fetches, dict(zip(placeholders, feeds_np)))


@functools.lru_cache(None)
def nchw_runs_here():
    """True when an NCHW conv can run (a GPU, or XLA on the CPU)."""
    def build(layout, x):
        kernel = tf.constant(np.ones([3, 3, 2, 2], np.float32))
        return tf.nn.conv2d(x, kernel, 1, "SAME", data_format=layout.data_format)
    try:
        run_graph(build, [np.ones([1, 2, 4, 4], np.float32)], "NCHW")
        return True
    except Exception:   # noqa: BLE001 - any failure means the layout cannot run here
        return False


def to_layout(x_nhwc, data_format):
    return x_nhwc if data_format == "NHWC" else np.transpose(x_nhwc, [0, 3, 1, 2])


def from_layout(x, data_format):
    return x if data_format == "NHWC" else np.transpose(x, [0, 2, 3, 1])
