"""Square attack, L-inf (Andriushchenko, Croce, Flammarion, Hein, "Square Attack: a query-
efficient black-box adversarial attack via random search", ECCV 2020, Sec. 3.1 and Alg. 1-2).
Score-based: it reads the logits, never a gradient, so gradient masking does not stop it (hence its place in
AutoAttack). Start: vertical stripes of +-epsilon (a random sign per column and channel). Each query sets one random
square window to +-epsilon (a random sign per channel) and keeps it when the margin z_y - max_{j != y} z_j falls; the
window's side follows p, the fraction of pixels changed, halved after proposals 10, 50, 200, 500, 1000, 2000, 4000,
6000 and 8000 (of 10000; rescaled to other budgets if `rescale_schedule`, off in AutoAttack's standard version).
As in the authors' code (docs/FACTS.md, "Square: paper and code"): `queries` proposals after the start, the n-th
(0-based) with p(n), the window's corner in 0..H-side-1, only the images still robust queried, only the images the
model classifies correctly attacked. Unlike it, windows and signs are drawn per image from (seed, image index,
proposal), so that an image's outcome does not depend on the batch it is in."""
from dataclasses import dataclass
from typing import Optional

import tensorflow as tf

from ranges import setting

from .base import Attack, budget_setting, count_setting, epsilon_ball, register_attack, seed_setting
from .losses import margin
from .protocol import attack_in_turn
from .randomness import base_seed, uniform_per_image

HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


@register_attack("square")
@dataclass(frozen=True)
class Square(Attack):
    """Untargeted L-inf Square attack; epsilon on the 0..255 scale; `queries` proposals after the start (the
    code's n_queries; queries + 1 model evaluations per image at most)."""
    queries: int = count_setting(5000)
    epsilon: float = budget_setting()
    p_init: float = setting(0.8, minimum=0.0, maximum=1.0, exclusive_minimum=True)
    rescale_schedule: bool = False
    seed: Optional[int] = seed_setting()

    @property
    def label(self):
        return "Square-{}".format(self.queries)

    def fraction(self, iteration):
        """p at the 0-based proposal `iteration`, as a tensor: halved after iterations 10, 50, ... (the code's
        p_selection)."""
        iteration = tf.cast(iteration, tf.float32)
        if self.rescale_schedule:
            iteration = iteration * 10000.0 / self.queries
        halvings = tf.reduce_sum(tf.cast(iteration > tf.constant(HALVINGS, tf.float32), tf.float32))
        return self.p_init / tf.pow(2.0, halvings)

    def attack(self, image, label, classifier, index=None):
        seed = base_seed(self.seed)
        return attack_in_turn([lambda x, y, i: self._run(x, y, i, classifier, seed)], image, label, index, classifier)

    def _run(self, image, label, index, classifier, seed):
        """The start, then `queries` proposals, each on the images still robust: (kept image, still robust)."""
        lower, upper = epsilon_ball(image, self.epsilon)
        stripes = tf.sign(uniform_per_image(index, seed, 0, [1, int(image.shape[2]), int(image.shape[3])], -1.0, 1.0))
        start = tf.clip_by_value(image + self.epsilon * stripes, lower, upper)

        def query(q, best, best_margin):
            todo = tf.where(best_margin > 0)[:, 0]                 # the code queries only the images still robust
            picked = [tf.gather(t, todo) for t in (image, label, index, lower, upper, best)]
            candidate = self._proposal(q, *picked, seed)
            candidate_margin = margin(classifier.logits(candidate), picked[1])
            better = candidate_margin < tf.gather(best_margin, todo)
            keep = tf.where(better[:, None, None, None], candidate, picked[-1])
            return (q + 1, tf.tensor_scatter_nd_update(best, todo[:, None], keep),
                    tf.tensor_scatter_nd_update(best_margin, todo[:, None],
                                                tf.minimum(candidate_margin, tf.gather(best_margin, todo))))

        def search(start):
            # stops early once every image is misclassified (nothing would change any more)
            _, best, best_margin = tf.while_loop(lambda q, _, m: (q < self.queries) & tf.reduce_any(m > 0), query,
                                                 (tf.constant(0), start, margin(classifier.logits(start), label)),
                                                 parallel_iterations=1, back_prop=False)
            return best, best_margin > 0

        found, robust = classifier.run_loop(search, [start])
        return tf.stop_gradient(found), robust

    def _proposal(self, q, image, label, index, lower, upper, best, seed):
        """Proposal q (0-based) per image: a side x side window set to +-epsilon (a sign per channel), the window's
        corner drawn from 0..H-side-1 as in the code (0 when the window spans the image)."""
        height, width, channels = (int(d) for d in image.shape[1:])
        side = tf.cast(tf.round(tf.sqrt(self.fraction(q) * height * width)), tf.int32)
        side = tf.clip_by_value(side, 1, min(height, width))
        draws = uniform_per_image(index, seed, q + 1, [2 + channels], 0.0, 1.0)
        room = tf.cast(tf.maximum(tf.stack([height, width]) - side, 1), tf.float32)
        corner = tf.cast(tf.floor(draws[:, :2] * room), tf.int32)             # [B, 2]
        rows, cols = tf.range(height)[None, :], tf.range(width)[None, :]
        inside = ((rows >= corner[:, :1]) & (rows < corner[:, :1] + side))[:, :, None, None] & \
                 ((cols >= corner[:, 1:]) & (cols < corner[:, 1:] + side))[:, None, :, None]
        signs = tf.where(draws[:, 2:] < 0.5, -1.0, 1.0)[:, None, None, :]
        return tf.where(inside, tf.clip_by_value(image + self.epsilon * signs, lower, upper), best)
