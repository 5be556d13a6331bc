"""The graphs built around the network: what an attacker sees of it (`attacked_classifier`), an attack's outcome on
an evaluation batch (`attack_outcome`), and the training graph for Tensorpack (`AdversarialTraining`).
Feature Denoising, Sec. 5: "adversarial training ... we use only adversarial images for
training"; the attacker runs with BN in inference mode, and its image is a constant for
the weight update (docs/FACTS.md Sec. 4-5)."""
import dataclasses
import logging
import re
from dataclasses import dataclass

import tensorflow as tf
from tensorpack import ModelDesc
from tensorpack.tfutils.optimizer import ProxyOptimizer
from tensorpack.tfutils.summary import add_moving_summary

from attacker import Attack, Classifier
from attacker.base import budget_setting, count_setting
from nets import BuildOptions, logits
from nets.layout import gpu_available, layout_scope
from ranges import setting

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
    """Trains on the attack's images (the clean ones with the clean attack). The training pass computes in
    `options.compute_dtype` (--train-dtype; variables and BN statistics stay float32); the attack's outcomes, and every
    evaluation, use the float32 model (options.exact)."""

    def __init__(self, spec, options, attack, recipe, learning_rate, execution=AttackExecution()):
        check_exact_decisions(attack, execution)
        self.spec, self.options, self.attack, self.recipe = spec, options, attack, recipe
        self.execution, self.initial_learning_rate = execution, learning_rate

    def inputs(self):
        size = self.spec.image_size
        return [tf.TensorSpec([None, size, size, 3], tf.uint8, "input"), tf.TensorSpec([None], tf.int32, "label")]

    def training_images(self, image, label):
        """(the images the weights are trained on, the attack's targets)."""
        classifier = attacked_classifier(self.spec, self.options, self.execution)
        return self.attack.perturb(image, label, classifier)

    def build_graph(self, image, label):
        image = tf.cast(image, tf.float32)
        with layout_scope(self.options.layout):
            adversarial, target = self.training_images(image, label)
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

    @property
    def loss_scale(self):
        """float16 training (--train-dtype float16): the loss is scaled before the backward pass, so that small
        gradients do not underflow, and the gradients unscaled after it (a static scale)."""
        return FP16_GRADIENT_SCALE if self.options.compute_dtype == "float16" else 1.0

    def momentum_optimizer(self):
        lr = tf1.get_variable("learning_rate", initializer=float(self.initial_learning_rate), trainable=False)
        tf1.summary.scalar("learning_rate-summary", lr)
        return tf1.train.MomentumOptimizer(lr, self.recipe.momentum, use_nesterov=True)

    def optimizer(self):
        momentum = self.momentum_optimizer()
        return ScaledLossOptimizer(momentum, self.loss_scale) if self.loss_scale != 1.0 else momentum


class ScaledLossOptimizer(ProxyOptimizer):
    """Gradients of `scale` x the loss, divided by `scale` (AdversarialTraining.loss_scale)."""

    def __init__(self, opt, scale):
        super().__init__(opt)
        self.scale = scale

    def compute_gradients(self, loss, var_list=None, **kwargs):
        grads = self._opt.compute_gradients(loss * self.scale, var_list, **kwargs)
        return [(None if g is None else g / self.scale, v) for g, v in grads]


@dataclass(frozen=True)
class FreeTraining(Attack):
    """What `--free-replays m` trains on, as the training attack's name and label (not registered: its perturbation
    lives in the training graph, FreeAdversarialTraining)."""
    name = "free"
    epsilon: float = budget_setting()
    replays: int = count_setting(4)
    step_ratio: float = setting(1.0, minimum=0.0, maximum=1.0, exclusive_minimum=True)   # x epsilon per replay

    def smaller_step(self, scale):
        return dataclasses.replace(self, step_ratio=self.step_ratio * scale)

    @property
    def label(self):
        return "Free-{}".format(self.replays)


class FreeAdversarialTraining(AdversarialTraining):
    """Free adversarial training (Shafahi et al., "Adversarial training for free!", NeurIPS 2019, Algorithm 1): each
    minibatch is replayed m times (the training stream repeats it); the perturbation delta, a variable of this rank,
    is carried over from replay to replay and from minibatch to minibatch; the one backward pass of each step gives
    both the weights' gradient and the input's, and delta <- clip(delta + epsilon sign(grad_x), -epsilon, epsilon)
    (their step: epsilon; step_ratio x epsilon after a rollback). The weights train on clip(x + delta, 0, 255)."""

    def __init__(self, spec, options, free, recipe, learning_rate):
        super().__init__(spec, options, free, recipe, learning_rate)
        self.perturbed = None

    def training_images(self, image, label):
        size = self.spec.image_size
        delta = tf1.get_variable("free_delta", [self.recipe.batch_per_gpu, size, size, 3], tf.float32,
                                 initializer=tf1.zeros_initializer(), trainable=False)
        self.delta = delta
        self.perturbed = tf.clip_by_value(image + delta[:tf.shape(image)[0]], 0.0, 255.0)
        return self.perturbed, label

    def optimizer(self):
        return FreeStepOptimizer(self.momentum_optimizer(), self)


class FreeStepOptimizer(ProxyOptimizer):
    """The weights' optimizer, whose one gradient computation also yields the gradient at the perturbed images, and
    whose update also moves the perturbation (FreeAdversarialTraining)."""

    def __init__(self, opt, model):
        super().__init__(opt)
        self.model = model

    def compute_gradients(self, loss, var_list=None, **kwargs):
        var_list = list(var_list if var_list is not None else tf1.trainable_variables())
        scale = self.model.loss_scale
        grads = tf1.gradients(loss * scale, var_list + [self.model.perturbed],
                              colocate_gradients_with_ops=kwargs.get("colocate_gradients_with_ops", False),
                              aggregation_method=kwargs.get("aggregation_method"))
        self.input_gradient = grads[-1]             # only its sign is used: the scale changes nothing
        return [(None if g is None else g / scale, v) for g, v in zip(grads[:-1], var_list)]

    def apply_gradients(self, grads_and_vars, global_step=None, name=None):
        free, delta = self.model.attack, self.model.delta
        count, epsilon = tf.shape(self.input_gradient)[0], free.epsilon
        moved = tf.clip_by_value(delta[:count] + free.step_ratio * epsilon * tf.sign(self.input_gradient), -epsilon,
                                 epsilon)
        update = tf1.assign(delta, tf.concat([moved, delta[count:]], axis=0))
        return tf.group(self._opt.apply_gradients(grads_and_vars, global_step, name=None), update, name=name)
