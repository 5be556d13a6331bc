"""Projected gradient descent under an L-inf budget, built in the graph as one tf.while_loop.

Feature Denoising, Sec. 6.1 (threat model): "targeted attacks ... the target class is
uniformly sampled from the incorrect classes"; the PGD attacker "initializes the adversarial
image by random points in the allowed epsilon-cube, ... step size alpha = 1, except for
10-iteration attacks where alpha = epsilon / 10 = 1.6". Training (Sec. 5): "a 30-iteration
PGD ... step size 1", and "we use the adversarial images only"; 20% of the batches start
from the clean image.
"""
import contextlib
import logging
from dataclasses import dataclass
from typing import Optional

import tensorflow as tf

from .base import AttackResult, outcome

log = logging.getLogger(__name__)

LOSSES = ("xent", "cw")
HALF_DTYPES = {"float32": tf.float32, "float16": tf.float16, "bfloat16": tf.bfloat16}
FP16_LOSS_SCALE = 1024.0   # sign(grad) ignores a positive scale; this keeps fp16 gradients from underflowing


def xla_scope(enabled):
    if not enabled:
        return contextlib.nullcontext()
    from tensorflow.python.compiler.xla import jit
    return jit.experimental_jit_scope(True)


def step_size_for(epsilon, iterations, step_size=1.0):
    """The per-step size: the given step, but at least epsilon / iterations (so the ball can be crossed)."""
    return max(step_size, epsilon / float(iterations)) if iterations > 0 else 0.0


def random_wrong_target(label, num_classes, seed=None):
    """(label + U{1..classes-1}) mod classes: uniform over the wrong classes, never the label."""
    offset = tf.random.uniform(tf.shape(label), 1, num_classes, dtype=tf.int32, seed=seed)
    return (label + offset) % num_classes


def attack_loss(logits, label, target, loss, targeted):
    """Per-image loss the attack *minimises*.

    targeted: cross-entropy to the target, or the CW margin max_{j != t} z_j - z_t;
    untargeted: minus the cross-entropy of the label, or z_y - max_{j != y} z_j.
    """
    aim = target if targeted else label
    if loss == "xent":
        xent = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=aim, logits=logits)
        return xent if targeted else -xent
    aim_mask = tf.one_hot(aim, tf.shape(logits)[1], on_value=True, off_value=False, dtype=tf.bool)
    aim_logit = tf.reduce_max(tf.where(aim_mask, logits, tf.fill(tf.shape(logits), -1e30)), axis=1)
    best_other = tf.reduce_max(tf.where(aim_mask, tf.fill(tf.shape(logits), -1e30), logits), axis=1)
    margin = best_other - aim_logit
    return margin if targeted else -margin


