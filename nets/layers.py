"""The few layers the models need, with Tensorpack's variable names.

Names and shapes follow the published checkpoints (docs/FACTS.md Sec. 3): a conv has `W` in HWIO
([k, k, in / groups, out]), no bias; BN has `gamma`, `beta`, `mean/EMA`, `variance/EMA` (Tensorpack's defaults:
momentum 0.9, epsilon 1e-5); the classifier has `linear/W`, `linear/b`. Every variable is created with
`tf.compat.v1.get_variable`, so calling a model twice under `reuse=AUTO_REUSE` (clean forward, attack forward) shares
the weights.

Why not Tensorpack's Conv2D/BatchNorm, which give the same names: here the BN mode (batch or moving statistics) is an
argument, not the tower's training flag, as the attacker runs inference-mode BN inside the training tower; and three
things needed here are not options there: BN folded into the conv weights for attack steps, BN statistics per group of
images (one process doing what several GPUs do), and a compute dtype (bfloat16/float16) unlike the float32 variables.
"""
import tensorflow as tf

from .layout import grouped_conv_kernels

tf1 = tf.compat.v1

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def conv2d(name, x, out_channels, kernel, layout, stride=1, groups=1, initializer=None):
    """SAME-padded conv without bias; `groups` > 1 makes a grouped (ResNeXt) conv."""
    kernel_var = _conv_kernel(name, layout.channels(x), out_channels, kernel, groups, initializer)
    return _convolve(x, kernel_var, layout, stride)


