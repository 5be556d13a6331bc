"""A model with loaded weights, BN in inference mode: images -> logits, or images + labels ->
attack outcome. The one place a model graph and its session are built for inference."""
import numpy as np
import tensorflow as tf

from attacker import NoOpAttacker
from nets import Layout
from nets.checkpoint import load_weights, read_weights

from .model import attack_graph, model_fn_for
from .session import layout_scope, session_config

tf1 = tf.compat.v1


class Predictor:
    def __init__(self, spec, data_format, weights_path=None, ignore_mismatch=False, attacker=None, gpu_index=0):
        self.spec = spec
        self.graph = tf.Graph()
        with self.graph.as_default():
            layout = Layout(data_format)
            self.images, self.labels, self.attack_result = attack_graph(spec, layout, attacker or NoOpAttacker())
            with layout_scope(layout):
                self.logits = model_fn_for(spec, layout)(tf.cast(self.images, tf.float32))
            self.session = tf1.Session(config=session_config(gpu_index))
            self.session.run(tf1.global_variables_initializer())
            self.load_message = None
            if weights_path is not None:
                self.load_message = load_weights(self.session, read_weights(weights_path), source=weights_path,
                                                 ignore_mismatch=ignore_mismatch)

    def _check(self, images):
        images = np.asarray(images)
        expected = (self.spec.image_size, self.spec.image_size, 3)
        if images.dtype != np.uint8 or images.shape[1:] != expected:
            raise ValueError("expected uint8 images of shape [N, {}, {}, 3], got {} {}".format(
                *expected[:2], images.dtype, images.shape))
        return images

    def __call__(self, images):
        return self.session.run(self.logits, {self.images: self._check(images)})

    def attack(self, images, labels):
        """The attacker's AttackResult (numpy) for one batch (clean images without an attacker)."""
        return self.session.run(self.attack_result, {self.images: self._check(images), self.labels: labels})

    def close(self):
        self.session.close()
