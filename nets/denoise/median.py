"""Fast kernel of the 3 x 3 median filter (registered as its "fast" formulation).

A median-of-9 selection network of min/max operations instead of a sort; border positions get their missing neighbours
filled with the lowest or highest value so that the network's middle output is the lower median of the valid ones (as in
the definition). The gradient goes to the selected input, found after the network and kept as an int8 offset map.
"""
import numpy as np
import tensorflow as tf

from .neighbourhood import per_position, static_hw, valid_offsets
from .operations import fast_kernel, median_filter
from .window import WindowOps

# Comparators (i, j) of a median-of-9 selection network: after them, wire 4 holds the median.
MEDIAN9_NETWORK = ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8),
                   (0, 3), (5, 8), (4, 7), (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2))


def median_fill(valid):
    """Border fill of the 9-input network, [K, H, W]: 0 keeps the value, -1 lowest, +1 highest. With m valid neighbours,
    4 - (m - 1) // 2 lowest fills (the rest highest) make the 5th smallest of the 9 their lower median."""
    fill = np.zeros(valid.shape, np.int8)
    count = valid.sum(axis=0)
    for i, j in zip(*np.nonzero(count < valid.shape[0])):
        low = valid.shape[0] // 2 - (count[i, j] - 1) // 2
        for n, k in enumerate(np.nonzero(~valid[:, i, j])[0]):
            fill[k, i, j] = -1 if n < low else 1
    return fill


@fast_kernel(median_filter, applies=lambda x, layout, window, options: window == 3 and
             static_hw(x, layout) is not None)
def median3_fast(x, theta, phi, layout, window, options):
    """The 3 x 3 median by the selection network; the gradient goes to the selected input (the first window offset
    holding the median), from a saved int8 offset map."""
    height, width = static_hw(x, layout)
    fill = median_fill(valid_offsets(height, width, 3))
    ops = WindowOps(layout, height, width, 3)

    @tf.custom_gradient
    def run(x):
        padded = ops.pad(x)

        def wire(k):
            value = ops.shift(padded, k)
            if not fill[k].any():
                return value
            extreme = per_position(np.where(fill[k] < 0, -1.0, 1.0), layout, x.dtype) * x.dtype.max
            return tf.where(per_position(fill[k] != 0, layout, tf.bool), extreme, value)
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
            return ops.sequential_sum(
                lambda k: ops.shift(ops.pad(tf.where(tf.equal(chosen, k), dy, zero)), k, opposite=True))
        return median, grad
    return run(x)
