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
