"""AutoAttack (Croce & Hein, ICML 2020, Sec. 5), its standard L-inf version: APGD-CE, APGD-T, FAB-T and Square in
that order, each run only on the images that every earlier one left correctly classified (attacker/protocol.py); an
image counts as robust only if it survives them all. Settings as the authors' code runs it (docs/FACTS.md): 100
iterations, 9 target classes, 5,000 Square queries, one run of each.

`stages()` lists the clean images and the attacks, so that an evaluation reports each one (`main.py --eval`);
`attack()` runs the same protocol in one graph (during training)."""
from dataclasses import dataclass
from typing import Optional

from .apgd import APGDCE, APGDT
from .base import (Attack, Clean, budget_setting, count_setting, image_indices, register_attack, seed_setting,
                   untargeted_result)
from .fab import FABT
from .protocol import on_still_robust, stage_run, start
from .square import Square


@register_attack("autoattack")
@dataclass(frozen=True)
class AutoAttack(Attack):
    """APGD-CE, APGD-T, FAB-T, then Square, with AutoAttack's standard settings; epsilon on the 0..255 scale."""
    epsilon: float = budget_setting()
    iterations: int = count_setting(100)
    target_classes: int = count_setting(9)
    queries: int = count_setting(5000)
    seed: Optional[int] = seed_setting()

    @property
    def label(self):
        return "AutoAttack (standard)"

    def stages(self):
        """The clean images, then the attacks in their order; each random one with its own seed (no two share
        draws); FAB-T draws nothing (no random start in the standard version)."""
        seed = None if self.seed is None else self.seed * 3
        return [Clean(), APGDCE(iterations=self.iterations, epsilon=self.epsilon, seed=seed),
                APGDT(iterations=self.iterations, epsilon=self.epsilon, target_classes=self.target_classes,
                      seed=None if seed is None else seed + 1),
                FABT(iterations=self.iterations, epsilon=self.epsilon, target_classes=self.target_classes),
                Square(queries=self.queries, epsilon=self.epsilon, seed=None if seed is None else seed + 2)]

    def attack(self, image, label, classifier, index=None):
        staged = start(image, label, image_indices(label, index))
        for stage in self.stages():
            staged = on_still_robust(stage_run(stage, classifier), staged)
        return untargeted_result(staged.adversarial, label, classifier)
