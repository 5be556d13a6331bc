"""Auto-PGD (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", ICML 2020, Sec. 3 and Algorithm 1), L-inf, in the graph.

Per image: the step starts at 2 epsilon; after the first plain step each step mixes the gradient step with the
previous move (momentum 0.75); at the checkpoints w_j (Sec. 3.2) the step is halved, and the run restarts from the
best point, when since the last checkpoint at most rho = 75% of the steps raised the loss (Condition 1), or when
neither the step nor the best loss changed (Condition 2). Where the paper and the authors' code differ, this follows
the code, which made RobustBench's numbers (docs/FACTS.md, "APGD: paper and code"): the checkpoints, "at most" (the
paper: fewer than), the first window's first step compared with 0 (the code's zero-filled buffer), and Condition 2
not tested at the first checkpoint. Only images the exact model classifies correctly are attacked; an image is broken
as soon as any iterate is misclassified (it keeps that iterate, else the best one); later runs (restarts, APGD-T's
targets) attack only the robust ones."""
from dataclasses import dataclass
from typing import NamedTuple, Optional

import tensorflow as tf

from ranges import setting

from .base import Attack, budget_setting, count_setting, epsilon_ball, register_attack, seed_setting
from .losses import LOSSES
from .protocol import attack_in_turn, ranked_class, wrong_class_ranks
from .randomness import base_seed, uniform_per_image

MOMENTUM = 0.75
RHO = 0.75


def checkpoints(iterations):
    """The checkpoints w_j as the authors' code places them (docs/FACTS.md, "APGD: paper and code"): a first
    interval of max(floor(0.22 n), 1) iterations, each next one shorter by max(floor(0.03 n), 1) down to
    max(floor(0.06 n), 1), repeated while it fits in n. The paper's w_j = ceil(p_j n) (Sec. 3.2) give the same
    points when 0.22 n, 0.03 n and 0.06 n are whole numbers (n = 100: 22, 41, 57, 70, 80, 87, 93, 99)."""
    length, shrink, shortest = (max(int(f * iterations), 1) for f in (0.22, 0.03, 0.06))
    marks = []
    while (marks[-1] if marks else 0) + length <= iterations:
        marks.append((marks[-1] if marks else 0) + length)
        length = max(length - shrink, shortest)
    return marks


def random_start(image, epsilon, index, seed, stream):
    """The authors' L-inf start: x + epsilon * t / max|t|, t uniform in [-1, 1] per pixel (one pixel of each image
    lands on the ball's surface), clipped to [0, 255]."""
    t = uniform_per_image(index, seed, stream, image.shape[1:], -1.0, 1.0)
    scale = tf.reduce_max(tf.abs(t), axis=[1, 2, 3], keepdims=True)
    return tf.clip_by_value(image + epsilon * t / (scale + 1e-12), 0.0, 255.0)


class Iterate(NamedTuple):
    """APGD's loop state, per image where it is a vector."""
    k: tf.Tensor                # iterations done
    x_prev: tf.Tensor           # the previous iterate (for the momentum)
    x: tf.Tensor
    grad: tf.Tensor
    loss: tf.Tensor
    eta: tf.Tensor              # step size
    x_best: tf.Tensor           # the best point so far, its gradient and loss
    grad_best: tf.Tensor
    loss_best: tf.Tensor
    increases: tf.Tensor        # steps that raised the loss since the last checkpoint
    best_at_mark: tf.Tensor     # the best loss at the last checkpoint
    halved_before: tf.Tensor    # whether the step was halved at the last checkpoint (true at the start, as in the code)
    x_broken: tf.Tensor         # the last misclassified iterate
    broken: tf.Tensor           # whether some iterate was misclassified


