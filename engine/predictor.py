"""A model with loaded weights that maps uint8 BGR images to logits (BN in inference mode)."""
import numpy as np
import tensorflow as tf

from nets import Layout, logits
from nets.checkpoint import load_weights, read_weights

from .session import layout_scope, session_config

tf1 = tf.compat.v1


class Predictor:
    def __init__(self, spec, data_format, weights_path=None, ignore_mismatch=False):
        self.spec = spec
        self.graph = tf.Graph()
        with self.graph.as_default():
            size = spec.image_size
            self.images = tf1.placeholder(tf.uint8, [None, size, size, 3], name="images")
            layout = Layout(data_format)
            with layout_scope(layout):
                self.logits = logits(tf.cast(self.images, tf.float32), spec, layout, training=False)
            self.session = tf1.Session(config=session_config())
            self.session.run(tf1.global_variables_initializer())
            self.load_message = None
            if weights_path is not None:
                self.load_message = load_weights(self.session, read_weights(weights_path), source=weights_path,
                                                 ignore_mismatch=ignore_mismatch)

    def __call__(self, images):
        images = np.asarray(images)
        expected = (self.spec.image_size, self.spec.image_size, 3)
        if images.dtype != np.uint8 or images.shape[1:] != expected:
            raise ValueError("expected uint8 images of shape [N, {}, {}, 3], got {} {}".format(
                *expected[:2], images.dtype, images.shape))
        return self.session.run(self.logits, {self.images: images})

    def close(self):
        self.session.close()
