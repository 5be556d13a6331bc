"""Auto-PGD (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", ICML 2020, Sec. 3 and Algorithm 1), L-inf, in the graph.

Per image: the step starts at 2 epsilon; after the first plain step each step mixes the
gradient step with the previous move (momentum 0.75); at the checkpoints w_j (Sec. 3.2) the
step is halved, and the run restarts from the best point found, when since the last
checkpoint fewer than rho = 75% of the steps raised the loss (Condition 1), or when neither
the step nor the best loss changed (Condition 2). An image counts as broken as soon as any
iterate is misclassified; it keeps that iterate, else the best one. Runs after the first
(restarts, and APGD-T's target classes) attack only the images still robust.
"""
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional

import tensorflow as tf

from ranges import setting

from .base import (Attack, AttackResult, budget_setting, count_setting, outcome, register_attack, seed_setting,
                   unless_empty)
from .losses import cross_entropy, dlr_loss, targeted_dlr_loss
from .randomness import base_seed, uniform_per_image

MOMENTUM = 0.75
RHO = 0.75


def checkpoints(iterations):
    """w_j = ceil(p_j * iterations): p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03,
    0.06), while p_j <= 1 (APGD, Sec. 3.2), in exact arithmetic."""
    p = [Fraction(0), Fraction(22, 100)]
    while p[-1] + max(p[-1] - p[-2] - Fraction(3, 100), Fraction(6, 100)) <= 1:
        p.append(p[-1] + max(p[-1] - p[-2] - Fraction(3, 100), Fraction(6, 100)))
    return sorted({math.ceil(pj * iterations) for pj in p[1:]})


def random_start(image, epsilon, index, seed, stream):
    """The authors' L-inf start: x + epsilon * t / max|t|, t uniform in [-1, 1] per pixel (one
    pixel of each image lands on the ball's surface), clipped to [0, 255]."""
    t = uniform_per_image(index, seed, stream, image.shape[1:], -1.0, 1.0)
    scale = tf.reduce_max(tf.abs(t), axis=[1, 2, 3], keepdims=True)
    return tf.clip_by_value(image + epsilon * t / (scale + 1e-12), 0.0, 255.0)