@dataclass(frozen=True)
class APGD(Attack):
    """Untargeted APGD maximising `loss` (attacker.losses.LOSSES); epsilon on the 0..255 scale."""
    iterations: int = count_setting(100)
    epsilon: float = budget_setting()
    loss: str = setting("ce", choices=tuple(LOSSES))
    restarts: int = count_setting(1)
    seed: Optional[int] = seed_setting()
    rho: float = setting(RHO, minimum=0.0, maximum=1.0)

    @property
    def label(self):
        return "APGD-{}-{}".format(self.loss.upper(), self.iterations)

    def target_ranks(self, num_classes):
        """Per run, the rank of its target among the clean image's logits (None: untargeted)."""
        return [None] * self.restarts

    def attack(self, image, label, classifier, index=None):
        seed = base_seed(self.seed)
        return attack_in_turn([lambda *batch, run=run, rank=rank: self._run(*batch, classifier, seed, run, rank)
                               for run, rank in enumerate(self.target_ranks(classifier.num_classes))],
                              image, label, index, classifier)

    def _run(self, image, label, index, classifier, seed, run, rank):
        """One APGD run: (kept image, whether no iterate was misclassified) per image."""
        lower, upper = epsilon_ball(image, self.epsilon)
        target = None if rank is None else ranked_class(image, classifier, rank)
        marks = checkpoints(self.iterations)
        gaps = {w - 1: w - previous for previous, w in zip([0] + marks, marks)}
        since_last = [gaps.get(k, 0) for k in range(self.iterations)]     # at a checkpoint: iterations since the last

        def evaluate(x):
            logits = classifier.logits(x)       # the exact model: the loss and "misclassified" are decisions
            loss = LOSSES[self.loss](logits, label, target)
            grad, = tf.gradients(tf.reduce_sum(loss), x)
            wrong = tf.not_equal(tf.argmax(logits, 1, output_type=tf.int32), label)
            return loss, grad, wrong

        def per_image(v):
            return tf.reshape(v, [-1, 1, 1, 1])

        def first_comparison(loss):
            """What the code compares f(x1) with: its loss buffer's last slot, 0 until the run's end (f(x1) itself
            when the run is one iteration long)."""
            return loss if self.iterations == 1 else tf.zeros_like(loss)

        def step(s):
            mix = tf.where(s.k > 0, MOMENTUM, 1.0)
            z = tf.clip_by_value(s.x + per_image(s.eta) * tf.sign(s.grad), lower, upper)
            x_new = tf.clip_by_value(s.x + mix * (z - s.x) + (1.0 - mix) * (s.x - s.x_prev), lower, upper)
            loss_new, grad_new, wrong = evaluate(x_new)
            before = tf.where(s.k > 0, s.loss, first_comparison(loss_new))
            increases = s.increases + tf.cast(loss_new > before, tf.int32)
            better = loss_new > s.loss_best
            x_best = tf.where(per_image(better), x_new, s.x_best)
            grad_best = tf.where(per_image(better), grad_new, s.grad_best)
            loss_best = tf.where(better, loss_new, s.loss_best)
            span = tf.gather(tf.constant(since_last), s.k)
            halve = (span > 0) & ((tf.cast(increases, tf.float32) <= self.rho * tf.cast(span, tf.float32)) |
                                  (~s.halved_before & (loss_best <= s.best_at_mark)))
            at_mark = tf.fill(tf.shape(halve), span > 0)
            return Iterate(
                k=s.k + 1, x_prev=s.x, x=tf.where(per_image(halve), x_best, x_new),
                grad=tf.where(per_image(halve), grad_best, grad_new), loss=loss_new,
                eta=tf.where(halve, s.eta / 2.0, s.eta), x_best=x_best, grad_best=grad_best, loss_best=loss_best,
                increases=tf.where(at_mark, tf.zeros_like(increases), increases),
                best_at_mark=tf.where(at_mark, loss_best, s.best_at_mark),
                halved_before=tf.where(at_mark, halve, s.halved_before),
                x_broken=tf.where(per_image(wrong), x_new, s.x_broken), broken=s.broken | wrong)

        def iterate(x0):
            loss, grad, wrong = evaluate(x0)
            count = tf.shape(label)[0]
            first = Iterate(tf.constant(0), x0, x0, grad, loss, tf.fill([count], 2.0 * self.epsilon), x0, grad, loss,
                            tf.zeros([count], tf.int32), loss, tf.ones([count], tf.bool), x0, wrong)
            final, = tf.while_loop(lambda s: s.k < self.iterations, lambda s: [step(s)], [first], parallel_iterations=1)
            return tf.where(per_image(final.broken), final.x_broken, final.x_best), ~final.broken

        found, robust = classifier.run_loop(iterate, [random_start(image, self.epsilon, index, seed, stream=run)])
        return tf.stop_gradient(found), robust


@register_attack("apgd-ce")
@dataclass(frozen=True)
class APGDCE(APGD):
    """APGD with the cross-entropy loss (AutoAttack's first attack)."""


@register_attack("apgd-dlr")
@dataclass(frozen=True)
class APGDDLR(APGD):
    """APGD with the difference-of-logits-ratio loss (APGD, Sec. 4)."""
    loss: str = setting("dlr", choices=tuple(LOSSES))


@register_attack("apgd-t")
@dataclass(frozen=True)
class APGDT(APGD):
    """APGD towards each of the `target_classes` most likely wrong classes in turn (2nd, 3rd, ... largest clean logit)
    with the targeted `loss`, on the images still robust, broken when misclassified (AutoAttack's APGD-T)."""
    loss: str = setting("dlr", choices=tuple(LOSSES))
    target_classes: int = count_setting(9)

    @property
    def label(self):
        return "APGD-T-{}".format(self.iterations)

    def target_ranks(self, num_classes):
        return [rank for rank in wrong_class_ranks(self.target_classes, num_classes) for _ in range(self.restarts)]
