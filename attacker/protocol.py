"""AutoAttack's protocol (Croce & Hein, ICML 2020, Sec. 5), written once: runs in a fixed
order, each only on the images that every earlier run left correctly classified; an image
counts as robust only if it survives them all. It serves the composite attack (its stages), each attack run alone
(APGD's restarts, APGD-T's and FAB-T's target classes, Square's one run: `attack_in_turn`) and the evaluation
report (engine/evaluate.py feeds one stage at a time through it)."""
from typing import NamedTuple

import tensorflow as tf

from .base import image_indices, untargeted_result


class Staged(NamedTuple):
    """An attack under the protocol, part way: the clean images, labels and indices, the image kept for each (the one
    that broke it, or the last one tried) and which are still robust."""
    image: tf.Tensor
    label: tf.Tensor
    index: tf.Tensor
    adversarial: tf.Tensor
    robust: tf.Tensor


def start(image, label, index):
    return Staged(image, label, index, image, tf.ones_like(label, tf.bool))


def start_on_correct(image, label, index, classifier):
    """A start where only the images the exact model classifies correctly are still robust: the authors' code never
    attacks a misclassified image (it is kept as it is, already broken), also when an attack runs alone."""
    correct = tf.equal(tf.argmax(classifier.logits(image), axis=1, output_type=tf.int32), label)
    return Staged(image, label, index, image, correct)


def on_still_robust(run, staged):
    """`run(image, label, index)` -> (image found, still robust), on the still-robust images only, its results put back
    in place; skipped once every image is broken (TF's CPU convolutions fail on an empty batch)."""
    todo = tf.where(staged.robust)[:, 0]
    image, label, index = (tf.gather(t, todo) for t in (staged.image, staged.label, staged.index))
    found, robust = tf.cond(tf.size(todo) > 0, lambda: run(image, label, index),
                            lambda: (image, tf.zeros_like(label, tf.bool)))
    return staged._replace(adversarial=tf.tensor_scatter_nd_update(staged.adversarial, todo[:, None], found),
                           robust=tf.tensor_scatter_nd_update(staged.robust, todo[:, None], robust))


def attack_in_turn(runs, image, label, index, classifier):
    """The AttackResult of `runs` in turn (each `run(image, label, index)` -> (image found, still robust)), each on
    the images still robust, starting from those the exact model classifies correctly."""
    staged = start_on_correct(image, label, image_indices(label, index), classifier)
    for run in runs:
        staged = on_still_robust(run, staged)
    return untargeted_result(staged.adversarial, label, classifier)


def wrong_class_ranks(target_classes, num_classes):
    """The ranks of the target classes among the clean logits: 1 (the most likely wrong class of a correctly
    classified image), 2, ..., at most `num_classes - 1`."""
    return range(1, min(target_classes, num_classes - 1) + 1)


def ranked_class(image, classifier, rank):
    """Per image, the class with the rank-th largest logit of the exact model (0: the prediction)."""
    return tf.argsort(classifier.logits(image), axis=1, direction="DESCENDING", stable=True)[:, rank]


def stage_run(attack, classifier):
    """A registered attack as one run of the protocol: still robust = classified correctly (exact model) after it."""
    def run(image, label, index):
        result = attack.attack(image, label, classifier, index)
        return result.adversarial, result.correct_top1
    return run
