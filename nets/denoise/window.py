"""Fast kernels of the local operations (registered as their "fast" formulation).

Bilateral filters: the window is visited one offset at a time, so no [.., C, k*k] stack of neighbourhoods exists;
the k*k affinities are [B, H, W, 1] maps, and the hand-written gradients recompute the shifted maps instead of
keeping them. Mean: TF's average pooling with SAME padding, which already divides by the number of valid inputs.
"""
import math

import numpy as np
import tensorflow as tf

from .neighbourhood import pad_spatial, per_position, shifted, static_hw, valid_offsets, window_offsets
from .operations import bilateral_dot, bilateral_gaussian, fast_kernel, mean_filter


def _static_map(x, layout, window, options):
    return static_hw(x, layout) is not None


@fast_kernel(bilateral_gaussian, applies=_static_map)
def bilateral_gaussian_fast(x, theta, phi, layout, window, options):
    return _bilateral(x, theta, phi, layout, window, "gaussian")


@fast_kernel(bilateral_dot, applies=_static_map)
def bilateral_dot_fast(x, theta, phi, layout, window, options):
    return _bilateral(x, theta, phi, layout, window, "dot")


def _bilateral(x, theta, phi, layout, window, weighting):
    height, width = static_hw(x, layout)
    valid = valid_offsets(height, width, window)                                  # [K, H, W]
    ops = WindowOps(layout, height, width, window)
    affinity = ops.affinity(theta, phi)                                           # K maps on the channel axis
    if weighting == "gaussian":
        affinity = affinity / math.sqrt(layout.channels(theta))
        if not valid.all():
            inside = np.moveaxis(valid, 0, -1 if layout.channels_last else 0)     # [H, W, K] / [K, H, W]
            affinity = tf.where(tf.constant(inside[None]), affinity, tf.fill(tf.shape(affinity), affinity.dtype.min))
        weights = tf.nn.softmax(affinity, axis=layout.channel_axis)
    else:
        weights = affinity / per_position(valid.sum(axis=0).astype(np.float64), layout, affinity.dtype)
    return ops.weighted_sum(weights, x)


@fast_kernel(mean_filter)
def mean_filter_fast(x, theta, phi, layout, window, options):
    return tf.nn.avg_pool2d(x, window, 1, "SAME", data_format=layout.data_format)


class WindowOps:
    """The two window products of the bilateral filter, offset by offset, with hand-written gradients that recompute
    the shifted maps instead of keeping k*k of them:
        affinity(theta, phi)[k] = sum_c theta * S_k(phi)        weighted_sum(w, x) = sum_k w[k] * S_k(x)
    S_k shifts a map by window offset k with zeros outside; its adjoint is the opposite shift. The k*k terms are
    chained by control dependencies, so one is alive at a time."""

    def __init__(self, layout, height, width, window):
        self.layout, self.height, self.width, self.window = layout, height, width, window
        self.offsets = window_offsets(window)

    def shift(self, padded, k, opposite=False):
        dy, dx = self.offsets[k]
        if opposite:
            dy, dx = self.window - 1 - dy, self.window - 1 - dx
        return shifted(padded, self.layout, self.height, self.width, dy, dx)

    def pad(self, t):
        return pad_spatial(t, self.layout, self.window // 2)

    def _part(self, t, k):
        axis = self.layout.channel_axis
        return tf.slice(t, [k if a == axis else 0 for a in range(4)], [1 if a == axis else -1 for a in range(4)])

    def _chain(self, terms):
        """Sum or concatenate term(k, previous) for every k, one after the other."""
        out = []
        for k in range(len(self.offsets)):
            with tf.control_dependencies(out[-1:]):
                out.append(terms(k, out[-1] if out else None))
        return out

    def sequential_sum(self, term):
        """term(0) + term(1) + ..., one offset after the other."""
        return self._chain(lambda k, total: term(k) if total is None else total + term(k))[-1]

    def _correlate(self, a, padded_b):
        """[sum_c a * S_k(b)]_k on the channel axis (one channel per offset), one offset after the other."""
        axis = self.layout.channel_axis
        terms = self._chain(lambda k, _: tf.reduce_sum(a * self.shift(padded_b, k), axis, keepdims=True))
        return tf.concat(terms, axis)

    def _gather(self, w, padded_x):
        """sum_k w[k] * S_k(x)."""
        return self.sequential_sum(lambda k: self._part(w, k) * self.shift(padded_x, k))

    def _scatter(self, w, a):
        """sum_k S_k^T(w[k] * a), the adjoint of _gather in x and of _correlate in b."""
        return self.sequential_sum(lambda k: self.shift(self.pad(self._part(w, k) * a), k, opposite=True))

    def _product(self, a, b, forward, backward):
        """forward(a, padded b), with the gradient backward(d_output, a, padded b) -> (d_a, d_b)."""
        @tf.custom_gradient
        def run(a, b):
            padded_b = self.pad(b)
            return forward(a, padded_b), lambda d_output: backward(d_output, a, padded_b)
        return run(a, b)

    def affinity(self, theta, phi):
        return self._product(theta, phi, self._correlate, lambda d_affinity, theta, padded_phi: (
            self._gather(d_affinity, padded_phi), self._scatter(d_affinity, theta)))

    def weighted_sum(self, weights, x):
        return self._product(weights, x, self._gather, lambda dy, weights, padded_x: (
            self._correlate(dy, padded_x), self._scatter(weights, dy)))
