"""The ResNet / ResNeXt backbone with denoising blocks placed where the paper studied them.

Feature Denoising, Sec. 5: "ResNet-152 ... we add 4 denoising blocks ... after the last
residual block of res2, res3, res4 and res5, respectively." The CAAD 2018 entry
(ResNeXtDenoiseAll) puts a block after every residual block.
"""
import tensorflow as tf

from .denoise import denoising_block
from .layers import batch_norm_groups, conv_bn, fully_connected, global_avg_pool, max_pool

tf1 = tf.compat.v1


def preprocess(image, dtype=tf.float32):
    """uint8-range BGR [0, 255] -> [-1, 1], as x * 2/255 - 1 (no mean/std normalisation)."""
    return tf.cast(tf.cast(image, tf.float32) * (2.0 / 255.0) - 1.0, dtype)


def bottleneck(x, spec, width, stride, layout, training):
    """1x1 -> 3x3 (stride, groups) -> 1x1 with the last BN's gamma at zero; projection
    shortcut (1x1 conv + BN) when the shape changes; ReLU after the sum."""
    out_channels = width * spec.expansion
    inner = width * spec.bottleneck_multiplier
    shortcut = x
    y = conv_bn("conv1", x, inner, 1, layout, training)
    y = conv_bn("conv2", y, inner, 3, layout, training, stride=stride, groups=spec.cardinality)
    y = conv_bn("conv3", y, out_channels, 1, layout, training, relu=False, zero_init=True)
    if layout.channels(x) != out_channels or stride != 1:
        shortcut = conv_bn("convshortcut", x, out_channels, 1, layout, training, stride=stride, relu=False)
    return tf.nn.relu(y + shortcut)


def residual_group(name, x, spec, group_index, layout, training):
    stride = spec.group_strides[group_index]
    with tf1.variable_scope(name):
        for i in range(spec.blocks[group_index]):
            with tf1.variable_scope("block{}".format(i)):
                x = bottleneck(x, spec, spec.widths[group_index], stride if i == 0 else 1, layout, training)
                if spec.denoise_placement == "block":
                    x = denoising_block("non_local", x, spec.denoise_op, layout, training, spec.denoise_window)
    return x


def stem(x, spec, layout, training):
    """ImageNet stem: 7x7/2 conv and 3x3/2 max pool; the small stem (small images) a 3x3/1 conv."""
    if spec.stem == "imagenet":
        x = conv_bn("conv0", x, spec.stem_width, 7, layout, training, stride=2)
        return max_pool(x, layout)
    return conv_bn("conv0", x, spec.stem_width, 3, layout, training)


def logits(image, spec, layout, training, dtype=tf.float32):
    """image: float [B, H, W, 3] BGR in [0, 255] (always NHWC, as decoded) -> float32 logits [B, classes].

    `dtype` is the compute type (float16/bfloat16 for the fast attack path); variables and
    BN statistics stay float32.
    Variables are created or reused under the current variable scope (AUTO_REUSE), so the
    attacker's forward pass (BN in inference mode) and the training pass share weights.
    """
    with tf1.variable_scope(tf1.get_variable_scope(), reuse=tf1.AUTO_REUSE), batch_norm_groups(spec.bn_group_size):
        x = layout.from_nhwc(preprocess(image, dtype))
        x = stem(x, spec, layout, training)
        for k in range(len(spec.blocks)):
            x = residual_group("group{}".format(k), x, spec, k, layout, training)
            if spec.denoise_placement == "group":
                x = denoising_block("group{}_denoise".format(k), x, spec.denoise_op, layout, training,
                                    spec.denoise_window)
        features = global_avg_pool(x, layout)
        return tf.cast(fully_connected("linear", features, spec.num_classes), tf.float32)
