"""The attacker interface and the no-op attacker.

An attacker takes (image, label, model_fn) and returns adversarial images; it never knows
which network it attacks. `image` is float32 [B, H, W, 3] in [0, 255]; `model_fn(image)`
returns float32 logits with BN in inference mode (its moving statistics are not updated).
"""
from typing import NamedTuple

import tensorflow as tf


class AttackResult(NamedTuple):
    """What evaluation needs. With restarts, `correct_top1`/`correct_top5` are true only if the
    image is classified correctly under every restart, `hit` if any restart reached the target;
    `adversarial` is, per image, a restart that hit the target, else one that fooled the model,
    else the last one."""
    adversarial: tf.Tensor
    target: tf.Tensor
    correct_top1: tf.Tensor
    correct_top5: tf.Tensor
    hit: tf.Tensor


def outcome(logits, label, target):
    """(correct top-1, correct top-5, prediction == target) per image, as booleans."""
    correct_top1 = tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), label)
    correct_top5 = tf.nn.in_top_k(predictions=logits, targets=label, k=min(5, int(logits.shape[-1])))
    hit = tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), target)
    return correct_top1, correct_top5, hit


class NoOpAttacker:
    """Clean images: `--attack-iter 0`. The target is the label itself, so success counts nothing."""
    iterations = 0

    def perturb(self, image, label, model_fn):
        del model_fn
        return image, label

    def attack(self, image, label, model_fn):
        correct_top1, correct_top5, _ = outcome(model_fn(image), label, label)
        never = tf.zeros_like(correct_top1)
        return AttackResult(image, label, correct_top1, correct_top5, never)
