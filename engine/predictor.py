"""A model with loaded weights, BN in inference mode: images -> logits, or images + labels ->
attack outcome. The one place a model graph and its session are built for inference."""
import numpy as np
import tensorflow as tf

from attacker import build_attack
from nets import logits
from nets.layout import gpu_available, layout_scope
from nets.checkpoint import load_weights, read_weights

from .model import AttackExecution, attack_outcome, evaluation_inputs

tf1 = tf.compat.v1


def session_config(gpu_index=0):
    """One GPU per process (its Horovod local rank), memory grown as needed."""
    config = tf1.ConfigProto(allow_soft_placement=True)
    config.gpu_options.allow_growth = True
    if gpu_available():
        config.gpu_options.visible_device_list = str(gpu_index)
    return config


def evaluation_stages(attack):
    """What an evaluation runs: the attack itself, or for a composite attack the clean images
    and then each component (engine.evaluate runs each stage on the images still robust)."""
    components = attack.components()
    return [attack] if components == [attack] else [build_attack("clean")] + list(components)


class Predictor:
    def __init__(self, spec, options, weights_path=None, ignore_mismatch=False, attack=None, gpu_index=0,
                 execution=AttackExecution()):
        self.spec = spec
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.images, self.labels, self.indices = (tf1.placeholder(s.dtype, s.shape, s.name)
                                                      for s in evaluation_inputs(spec))
            self.stages = evaluation_stages(attack or build_attack("clean"))
            self.stage_results = [attack_outcome(spec, options, stage, self.images, self.labels, self.indices,
                                                 execution) for stage in self.stages]
            with layout_scope(options.layout):
                self.logits = logits(tf.cast(self.images, tf.float32), spec, training=False, options=options.exact)
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

    def attack(self, images, labels, indices=None, stage=None):
        """The attack's AttackResult (numpy) for one batch (clean images without an attack): of
        the whole attack (a composite's stages in turn, engine.evaluate.run_protocol), or of
        stage `stage` alone. `indices` (the images' positions in the data set, default 0, 1, ...)
        seed their draws."""
        indices = np.arange(len(labels)) if indices is None else np.asarray(indices)
        if stage is None and len(self.stages) > 1:
            from .evaluate import run_protocol
            return run_protocol(self, np.asarray(images), np.asarray(labels), indices)[0]
        return self.session.run(self.stage_results[stage or 0], {self.images: self._check(images),
                                                                 self.labels: labels, self.indices: indices})

    def close(self):
        self.session.close()
