"""The model description for Tensorpack: inputs, the attack, the loss, the optimizer.

Feature Denoising, Sec. 5: "adversarial training ... we use only adversarial images for
training"; the attacker runs with BN in inference mode, and its image is a constant for
the weight update.
"""
import re

import tensorflow as tf
from tensorpack import ModelDesc
from tensorpack.tfutils.summary import add_moving_summary

from nets import Layout, logits
from nets.layers import folded_batch_norm

from .session import layout_scope

tf1 = tf.compat.v1


def model_fn_for(spec, layout):
    """images [0, 255] -> logits with BN in inference mode: what attackers and evaluation call."""
    def model_fn(image, dtype=tf.float32, fold_batch_norm=False):
        with folded_batch_norm(fold_batch_norm):
            return logits(image, spec, layout, training=False, dtype=dtype)
    return model_fn


def attack_graph(spec, layout, attacker):
    """(uint8 image placeholder, label placeholder, AttackResult) built in the current graph,
    sharing the model's variables."""
    size = spec.image_size
    images = tf1.placeholder(tf.uint8, [None, size, size, 3], name="eval_images")
    labels = tf1.placeholder(tf.int32, [None], name="eval_labels")
    with layout_scope(layout):
        result = attacker.attack(tf.cast(images, tf.float32), labels, model_fn_for(spec, layout))
    return images, labels, result


def weight_decay_cost(recipe):
    pattern = re.compile(recipe.weight_decay_pattern)
    weights = [v for v in tf1.trainable_variables() if pattern.search(v.op.name)]
    return tf.multiply(recipe.weight_decay, tf.add_n([tf.nn.l2_loss(w) for w in weights]), name="weight_decay")


class AdversarialModel(ModelDesc):
    """Trains on the attacker's images (the clean ones with NoOpAttacker)."""

    def __init__(self, spec, data_format, attacker, recipe, learning_rate):
        self.spec = spec
        self.layout = Layout(data_format)
        self.attacker = attacker
        self.recipe = recipe
        self.initial_learning_rate = learning_rate

    def inputs(self):
        size = self.spec.image_size
        return [tf.TensorSpec([None, size, size, 3], tf.uint8, "input"),
                tf.TensorSpec([None], tf.int32, "label")]

    def build_graph(self, image, label):
        image = tf.cast(image, tf.float32)
        with layout_scope(self.layout):
            adversarial, target = self.attacker.perturb(image, label, model_fn_for(self.spec, self.layout))
            train_logits = logits(adversarial, self.spec, self.layout, training=True)
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
