"""The small fixed-weight models whose outputs tests/test_pinned_logits.py pins.

Every variable's value is drawn from a generator seeded by a hash of its name, so the
numbers do not depend on the order in which a refactored backbone creates variables.
"""
import zlib

import numpy as np
import tensorflow as tf

from attacker import PGD, Classifier
from nets import build_spec, logits

tf1 = tf.compat.v1

TINY = dict(blocks=(1, 1, 1, 1), widths=(4, 4, 8, 8), stem="small", stem_width=8, num_classes=7, image_size=12)
PINNED_CONFIGS = {
    "ResNet": ("ResNet", {}),
    "ResNetDenoise": ("ResNetDenoise", {}),
    "ResNeXtDenoiseAll": ("ResNeXtDenoiseAll", dict(cardinality=4, bottleneck_multiplier=2)),
}
for _op in ("nonlocal_gaussian", "nonlocal_gaussian_plain", "nonlocal_dot", "nonlocal_dot_embedded",
            "bilateral_gaussian", "bilateral_gaussian_plain", "bilateral_dot", "mean", "median", "null"):
    PINNED_CONFIGS["ResNet+" + _op] = ("ResNet", dict(denoise_op=_op, denoise_placement="block"))


def value_for(name, shape):
    """Well-conditioned random values (weights ~ 1/sqrt(fan in), BN near the identity), so that
    float32 rounding stays far below the test's tolerance."""
    rng = np.random.RandomState(zlib.crc32(name.encode()))
    if name.endswith("conv/bn/gamma") and ("non_local" in name or "_denoise" in name):
        value = rng.normal(0, 0.02, shape)       # a young denoising block (it starts at zero): the
                                                 # dot product's cubic growth must not overflow
    elif name.endswith("/W"):
        value = rng.normal(0, 1.0 / np.sqrt(np.prod(shape[:-1])), shape)
    elif name.endswith(("gamma", "variance/EMA")):
        value = 1.0 + np.abs(rng.normal(0, 0.2, shape))
    else:
        value = rng.normal(0, 0.2, shape)
    return value.astype(np.float32)


def pinned_images(count=3, size=TINY["image_size"]):
    return np.random.RandomState(0).uniform(0, 255, [count, size, size, 3]).astype(np.float32)


def pinned_outputs(name):
    """{"logits": inference logits, "train_logits": training-mode logits (batch statistics),
    "adversarial": PGD-3 from the clean image towards label + 1} for config `name`."""
    arch, overrides = PINNED_CONFIGS[name]
    spec = build_spec(arch, 50, **{**TINY, **overrides})
    images = pinned_images()
    labels = np.arange(len(images), dtype=np.int32) % spec.num_classes
    with tf.Graph().as_default():
        x = tf1.placeholder(tf.float32, images.shape)
        y = tf1.placeholder(tf.int32, labels.shape)

        model = Classifier(lambda image: logits(image, spec, training=False), spec.num_classes)
        fetches = dict(logits=model.logits(x))
        attack = PGD(3, epsilon=16, target_offset=1, prob_start_from_clean=1.0)
        fetches["adversarial"] = attack.perturb(x, y, model)[0]
        train_logits = logits(x, spec, training=True)      # moves the BN averages: run last
        config = tf1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)
        with tf1.Session(config=config) as session:
            for var in tf1.global_variables():
                var.load(value_for(var.op.name, var.shape.as_list()), session)
            out = session.run(fetches, {x: images, y: labels})
            out["train_logits"] = session.run(train_logits, {x: images})
            return out
