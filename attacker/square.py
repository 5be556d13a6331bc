"""Square attack, L-inf (Andriushchenko, Croce, Flammarion, Hein, "Square Attack: a query-
efficient black-box adversarial attack via random search", ECCV 2020, Sec. 3.1 and Alg. 1-2).
Score-based: it reads the logits, never a gradient, so gradient masking does not stop it (hence its place in
AutoAttack). Start: vertical stripes of +-epsilon (a random sign per column and channel). Each query sets one random
square window to +-epsilon (a random sign per channel) and keeps it when the margin z_y - max_{j != y} z_j falls; the
window's side follows p, the fraction of pixels changed, halved after queries 10, 50, 200, 500, 1000, 2000, 4000, 6000
and 8000 (of 10000; rescaled to other budgets if `rescale_schedule`, off in AutoAttack's standard version). Windows
and signs are drawn per image from (seed, image index, query)."""
from dataclasses import dataclass
from typing import Optional

import tensorflow as tf

from ranges import setting

from .base import (Attack, budget_setting, count_setting, epsilon_ball, image_indices, register_attack, seed_setting,
                   untargeted_result)
from .losses import margin
from .randomness import base_seed, uniform_per_image

HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


@register_attack("square")
@dataclass(frozen=True)
class Square(Attack):
    """Untargeted L-inf Square attack; epsilon on the 0..255 scale; `queries` model evaluations per image."""
    queries: int = count_setting(5000)
    epsilon: float = budget_setting()
    p_init: float = setting(0.8, minimum=0.0, maximum=1.0, exclusive_minimum=True)
    rescale_schedule: bool = False
    seed: Optional[int] = seed_setting()

    @property
    def label(self):
        return "Square-{}".format(self.queries)

    def fraction(self, query):
        """p at query `query` (1-based), as a tensor."""
        query = tf.cast(query, tf.float32)
        if self.rescale_schedule:
            query = query * 10000.0 / self.queries
        halvings = tf.reduce_sum(tf.cast(query > tf.constant(HALVINGS, tf.float32), tf.float32))
        return self.p_init / tf.pow(2.0, halvings)

    def attack(self, image, label, classifier, index=None):
        index = image_indices(label, index)
        seed = base_seed(self.seed)
        height, width, channels = (int(d) for d in image.shape[1:])
        lower, upper = epsilon_ball(image, self.epsilon)
        stripes = tf.sign(uniform_per_image(index, seed, 0, [1, width, channels], -1.0, 1.0))
        start = tf.clip_by_value(image + self.epsilon * stripes, lower, upper)

        def query(q, best, best_margin):
            side = tf.cast(tf.round(tf.sqrt(self.fraction(q) * height * width)), tf.int32)
            side = tf.clip_by_value(side, 1, max(min(height, width) - 1, 1))      # the window lies inside
            draws = uniform_per_image(index, seed, q, [2 + channels], 0.0, 1.0)
            room = tf.cast(tf.stack([height, width]) - side + 1, tf.float32)
            corner = tf.cast(tf.floor(draws[:, :2] * room), tf.int32)             # [B, 2]
            rows, cols = tf.range(height)[None, :], tf.range(width)[None, :]
            inside = ((rows >= corner[:, :1]) & (rows < corner[:, :1] + side))[:, :, None, None] & \
                     ((cols >= corner[:, 1:]) & (cols < corner[:, 1:] + side))[:, None, :, None]
            signs = tf.where(draws[:, 2:] < 0.5, -1.0, 1.0)[:, None, None, :]
            candidate = tf.where(inside, tf.clip_by_value(image + self.epsilon * signs, lower, upper), best)
            candidate_margin = margin(classifier.logits(candidate), label)
            better = (candidate_margin < best_margin) & (best_margin > 0)
            return (q + 1, tf.where(better[:, None, None, None], candidate, best),
                    tf.where(better, candidate_margin, best_margin))

        def search(start):
            # stops early once every image is misclassified (nothing would change any more)
            _, best, _ = tf.while_loop(lambda q, _, m: (q < self.queries) & tf.reduce_any(m > 0), query,
                                       (tf.constant(1), start, margin(classifier.logits(start), label)),
                                       parallel_iterations=1, back_prop=False)
            return best

        return untargeted_result(classifier.run_loop(search, [start]), label, classifier)
