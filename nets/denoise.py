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

Two formulations of every operation compute the same function:

- "plain": the definition, written as einsums over materialised tensors: the N x N affinity
  of the non-local operations, the k*k-stacked neighbourhoods of the local ones.
- "fast" (the default): leaner forms of the same algebra. Non-local Gaussian: when one
  image's N x N affinity exceeds `SOFTMAX_BLOCK_BYTES`, the softmax is computed one block
  of query rows at a time (images in turn), with a hand-written backward pass that
  recomputes each block's weights from a saved log-normaliser, so neither pass holds more
  than one [block rows, N] piece of the affinity; smaller maps with N >= C keep the whole
  affinity, with the 1/sqrt(d) scale applied to q (N x D) instead of the affinity (N x N)
  and a backward pass that makes one elementwise pass over the N x N gradient, not five;
  maps with N < C (14x14 and 7x7 in a ResNet) run the plain graph (on a
  CPU the blocked form costs the recomputed q k^T, ~10% more time, for its memory saving:
  choose it for any size with `implementation(softmax_block_bytes=...)` or the
  FD_SOFTMAX_BLOCK_BYTES environment variable). Non-local dot product: the C x C product
  first when C <= N. Bilateral filters: the window is visited one offset at a time (no
  [.., C, k*k] stack) with gradients that recompute the shifted maps. Mean: a pooling op
  that already averages over valid positions only. Median (3 x 3): a median-of-9 selection
  network of min/max operations instead of a sort, its gradient routed by a saved int8
  map of the selected offset.