@dataclass
class PGDAttacker:
    """L-inf PGD. epsilon and step size are on the 0..255 scale."""
    iterations: int
    epsilon: float = 16.0
    step_size: float = 1.0
    num_classes: int = 1000
    prob_start_from_clean: float = 0.0
    loss: str = "xent"
    targeted: bool = True
    restarts: int = 1
    target_offset: Optional[int] = None    # fixed target (label + offset) mod classes instead of random
    seed: Optional[int] = None
    compute_dtype: str = "float32"         # float16 / bfloat16: the fast path (model_fn must accept dtype)
    use_xla: bool = False                  # compile the attack loop with XLA
    fold_batch_norm: bool = False          # BN folded into the conv weights (model_fn must accept fold_batch_norm)

    def __post_init__(self):
        if self.iterations < 1:
            raise ValueError("PGD needs at least 1 iteration (use NoOpAttacker for clean images)")
        if self.loss not in LOSSES:
            raise ValueError("attack loss must be one of {}, got '{}'".format(LOSSES, self.loss))
        if self.restarts < 1:
            raise ValueError("attack restarts must be >= 1, got {}".format(self.restarts))
        if self.epsilon <= 0:
            raise ValueError("attack epsilon must be positive, got {}".format(self.epsilon))
        if self.target_offset is not None and not 0 < self.target_offset < self.num_classes:
            raise ValueError("target offset must be in 1..{}, got {}".format(self.num_classes - 1, self.target_offset))
        if self.compute_dtype not in HALF_DTYPES:
            raise ValueError("attack dtype must be one of {}, got '{}'".format(sorted(HALF_DTYPES), self.compute_dtype))

    @property
    def step(self):
        return step_size_for(self.epsilon, self.iterations, self.step_size)

    def _seed(self, k):
        return None if self.seed is None else self.seed + k

    def choose_target(self, label):
        if not self.targeted:
            return label
        if self.target_offset is not None:
            return (label + self.target_offset) % self.num_classes
        return random_wrong_target(label, self.num_classes, self._seed(0))

    def _start(self, image, restart):
        """Uniform noise in the epsilon ball (clipped to [0, 255]), or, with probability
        prob_start_from_clean per batch, the clean image."""
        noise = tf.random.uniform(tf.shape(image), -self.epsilon, self.epsilon, seed=self._seed(1 + 2 * restart))
        noisy = tf.clip_by_value(image + noise, 0.0, 255.0)
        if self.prob_start_from_clean <= 0:
            return noisy
        from_clean = tf.random.uniform([], seed=self._seed(2 + 2 * restart)) < self.prob_start_from_clean
        return tf.cond(from_clean, lambda: image, lambda: noisy)

    def _model(self, model_fn):
        options = {}
        if self.compute_dtype != "float32":
            options["dtype"] = HALF_DTYPES[self.compute_dtype]
        if self.fold_batch_norm:
            options["fold_batch_norm"] = True
        return lambda x: model_fn(x, **options)

    def _run(self, image, label, target, model_fn, start):
        """The PGD iterations from `start`; returns the adversarial image (a constant for training)."""
        model = self._model(model_fn)
        lower = tf.maximum(image - self.epsilon, 0.0)
        upper = tf.minimum(image + self.epsilon, 255.0)
        scale = FP16_LOSS_SCALE if self.compute_dtype == "float16" else 1.0

        def one_step(i, adv):
            loss = attack_loss(model(adv), label, target, self.loss, self.targeted)
            grad, = tf.gradients(tf.reduce_sum(loss) * scale, adv)
            adv = adv - self.step * tf.sign(grad)
            return i + 1, tf.clip_by_value(adv, lower, upper)

        def iterate(start):
            return tf.while_loop(lambda i, _: i < self.iterations, one_step, [tf.constant(0), start],
                                 back_prop=False, parallel_iterations=1)[1]

        if self.use_xla:
            # One XLA computation for the whole loop. (A jit scope around tf.while_loop marks only
            # the While op, not the ops of its body, so it compiled next to nothing.)
            if not tf.config.list_physical_devices("GPU"):
                log.warning("--attack-xla without a GPU: XLA's CPU convolutions are much slower than "
                            "oneDNN's (about 6-15x for these models, see BENCHMARKS.md)")
            adv = tf.compat.v1.xla.experimental.compile(iterate, [start])[0]
        else:
            adv = iterate(start)
        return tf.stop_gradient(adv)

    def perturb(self, image, label, model_fn, restart=0):
        """One run from the random start of restart number `restart`: (adversarial image, target).
        What training uses."""
        target = self.choose_target(label)
        return self._run(image, label, target, model_fn, self._start(image, restart)), target

    def attack(self, image, label, model_fn):
        """All restarts, aggregated per image (see AttackResult); what evaluation uses."""
        target = self.choose_target(label)
        best = None
        for restart in range(self.restarts):
            adv = self._run(image, label, target, model_fn, self._start(image, restart))
            correct_top1, correct_top5, hit = outcome(model_fn(adv), label, target)
            if best is None:
                best = AttackResult(adv, target, correct_top1, correct_top5, hit)
                continue
            # keep the earlier image only where it is at least as strong: it hit, or it fooled and this did not hit
            keep_old = best.hit | (~best.correct_top1 & ~hit)
            adv = tf.where(tf.reshape(keep_old, [-1, 1, 1, 1]), best.adversarial, adv)
            best = AttackResult(adv, target, best.correct_top1 & correct_top1, best.correct_top5 & correct_top5,
                                best.hit | hit)
        return best