def _conv_kernel(name, in_channels, out_channels, kernel, groups, initializer=None):
    if in_channels % groups or out_channels % groups:
        raise ValueError("{}: channels {} -> {} are not divisible by {} groups".format(
            name, in_channels, out_channels, groups))
    # the ResNet conv init: He normal, scale 2, fan_out (as in Tensorpack's ResNet example)
    he_fan_out = tf1.variance_scaling_initializer(scale=2.0, mode="fan_out", distribution="truncated_normal")
    with tf1.variable_scope(name):
        return tf1.get_variable("W", [kernel, kernel, in_channels // groups, out_channels],
                                initializer=initializer or he_fan_out)


def _convolve(x, kernel, layout, stride):
    """x (any float type) with a float32 kernel, cast to x's type. A grouped conv (kernel input depth < x's channels)
    runs as one conv per group where TF lacks grouped kernels (CPUs without oneDNN): same function, split by channel."""
    kernel = tf.cast(kernel, x.dtype)
    groups = layout.channels(x) // int(kernel.shape[2])
    if groups == 1 or grouped_conv_kernels():
        return tf.nn.conv2d(x, kernel, stride, "SAME", data_format=layout.data_format)
    parts = zip(tf.split(x, groups, axis=layout.channel_axis), tf.split(kernel, groups, axis=3))
    return tf.concat([tf.nn.conv2d(xi, ki, stride, "SAME", data_format=layout.data_format) for xi, ki in parts],
                     axis=layout.channel_axis)


def batch_norm(name, x, options, training, zero_init=False):
    """Batch normalisation; in training with batch statistics (per group of `options.bn_group_size` images, if set) and
    an EMA update attached to the output (Tensorpack's "internal update"), so it runs exactly when this forward pass
    runs, never when BN is built with training=False (as the attacker does)."""
    layout = options.layout
    gamma, beta, moving_mean, moving_var = _bn_variables(name, layout.channels(x), zero_init)
    if not training:
        return _normalize(x, moving_mean, moving_var, gamma, beta, layout)
    if options.bn_group_size:
        return _group_batch_norm(x, options.bn_group_size, moving_mean, moving_var, gamma, beta, layout)
    mean, var = tf.nn.moments(tf.cast(x, tf.float32), [0] + list(layout.spatial_axes))
    return _with_ema_update(_normalize(x, mean, var, gamma, beta, layout), moving_mean, moving_var, mean, var)


def _bn_variables(name, channels, zero_init):
    """(gamma, beta, mean/EMA, variance/EMA) of the BN scope `name`."""
    zeros, ones = tf1.zeros_initializer(), tf1.ones_initializer()
    with tf1.variable_scope(name):
        return (tf1.get_variable("gamma", [channels], initializer=zeros if zero_init else ones),
                tf1.get_variable("beta", [channels], initializer=zeros),
                tf1.get_variable("mean/EMA", [channels], initializer=zeros, trainable=False),
                tf1.get_variable("variance/EMA", [channels], initializer=ones, trainable=False))


def _bn_affine(mean, var, gamma, beta):
    """BN with the given statistics as y = x * scale + shift (float32, per channel)."""
    scale = gamma * tf.math.rsqrt(var + BN_EPSILON)
    return scale, beta - mean * scale


def _with_ema_update(out, moving_mean, moving_var, mean, var):
    with tf.control_dependencies([tf1.assign_sub(moving_mean, (moving_mean - mean) * (1 - BN_MOMENTUM)),
                                  tf1.assign_sub(moving_var, (moving_var - var) * (1 - BN_MOMENTUM))]):
        return tf.identity(out)


def _group_batch_norm(x, group_size, moving_mean, moving_var, gamma, beta, layout):
    """BN with statistics per group of `group_size` images; the EMAs take the groups' average."""
    shape = tf.shape(x)
    with tf.control_dependencies([tf.debugging.assert_equal(
            shape[0] % group_size, 0, message="batch is not a multiple of the BN group size")]):
        grouped = tf.reshape(x, tf.concat([[-1, group_size], shape[1:]], 0))
    axes = [1] + [a + 1 for a in layout.spatial_axes]
    mean, var = tf.nn.moments(tf.cast(grouped, tf.float32), axes, keepdims=True)      # [G, 1, ..C.., 1]
    per_channel = [1, 1, 1, 1, -1] if layout.channels_last else [1, 1, -1, 1, 1]
    scale, shift = _bn_affine(mean, var, tf.reshape(gamma, per_channel), tf.reshape(beta, per_channel))
    out = tf.reshape(grouped * tf.cast(scale, x.dtype) + tf.cast(shift, x.dtype), shape)
    reduce_axes = [a for a in range(5) if a != layout.channel_axis + 1]
    return _with_ema_update(out, moving_mean, moving_var, tf.reduce_mean(mean, reduce_axes),
                            tf.reduce_mean(var, reduce_axes))


def _normalize(x, mean, var, gamma, beta, layout):
    """x * scale + shift, per channel, in x's dtype (statistics are always float32)."""
    scale, shift = _bn_affine(mean, var, gamma, beta)
    shape = [1, 1, 1, -1] if layout.channels_last else [1, -1, 1, 1]
    return x * tf.cast(tf.reshape(scale, shape), x.dtype) + tf.cast(tf.reshape(shift, shape), x.dtype)


def conv_bn(name, x, out_channels, kernel, options, training, stride=1, groups=1, relu=True,
            zero_init=False):
    """conv -> BN (scope `<name>/bn`) -> optional ReLU: Tensorpack's `Conv2D(..., activation=BNReLU)`. With
    `options.fold_batch_norm`, an inference-mode conv -> BN is one conv with the BN scale folded into its weights plus a
    per-channel bias: the same function (up to rounding), one elementwise pass fewer each way, and a Conv2D + BiasAdd
    (+ ReLU) that TF's graph optimizer fuses into one kernel. Batch statistics (training) cannot be folded."""
    if not training and options.fold_batch_norm:
        x = _folded_conv_bn(name, x, out_channels, kernel, options.layout, stride, groups, zero_init)
    else:
        x = conv2d(name, x, out_channels, kernel, options.layout, stride=stride, groups=groups)
        with tf1.variable_scope(name):
            x = batch_norm("bn", x, options, training, zero_init=zero_init)
    return tf.nn.relu(x) if relu else x


def _folded_conv_bn(name, x, out_channels, kernel, layout, stride, groups, zero_init):
    """conv(x, W) * scale + shift computed as conv(x, W * scale) + shift, with the same variables."""
    kernel_var = _conv_kernel(name, layout.channels(x), out_channels, kernel, groups)
    with tf1.variable_scope(name):
        gamma, beta, moving_mean, moving_var = _bn_variables("bn", out_channels, zero_init)
    scale, shift = _bn_affine(moving_mean, moving_var, gamma, beta)
    y = _convolve(x, kernel_var * scale, layout, stride)     # scale runs along W's output axis (HWIO)
    return tf.nn.bias_add(y, tf.cast(shift, y.dtype), data_format=layout.data_format)


def max_pool(x, layout, size=3, stride=2):
    return tf.nn.max_pool2d(x, size, stride, "SAME", data_format=layout.data_format)


def global_avg_pool(x, layout):
    return tf.reduce_mean(x, axis=list(layout.spatial_axes))


def fully_connected(name, x, out_features):
    """The classifier: `linear/W` initialised N(0, 0.01), `linear/b` zero."""
    with tf1.variable_scope(name):
        weights = tf1.get_variable("W", [int(x.shape[-1]), out_features],
                                   initializer=tf1.random_normal_initializer(stddev=0.01))
        bias = tf1.get_variable("b", [out_features], initializer=tf1.zeros_initializer())
    return tf.matmul(x, tf.cast(weights, x.dtype)) + tf.cast(bias, x.dtype)
