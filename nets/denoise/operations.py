"""The denoising block and the denoising operations, as the paper defines them.

Feature Denoising, Sec. 4: "a denoising block ... processes the input features by a denoising operation, such as
non-local means or other variants. The denoised representation is first processed by a 1x1 convolutional layer, and
then added to the block's input via a residual connection":

    y = x + BN(Conv1x1(D(x)))      BN's gamma starts at 0, so a new block is the identity.

Each operation D below is its definition over materialised tensors (the N x N affinity, the k*k-stacked windows),
registered where it is defined with its properties: `embedded` (theta, phi are learned 1x1 convs) and `windowed` (it
reads --denoise-window). attention.py, window.py and median.py register faster formulations of the same algebra with
`fast_kernel(definition)`; BuildOptions.formulation chooses ("definition" or "fast"); both create the same variables. A
new operation is one function with one `@denoising_operation(name)` line (docs/ARCHITECTURE.md).
"""
import math
from dataclasses import dataclass
from typing import Callable

import tensorflow as tf

from ..layers import batch_norm, conv2d
from ..registry import Registry
from .neighbourhood import check_window, window_mask, window_stack

tf1 = tf.compat.v1

DENOISE_OPS = Registry("denoising operation")


@dataclass(frozen=True)
class FastKernel:
    run: Callable          # (x, theta, phi, layout, window, options) -> D(x)
    applies: Callable      # (x, layout, window, options) -> bool: the kernel handles this input


FAST_KERNELS = {}          # definition function -> FastKernel


@dataclass(frozen=True)
class Operation:
    """A registered denoising operation: D(x) -> same shape as x."""
    name: str
    definition: Callable   # (x, theta, phi, layout, window) -> D(x)
    embedded: bool = False
    windowed: bool = False

    def __call__(self, x, window, options):
        layout = options.layout
        if self.windowed:
            check_window(window)
        theta, phi = embed(x, layout) if self.embedded else (x, x)
        kernel = FAST_KERNELS.get(self.definition)
        if options.formulation == "fast" and kernel and kernel.applies(x, layout, window, options):
            return kernel.run(x, theta, phi, layout, window, options)
        return self.definition(x, theta, phi, layout, window)


def denoising_operation(name, embedded=False, windowed=False):
    """Decorator: register `definition(x, theta, phi, layout, window)` as operation `name` (theta = phi = x unless
    embedded). Stack it to register variants of one definition."""
    def register(definition):
        DENOISE_OPS.register(name, Operation(name, definition, embedded, windowed))
        return definition
    return register


def fast_kernel(definition, applies=lambda x, layout, window, options: True):
    """Decorator: register `run(x, theta, phi, layout, window, options)` as the fast formulation of `definition` for
    the inputs where `applies(...)` holds."""
    def register(run):
        FAST_KERNELS[definition] = FastKernel(run, applies)
        return run
    return register


def embed(x, layout):
    """theta(x), phi(x): 1x1 convs C -> C/2 with N(0, 0.01) init and no bias. Feature Denoising, Sec. 4: the Gaussian
    version uses "embedded" features, i.e. learned 1x1 projections of the input, as in non-local networks."""
    half, init = layout.channels(x) // 2, tf1.random_normal_initializer(stddev=0.01)
    return (conv2d("embedding_theta", x, half, 1, layout, initializer=init),
            conv2d("embedding_phi", x, half, 1, layout, initializer=init))


# ---------------------------------------------------------------- non-local means (all positions)
@denoising_operation("nonlocal_gaussian", embedded=True)
@denoising_operation("nonlocal_gaussian_plain")
def nonlocal_gaussian(x, theta, phi, layout, window):
    """y_i = sum_j softmax_j(theta(x_i) . phi(x_j) / sqrt(d)) x_j over all N = H * W positions, d theta's channels.
    Feature Denoising, Sec. 4: "Gaussian (softmax) sets f(x_i, x_j) = exp(theta(x_i)^T phi(x_j) / sqrt(d))" with
    C(x) = sum_j f."""
    del window
    d = layout.channels(theta)
    return _all_pairs(x, theta, phi, layout, lambda affinity: tf.nn.softmax(affinity / math.sqrt(d), axis=-1))


@denoising_operation("nonlocal_dot")
@denoising_operation("nonlocal_dot_embedded", embedded=True)
def nonlocal_dot(x, theta, phi, layout, window):
    """y_i = (1 / N) sum_j (theta(x_i) . phi(x_j)) x_j, the N x N affinity first. Feature Denoising, Sec. 4: "Dot
    product sets f(x_i, x_j) = x_i^T x_j and C(x) = N"."""
    del window
    height, width = layout.spatial_size(x)
    return _all_pairs(x, theta, phi, layout, lambda affinity: affinity) / tf.cast(height * width, x.dtype)


