"""Per-image losses that an attack *minimises*."""
import tensorflow as tf

LOSSES = ("xent", "cw")


def attack_loss(logits, label, target, loss, targeted):
    """targeted: cross-entropy to the target, or the CW margin max_{j != t} z_j - z_t;
    untargeted: minus the cross-entropy of the label, or z_y - max_{j != y} z_j."""
    aim = target if targeted else label
    if loss == "xent":
        xent = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=aim, logits=logits)
        return xent if targeted else -xent
    aim_mask = tf.one_hot(aim, tf.shape(logits)[1], on_value=True, off_value=False, dtype=tf.bool)
    aim_logit = tf.reduce_max(tf.where(aim_mask, logits, tf.fill(tf.shape(logits), -1e30)), axis=1)
    best_other = tf.reduce_max(tf.where(aim_mask, tf.fill(tf.shape(logits), -1e30), logits), axis=1)
    margin = best_other - aim_logit
    return margin if targeted else -margin


def cross_entropy(logits, label):
    """Per-image cross-entropy of the label (APGD-CE maximises it)."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=label, logits=logits)


def _picked(logits, classes):
    return tf.reduce_sum(logits * tf.one_hot(classes, tf.shape(logits)[1], dtype=logits.dtype), axis=1)


def margin(logits, label):
    """z_y - max_{j != y} z_j: positive while the image is classified correctly."""
    others = tf.where(tf.one_hot(label, tf.shape(logits)[1]) > 0,
                      tf.fill(tf.shape(logits), tf.constant(-1e30, logits.dtype)), logits)
    return _picked(logits, label) - tf.reduce_max(others, axis=1)


def dlr_loss(logits, label):
    """Difference of logits ratio (APGD, Sec. 4), to maximise: -(z_y - max_{j != y} z_j) /
    (z_pi1 - z_pi3 + 1e-12), z_pi the logits sorted in decreasing order. Invariant to shifting
    and scaling the logits; positive once the image is misclassified."""
    ranked = tf.sort(logits, axis=1, direction="DESCENDING")
    return -margin(logits, label) / (ranked[:, 0] - ranked[:, 2] + 1e-12)


def targeted_dlr_loss(logits, label, target):
    """Targeted DLR (APGD, Sec. 4), to maximise: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)."""
    ranked = tf.sort(logits, axis=1, direction="DESCENDING")
    return -(_picked(logits, label) - _picked(logits, target)) / (
        ranked[:, 0] - (ranked[:, 2] + ranked[:, 3]) / 2.0 + 1e-12)
