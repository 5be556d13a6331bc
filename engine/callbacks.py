"""White-box evaluation during training with Tensorpack's inference machinery, on every rank (docs/FACTS.md Sec. 5):
each rank a shard of the validation set, the counts summed over ranks, after the epochs `Recipe.evals_at` names. Each
attack is one `InferenceRunner` with its own tower (the exact float32 model, BN frozen, the training variables) and a
`CountOutcomes` inferencer, its monitors named after it (`val-pgd10/top1_error`). After the last epoch the final
evaluations are written as `robustness_curve.json`, the format of `main.py --eval --result-file`."""
import os
import time

import numpy as np
import tensorflow as tf
from tensorpack.callbacks import Callback, EnableCallbackIf, InferenceRunner, Inferencer
from tensorpack.callbacks.summary import MergeAllSummaries_RunWithOp
from tensorpack.train.config import DEFAULT_CALLBACKS
from tensorpack.tfutils.tower import TowerFunc

from attacker import monitor_key
from attacker.metrics import Counts

from . import watchdog
from .evaluate import point_record, result_record, write_json
from .graphs import attack_outcome, evaluation_inputs

OUTCOMES = ("correct_top1", "correct_top5", "success")
CURVE_FILE = "robustness_curve.json"


def attack_tower(spec, options, attack):
    """A tower function (images, labels, indices) -> the attack's per-image outcomes, named OUTCOMES."""
    def tower(images, labels, indices):
        result = attack_outcome(spec, options, attack, images, labels, indices)
        for name in OUTCOMES:
            tf.identity(getattr(result, name), name=name)
    return TowerFunc(tower, evaluation_inputs(spec))


class SummariesFetchedEveryStep(MergeAllSummaries_RunWithOp):
    """Tensorpack's MergeAllSummaries fetches the summaries with the last step of each epoch only. A step whose fetches
    differ is a new callable to TensorFlow, which then optimises the whole training graph a second time (Grappler):
    4.4 s of the demo network's first FGSM-RS epoch, which took 19 s, against 0.4 s for any other step. Fetched with
    every step (a few scalars), they are still handed to the monitors at each epoch's last step only."""

    def __init__(self):
        super().__init__(0, tf.compat.v1.GraphKeys.SUMMARIES)

    def _before_run(self, ctx):
        return self._fetches

    def _after_run(self, ctx, run_values):
        if self._need_run():
            super()._after_run(ctx, run_values)


def training_defaults():
    """Tensorpack's default training callbacks, its summaries callback replaced by SummariesFetchedEveryStep."""
    return [SummariesFetchedEveryStep() if isinstance(callback, MergeAllSummaries_RunWithOp) else callback
            for callback in DEFAULT_CALLBACKS()]


class CountOutcomes(Inferencer):
    """Counts errors and attack successes over one pass, sums them over the ranks of `world`, puts top-1/top-5
    error and attack success rate on the monitors under `prefix`, and keeps {epoch: (counts, seconds)} in `results`."""

    def __init__(self, prefix, results, world):
        self.prefix, self.results, self.world = prefix, results, world

    def _before_inference(self):
        self.counts, self.started = Counts(), time.time()

    def _get_fetches(self):
        return list(OUTCOMES)

    def _on_fetches(self, outputs):
        self.counts = self.counts + Counts.from_batch(*outputs)
        watchdog.beat()

    def _after_inference(self):
        counts = Counts.from_array(self.world.sum(self.counts.as_array()))
        self.results[self.trainer.epoch_num] = (counts, time.time() - self.started)
        for name in ("top1_error", "top5_error", "attack_success_rate"):
            value = getattr(counts, name)
            if not np.isnan(value):          # nan: no images at all
                self.trainer.monitors.put_scalar("{}/{}".format(self.prefix, name), value)


class CountUnreadable(Callback):
    """After each epoch, the distinct unreadable training images skipped so far (`log`, a data.CorruptImageLog),
    summed over the ranks of `world`, as the monitor value `unreadable_train_images` (in stats.json). On every rank."""
    _chief_only = False

    def __init__(self, log, world):
        self.log, self.world = log, world

    def _trigger_epoch(self):
        self.trainer.monitors.put_scalar("unreadable_train_images", int(self.world.sum([len(self.log.paths)])[0]))


class ShardInferenceRunner(InferenceRunner):
    """An InferenceRunner that accepts an empty validation shard (more ranks than batches): it then feeds nothing but
    still runs its inferencers, so their allreduce meets the other ranks'. (Tensorpack 0.11 fails on size 0.)"""

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


class WriteRobustnessCurve(Callback):
    """After the last epoch, the final evaluations as one result file (chief only); a failed write goes to `status`."""

    def __init__(self, path, recipe, attacks, results, model, status):
        self.path, self.recipe, self.attacks, self.results, self.model, self.status = \
            path, recipe, attacks, results, model, status

    def _trigger_epoch(self):
        if self.epoch_num < self.recipe.epochs:
            return
        done = [text for text in self.recipe.evals_at(self.epoch_num) if self.epoch_num in self.results.get(text, {})]
        points = [point_record(self.results[text][self.epoch_num][0], self.attacks[text],
                               self.results[text][self.epoch_num][1]) for text in done]
        record = dict(result_record(points, self.model), epoch=self.epoch_num)
        self.status.attempt("the robustness curve", self.path, lambda: write_json(record, self.path))


def evaluation_callbacks(spec, options, recipe, attacks, make_dataflow, world, logdir=None, model=None, status=None):
    """One runner per attack ({schedule text: attack}) on this rank's shard (`make_dataflow()`), enabled after the
    epochs `recipe.evals_at` names; with `logdir` (the chief), the robustness curve goes there after the last epoch."""
    callbacks, results = [], {text: {} for text in attacks}
    for text, attack in attacks.items():
        key = monitor_key(attack)
        runner = ShardInferenceRunner(make_dataflow(), [CountOutcomes("val-" + key, results[text], world)],
                                      tower_name="eval_" + key, tower_func=attack_tower(spec, options, attack))
        runner.set_chief_only(False)
        callbacks.append(EnableCallbackIf(runner, lambda self, text=text: text in recipe.evals_at(self.epoch_num)))
    if logdir is not None:
        callbacks.append(WriteRobustnessCurve(os.path.join(logdir, CURVE_FILE), recipe, attacks, results, model,
                                              status))
    return callbacks
