"""AutoAttack (Croce & Hein, ICML 2020, Sec. 5): several attacks in a fixed order, each run only
on the images that every earlier one left correctly classified (attacker/protocol.py); an image
counts as robust only if it survives them all.

The standard L-inf version runs APGD-CE, APGD-T, FAB-T and Square; FAB-T is not implemented here, so this is
APGD-CE + APGD-T + Square, named so wherever printed. `stages()` lists the clean images and the attacks, so that an
evaluation reports each one (`main.py --eval`); `attack()` runs the same protocol in one graph (during training)."""
from dataclasses import dataclass
from typing import Optional

from .apgd import APGDCE, APGDT
from .base import (Attack, Clean, budget_setting, count_setting, image_indices, register_attack, seed_setting,
                   untargeted_result)
from .protocol import on_still_robust, stage_run, start
from .square import Square


@register_attack("autoattack")
@dataclass(frozen=True)
class AutoAttack(Attack):
    """APGD-CE, APGD-T, then Square, with AutoAttack's standard settings; epsilon on the 0..255 scale."""
    epsilon: float = budget_setting()
    iterations: int = count_setting(100)
    target_classes: int = count_setting(9)
    queries: int = count_setting(5000)
    seed: Optional[int] = seed_setting()

    @property
    def label(self):
        return "APGD-CE + APGD-T + Square"

    def stages(self):
        """The clean images, then the attacks in their order, each with its own seed (no two share draws)."""
        seed = None if self.seed is None else self.seed * 3
        return [Clean(), APGDCE(iterations=self.iterations, epsilon=self.epsilon, seed=seed),
                APGDT(iterations=self.iterations, epsilon=self.epsilon, target_classes=self.target_classes,
                      seed=None if seed is None else seed + 1),
                Square(queries=self.queries, epsilon=self.epsilon, seed=None if seed is None else seed + 2)]

    def attack(self, image, label, classifier, index=None):
        staged = start(image, label, image_indices(label, index))
        for stage in self.stages():
            staged = on_still_robust(stage_run(stage, classifier), staged)
        return untargeted_result(staged.adversarial, label, classifier)
