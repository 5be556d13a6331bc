"""White-box evaluation during training with Tensorpack's inference machinery, on every rank.

docs/FACTS.md Sec. 5: distributed evaluation, each rank a shard of the validation set with
the counts summed over ranks; which attacks run after which epoch is the recipe's schedule
(`Recipe.evals_at`). Each scheduled attack is one `InferenceRunner` with its own tower
(the attack on the exact float32 model, BN frozen, sharing the training variables) and a
`CountOutcomes` inferencer; monitor names derive from the attack (`val-pgd10/top1_error`).
"""
import numpy as np
import tensorflow as tf
from tensorpack.callbacks import EnableCallbackIf, InferenceRunner, Inferencer
from tensorpack.tfutils.tower import TowerFunc

from attacker import monitor_key
from attacker.metrics import Counts
from nets.layout import layout_scope

from .model import attack_model

tf1 = tf.compat.v1
OUTCOMES = ("correct_top1", "correct_top5", "hit")


def attack_tower(spec, options, attack):
    """A tower function (images, labels) -> the attack's per-image outcomes, named OUTCOMES."""
    size = spec.image_size

    def tower(images, labels):
        with layout_scope(options.layout):
            result = attack.attack(tf.cast(images, tf.float32), labels, attack_model(spec, options))
        for name in OUTCOMES:
            tf.identity(getattr(result, name), name=name)
    return TowerFunc(tower, [tf.TensorSpec([None, size, size, 3], tf.uint8, "eval_images"),
                             tf.TensorSpec([None], tf.int32, "eval_labels")])


class CountOutcomes(Inferencer):
    """Counts errors and hits over one pass, sums them over Horovod ranks (`hvd`), and puts
    top-1/top-5 error and attack success rate on the trainer's monitors under `prefix`."""

    def __init__(self, prefix, hvd=None):
        self.prefix, self.hvd = prefix, hvd

    def _setup_graph(self):
        if self.hvd is not None:     # built before the graph is finalised; run by every rank each round
            self._local = tf1.placeholder(tf.int64, [len(Counts().as_array())])
            self._total = self.hvd.allreduce(self._local, op=self.hvd.Sum, name="sum_" + self.prefix.replace("-", "_"))

    def _before_inference(self):
        self.counts = Counts()

    def _get_fetches(self):
        return list(OUTCOMES)

    def _on_fetches(self, outputs):
        self.counts = self.counts + Counts.from_batch(*outputs)

    def _after_inference(self):
        counts = self.counts
        if self.hvd is not None:
            counts = Counts.from_array(self.trainer.sess.run(self._total, {self._local: counts.as_array()}))
        for name in ("top1_error", "top5_error", "attack_success_rate"):
            value = getattr(counts, name)
            if not np.isnan(value):          # nan: no images at all
                self.trainer.monitors.put_scalar("{}/{}".format(self.prefix, name), value)


class ShardInferenceRunner(InferenceRunner):
    """An InferenceRunner that accepts an empty validation shard (more ranks than batches):
    it then feeds nothing but still runs its inferencers, so their allreduce meets the other
    ranks'. (Tensorpack 0.11 takes size 0 for "unknown" and fails at the first batch.)"""

    def _before_train(self):
        if self._size == 0:
            self._hooked_sess = None
            self._input_callbacks.before_train()
        else:
            super()._before_train()

    def _trigger(self):
        if self._size > 0:
            return super()._trigger()
        for inferencer in self.infs:
            inferencer.before_epoch()
        for inferencer in self.infs:
            inferencer.trigger_epoch()


def evaluation_callbacks(spec, options, recipe, attacks, make_dataflow, hvd=None):
    """One runner per scheduled attack ({schedule text: attack}), enabled after the epochs
    `recipe.evals_at` names; `make_dataflow()` builds this rank's validation shard."""
    callbacks = []
    for text, attack in attacks.items():
        key = monitor_key(attack)
        runner = ShardInferenceRunner(make_dataflow(), [CountOutcomes("val-" + key, hvd)], tower_name="eval_" + key,
                                      tower_func=attack_tower(spec, options, attack))
        runner.set_chief_only(False)
        callbacks.append(EnableCallbackIf(runner, lambda self, text=text: text in recipe.evals_at(self.epoch_num)))
    return callbacks
