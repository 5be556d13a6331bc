"""k x k neighbourhoods of a feature map, for the local operations and their kernels.

A window position outside the map does not exist: the definitions mask it out and the kernels skip it, so a border
output depends on its valid neighbours only (zero padding only builds shifted maps, never enters a result).
"""
import numpy as np
import tensorflow as tf


def check_window(window):
    if window < 1 or window % 2 == 0:
        raise ValueError("denoising window must be a positive odd number, got {}".format(window))


def window_offsets(window):
    return [(dy, dx) for dy in range(window) for dx in range(window)]


def static_hw(x, layout):
    """(H, W) as ints, or None when either is unknown when the graph is built."""
    hw = [x.shape[a] for a in layout.spatial_axes]
    return None if None in hw else (int(hw[0]), int(hw[1]))


def pad_spatial(x, layout, radius):
    return tf.pad(x, [[radius, radius] if axis in layout.spatial_axes else [0, 0] for axis in range(4)])


def shifted(padded, layout, height, width, dy, dx):
    """The map seen at offset (dy - r, dx - r), cut from the zero-padded map."""
    begin, size = [0, 0, 0, 0], [-1, -1, -1, -1]
    begin[layout.spatial_axes[0]], begin[layout.spatial_axes[1]] = dy, dx
    size[layout.spatial_axes[0]], size[layout.spatial_axes[1]] = height, width
    return tf.slice(padded, begin, size)


def window_stack(x, layout, window):
    """Every k x k neighbourhood as a new last axis: [..., k*k], zeros outside the map."""
    check_window(window)
    padded = pad_spatial(x, layout, window // 2)
    height, width = layout.spatial_size(x)
    return tf.stack([shifted(padded, layout, height, width, dy, dx) for dy, dx in window_offsets(window)], axis=-1)


def window_mask(x, layout, window):
    """1 where a window position lies inside the map, else 0: shape [1, ..., 1, k*k]."""
    ones = tf.ones_like(x[:1, :1, :1, :1])
    ones = tf.tile(ones, [1] + [tf.shape(x)[a] if a in layout.spatial_axes else 1 for a in (1, 2, 3)])
    return window_stack(ones, layout, window)


def valid_offsets(height, width, window):
    """NumPy bool [k*k, H, W]: offset k of position (i, j) lies inside an H x W map."""
    r = window // 2
    rows, cols = np.arange(height)[:, None], np.arange(width)[None, :]
    return np.stack([(rows + dy - r >= 0) & (rows + dy - r < height) & (cols + dx - r >= 0) & (cols + dx - r < width)
                     for dy, dx in window_offsets(window)])


def per_position(array, layout, dtype):
    """NumPy [H, W] -> a constant broadcastable against the layout: [1, H, W, 1] or [1, 1, H, W]."""
    shape = [1, array.shape[0], array.shape[1], 1] if layout.channels_last else [1, 1] + list(array.shape)
    return tf.constant(array.reshape(shape), dtype=dtype)