def _all_pairs(x, theta, phi, layout, weigh):
    """y_i = sum_j weigh(A)_ij x_j over all N positions, from the N x N affinity A_ij = theta(x_i) . phi(x_j)."""
    th, ph, g = (layout.flatten_positions(t) for t in (theta, phi, x))
    if layout.channels_last:   # [B, N, C]
        y = tf.einsum("bnm,bmc->bnc", weigh(tf.einsum("bnd,bmd->bnm", th, ph)), g)
    else:                      # [B, C, N]
        y = tf.einsum("bnm,bcm->bcn", weigh(tf.einsum("bdn,bdm->bnm", th, ph)), g)
    return tf.reshape(y, tf.shape(x))


# ---------------------------------------------------------------- local windows
@denoising_operation("bilateral_gaussian", embedded=True, windowed=True)
@denoising_operation("bilateral_gaussian_plain", windowed=True)
def bilateral_gaussian(x, theta, phi, layout, window):
    """Non-local Gaussian means restricted to the k x k window Omega(i) around each position, the softmax over its
    valid positions. Feature Denoising, Sec. 4: "y_i = (1 / C(x_i)) sum_{j in Omega(i)} f(x_i, x_j) x_j ... where
    Omega(i) is a local region (e.g., a 3x3 patch) around pixel i"."""
    affinity, mask = _window_affinity(theta, phi, layout, window)
    affinity = affinity / math.sqrt(layout.channels(theta))
    weights = tf.nn.softmax(tf.where(mask > 0, affinity, tf.fill(tf.shape(affinity), affinity.dtype.min)), axis=-1)
    return tf.reduce_sum(weights * window_stack(x, layout, window), axis=-1)


@denoising_operation("bilateral_dot", windowed=True)
def bilateral_dot(x, theta, phi, layout, window):
    """Dot-product non-local means over the k x k window, divided by its valid positions."""
    affinity, mask = _window_affinity(theta, phi, layout, window)
    weights = affinity / tf.reduce_sum(mask, axis=-1, keepdims=True)
    return tf.reduce_sum(weights * window_stack(x, layout, window), axis=-1)


def _window_affinity(theta, phi, layout, window):
    """(theta_i . phi_j for j in the window: [B, ., ., 1, k*k] (channel axis kept), validity mask)."""
    equation = "bhwd,bhwdk->bhwk" if layout.channels_last else "bdhw,bdhwk->bhwk"
    affinity = tf.einsum(equation, theta, window_stack(phi, layout, window))
    return tf.expand_dims(affinity, layout.channel_axis), window_mask(theta, layout, window)


@denoising_operation("mean", windowed=True)
def mean_filter(x, theta, phi, layout, window):
    """y_i = mean of x_j over the valid positions of the k x k window (Feature Denoising, Sec. 4: "the simplest form
    of denoising")."""
    del theta, phi
    return tf.reduce_sum(window_stack(x, layout, window), -1) / tf.reduce_sum(window_mask(x, layout, window), -1)


@denoising_operation("median", windowed=True)
def median_filter(x, theta, phi, layout, window):
    """Per-channel median over the window (Feature Denoising, Sec. 4: "especially effective for removing salt-and-pepper
    noise"); at the border, for an even count of valid neighbours, the lower one: an input, which gets the gradient."""
    del theta, phi
    k = window * window
    mask = window_mask(x, layout, window)
    values = window_stack(x, layout, window)
    values = tf.where(mask > 0, values, tf.fill(tf.shape(values), values.dtype.max))
    ascending = -tf.nn.top_k(-values, k=k, sorted=True).values
    median_index = tf.cast((tf.reduce_sum(mask, -1, keepdims=True) - 1) // 2, tf.int32)
    pick = tf.one_hot(median_index[..., 0], k, dtype=x.dtype)
    return tf.reduce_sum(tf.where(pick > 0, ascending, tf.zeros_like(ascending)), -1)


@denoising_operation("null")
def null_op(x, theta, phi, layout, window):
    """The null block (Feature Denoising, Sec. 6.3 ablation): D = identity, only the 1x1 conv and the residual remain,
    to show the gain is not from the extra parameters."""
    del theta, phi, layout, window
    return x


# ---------------------------------------------------------------- the block
def denoising_block(name, x, op_name, options, training, window=3):
    """y = x + BN(Conv1x1(D(x))), BN gamma initialised to zero (Feature Denoising, Sec. 4, Fig. 4)."""
    op = DENOISE_OPS.get(op_name)
    layout = options.layout
    with tf1.variable_scope(name):
        update = conv2d("conv", op(x, window, options), layout.channels(x), 1, layout)
        with tf1.variable_scope("conv"):
            update = batch_norm("bn", update, options, training, zero_init=True)
    return x + update
