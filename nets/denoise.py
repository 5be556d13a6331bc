"""Feature-denoising operations and the denoising block.

Feature Denoising, Sec. 4: "a denoising block ... processes the input features by a
denoising operation, such as non-local means or other variants. The denoised representation
is first processed by a 1x1 convolutional layer, and then added to the block's input via a
residual connection."

    y = x + BN(Conv1x1(D(x)))      BN's gamma starts at 0, so a new block is the identity.

Every operation here has the signature `op(x, layout, window) -> same shape as x`; global
operations ignore `window`. Adding an operation is one function and one `DENOISE_OPS` line.
Local windows (bilateral, mean, median) cover only positions inside the feature map: a
border output is computed from its valid neighbours, never from zero padding.
"""
import functools
import math

import tensorflow as tf

from .layers import batch_norm, conv2d
from .registry import Registry

tf1 = tf.compat.v1

DENOISE_OPS = Registry("denoising operation")


# ---------------------------------------------------------------- embeddings

def embed(x, layout, enabled):
    """theta(x), phi(x): 1x1 convs C -> C/2 with N(0, 0.01) init and no bias, or x itself.

    Feature Denoising, Sec. 4: the Gaussian version uses "embedded" features, i.e. learned
    1x1 projections of the input, as in non-local networks.
    """
    if not enabled:
        return x, x
    channels = layout.channels(x)
    init = tf1.random_normal_initializer(stddev=0.01)
    theta = conv2d("embedding_theta", x, channels // 2, 1, layout, initializer=init)
    phi = conv2d("embedding_phi", x, channels // 2, 1, layout, initializer=init)
    return theta, phi


# ---------------------------------------------------------------- non-local (global) means

def nonlocal_means(x, layout, window, weighting, embedded, order="auto"):
    """Non-local means: y_i = (1 / C(x)) sum_j f(x_i, x_j) x_j over all positions j.

    Feature Denoising, Sec. 4: "Gaussian (softmax) sets f(x_i, x_j) = exp(theta(x_i)^T phi(x_j)
    / sqrt(d)) ... Dot product sets f(x_i, x_j) = x_i^T x_j and C(x) = N", N = H * W.
    """
    del window
    theta, phi = embed(x, layout, embedded)
    if weighting == "gaussian":
        return _nonlocal_gaussian(x, theta, phi, layout)
    return _nonlocal_dot(x, theta, phi, layout, order)


def _nonlocal_gaussian(x, theta, phi, layout):
    d = layout.channels(theta)
    th, ph, g = (layout.flatten_positions(t) for t in (theta, phi, x))
    # affinity [B, N_query, N_key]; NHWC tensors are [B, N, C], NCHW ones [B, C, N].
    affinity = tf.matmul(th, ph, transpose_b=True) if layout.channels_last else \
        tf.matmul(th, ph, transpose_a=True)
    weights = tf.nn.softmax(affinity / math.sqrt(d), axis=-1)
    y = tf.matmul(weights, g) if layout.channels_last else tf.matmul(g, weights, transpose_b=True)
    return tf.reshape(y, tf.shape(x))


def dot_product_order(channels, positions):
    """'channel' computes phi^T g first (C x C, O(N C^2)), 'pairwise' the N x N affinity
    first (O(N^2 C)); SPEC Sec. 1: the C x C order when C <= N."""
    return "channel" if channels <= positions else "pairwise"


def _nonlocal_dot(x, theta, phi, layout, order):
    th, ph, g = (layout.flatten_positions(t) for t in (theta, phi, x))
    height, width = layout.spatial_size(x)
    n = tf.cast(height * width, x.dtype)
    if order == "auto":
        static_hw = [x.shape[a] for a in layout.spatial_axes]
        positions = None if None in static_hw else static_hw[0] * static_hw[1]
        order = "pairwise" if positions is None else dot_product_order(layout.channels(theta), positions)
    if layout.channels_last:   # tensors are [B, N, C]
        if order == "channel":
            y = tf.matmul(th, tf.matmul(ph, g, transpose_a=True))          # [B,N,D] x [B,D,C]
        else:
            y = tf.matmul(tf.matmul(th, ph, transpose_b=True), g)          # [B,N,N] x [B,N,C]
    else:                      # tensors are [B, C, N]
        if order == "channel":
            y = tf.matmul(tf.matmul(g, ph, transpose_b=True), th)          # [B,C,D] x [B,D,N]
        else:
            y = tf.matmul(g, tf.matmul(ph, th, transpose_a=True))          # [B,C,N] x [B,N,N]
    return tf.reshape(y / n, tf.shape(x))


# ---------------------------------------------------------------- local windows

def _window_stack(x, layout, window):
    """Every k x k neighbourhood as a new last axis: [..., k*k], zeros outside the map."""
    if window < 1 or window % 2 == 0:
        raise ValueError("denoising window must be a positive odd number, got {}".format(window))
    r = window // 2
    pads = [[0, 0]] * 4
    for axis in layout.spatial_axes:
        pads[axis] = [r, r]
    padded = tf.pad(x, pads)
    height, width = layout.spatial_size(x)
    shifted = []
    for dy in range(window):
        for dx in range(window):
            begin = [0, 0, 0, 0]
            begin[layout.spatial_axes[0]], begin[layout.spatial_axes[1]] = dy, dx
            size = [-1, -1, -1, -1]
            size[layout.spatial_axes[0]], size[layout.spatial_axes[1]] = height, width
            shifted.append(tf.slice(padded, begin, size))
    return tf.stack(shifted, axis=-1)


def _window_mask(x, layout, window):
    """1 where a window position lies inside the map, else 0: shape [1, ..., 1, k*k]."""
    ones = tf.ones_like(x[:1, :1, :1, :1])
    ones = tf.tile(ones, [1] + [tf.shape(x)[a] if a in layout.spatial_axes else 1 for a in (1, 2, 3)])
    return _window_stack(ones, layout, window)


def bilateral_filter(x, layout, window, weighting, embedded):
    """Bilateral filter: non-local means restricted to a local window Omega(i).

    Feature Denoising, Sec. 4: "y_i = (1 / C(x_i)) sum_{j in Omega(i)} f(x_i, x_j) x_j ... where
    Omega(i) is a local region (e.g., a 3x3 patch) around pixel i". Gaussian weights are a
    softmax over the valid window positions; dot-product weights are divided by their count.
    """
    theta, phi = embed(x, layout, embedded)
    mask = _window_mask(x, layout, window)                          # [1,.,.,1,K]
    phi_windows = _window_stack(phi, layout, window)                # [B,.,.,D,K] channel axis kept
    affinity = tf.reduce_sum(tf.expand_dims(theta, -1) * phi_windows,
                             axis=layout.channel_axis, keepdims=True)   # [B,.,.,1,K]
    if weighting == "gaussian":
        affinity = affinity / math.sqrt(layout.channels(theta))
        affinity = tf.where(mask > 0, affinity, tf.fill(tf.shape(affinity), affinity.dtype.min))
        weights = tf.nn.softmax(affinity, axis=-1)
    else:
        weights = affinity / tf.reduce_sum(mask, axis=-1, keepdims=True)
    return tf.reduce_sum(weights * _window_stack(x, layout, window), axis=-1)


def mean_filter(x, layout, window):
    """Mean filter: y_i = mean of x_j over the window (Feature Denoising, Sec. 4: "the
    simplest form of denoising"); border outputs average their valid neighbours only."""
    mask = _window_mask(x, layout, window)
    return tf.reduce_sum(_window_stack(x, layout, window), -1) / tf.reduce_sum(mask, -1)


def median_filter(x, layout, window):
    """Median filter: per-channel median over the window (Feature Denoising, Sec. 4: "especially
    effective for removing salt-and-pepper noise"). With an even number of valid neighbours
    (at the border) it takes the lower median, so the output is always one of the inputs and
    the gradient flows to that element."""
    k = window * window
    mask = _window_mask(x, layout, window)
    values = _window_stack(x, layout, window)
    values = tf.where(mask > 0, values, tf.fill(tf.shape(values), values.dtype.max))
    ascending = -tf.nn.top_k(-values, k=k, sorted=True).values
    median_index = tf.cast((tf.reduce_sum(mask, -1, keepdims=True) - 1) // 2, tf.int32)
    pick = tf.one_hot(median_index[..., 0], k, dtype=x.dtype)
    return tf.reduce_sum(tf.where(pick > 0, ascending, tf.zeros_like(ascending)), -1)


def null_op(x, layout, window):
    """The null block (Feature Denoising, Sec. 6.3 ablation): D = identity, only the 1x1 conv
    and the residual remain, to show the gain is not from the extra parameters."""
    del layout, window
    return x


# ---------------------------------------------------------------- the registry

DENOISE_OPS.register("nonlocal_gaussian", functools.partial(nonlocal_means, weighting="gaussian", embedded=True))
DENOISE_OPS.register("nonlocal_gaussian_plain", functools.partial(nonlocal_means, weighting="gaussian", embedded=False))
DENOISE_OPS.register("nonlocal_dot", functools.partial(nonlocal_means, weighting="dot", embedded=False))
DENOISE_OPS.register("nonlocal_dot_embedded", functools.partial(nonlocal_means, weighting="dot", embedded=True))
DENOISE_OPS.register("bilateral_gaussian", functools.partial(bilateral_filter, weighting="gaussian", embedded=True))
DENOISE_OPS.register("bilateral_gaussian_plain", functools.partial(bilateral_filter, weighting="gaussian", embedded=False))
DENOISE_OPS.register("bilateral_dot", functools.partial(bilateral_filter, weighting="dot", embedded=False))
DENOISE_OPS.register("mean", mean_filter)
DENOISE_OPS.register("median", median_filter)
DENOISE_OPS.register("null", null_op)


def denoising_block(name, x, op_name, layout, training, window=3):
    """y = x + BN(Conv1x1(D(x))), BN gamma initialised to zero (Feature Denoising, Sec. 4, Fig. 4)."""
    op = DENOISE_OPS.get(op_name)
    with tf1.variable_scope(name):
        denoised = op(x, layout, window)
        update = conv2d("conv", denoised, layout.channels(x), 1, layout)
        with tf1.variable_scope("conv"):
            update = batch_norm("bn", update, layout, training, zero_init=True)
    return x + update
