"""FGSM with a random start (Wong, Rice & Kolter, "Fast is better than free: revisiting adversarial training",
ICLR 2020, Algorithm 3): "delta = Uniform(-epsilon, epsilon); delta = delta + alpha * sign(grad); delta =
max(min(delta, epsilon), -epsilon)", alpha = 1.25 epsilon, untargeted, on the cross-entropy. One forward-backward
pass per image: the cheap training attack. Without the random start (plain FGSM from the clean image) and with a
large step it is the setting where training overfits catastrophically (Sec. 4 of that paper; engine/guard.py)."""
import dataclasses
from dataclasses import dataclass
from typing import Optional

from ranges import setting

from .base import Attack, budget_setting, register_attack, seed_setting
from .pgd import PGD


@register_attack("fgsm-rs")
@dataclass(frozen=True)
class FGSMRS(Attack):
    """One signed-gradient step of `step_ratio` x epsilon from a uniform start in the epsilon ball (or from the clean
    image without `random_start`), projected onto the ball and [0, 255]; epsilon on the 0..255 scale."""
    fast_steps = True               # a signed step decides nothing; the outcome uses the exact model
    epsilon: float = budget_setting()
    # alpha / epsilon (Wong et al.: 1.25; below 1, a step that cannot cross the ball, as after a rollback); from 2 on,
    # every coordinate with a non-zero gradient ends on the ball's face, epsilon * sign(gradient at the start): the
    # start then only moves where the gradient is taken
    step_ratio: float = setting(1.25, minimum=0.0, maximum=4.0, exclusive_minimum=True)
    random_start: bool = True
    seed: Optional[int] = seed_setting()

    @property
    def label(self):
        return "FGSM-RS" if self.random_start else "FGSM"

    def smaller_step(self, scale):
        return dataclasses.replace(self, step_ratio=self.step_ratio * scale)

    def as_pgd(self):
        """The same attack as one untargeted PGD step (a clean start is PGD's start from the clean image)."""
        return PGD(iterations=1, epsilon=self.epsilon, step_size=min(self.step_ratio * self.epsilon, 255.0),
                   loss="ce", targeted=False, prob_start_from_clean=0.0 if self.random_start else 1.0, seed=self.seed)

    def attack(self, image, label, classifier, index=None):
        return self.as_pgd().attack(image, label, classifier, index)

    def perturb(self, image, label, classifier, index=None):
        return self.as_pgd().perturb(image, label, classifier, index)
