"""An attack that never finishes (`--import tests.hang_plugin --attack hang`): its graph sleeps
in a Python op, as a stuck collective or a frozen loader would block an evaluation."""
import time
from dataclasses import dataclass

import tensorflow as tf

from attacker import Attack, register_attack, untargeted_result


def sleep_for_an_hour(x):
    time.sleep(3600)
    return x


@register_attack("hang")
@dataclass(frozen=True)
class Hang(Attack):
    def attack(self, image, label, classifier, index=None):
        stuck = tf.ensure_shape(tf.numpy_function(sleep_for_an_hour, [image], tf.float32), image.shape)
        return untargeted_result(stuck, label, classifier)
