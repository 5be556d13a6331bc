"""The graphs built around the network: what an attacker sees of it (`attacked_classifier`), an attack's outcome on
an evaluation batch (`attack_outcome`), and the training graph for Tensorpack (`AdversarialTraining`).
Feature Denoising, Sec. 5: "adversarial training ... we use only adversarial images for
training"; the attacker runs with BN in inference mode, and its image is a constant for
the weight update (docs/FACTS.md Sec. 4-5)."""
import logging
import re
from dataclasses import dataclass

import tensorflow as tf
from tensorpack import ModelDesc
from tensorpack.tfutils.summary import add_moving_summary

from attacker import Classifier
from nets import BuildOptions, logits
from nets.layout import gpu_available, layout_scope

tf1 = tf.compat.v1
log = logging.getLogger(__name__)

FP16_GRADIENT_SCALE = 1024.0   # keeps float16 gradients from underflowing; sign(grad) ignores it


@dataclass(frozen=True)
class AttackExecution:
    """How an attack's inner steps run (`--attack-dtype`, `--attack-fold-bn`, `--attack-xla`); outcomes stay exact."""
    compute_dtype: str = "float32"
    fold_batch_norm: bool = False
    xla: bool = False


def check_exact_decisions(attack, execution):
    """Refuses a faster model (--attack-dtype, --attack-fold-bn) for attacks that decide on the logits (APGD, FAB,
    Square): their verdicts must be the float32 model's, as in the authors' code."""
    deciding = attack.deciding_stages()
    if (execution.compute_dtype != "float32" or execution.fold_batch_norm) and deciding:
        raise ValueError("--attack-dtype {} / --attack-fold-bn speed up PGD's steps only: {} decide(s) on the logits "
                         "(which point to keep, when an image is broken), and those decisions are taken on the float32 "
                         "model; drop these flags for this attack (--attack-xla is allowed)".format(
                             execution.compute_dtype, ", ".join(deciding)))


def xla_compile(fn, inputs):
    """`fn(*inputs)` as one XLA computation (a jit scope around a tf.while_loop would compile only the While op)."""
    if not gpu_available():
        log.warning("--attack-xla without a GPU: XLA's CPU convolutions are much slower than oneDNN's "
                    "(about 6-15x for these models, see BENCHMARKS.md)")
    return tf1.xla.experimental.compile(fn, inputs)


def attacked_classifier(spec, options=BuildOptions(), execution=AttackExecution()):
    """The network as attacks see it (attacker.Classifier), BN in inference mode."""
    def logits_with(opts):
        return lambda image: logits(image, spec, training=False, options=opts)
    exact = options.exact
    steps = exact.replace(compute_dtype=execution.compute_dtype, fold_batch_norm=execution.fold_batch_norm)
    return Classifier(logits=logits_with(exact), num_classes=spec.num_classes,
                      step_logits=logits_with(steps) if steps != exact else None,
                      compile=xla_compile if execution.xla else None,
                      gradient_scale=FP16_GRADIENT_SCALE if execution.compute_dtype == "float16" else 1.0)


def evaluation_inputs(spec):
    """An evaluation batch's signature: uint8 images, int32 labels, int64 indices (positions, seeding the draws)."""
    size = spec.image_size
    return [tf.TensorSpec([None, size, size, 3], tf.uint8, "eval_images"),
            tf.TensorSpec([None], tf.int32, "eval_labels"), tf.TensorSpec([None], tf.int64, "eval_indices")]


def attack_outcome(spec, options, attack, images, labels, indices, execution=AttackExecution()):
    """The attack's AttackResult on an evaluation batch (model variables shared), steps run as `execution` says."""
    with layout_scope(options.layout):
        classifier = attacked_classifier(spec, options, execution)
        return attack.attack(tf.cast(images, tf.float32), labels, classifier, indices)


class AdversarialTraining(ModelDesc):
    """Trains on the attack's images (the clean ones with the clean attack)."""

    def __init__(self, spec, options, attack, recipe, learning_rate, execution=AttackExecution()):
        check_exact_decisions(attack, execution)
        self.spec, self.options, self.attack, self.recipe = spec, options, attack, recipe
        self.execution, self.initial_learning_rate = execution, learning_rate

    def inputs(self):
        size = self.spec.image_size
        return [tf.TensorSpec([None, size, size, 3], tf.uint8, "input"), tf.TensorSpec([None], tf.int32, "label")]

    def build_graph(self, image, label):
        image = tf.cast(image, tf.float32)
        with layout_scope(self.options.layout):
            classifier = attacked_classifier(self.spec, self.options, self.execution)
            adversarial, target = self.attack.perturb(image, label, classifier)
            train_logits = logits(adversarial, self.spec, training=True, options=self.options)
        onehot = tf.one_hot(label, self.spec.num_classes)
        xentropy = tf1.losses.softmax_cross_entropy(onehot, train_logits, label_smoothing=self.recipe.label_smoothing,
                                                    reduction=tf1.losses.Reduction.MEAN)
        xentropy = tf.identity(xentropy, name="xentropy_loss")
        prediction = tf.argmax(train_logits, axis=1, output_type=tf.int32)
        train_error = tf.reduce_mean(tf.cast(tf.not_equal(prediction, label), tf.float32), name="train_error_top1")
        pattern = re.compile(self.recipe.weight_decay_pattern)
        weights = [v for v in tf1.trainable_variables() if pattern.search(v.op.name)]
        wd = tf.multiply(self.recipe.weight_decay, tf.add_n([tf.nn.l2_loss(w) for w in weights]), name="weight_decay")
        summaries = [xentropy, train_error, wd]
        if self.attack.targeted:        # untargeted, the attack's success is the training error itself
            summaries.append(tf.reduce_mean(tf.cast(tf.equal(prediction, target), tf.float32),
                                            name="train_reached_target"))
        add_moving_summary(*summaries)
        return tf.add(xentropy, wd, name="cost")

    def optimizer(self):
        lr = tf1.get_variable("learning_rate", initializer=float(self.initial_learning_rate), trainable=False)
        tf1.summary.scalar("learning_rate-summary", lr)
        return tf1.train.MomentumOptimizer(lr, self.recipe.momentum, use_nesterov=True)