@dataclass(frozen=True)
class APGD(Attack):
    """Untargeted APGD maximising `loss` ("ce" or "dlr"); epsilon on the 0..255 scale."""
    iterations: int = count_setting(100)
    epsilon: float = budget_setting(16.0)
    loss: str = setting("ce", choices=("ce", "dlr"))
    restarts: int = count_setting(1)
    seed: Optional[int] = seed_setting()
    rho: float = setting(RHO, minimum=0.0, maximum=1.0)

    @property
    def label(self):
        return "APGD-{}-{}".format(self.loss.upper(), self.iterations)

    def runs(self, logits, label):
        """The losses to maximise, one per run: loss(logits, pick) -> [B], where pick(t) takes
        the rows of the images attacked (those still robust) out of a whole-batch tensor t."""
        loss = cross_entropy if self.loss == "ce" else dlr_loss
        return [lambda z, pick: loss(z, pick(label))] * self.restarts

    def attack(self, image, label, model, index=None):
        index = tf.range(tf.shape(label, out_type=tf.int64)[0]) if index is None else tf.cast(index, tf.int64)
        seed = base_seed(self.seed)
        adversarial, broken = image, tf.zeros_like(label, tf.bool)
        clean_logits = model.logits(image)
        for run, loss_fn in enumerate(self.runs(clean_logits, label)):
            todo = tf.where(~broken)[:, 0]
            pick = lambda t: tf.gather(t, todo)      # noqa: E731
            found, fooled = unless_empty(
                tf.size(todo), lambda: self._run(pick(image), pick(label), model, lambda z: loss_fn(z, pick),
                                                 pick(index), seed, run),
                lambda: (pick(image), tf.zeros_like(pick(label), tf.bool)))
            adversarial = tf.tensor_scatter_nd_update(adversarial, todo[:, None], found)
            broken = tf.tensor_scatter_nd_update(broken, todo[:, None], fooled)
        adversarial = tf.stop_gradient(adversarial)
        correct_top1, correct_top5, _ = outcome(model.logits(adversarial), label, label)
        return AttackResult(adversarial, label, correct_top1, correct_top5, ~correct_top1)

    def _run(self, image, label, model, loss_fn, index, seed, run):
        """One APGD run: (kept image, whether some iterate was misclassified) per image."""
        lower, upper = tf.maximum(image - self.epsilon, 0.0), tf.minimum(image + self.epsilon, 255.0)
        marks = checkpoints(self.iterations)
        since_last = [0] * self.iterations          # iterations since the previous checkpoint, at each one
        for previous, w in zip([0] + marks, marks):
            since_last[w - 1] = w - previous

        def evaluate(x):
            logits = model.step(x)
            logits = tf.cast(logits, tf.float32) if logits.dtype.size < 4 else logits     # half-precision steps
            loss = loss_fn(logits)
            grad, = tf.gradients(tf.reduce_sum(loss) * model.gradient_scale, x)
            wrong = tf.not_equal(tf.argmax(logits, 1, output_type=tf.int32), label)
            return loss, grad, wrong

        def per_image(v):
            return tf.reshape(v, [-1, 1, 1, 1])

        def step(k, x_prev, x, grad, loss, eta, x_best, grad_best, loss_best, increases, best_at_mark,
                 halved_before, x_broken, broken):
            mix = tf.where(k > 0, MOMENTUM, 1.0)
            z = tf.clip_by_value(x + per_image(eta) * tf.sign(grad), lower, upper)
            x_new = tf.clip_by_value(x + mix * (z - x) + (1.0 - mix) * (x - x_prev), lower, upper)
            loss_new, grad_new, wrong = evaluate(x_new)
            x_broken = tf.where(per_image(wrong), x_new, x_broken)
            broken = broken | wrong
            increases += tf.cast(loss_new > loss, tf.int32)
            better = loss_new > loss_best
            x_best = tf.where(per_image(better), x_new, x_best)
            grad_best = tf.where(per_image(better), grad_new, grad_best)
            loss_best = tf.where(better, loss_new, loss_best)
            span = tf.gather(tf.constant(since_last), k)
            halve = (span > 0) & ((tf.cast(increases, tf.float32) < self.rho * tf.cast(span, tf.float32)) |
                                  (~halved_before & (loss_best <= best_at_mark)))
            at_mark = tf.fill(tf.shape(halve), span > 0)
            eta = tf.where(halve, eta / 2.0, eta)
            x_next = tf.where(per_image(halve), x_best, x_new)
            grad_next = tf.where(per_image(halve), grad_best, grad_new)
            increases = tf.where(at_mark, tf.zeros_like(increases), increases)
            best_at_mark = tf.where(at_mark, loss_best, best_at_mark)
            halved_before = tf.where(at_mark, halve, halved_before)
            return (k + 1, x, x_next, grad_next, loss_new, eta, x_best, grad_best, loss_best, increases,
                    best_at_mark, halved_before, x_broken, broken)

        def iterate(start):
            loss, grad, wrong = evaluate(start)
            count = tf.shape(label)[0]
            state = (tf.constant(0), start, start, grad, loss, tf.fill([count], 2.0 * self.epsilon), start, grad, loss,
                     tf.zeros([count], tf.int32), loss, tf.zeros([count], tf.bool), start, wrong)
            final = tf.while_loop(lambda k, *_: k < self.iterations, step, state, parallel_iterations=1)
            return tf.where(per_image(final[13]), final[12], final[6]), final[13]

        start = random_start(image, self.epsilon, index, seed, stream=run)
        found, fooled = model.run_loop(iterate, [start])
        return tf.stop_gradient(found), fooled


@register_attack("apgd-ce")
@dataclass(frozen=True)
class APGDCE(APGD):
    """APGD with the cross-entropy loss (AutoAttack's first attack)."""


@register_attack("apgd-dlr")
@dataclass(frozen=True)
class APGDDLR(APGD):
    """APGD with the difference-of-logits-ratio loss (APGD, Sec. 4)."""
    loss: str = setting("dlr", choices=("ce", "dlr"))


@register_attack("apgd-t")
@dataclass(frozen=True)
class APGDT(APGD):
    """Targeted-DLR APGD towards each of the `target_classes` most likely wrong classes in turn
    (the clean image's 2nd, 3rd, ... largest logit), on the images still robust; an image is
    broken when misclassified, whatever the class (AutoAttack's APGD-T)."""
    loss: str = setting("dlr", choices=("dlr",))       # the targeted DLR loss is the only one
    target_classes: int = count_setting(9)

    @property
    def label(self):
        return "APGD-T-{}".format(self.iterations)

    def runs(self, logits, label):
        classes = int(logits.shape[-1])
        ranked = tf.argsort(logits, axis=1, direction="DESCENDING", stable=True)
        return [lambda z, pick, rank=rank: targeted_dlr_loss(z, pick(label), pick(ranked[:, rank]))
                for rank in range(1, min(self.target_classes, classes - 1) + 1) for _ in range(self.restarts)]
