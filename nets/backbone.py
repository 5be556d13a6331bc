"""The ResNet / ResNeXt backbone with denoising blocks placed where the paper studied them.

Feature Denoising, Sec. 5: "ResNet-152 ... we add 4 denoising blocks ... after the last residual block of res2, res3,
res4 and res5, respectively." CAAD 2018's ResNeXtDenoiseAll adds one after every residual block (docs/FACTS.md Sec. 2).

`network()` returns the logits and the named intermediate outputs (each group's output and each denoising block's
input and output), for tools that look inside the model.
"""
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, Tuple

import tensorflow as tf

from .denoise import denoising_block
from .layers import conv_bn, fully_connected, global_avg_pool, max_pool
from .options import BuildOptions
from .registry import Registry

tf1 = tf.compat.v1

BACKBONES = Registry("backbone")


@dataclass
class NetworkOutputs:
    logits: tf.Tensor = None                                       # float32 [B, classes]
    endpoints: Dict[str, tf.Tensor] = field(default_factory=OrderedDict)   # in the model's layout
    denoising_blocks: Dict[str, Tuple[tf.Tensor, tf.Tensor]] = field(default_factory=OrderedDict)


def preprocess(image, dtype=tf.float32):
    """uint8-range BGR [0, 255] -> [-1, 1], as x * 2/255 - 1 (no mean/std normalisation)."""
    return tf.cast(tf.cast(image, tf.float32) * (2.0 / 255.0) - 1.0, dtype)


def bottleneck(x, spec, width, stride, options, training):
    """1x1 -> 3x3 (stride, groups) -> 1x1 with the last BN's gamma at zero; projection shortcut (1x1 conv + BN) when
    the shape changes; ReLU after the sum."""
    out_channels = width * spec.expansion
    inner = width * spec.bottleneck_multiplier
    shortcut = x
    y = conv_bn("conv1", x, inner, 1, options, training)
    y = conv_bn("conv2", y, inner, 3, options, training, stride=stride, groups=spec.cardinality)
    y = conv_bn("conv3", y, out_channels, 1, options, training, relu=False, zero_init=True)
    if options.layout.channels(x) != out_channels or stride != 1:
        shortcut = conv_bn("convshortcut", x, out_channels, 1, options, training, stride=stride, relu=False)
    return tf.nn.relu(y + shortcut)


def denoise(scope, x, spec, options, training, outputs, path):
    """The denoising block in variable scope `scope`, recorded under `path` (its full name)."""
    y = denoising_block(scope, x, spec.denoise_op, options, training, spec.denoise_window)
    outputs.denoising_blocks[path] = (x, y)
    return y


def residual_group(name, x, spec, group_index, options, training, outputs):
    stride = spec.group_strides[group_index]
    with tf1.variable_scope(name):
        for i in range(spec.blocks[group_index]):
            with tf1.variable_scope("block{}".format(i)):
                x = bottleneck(x, spec, spec.widths[group_index], stride if i == 0 else 1, options, training)
                if spec.denoise_placement == "block":
                    x = denoise("non_local", x, spec, options, training, outputs,
                                path="{}/block{}/non_local".format(name, i))
    return x


def stem(x, spec, options, training):
    """ImageNet stem: 7x7/2 conv and 3x3/2 max pool; the small stem (small images) a 3x3/1 conv."""
    if spec.stem == "imagenet":
        return max_pool(conv_bn("conv0", x, spec.stem_width, 7, options, training, stride=2), options.layout)
    return conv_bn("conv0", x, spec.stem_width, 3, options, training)


@BACKBONES.register("resnet")
def resnet_backbone(x, spec, options, training, outputs):
    """Stem, residual groups (each then a denoising block with group placement), global average pool: [B, channels]."""
    x = outputs.endpoints["stem"] = stem(x, spec, options, training)
    for k in range(len(spec.blocks)):
        x = residual_group("group{}".format(k), x, spec, k, options, training, outputs)
        if spec.denoise_placement == "group":
            name = "group{}_denoise".format(k)
            x = denoise(name, x, spec, options, training, outputs, path=name)
        outputs.endpoints["group{}".format(k)] = x
    return global_avg_pool(x, options.layout)


def network(image, spec, training, options=BuildOptions()):
    """image: float [B, H, W, 3] BGR in [0, 255] (always NHWC, as decoded) -> NetworkOutputs. Variables are created or
    reused under the current variable scope (AUTO_REUSE), so the attacker's forward passes (BN in inference mode) and
    the training pass share weights; they are float32 whatever `options.compute_dtype`; the logits are float32."""
    outputs = NetworkOutputs()
    with tf1.variable_scope(tf1.get_variable_scope(), reuse=tf1.AUTO_REUSE):
        x = options.layout.from_nhwc(preprocess(image, options.dtype))
        features = outputs.endpoints["features"] = BACKBONES.get(spec.backbone)(x, spec, options, training, outputs)
        outputs.logits = tf.cast(fully_connected("linear", features, spec.num_classes), tf.float32)
    return outputs


def logits(image, spec, training, options=BuildOptions()):
    """float32 logits [B, classes] of `network()`."""
    return network(image, spec, training, options).logits
