"""FAB-T, L-inf (Croce & Hein, "Minimally distorted adversarial examples with a fast adaptive boundary attack",
ICML 2020, Sec. 3), targeted, as AutoAttack's standard version runs it (its third attack), in the graph.

Each step linearises the difference of logits z_t - z_y (t the target, y the label) at the current point x_k and
projects both x_k and the clean image x_0 onto the linearised decision boundary within the image box (Sec. 3.1,
`project_onto_boundary`); the next point mixes the two projections, weighted towards x_0 by alpha =
min(|d_k| / (|d_k| + |d_0|), alpha_max), both overshot by eta (Sec. 3.2). Once a point is misclassified, the closest
such point is kept and the search steps back towards x_0 by beta (Sec. 3.3). FAB minimises the perturbation: an
image counts as broken only when the closest misclassified point found lies within epsilon. No random start (the
standard version runs one restart); the targets are the clean image's most likely wrong classes in turn."""
from dataclasses import dataclass

import tensorflow as tf

from ranges import setting

from .base import Attack, budget_setting, count_setting, register_attack
from .protocol import attack_in_turn, ranked_class, wrong_class_ranks

SMALLEST_STEP = 255.0 * 1e-8        # the authors' floor on |d| (1e-8 on their 0..1 scale), against 0 / 0


def project_onto_boundary(point, w, b, upper=255.0):
    """Per row of [N, D]: the smallest step d in L-inf norm with w.(point + d) = b and 0 <= point + d <= upper
    (FAB, Sec. 3.1, the box-constrained projection). At radius r the step can change w.x by at most
    g(r) = sum_i |w_i| min(r, room_i), room_i the distance to the bound in the helpful direction; g is piecewise
    linear, so sorting the rooms gives the r with g(r) = |w.point - b| in closed form. When no point of the box
    reaches the hyperplane, the step goes to the box corner closest to it."""
    gap = tf.reduce_sum(w * point, axis=1) - b
    w = w * tf.where(gap >= 0, tf.ones_like(gap), -tf.ones_like(gap))[:, None]   # w.(point + d) must fall by |gap|
    gap = tf.abs(gap)
    room = tf.where(w > 0, point, upper - point)
    order = tf.argsort(room, axis=1, stable=True)
    rooms, weights = tf.gather(room, order, batch_dims=1), tf.gather(tf.abs(w), order, batch_dims=1)
    saturated = tf.cumsum(weights * rooms, axis=1)                  # change from the coordinates at their bound
    free_weight = tf.reduce_sum(weights, axis=1, keepdims=True) - tf.cumsum(weights, axis=1)
    reach = saturated + rooms * free_weight                         # g at each breakpoint, nondecreasing
    at_bound = tf.reduce_sum(tf.cast(reach < gap[:, None], tf.int32), axis=1)
    size = tf.shape(point)[1]
    previous = tf.maximum(at_bound - 1, 0)
    done_before = tf.where(at_bound > 0, tf.gather(saturated, previous, batch_dims=1), tf.zeros_like(gap))
    weight_left = tf.where(at_bound > 0, tf.gather(free_weight, previous, batch_dims=1),
                           tf.reduce_sum(weights, axis=1))
    radius = tf.where(at_bound < size, (gap - done_before) / tf.maximum(weight_left, 1e-30),
                      tf.fill(tf.shape(gap), tf.constant(float("inf"), gap.dtype)))
    return -tf.sign(w) * tf.minimum(radius[:, None], room)


def linf_norm(v):
    return tf.reduce_max(tf.abs(tf.reshape(v, [tf.shape(v)[0], -1])), axis=1)


@register_attack("fab-t")
@dataclass(frozen=True)
class FABT(Attack):
    """Targeted FAB, L-inf, towards each of the `target_classes` most likely wrong classes in turn, on the images
    still robust; epsilon on the 0..255 scale. Every decision uses the exact (float32) model."""
    iterations: int = count_setting(100)
    epsilon: float = budget_setting()
    target_classes: int = count_setting(9)
    alpha_max: float = setting(0.1, minimum=0.0, maximum=1.0)
    eta: float = setting(1.05, minimum=1.0, maximum=2.0)
    beta: float = setting(0.9, minimum=0.0, maximum=1.0)

    @property
    def label(self):
        return "FAB-T-{}".format(self.iterations)

    def attack(self, image, label, classifier, index=None):
        return attack_in_turn([lambda x, y, _, rank=rank: self._run(x, y, classifier, rank)
                               for rank in wrong_class_ranks(self.target_classes, classifier.num_classes)],
                              image, label, index, classifier)

    def _run(self, image, label, classifier, rank):
        """One FAB run towards the rank-th most likely class: (kept image, still robust) per image; the kept image
        is the closest misclassified point when it lies within epsilon, else the clean image."""
        target = ranked_class(image, classifier, rank)
        count = tf.shape(image)[0]

        def step(k, x, closest, distance):
            x = self._boundary_step(x, image, label, target, classifier)
            wrong = tf.not_equal(tf.argmax(classifier.logits(x), 1, output_type=tf.int32), label)
            moved = linf_norm(x - image)
            nearer = wrong & (moved < distance)
            closest = tf.where(nearer[:, None, None, None], x, closest)
            distance = tf.where(nearer, moved, distance)
            x = tf.where(wrong[:, None, None, None], image + self.beta * (x - image), x)
            return k + 1, x, closest, distance

        def search(image):
            _, _, closest, distance = tf.while_loop(
                lambda k, *_: k < self.iterations, step,
                (tf.constant(0), image, image, tf.fill([count], float("inf"))), parallel_iterations=1)
            broken = distance <= self.epsilon
            return tf.where(broken[:, None, None, None], closest, image), ~broken

        found, robust = classifier.run_loop(search, [image])
        return tf.stop_gradient(found), robust

    def _boundary_step(self, x, image, label, target, classifier):
        """Sec. 3.2: project x and the clean image onto the linearised boundary z_t = z_y, move to the alpha-mix of
        the two projections overshot by eta, within the box."""
        logits = tf.cast(classifier.logits(x), x.dtype)
        picked = tf.one_hot(target, classifier.num_classes) - tf.one_hot(label, classifier.num_classes)
        difference = tf.reduce_sum(logits * picked, axis=1)
        gradient, = tf.gradients(tf.reduce_sum(difference), x)
        count, shape = tf.shape(x)[0], tf.shape(x)
        w = tf.reshape(gradient, [count, -1])
        b = tf.reduce_sum(w * tf.reshape(x, [count, -1]), axis=1) - difference
        both = project_onto_boundary(tf.concat([tf.reshape(x, [count, -1]), tf.reshape(image, [count, -1])], 0),
                                     tf.concat([w, w], 0), tf.concat([b, b], 0))
        to_x, to_image = tf.reshape(both[:count], shape), tf.reshape(both[count:], shape)
        near, far = tf.maximum(linf_norm(to_x), SMALLEST_STEP), tf.maximum(linf_norm(to_image), SMALLEST_STEP)
        alpha = tf.reshape(tf.clip_by_value(near / (near + far), 0.0, self.alpha_max), [-1, 1, 1, 1])
        mixed = (x + self.eta * to_x) * (1.0 - alpha) + (image + self.eta * to_image) * alpha
        return tf.stop_gradient(tf.clip_by_value(mixed, 0.0, 255.0))
