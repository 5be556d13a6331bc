"""The model description for Tensorpack (inputs, the attack, the loss, the optimizer) and
the attacker's view of the network.

Feature Denoising, Sec. 5: "adversarial training ... we use only adversarial images for
training"; the attacker runs with BN in inference mode, and its image is a constant for
the weight update (docs/FACTS.md Sec. 4-5).
"""
import logging
import re
from dataclasses import dataclass

import tensorflow as tf
from tensorpack import ModelDesc
from tensorpack.tfutils.summary import add_moving_summary

from attacker import Model
from nets import BuildOptions, logits
from nets.layout import gpu_available, layout_scope


tf1 = tf.compat.v1
log = logging.getLogger(__name__)

FP16_GRADIENT_SCALE = 1024.0   # keeps float16 gradients from underflowing; sign(grad) ignores it


@dataclass(frozen=True)
class AttackExecution:
    """How an attack's inner steps run: the fast path (`--attack-dtype`, `--attack-fold-bn`,
    `--attack-xla`). What an attack reports always comes from the exact float32 model."""
    compute_dtype: str = "float32"
    fold_batch_norm: bool = False
    xla: bool = False


def xla_compile(fn, inputs):
    """`fn(*inputs)` as one XLA computation (a jit scope around a tf.while_loop marks only the
    While op, not its body, so it compiles next to nothing)."""
    if not gpu_available():
        log.warning("--attack-xla without a GPU: XLA's CPU convolutions are much slower than oneDNN's "
                    "(about 6-15x for these models, see BENCHMARKS.md)")
    return tf1.xla.experimental.compile(fn, inputs)


def attack_model(spec, options=BuildOptions(), execution=AttackExecution()):
    """The network as attacks see it (attacker.Model), BN in inference mode."""
    def logits_with(opts):
        return lambda image: logits(image, spec, training=False, options=opts)
    exact = options.exact
    steps = exact.replace(compute_dtype=execution.compute_dtype, fold_batch_norm=execution.fold_batch_norm)
    return Model(logits=logits_with(exact), num_classes=spec.num_classes,
                 step_logits=logits_with(steps) if steps != exact else None,
                 compile=xla_compile if execution.xla else None,
                 gradient_scale=FP16_GRADIENT_SCALE if execution.compute_dtype == "float16" else 1.0)


def evaluation_inputs(spec):
    """The signature of an evaluation batch: uint8 images, int32 labels, int64 indices (each
    image's position in the validation set, which seeds its random draws in an attack)."""
    size = spec.image_size
    return [tf.TensorSpec([None, size, size, 3], tf.uint8, "eval_images"), tf.TensorSpec([None], tf.int32, "eval_labels"),
            tf.TensorSpec([None], tf.int64, "eval_indices")]


def attack_outcome(spec, options, attack, images, labels, indices, execution=AttackExecution()):
    """The attack's AttackResult on an evaluation batch, sharing the model's variables; its
    steps run as `execution` says, its outcome on the exact float32 model."""
    with layout_scope(options.layout):
        return attack.attack(tf.cast(images, tf.float32), labels, attack_model(spec, options, execution), indices)


def weight_decay_cost(recipe):
    pattern = re.compile(recipe.weight_decay_pattern)
    weights = [v for v in tf1.trainable_variables() if pattern.search(v.op.name)]
    return tf.multiply(recipe.weight_decay, tf.add_n([tf.nn.l2_loss(w) for w in weights]), name="weight_decay")


class AdversarialModel(ModelDesc):
    """Trains on the attack's images (the clean ones with the clean attack)."""

    def __init__(self, spec, options, attack, recipe, learning_rate, execution=AttackExecution()):
        self.spec, self.options, self.attack, self.recipe = spec, options, attack, recipe
        self.execution = execution
        self.initial_learning_rate = learning_rate

    def inputs(self):
        size = self.spec.image_size
        return [tf.TensorSpec([None, size, size, 3], tf.uint8, "input"),
                tf.TensorSpec([None], tf.int32, "label")]

    def build_graph(self, image, label):
        image = tf.cast(image, tf.float32)
        with layout_scope(self.options.layout):
            adversarial, target = self.attack.perturb(image, label, attack_model(self.spec, self.options,
                                                                                 self.execution))
            train_logits = logits(adversarial, self.spec, training=True, options=self.options)
        onehot = tf.one_hot(label, self.spec.num_classes)
        xentropy = tf1.losses.softmax_cross_entropy(onehot, train_logits, label_smoothing=self.recipe.label_smoothing,
                                                    reduction=tf1.losses.Reduction.MEAN)
        xentropy = tf.identity(xentropy, name="xentropy_loss")
        prediction = tf.argmax(train_logits, axis=1, output_type=tf.int32)
        train_error = tf.reduce_mean(tf.cast(tf.not_equal(prediction, label), tf.float32), name="train_error_top1")
        attack_success = tf.reduce_mean(tf.cast(tf.equal(prediction, target), tf.float32), name="attack_success")
        wd = weight_decay_cost(self.recipe)
        add_moving_summary(xentropy, train_error, attack_success, wd)
        return tf.add(xentropy, wd, name="cost")

    def optimizer(self):
        lr = tf1.get_variable("learning_rate", initializer=float(self.initial_learning_rate), trainable=False)
        tf1.summary.scalar("learning_rate-summary", lr)
        return tf1.train.MomentumOptimizer(lr, self.recipe.momentum, use_nesterov=True)
