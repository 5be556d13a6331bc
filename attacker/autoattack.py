"""The AutoAttack protocol (Croce & Hein, ICML 2020, Sec. 5): several attacks in a fixed
order, each run only on the images that every earlier one left correctly classified; an image
counts as robust only if it survives them all.

The standard L-inf version runs APGD-CE, APGD-T, FAB-T and Square. FAB-T is not implemented
here, so this composite is APGD-CE + APGD-T + Square and is named so wherever it is printed.
`components()` lists the attacks, so that an evaluation can report each one (`main.py --eval`
does: robust accuracy after it, images attacked, time); `attack()` runs the whole protocol in
one graph (what training-time evaluation uses). Both give the same outcome per image.
"""
from dataclasses import dataclass
from typing import Optional

import tensorflow as tf

from .apgd import APGDCE, APGDT
from .base import (Attack, AttackResult, budget_setting, count_setting, outcome, register_attack, seed_setting,
                   unless_empty)
from .square import Square


@register_attack("autoattack")
@dataclass(frozen=True)
class AutoAttack(Attack):
    """APGD-CE, then APGD-T, then Square, with AutoAttack's standard settings (100 iterations,
    one restart, 9 target classes, 5000 queries); epsilon on the 0..255 scale."""
    epsilon: float = budget_setting(16.0)
    iterations: int = count_setting(100)
    target_classes: int = count_setting(9)
    queries: int = count_setting(5000)
    seed: Optional[int] = seed_setting()

    @property
    def label(self):
        return "APGD-CE + APGD-T + Square"

    def components(self):
        """The attacks in their order, each with its own seed (draws of one never repeat another's)."""
        seed = None if self.seed is None else self.seed * 3
        return [APGDCE(iterations=self.iterations, epsilon=self.epsilon, seed=seed),
                APGDT(iterations=self.iterations, epsilon=self.epsilon, target_classes=self.target_classes,
                      seed=None if seed is None else seed + 1),
                Square(queries=self.queries, epsilon=self.epsilon, seed=None if seed is None else seed + 2)]

    def attack(self, image, label, model, index=None):
        index = tf.range(tf.shape(label, out_type=tf.int64)[0]) if index is None else tf.cast(index, tf.int64)
        adversarial = image
        robust = outcome(model.logits(image), label, label)[0]
        for component in self.components():
            todo = tf.where(robust)[:, 0]
            part = tf.gather(image, todo), tf.gather(label, todo), tf.gather(index, todo)

            def run(component=component, part=part):
                result = component.attack(part[0], part[1], model, part[2])
                return result.adversarial, result.correct_top1
            found, still_robust = unless_empty(tf.size(todo), run, lambda part=part: (
                part[0], tf.zeros_like(part[1], tf.bool)))
            adversarial = tf.tensor_scatter_nd_update(adversarial, todo[:, None], found)
            robust = tf.tensor_scatter_nd_update(robust, todo[:, None], still_robust)
        adversarial = tf.stop_gradient(adversarial)
        correct_top1, correct_top5, _ = outcome(model.logits(adversarial), label, label)
        return AttackResult(adversarial, label, correct_top1, correct_top5, ~correct_top1)