`implementation("plain")` switches formulation for the graph built inside it (benchmarks
and tests compare the two in one process); checkpoints do not change, both create the same
variables.
"""
import contextlib
import contextvars
import functools
import math
import os
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np
import tensorflow as tf

from .layers import batch_norm, conv2d
from .registry import Registry

tf1 = tf.compat.v1

DENOISE_OPS = Registry("denoising operation")
IMPLEMENTATIONS = ("fast", "plain")
# Affinity bytes of one image's query block in the fast Gaussian; an image whose whole
# N x N affinity fits is computed in one block (the plain graph). The default leaves every
# map of a 224x224 ResNet unblocked (56x56: 37.5 MiB per image in float32); the memory-lean
# blocked form then starts at 64x64 maps. Environment overrides:
# FD_DENOISE_IMPL=plain|fast, FD_SOFTMAX_BLOCK_BYTES=<bytes> (e.g. 16777216 blocks 56x56 maps).
SOFTMAX_BLOCK_BYTES = int(os.environ.get("FD_SOFTMAX_BLOCK_BYTES", 64 << 20))
DEFAULT_IMPLEMENTATION = os.environ.get("FD_DENOISE_IMPL", "fast")


@dataclass(frozen=True)
class Formulation:
    name: str = DEFAULT_IMPLEMENTATION
    softmax_block_bytes: int = SOFTMAX_BLOCK_BYTES
    block_rows: Optional[int] = None      # fixed query rows per softmax block (tests); None: from the bytes


if DEFAULT_IMPLEMENTATION not in IMPLEMENTATIONS:
    raise ValueError("FD_DENOISE_IMPL must be one of {}, got '{}'".format(IMPLEMENTATIONS, DEFAULT_IMPLEMENTATION))
_FORMULATION = contextvars.ContextVar("denoise_formulation", default=Formulation())


@contextlib.contextmanager
def implementation(name=None, **settings):
    """Build the denoising operations inside this scope with formulation `name` ("fast" or
    "plain"; None keeps the current one); `settings` override `Formulation` fields (e.g.
    block_rows=4, softmax_block_bytes=1 << 20)."""
    name = name or _FORMULATION.get().name
    if name not in IMPLEMENTATIONS:
        raise ValueError("denoising implementation must be one of {}, got '{}'".format(IMPLEMENTATIONS, name))
    token = _FORMULATION.set(replace(_FORMULATION.get(), name=name, **settings))
    try:
        yield
    finally:
        _FORMULATION.reset(token)


def current_formulation():
    return _FORMULATION.get()


def _is_plain():
    return _FORMULATION.get().name == "plain"


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


def _static_positions(x, layout):
    hw = [x.shape[a] for a in layout.spatial_axes]
    return None if None in hw else int(hw[0]) * int(hw[1])


# ---------------------------------------------------------------- non-local (global) means

def nonlocal_means(x, layout, window, weighting, embedded, order="auto"):
    """Non-local means: y_i = (1 / C(x)) sum_j f(x_i, x_j) x_j over all positions j.

    Feature Denoising, Sec. 4: "Gaussian (softmax) sets f(x_i, x_j) = exp(theta(x_i)^T phi(x_j)
    / sqrt(d)) ... Dot product sets f(x_i, x_j) = x_i^T x_j and C(x) = N", N = H * W.
    `order` (dot product only): "channel", "pairwise", or "auto" (the formulation's choice).
    """
    del window
    theta, phi = embed(x, layout, embedded)
    if weighting == "gaussian":
        if _is_plain():
            return _nonlocal_gaussian_plain(x, theta, phi, layout)
        return _nonlocal_gaussian_fast(x, theta, phi, layout)
    return _nonlocal_dot(x, theta, phi, layout, order)


def _nonlocal_gaussian_plain(x, theta, phi, layout):
    """The definition: the whole [B, N, N] affinity, a softmax over its last axis."""
    d = layout.channels(theta)
    th, ph, g = (layout.flatten_positions(t) for t in (theta, phi, x))
    if layout.channels_last:   # [B, N, C]
        affinity = tf.einsum("bnd,bmd->bnm", th, ph)
        y = tf.einsum("bnm,bmc->bnc", tf.nn.softmax(affinity / math.sqrt(d), axis=-1), g)
    else:                      # [B, C, N]
        affinity = tf.einsum("bdn,bdm->bnm", th, ph)
        y = tf.einsum("bnm,bcm->bcn", tf.nn.softmax(affinity / math.sqrt(d), axis=-1), g)
    return tf.reshape(y, tf.shape(x))


def softmax_block_rows(positions, itemsize, formulation=None):
    """Query rows per softmax block: as many as fit `softmax_block_bytes` of affinity per image."""
    formulation = formulation or _FORMULATION.get()
    if formulation.block_rows:
        return max(1, min(formulation.block_rows, positions))
    return max(1, min(positions, formulation.softmax_block_bytes // (positions * itemsize)))


def _nonlocal_gaussian_fast(x, theta, phi, layout):
    """Blocked when one image's affinity exceeds the block size; otherwise, where the N x N
    affinity outweighs the N x C features (N >= C), the whole affinity with the lean backward
    pass; on small maps (N < C) the plain graph, whose passes over N x N are the cheap ones."""
    positions = _static_positions(x, layout)
    if positions is None or positions < layout.channels(x):
        return _nonlocal_gaussian_plain(x, theta, phi, layout)
    rows = softmax_block_rows(positions, x.dtype.size)
    d = layout.channels(theta)
    th, ph, g = (_position_rows(t, layout) for t in (theta, phi, x))     # [B, N, .]
    q = th * tf.cast(1.0 / math.sqrt(d), th.dtype)
    if rows >= positions:
        y = softmax_attention(q, ph, g)
    else:
        y = blocked_softmax_attention(q, ph, g, rows)
    if layout.channels_last:
        return tf.reshape(y, tf.shape(x))
    return tf.reshape(tf.transpose(y, [0, 2, 1]), tf.shape(x))


def _position_rows(x, layout):
    """[B, N, C] in either layout (NCHW needs a transpose; under XLA it folds into the matmuls)."""
    flat = layout.flatten_positions(x)
    return flat if layout.channels_last else tf.transpose(flat, [0, 2, 1])


def _with_ones_column(t):
    """[.., C] -> [.., C + 1] with a last column of ones: [a, -b] . [t, 1] = a t^T - b in one matmul."""
    return tf.concat([t, tf.ones_like(t[..., :1])], axis=-1)


def softmax_attention(q, k, v):
    """softmax(q k^T, over keys) v for q [B, N, D] (already scaled), k [B, N, D], v [B, N, C],
    the whole affinity kept for a hand-written backward pass:
        dV = P^T dO,  dS = P * (dO v^T - rowsum(dO * O)),  dQ = dS k,  dK = dS^T q.
    rowsum(dP * P) of the softmax gradient equals rowsum(dO * O) (O = P v), an N x C
    reduction instead of an N x N one, and it is subtracted inside the dO v^T product by an
    extra column: one elementwise pass over the N x N gradient instead of four.
    """
    @tf.custom_gradient
    def attend(q, k, v):
        weights = tf.nn.softmax(tf.matmul(q, k, transpose_b=True))                      # [B, N, N]
        y = tf.matmul(weights, v)

        def grad(dy):
            dy_delta = tf.concat([dy, -tf.reduce_sum(dy * y, axis=-1, keepdims=True)], axis=-1)
            d_scores = weights * tf.matmul(dy_delta, _with_ones_column(v), transpose_b=True)
            return (tf.matmul(d_scores, k), tf.matmul(d_scores, q, transpose_a=True),
                    tf.matmul(weights, dy, transpose_a=True))
        return y, grad

    return attend(q, k, v)


def blocked_softmax_attention(q, k, v, rows):
    """softmax(q k^T, over keys) v for q [B, N, D] (already scaled), k [B, N, D], v [B, N, C].

    Both passes are sequential loops over the images and, within an image, over blocks of
    `rows` positions, so at most one image's [rows, N] piece of the affinity exists at once,
    whatever the batch. The forward pass takes query blocks (a block's softmax sees every
    key) and keeps each row's log-normaliser lse. The backward pass takes key blocks j and
    recomputes their weights from lse:
        P_j = exp(q k_j^T - lse),  dV_j = P_j^T dO,  dS_j = P_j * (dO v_j^T - rowsum(dO * O)),
        dK_j = dS_j^T q,  dQ += dS_j k_j,
    so only one image's dQ ([N, D]) is accumulated across blocks.
    N must be static; it is padded with zero rows to a whole number of blocks (padded
    queries are dropped; padded keys only enter the backward pass, where k = v = 0 makes
    their terms vanish).
    """
    positions = int(q.shape[1])
    blocks = -(-positions // rows)
    rows = -(-positions // blocks)                 # spread the padding over the blocks
    padded = blocks * rows

    def split_rows(t):
        """[N, C] -> [blocks, rows, C] (zero rows appended)."""
        if padded != positions:
            t = tf.pad(t, [[0, padded - positions], [0, 0]])
        return tf.reshape(t, [blocks, rows, t.shape[-1]])

    def join_rows(array):
        """TensorArray of `blocks` x [rows, C] -> [N, C]."""
        stacked = array.stack()
        return tf.reshape(stacked, [padded, stacked.shape[-1]])[:positions]

    def loop(count, body, carried):
        return tf.while_loop(lambda i, *_: i < count, body, [tf.constant(0)] + carried,
                             parallel_iterations=1)[1:]

    def array(size, like, rows=rows):
        return tf.TensorArray(like.dtype, size, element_shape=[rows, like.shape[-1]])

    def per_image(fn, outputs_like, *tensors):
        """fn(image tensors) -> tuple of [N, .] tensors, for each image in turn; stacked [B, N, .]."""
        images = tf.shape(tensors[0])[0]

        def body(b, *arrays):
            results = fn(*[t[b] for t in tensors])
            return (b + 1,) + tuple(a.write(b, r) for a, r in zip(arrays, results))
        arrays = loop(images, body, [tf.TensorArray(like.dtype, images, element_shape=[positions, like.shape[-1]])
                                     for like in outputs_like])
        return [a.stack() for a in arrays]

    def forward_image(q, k, v):
        q_blocks = split_rows(q)

        def body(i, out, lse):
            scores = tf.matmul(q_blocks[i], k, transpose_b=True)                           # [rows, N]
            weights = tf.nn.softmax(scores)
            # log-normaliser: the weight of a row's largest score is exp(0) / sum = 1 / sum
            lse_i = tf.reduce_max(scores, -1, keepdims=True) - tf.math.log(tf.reduce_max(weights, -1, keepdims=True))
            return i + 1, out.write(i, tf.matmul(weights, v)), lse.write(i, lse_i)
        out, lse = loop(blocks, body, [array(blocks, v), array(blocks, v[:, :1])])
        return join_rows(out), join_rows(lse)

    def backward_image(q, k, v, dy, q_lse, dy_delta):
        # an extra column folds the subtractions into the matmuls:
        # [q, -lse] . [k_j, 1] = q k_j^T - lse and [dO, -delta] . [v_j, 1] = dO v_j^T - delta
        k_blocks = split_rows(_with_ones_column(k))
        v_blocks = split_rows(_with_ones_column(v))

        def body(j, dq, dk, dv):
            k_j, v_j = k_blocks[j], v_blocks[j]                                              # [rows, . + 1]
            weights = tf.exp(tf.matmul(q_lse, k_j, transpose_b=True))                         # [N, rows]
            d_scores = weights * tf.matmul(dy_delta, v_j, transpose_b=True)
            return (j + 1, dq + tf.matmul(d_scores, k_j[:, :-1]),
                    dk.write(j, tf.matmul(d_scores, q, transpose_a=True)),
                    dv.write(j, tf.matmul(weights, dy, transpose_a=True)))
        dq, dk, dv = loop(blocks, body, [tf.zeros_like(q), array(blocks, k), array(blocks, v)])
        return dq, join_rows(dk), join_rows(dv)

    @tf.custom_gradient
    def attend(q, k, v):
        y, lse = per_image(forward_image, [v, v[:, :, :1]], q, k, v)                     # [B, N, C], [B, N, 1]

        def grad(dy):
            q_lse = tf.concat([q, -lse], axis=-1)
            dy_delta = tf.concat([dy, -tf.reduce_sum(dy * y, axis=-1, keepdims=True)], axis=-1)
            return per_image(backward_image, [q, k, v], q, k, v, dy, q_lse, dy_delta)

        return y, grad

    return attend(q, k, v)


def dot_product_order(channels, positions):
    """'channel' computes phi^T g first (C x C, O(N C^2)), 'pairwise' the N x N affinity
    first (O(N^2 C)); SPEC Sec. 1: the C x C order when C <= N."""
    return "channel" if channels <= positions else "pairwise"


def _nonlocal_dot(x, theta, phi, layout, order):
    """Plain: the pairwise (definition) order. Fast: the cheaper order for the static shape."""
    th, ph, g = (layout.flatten_positions(t) for t in (theta, phi, x))
    height, width = layout.spatial_size(x)
    n = tf.cast(height * width, x.dtype)
    if order == "auto":
        positions = _static_positions(x, layout)
        order = "pairwise" if positions is None or _is_plain() else \
            dot_product_order(layout.channels(theta), positions)
    if layout.channels_last:   # tensors are [B, N, C]
        if order == "channel":
            y = tf.matmul(th, tf.matmul(ph, g, transpose_a=True))          # [B,N,D] x [B,D,C]
        else:
            y = tf.einsum("bnm,bmc->bnc", tf.einsum("bnd,bmd->bnm", th, ph), g)
    else:                      # tensors are [B, C, N]
        if order == "channel":
            y = tf.matmul(tf.matmul(g, ph, transpose_b=True), th)          # [B,C,D] x [B,D,N]
        else:
            y = tf.einsum("bnm,bcm->bcn", tf.einsum("bdn,bdm->bnm", th, ph), g)
    return tf.reshape(y / n, tf.shape(x))


# ---------------------------------------------------------------- local windows

def _check_window(window):
    if window < 1 or window % 2 == 0:
        raise ValueError("denoising window must be a positive odd number, got {}".format(window))


def _pad_spatial(x, layout, radius):
    pads = [[0, 0]] * 4
    for axis in layout.spatial_axes:
        pads[axis] = [radius, radius]
    return tf.pad(x, pads)


def _window_offsets(window):
    return [(dy, dx) for dy in range(window) for dx in range(window)]


def _shifted(padded, layout, height, width, dy, dx):
    """The map seen at offset (dy - r, dx - r), from the zero-padded map: [B, H, W, C] / [B, C, H, W]."""
    begin, size = [0, 0, 0, 0], [-1, -1, -1, -1]
    begin[layout.spatial_axes[0]], begin[layout.spatial_axes[1]] = dy, dx
    size[layout.spatial_axes[0]], size[layout.spatial_axes[1]] = height, width
    return tf.slice(padded, begin, size)


def _window_stack(x, layout, window):
    """Every k x k neighbourhood as a new last axis: [..., k*k], zeros outside the map."""
    _check_window(window)
    padded = _pad_spatial(x, layout, window // 2)
    height, width = layout.spatial_size(x)
    return tf.stack([_shifted(padded, layout, height, width, dy, dx) for dy, dx in _window_offsets(window)],
                    axis=-1)


def _window_mask(x, layout, window):
    """1 where a window position lies inside the map, else 0: shape [1, ..., 1, k*k]."""
    ones = tf.ones_like(x[:1, :1, :1, :1])
    ones = tf.tile(ones, [1] + [tf.shape(x)[a] if a in layout.spatial_axes else 1 for a in (1, 2, 3)])
    return _window_stack(ones, layout, window)


def _valid_offsets(height, width, window):
    """NumPy bool [k*k, H, W]: offset k of position (i, j) lies inside an H x W map."""
    r = window // 2
    rows, cols = np.arange(height)[:, None], np.arange(width)[None, :]
    return np.stack([(rows + dy - r >= 0) & (rows + dy - r < height) & (cols + dx - r >= 0) & (cols + dx - r < width)
                     for dy, dx in _window_offsets(window)])


def _static_hw(x, layout):
    hw = [x.shape[a] for a in layout.spatial_axes]
    return None if None in hw else (int(hw[0]), int(hw[1]))


def _per_position(array, layout, dtype):
    """NumPy [H, W] -> a constant broadcastable against the layout: [1, H, W, 1] or [1, 1, H, W]."""
    shape = [1, array.shape[0], array.shape[1], 1] if layout.channels_last else [1, 1] + list(array.shape)
    return tf.constant(array.reshape(shape), dtype=dtype)


def bilateral_filter(x, layout, window, weighting, embedded):
    """Bilateral filter: non-local means restricted to a local window Omega(i).

    Feature Denoising, Sec. 4: "y_i = (1 / C(x_i)) sum_{j in Omega(i)} f(x_i, x_j) x_j ... where
    Omega(i) is a local region (e.g., a 3x3 patch) around pixel i". Gaussian weights are a
    softmax over the valid window positions; dot-product weights are divided by their count.
    """
    theta, phi = embed(x, layout, embedded)
    if _is_plain() or _static_hw(x, layout) is None:
        return _bilateral_plain(x, theta, phi, layout, window, weighting)
    return _bilateral_fast(x, theta, phi, layout, window, weighting)


def _bilateral_plain(x, theta, phi, layout, window, weighting):
    mask = _window_mask(x, layout, window)                          # [1,.,.,1,K]
    phi_windows = _window_stack(phi, layout, window)                # [B,.,.,D,K] channel axis kept
    equation = "bhwd,bhwdk->bhwk" if layout.channels_last else "bdhw,bdhwk->bhwk"
    affinity = tf.expand_dims(tf.einsum(equation, theta, phi_windows), layout.channel_axis)   # [B,.,.,1,K]
    if weighting == "gaussian":
        affinity = affinity / math.sqrt(layout.channels(theta))
        affinity = tf.where(mask > 0, affinity, tf.fill(tf.shape(affinity), affinity.dtype.min))
        weights = tf.nn.softmax(affinity, axis=-1)
    else:
        weights = affinity / tf.reduce_sum(mask, axis=-1, keepdims=True)
    return tf.reduce_sum(weights * _window_stack(x, layout, window), axis=-1)


def _bilateral_fast(x, theta, phi, layout, window, weighting):
    """One window offset at a time: the k*k affinities are [B, H, W, 1] maps; no [.., C, k*k] stack."""
    _check_window(window)
    height, width = _static_hw(x, layout)
    valid = _valid_offsets(height, width, window)                   # [K, H, W]
    axis = layout.channel_axis
    affinity = WindowOps(layout, height, width, window).affinity(theta, phi)      # K maps along the channel axis
    if weighting == "gaussian":
        affinity = affinity / math.sqrt(layout.channels(theta))
        if not valid.all():
            inside = np.moveaxis(valid, 0, -1 if layout.channels_last else 0)             # [H, W, K] / [K, H, W]
            affinity = tf.where(tf.constant(inside[None]), affinity, tf.fill(tf.shape(affinity), affinity.dtype.min))
        weights = tf.nn.softmax(affinity, axis=axis)
    else:
        weights = affinity / _per_position(valid.sum(axis=0).astype(np.float64), layout, affinity.dtype)
    return WindowOps(layout, height, width, window).weighted_sum(weights, x)


class WindowOps:
    """The two window products of the bilateral filter, offset by offset, with hand-written
    gradients that recompute the shifted maps instead of keeping k*k of them:

        affinity(theta, phi)[k] = sum_c theta * S_k(phi)        weighted_sum(w, x) = sum_k w[k] * S_k(x)

    S_k shifts a map by window offset k with zeros outside; its adjoint is the opposite
    shift. The k*k terms are chained by control dependencies, so one is alive at a time.
    """

    def __init__(self, layout, height, width, window):
        self.layout, self.height, self.width, self.window = layout, height, width, window
        self.offsets = _window_offsets(window)

    def _shift(self, padded, k, opposite=False):
        dy, dx = self.offsets[k]
        if opposite:
            dy, dx = self.window - 1 - dy, self.window - 1 - dx
        return _shifted(padded, self.layout, self.height, self.width, dy, dx)

    def _pad(self, t):
        return _pad_spatial(t, self.layout, self.window // 2)

    def _part(self, t, k):
        begin = [0, 0, 0, 0]
        begin[self.layout.channel_axis] = k
        return tf.slice(t, begin, [1 if a == self.layout.channel_axis else -1 for a in range(4)])

    def _chain(self, terms):
        """Sum or concatenate term(k, previous) for every k, one after the other."""
        out = []
        for k in range(len(self.offsets)):
            with tf.control_dependencies(out[-1:]):
                out.append(terms(k, out[-1] if out else None))
        return out

    def _sequential_sum(self, term):
        """term(0) + term(1) + ..., one offset after the other."""
        return self._chain(lambda k, total: term(k) if total is None else total + term(k))[-1]

    def _sequential_concat(self, term):
        """[term(0), term(1), ...] concatenated on the channel axis, one offset after the other."""
        return tf.concat(self._chain(lambda k, _: term(k)), self.layout.channel_axis)

    def _correlate(self, a, padded_b):
        """[sum_c a * S_k(b)]_k on the channel axis: one channel per offset."""
        return self._sequential_concat(lambda k: tf.reduce_sum(
            a * self._shift(padded_b, k), axis=self.layout.channel_axis, keepdims=True))

    def _gather(self, w, padded_x):
        """sum_k w[k] * S_k(x)."""
        return self._sequential_sum(lambda k: self._part(w, k) * self._shift(padded_x, k))

    def _scatter(self, w, a):
        """sum_k S_k^T(w[k] * a), the adjoint of _gather in x and of _correlate in b."""
        return self._sequential_sum(lambda k: self._shift(self._pad(self._part(w, k) * a), k, opposite=True))

    def affinity(self, theta, phi):
        @tf.custom_gradient
        def run(theta, phi):
            padded_phi = self._pad(phi)

            def grad(d_affinity):
                return self._gather(d_affinity, padded_phi), self._scatter(d_affinity, theta)
            return self._correlate(theta, padded_phi), grad
        return run(theta, phi)

    def weighted_sum(self, weights, x):
        @tf.custom_gradient
        def run(weights, x):
            padded_x = self._pad(x)

            def grad(dy):
                return self._correlate(dy, padded_x), self._scatter(weights, dy)
            return self._gather(weights, padded_x), grad
        return run(weights, x)


def mean_filter(x, layout, window):
    """Mean filter: y_i = mean of x_j over the window (Feature Denoising, Sec. 4: "the
    simplest form of denoising"); border outputs average their valid neighbours only."""
    if _is_plain():
        mask = _window_mask(x, layout, window)
        return tf.reduce_sum(_window_stack(x, layout, window), -1) / tf.reduce_sum(mask, -1)
    _check_window(window)
    # TF's average pooling with SAME padding divides by the number of valid inputs.
    return tf.nn.avg_pool2d(x, window, 1, "SAME", data_format=layout.data_format)


# Comparators (i, j) of a median-of-9 selection network: after them, wire 4 holds the median.
MEDIAN9_NETWORK = ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8),
                   (0, 3), (5, 8), (4, 7), (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2))


