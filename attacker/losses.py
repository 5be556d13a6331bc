"""The attack losses, one namespace for every attack and for `--attack-loss`: each is a per-image objective that the
attack *maximises*, `loss(logits, label, target=None)`; untargeted (no target) it grows as the image moves away from
its label, targeted as it moves towards the target.

    ce    cross-entropy: of the label (untargeted), minus that of the target (targeted)
    cw    the CW margin: max_{j != y} z_j - z_y, or z_t - max_{j != t} z_j
    dlr   the difference of logits ratio (APGD, Sec. 4), untargeted or targeted"""
import tensorflow as tf

LOSS_ALIASES = {"xent": "ce"}       # the earlier spelling of PGD's cross-entropy (--attack-loss xent)


def _picked(logits, classes):
    return tf.reduce_sum(logits * tf.one_hot(classes, tf.shape(logits)[1], dtype=logits.dtype), axis=1)


def margin(logits, label):
    """z_y - max_{j != y} z_j: positive while the image is classified as `label`."""
    others = tf.where(tf.one_hot(label, tf.shape(logits)[1]) > 0,
                      tf.fill(tf.shape(logits), tf.constant(-1e30, logits.dtype)), logits)
    return _picked(logits, label) - tf.reduce_max(others, axis=1)


def cross_entropy(logits, label, target=None):
    if target is None:
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=label, logits=logits)
    return -tf.nn.sparse_softmax_cross_entropy_with_logits(labels=target, logits=logits)


def cw_margin(logits, label, target=None):
    return -margin(logits, label) if target is None else margin(logits, target)


def dlr(logits, label, target=None):
    """-(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12), z_pi the logits in decreasing order; targeted:
    -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12). Invariant to shifting and scaling the logits; untargeted
    it is positive once the image is misclassified."""
    ranked = tf.sort(logits, axis=1, direction="DESCENDING")
    if target is None:
        return -margin(logits, label) / (ranked[:, 0] - ranked[:, 2] + 1e-12)
    return -(_picked(logits, label) - _picked(logits, target)) / (
        ranked[:, 0] - (ranked[:, 2] + ranked[:, 3]) / 2.0 + 1e-12)


LOSSES = {"ce": cross_entropy, "cw": cw_margin, "dlr": dlr}
