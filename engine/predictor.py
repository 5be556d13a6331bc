"""A model with loaded weights, BN in inference mode: images -> logits, or images + labels -> attack outcome. The one
place a model graph and its session are built for inference."""
import numpy as np
import tensorflow as tf

from attacker import build_attack, untargeted_result
from attacker.protocol import Staged, on_still_robust, stage_run
from nets import logits
from nets.layout import gpu_available, layout_scope
from nets.checkpoint import load_weights, read_weights

from .graphs import AttackExecution, attack_outcome, attacked_classifier, check_exact_decisions, evaluation_inputs

tf1 = tf.compat.v1


class Predictor:
    """One model graph and its session: `predictor(images)` gives logits; an attack's `stages` run on a batch by
    `attack` (a single attack) or `run_stage` and `judge` (a composite, staged by engine/evaluate.py)."""

    def __init__(self, spec, options, weights_path=None, ignore_mismatch=False, attack=None, gpu_index=0,
                 execution=AttackExecution()):
        self.spec, self.graph = spec, tf.Graph()
        with self.graph.as_default():
            self.images, self.labels, self.indices = (tf1.placeholder(s.dtype, s.shape, s.name)
                                                      for s in evaluation_inputs(spec))
            attack = attack or build_attack("clean")
            check_exact_decisions(attack, execution)
            self.stages = attack.stages()
            with layout_scope(options.layout):
                self._build_attack(spec, options, execution)
                self.logits = logits(tf.cast(self.images, tf.float32), spec, training=False, options=options.exact)
            config = tf1.ConfigProto(allow_soft_placement=True)     # one GPU per process, memory grown as needed
            config.gpu_options.allow_growth = True
            if gpu_available():
                config.gpu_options.visible_device_list = str(gpu_index)
            self.session = tf1.Session(config=config)
            self.session.run(tf1.global_variables_initializer())
            self.load_message = None if weights_path is None else load_weights(
                self.session, read_weights(weights_path), source=weights_path, ignore_mismatch=ignore_mismatch)

    def _build_attack(self, spec, options, execution):
        """A single attack on the batch; or, per stage, one protocol step from placeholders (kept, still robust)."""
        if len(self.stages) == 1:
            self.result = attack_outcome(spec, options, self.stages[0], self.images, self.labels, self.indices,
                                         execution)
            return
        classifier = attacked_classifier(spec, options, execution)
        self.kept = tf1.placeholder(tf.float32, self.images.shape, "kept_images")
        self.robust = tf1.placeholder(tf.bool, [None], "still_robust")
        staged = Staged(tf.cast(self.images, tf.float32), self.labels, self.indices, self.kept, self.robust)
        after = [on_still_robust(stage_run(stage, classifier), staged) for stage in self.stages]
        self.stage_outputs = [(a.adversarial, a.robust) for a in after]
        self.judgement = untargeted_result(self.kept, self.labels, classifier)

    def _check(self, images):
        images = np.asarray(images)
        expected = (self.spec.image_size, self.spec.image_size, 3)
        if images.dtype != np.uint8 or images.shape[1:] != expected:
            raise ValueError("expected uint8 images of shape [N, {}, {}, 3], got {} {}".format(
                *expected[:2], images.dtype, images.shape))
        return images

    def _feed(self, images, labels, indices):
        indices = np.arange(len(labels)) if indices is None else np.asarray(indices)
        return {self.images: self._check(images), self.labels: labels, self.indices: indices}

    def __call__(self, images):
        return self.session.run(self.logits, {self.images: self._check(images)})

    def attack(self, images, labels, indices=None):
        """A single attack's AttackResult (numpy) for one batch; `indices` (default 0, 1, ...) seed their draws."""
        if len(self.stages) > 1:
            raise ValueError("{} runs in stages: evaluate it with engine.evaluate.attack_batch".format(
                self.stages[-1].label))
        return self.session.run(self.result, self._feed(images, labels, indices))

    def run_stage(self, stage, images, labels, indices, kept, robust):
        """Stage number `stage` of a composite on the images still `robust`: (images kept, still robust)."""
        feed = {**self._feed(images, labels, indices), self.kept: kept, self.robust: robust}
        return self.session.run(self.stage_outputs[stage], feed)

    def judge(self, images, labels, kept):
        """A composite's AttackResult for the images it kept (untargeted: a success is a misclassification)."""
        return self.session.run(self.judgement, {**self._feed(images, labels, None), self.kept: kept})

    def close(self):
        self.session.close()
