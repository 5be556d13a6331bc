"""Small helpers for graph-mode tests: run a builder in a fresh graph, randomise weights."""
import functools

import numpy as np
import pytest
import tensorflow as tf

from nets.layout import layout_scope
from nets import Layout

tf1 = tf.compat.v1
SIZE, CLASSES = 8, 4        # the small classifier `mlp` (attack tests)


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


def write_random_weights(path, spec, seed=3, denoise_gamma=None, checkpoint_prefix=None):
    """Random weights of the model `spec` as a .npz file (and a TF checkpoint at
    `checkpoint_prefix`, with a global step); `denoise_gamma` sets the denoising blocks' BN
    gammas (zero at initialisation), so that the blocks change their input."""
    from nets import logits
    from nets.checkpoint import save_npz
    with tf.Graph().as_default():
        logits(tf1.placeholder(tf.float32, [None, spec.image_size, spec.image_size, 3]), spec, training=False)
        step = tf1.train.get_or_create_global_step()
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            randomize_variables(session, seed=seed)
            if denoise_gamma is not None:
                for var in tf1.global_variables():
                    if "_denoise/" in var.op.name and var.op.name.endswith("gamma"):
                        var.load(np.full(var.shape.as_list(), denoise_gamma, np.float32), session)
            save_npz(session, path)
            if checkpoint_prefix:
                tf1.train.Saver().save(session, checkpoint_prefix, global_step=step)
    return path


def train_on(images, labels, spec, path, steps=60, learning_rate=0.01, seed=0, training_mode=False, batch=None):
    """A model `spec` fitted to (images, labels) with Adam, saved as a .npz of its model
    variables: accurate on those images and not robust, so attacks have something to break."""
    from nets import logits
    from nets.checkpoint import save_npz
    images = np.asarray(images, np.float32)
    with tf.Graph().as_default():
        tf1.set_random_seed(seed)
        x, y = tf1.placeholder(tf.float32, [None] + list(images.shape[1:])), tf1.placeholder(tf.int32, [None])
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=y, logits=logits(x, spec, training=training_mode)))
        model_variables = tf1.global_variables()
        train = tf1.train.AdamOptimizer(learning_rate).minimize(loss)
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            batch = batch or len(images)
            for step in range(steps):
                part = slice((step * batch) % len(images), (step * batch) % len(images) + batch)
                session.run(train, {x: images[part], y: labels[part]})
            save_npz(session, path, model_variables)
    return path


def mlp(x, dtype=tf.float32):
    """A small classifier on 8x8x3 images in [0, 255] (weights shared across calls)."""
    with tf1.variable_scope("mlp", reuse=tf1.AUTO_REUSE):
        h = tf.cast(tf.reshape(x / 127.5 - 1.0, [-1, SIZE * SIZE * 3]), dtype)
        w1 = tf.cast(tf1.get_variable("w1", [SIZE * SIZE * 3, 32]), dtype)
        w2 = tf.cast(tf1.get_variable("w2", [32, CLASSES]), dtype)
        return tf.cast(tf.matmul(tf.nn.relu(tf.matmul(h, w1)), w2), tf.float32)


def synthetic_data(n, seed, size=SIZE, classes=CLASSES, amplitude=10.0, noise=20.0):
    """Class k: a fixed random +-1 pattern of `amplitude` around grey, plus Gaussian noise."""
    templates = np.random.RandomState(0).choice([-1.0, 1.0], [classes, size, size, 3])
    rng = np.random.RandomState(seed)
    labels = rng.randint(0, classes, n)
    images = np.clip(128 + amplitude * templates[labels] + rng.normal(0, noise, [n, size, size, 3]), 0, 255)
    return images.astype(np.float32), labels.astype(np.int32)


def tiered(values, default):
    """Parameters for pytest.mark.parametrize: those in `default` run in the default tier, the
    others (more configurations of the same check) only in the full tier."""
    return [value if value in default else pytest.param(value, marks=pytest.mark.full) for value in values]

