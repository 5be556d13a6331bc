"""Projected gradient descent under an L-inf budget, built in the graph as one tf.while_loop.

Feature Denoising, Sec. 6.1 (threat model): "targeted attacks ... the target class is
uniformly sampled from the incorrect classes"; the PGD attacker "initializes the adversarial
image by random points in the allowed epsilon-cube, ... step size alpha = 1, except for
10-iteration attacks where alpha = epsilon / 10 = 1.6". Training (Sec. 5): "a 30-iteration
PGD ... step size 1", and "we use the adversarial images only"; 20% of the batches start
from the clean image (docs/FACTS.md Sec. 4-5)."""
import dataclasses
from dataclasses import dataclass
from typing import Optional

import tensorflow as tf

from ranges import setting

from .base import (Attack, AttackResult, budget_setting, count_setting, epsilon_ball, register_attack, seed_setting,
                   targeted_result, untargeted_result)
from .losses import LOSSES
from .randomness import base_seed, uniform_per_image


def step_size_for(epsilon, iterations, step_size=1.0):
    """The per-step size: the given step, but at least epsilon / iterations (so the ball can be crossed)."""
    return max(step_size, epsilon / float(iterations)) if iterations > 0 else 0.0


def random_wrong_target(label, num_classes, seed=None):
    """(label + U{1..classes-1}) mod classes: uniform over the wrong classes, never the label."""
    offset = tf.random.uniform(tf.shape(label), 1, num_classes, dtype=tf.int32, seed=seed)
    return (label + offset) % num_classes


@register_attack("pgd")
@dataclass(frozen=True)
class PGD(Attack):
    """L-inf PGD, epsilon and step size on the 0..255 scale; by default the paper's evaluation attack (targeted, CE)."""
    fast_steps = True               # signed gradient steps decide nothing; the outcome uses the exact model
    iterations: int = count_setting(10)
    epsilon: float = budget_setting()
    step_size: float = budget_setting(1.0)
    prob_start_from_clean: float = setting(0.0, minimum=0.0, maximum=1.0)
    loss: str = setting("ce", choices=tuple(LOSSES))
    targeted: bool = True
    restarts: int = count_setting(1)
    target_offset: Optional[int] = count_setting(None)   # fixed target (label + offset) mod classes, not random
    seed: Optional[int] = seed_setting()

    @property
    def label(self):
        return "PGD-{}".format(self.iterations)

    @property
    def step(self):
        return step_size_for(self.epsilon, self.iterations, self.step_size)

    def smaller_step(self, scale):
        smaller = dataclasses.replace(self, step_size=self.step * scale)
        if scale < 1 and smaller.step >= self.step:
            raise ValueError("{}'s step of {:g} is already the least that crosses the epsilon ball in {} iterations "
                             "(epsilon / iterations); it cannot be made smaller for --on-collapse rollback".format(
                                 self.label, self.step, self.iterations))
        return smaller

    def _seed(self, k):
        return None if self.seed is None else self.seed + k

    def choose_target(self, label, num_classes, index=None, seed=None):
        """The label (untargeted), label + target_offset, or a random wrong class: per image from (seed, index) when the
        images' indices are given, else from the batch's draw."""
        if not self.targeted:
            return label
        if self.target_offset is not None:
            if self.target_offset >= num_classes:
                raise ValueError("target offset must be in 1..{}, got {}".format(num_classes - 1, self.target_offset))
            return (label + self.target_offset) % num_classes
        if index is None:
            return random_wrong_target(label, num_classes, self._seed(0))
        return (label + uniform_per_image(index, seed, 0, [], 1, num_classes, tf.int32)) % num_classes

    def _start(self, image, restart, index=None, seed=None):
        """Uniform noise in the epsilon ball (clipped to [0, 255]), per image from (seed, index, restart) when the
        indices are given; or, with probability prob_start_from_clean per batch, the clean image."""
        if index is None:
            noise = tf.random.uniform(tf.shape(image), -self.epsilon, self.epsilon, seed=self._seed(1 + 2 * restart))
        else:
            noise = uniform_per_image(index, seed, 1 + restart, image.shape[1:], -self.epsilon, self.epsilon)
        noisy = tf.clip_by_value(image + noise, 0.0, 255.0)
        if self.prob_start_from_clean <= 0:
            return noisy
        from_clean = tf.random.uniform([], seed=self._seed(2 + 2 * restart)) < self.prob_start_from_clean
        return tf.cond(from_clean, lambda: image, lambda: noisy)

    def _run(self, image, label, target, classifier, start):
        """The PGD iterations from `start`, each a signed step up the loss: the adversarial image (a constant)."""
        lower, upper = epsilon_ball(image, self.epsilon)
        objective = LOSSES[self.loss]

        def one_step(i, adv):
            loss = objective(classifier.step(adv), label, target if self.targeted else None)
            grad, = tf.gradients(tf.reduce_sum(loss) * classifier.gradient_scale, adv)
            return i + 1, tf.clip_by_value(adv + self.step * tf.sign(grad), lower, upper)

        def iterate(start):
            return tf.while_loop(lambda i, _: i < self.iterations, one_step, [tf.constant(0), start],
                                 back_prop=False, parallel_iterations=1)[1]

        return tf.stop_gradient(classifier.run_loop(iterate, [start]))

    def perturb(self, image, label, classifier, index=None, restart=0):
        """One run from the random start of restart number `restart`: (adversarial image, target)."""
        seed = None if index is None else base_seed(self.seed)
        target = self.choose_target(label, classifier.num_classes, index, seed)
        return self._run(image, label, target, classifier, self._start(image, restart, index, seed)), target

    def attack(self, image, label, classifier, index=None):
        """All restarts, aggregated per image: correct only if correct under every restart, a success if any restart
        succeeded; the image kept is one that succeeded, else one that fooled the model, else the last one."""
        seed = base_seed(self.seed)
        target = self.choose_target(label, classifier.num_classes, index, seed)
        judge = (lambda adv: targeted_result(adv, label, target, classifier)) if self.targeted else \
            (lambda adv: untargeted_result(adv, label, classifier))
        results = (judge(self._run(image, label, target, classifier, self._start(image, restart, index, seed)))
                   for restart in range(self.restarts))          # built lazily: one restart after another
        best = next(results)
        for result in results:
            # keep the earlier image only where it is at least as strong: it succeeded, or it fooled and this did not
            keep_old = best.success | (~best.correct_top1 & ~result.success)
            adv = tf.where(tf.reshape(keep_old, [-1, 1, 1, 1]), best.adversarial, result.adversarial)
            best = AttackResult(adv, target, best.correct_top1 & result.correct_top1,
                                best.correct_top5 & result.correct_top5, best.success | result.success)
        return best
