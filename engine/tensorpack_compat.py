"""The TF1 names Tensorpack 0.11 still looks up on TensorFlow 2's top-level module.

Tensorpack 0.11 predates TF 2: most of it goes through `tf.compat.v1`, but a few call sites
use the TF1 top-level name directly (HorovodTrainer's broadcast calls `tf.global_variables`).
`install()` supplies exactly those names from `tf.compat.v1`; nothing else is touched and no
installed file is edited.
"""
import tensorflow as tf

MISSING_TF1_NAMES = ("global_variables",)


def install():
    """Idempotent. Returns the names it supplied."""
    supplied = []
    for name in MISSING_TF1_NAMES:
        if not hasattr(tf, name):
            setattr(tf, name, getattr(tf.compat.v1, name))
            supplied.append(name)
    return supplied