def median_filter(x, layout, window):
    """Median filter: per-channel median over the window (Feature Denoising, Sec. 4: "especially
    effective for removing salt-and-pepper noise"). With an even number of valid neighbours
    (at the border) it takes the lower median, so the output is always one of the inputs and
    the gradient flows to that element."""
    if _is_plain() or window != 3 or _static_hw(x, layout) is None:
        return _median_plain(x, layout, window)
    return _median3_fast(x, layout)


def _median_plain(x, layout, window):
    k = window * window
    mask = _window_mask(x, layout, window)
    values = _window_stack(x, layout, window)
    values = tf.where(mask > 0, values, tf.fill(tf.shape(values), values.dtype.max))
    ascending = -tf.nn.top_k(-values, k=k, sorted=True).values
    median_index = tf.cast((tf.reduce_sum(mask, -1, keepdims=True) - 1) // 2, tf.int32)
    pick = tf.one_hot(median_index[..., 0], k, dtype=x.dtype)
    return tf.reduce_sum(tf.where(pick > 0, ascending, tf.zeros_like(ascending)), -1)


def median_fill(valid):
    """Border fill for the 9-input network: [K, H, W] in {0: the value, -1: lowest, +1: highest}.

    A position with m valid neighbours gets 4 - (m - 1) // 2 lowest fills (the rest highest),
    so the 5th smallest of the 9 is the lower median of its m valid values.
    """
    fill = np.zeros(valid.shape, np.int8)
    count = valid.sum(axis=0)
    for i, j in zip(*np.nonzero(count < valid.shape[0])):
        low = valid.shape[0] // 2 - (count[i, j] - 1) // 2
        for n, k in enumerate(np.nonzero(~valid[:, i, j])[0]):
            fill[k, i, j] = -1 if n < low else 1
    return fill


def _median3_fast(x, layout):
    """The 3 x 3 median by the selection network; the gradient goes to the selected input
    (the first window offset holding the median), from a saved int8 offset map."""
    height, width = _static_hw(x, layout)
    fill = median_fill(_valid_offsets(height, width, 3))
    ops = WindowOps(layout, height, width, 3)

    @tf.custom_gradient
    def run(x):
        padded = ops._pad(x)

        def wire(k):
            value = ops._shift(padded, k)
            if fill[k].any():
                replace_mask = _per_position(fill[k] != 0, layout, tf.bool)
                extreme = _per_position(np.where(fill[k] < 0, -1.0, 1.0), layout, x.dtype) * x.dtype.max
                value = tf.where(replace_mask, extreme, value)
            return value
        wires = [wire(k) for k in range(9)]
        for i, j in MEDIAN9_NETWORK:
            wires[i], wires[j] = tf.minimum(wires[i], wires[j]), tf.maximum(wires[i], wires[j])
        median = wires[4]
        chosen = tf.fill(tf.shape(x), tf.constant(8, tf.int8))
        for k in reversed(range(8)):               # inputs recomputed after the network, one at a time
            with tf.control_dependencies([chosen]):
                chosen = tf.where(tf.equal(wire(k), median), tf.constant(k, tf.int8), chosen)

        def grad(dy):
            zero = tf.zeros_like(dy)
            return ops._sequential_sum(
                lambda k: ops._shift(ops._pad(tf.where(tf.equal(chosen, k), dy, zero)), k, opposite=True))
        return median, grad
    return run(x)


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
