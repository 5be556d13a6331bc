"""The catastrophic-overfitting guard. Wong, Rice & Kolter (ICLR 2020, Sec. 4-5): FGSM training can "catastrophically
overfit": within an epoch the model stays robust to the training attack while its robustness to PGD falls to zero;
they catch it by checking PGD accuracy on a training minibatch and stopping when it drops. Here, after every epoch,
the guard attack (PGD-10 by default) runs on a fixed subset of the training images (the same images every epoch,
chosen by a seed; evaluation preprocessing; shared over the ranks like the validation set); its accuracy goes to
stats.json as `guard-<attack>/accuracy`. When it falls more than `margin` below the best accuracy of the run so far
(a resumed run's earlier epochs included), training stops with TrainingCollapsed on every rank, after that epoch's
record and checkpoint are written: a collapsed run never ends as if it had succeeded. The checkpoint of the best epoch
is kept in LOGDIR/guard-best/ (the saver keeps only the last few); with --on-collapse rollback the run goes back to it
(engine/rollback.py)."""
import json
import os

from tensorpack.callbacks.monitor import MonitorBase
from tensorpack.utils import logger

from attacker import monitor_key
from data import build_eval_dataflow, evaluation_subset, list_images
from data.pipelines import read_problem

from .callbacks import CountOutcomes, ShardInferenceRunner, attack_tower
from .rollback import BEST_FOLDER, keep_best


class TrainingCollapsed(RuntimeError):
    """PGD accuracy on the guard images fell by more than the margin below its best (`best`: {epoch, global_step,
    accuracy} of the best epoch, `epoch`: the collapsed one)."""

    def __init__(self, message, epoch=None, best=None):
        super().__init__(message)
        self.epoch, self.best = epoch, best


def guard_prefix(attack):
    return "guard-" + monitor_key(attack)


class CountGuardOutcomes(CountOutcomes):
    """The validation counts' monitors, and the guard's accuracy (1 - top-1 error) as `guard-<attack>/accuracy`."""

    def _after_inference(self):
        super()._after_inference()
        counts = self.results[self.trainer.epoch_num][0]
        if counts.images:
            self.trainer.monitors.put_scalar(self.prefix + "/accuracy", 1.0 - counts.top1_error)


def guard_images(data, count, seed, classes=None):
    """The sorted positions in ROOT/train of the guard's `count` images (all of them when the split is smaller), the
    unreadable ones left out (training skips those, up to --max-unreadable-fraction)."""
    items = list_images(data, "train", classes)
    chosen = evaluation_subset(items, os.path.join(data, "train"), count=min(count, len(items)), seed=seed)
    return [k for k in chosen if read_problem(items[k][0]) is None]


def best_recorded(logdir, key, before_epoch):
    """The best epoch's {epoch, global_step, accuracy} (the first of equals) by the guard accuracy `key` in the log
    folder's stats.json, from epochs before `before_epoch`; None: none."""
    try:
        with open(os.path.join(logdir, "stats.json")) as f:
            stats = json.load(f)
    except (OSError, ValueError):
        return None
    records = [r for r in stats if key in r and r.get("epoch_num", 0) < before_epoch]
    if not records:
        return None
    best = max(records, key=lambda r: (r[key], -r["epoch_num"]))
    return dict(epoch=best["epoch_num"], global_step=best.get("global_step"), accuracy=best[key])


class CollapseGuard(MonitorBase):
    """After each epoch's records and checkpoint (a monitor after the writers), on every rank: the guard's accuracy
    of this epoch (the same on every rank: the counts are summed over the ranks) against the best so far."""
    _chief_only = False

    def __init__(self, attack, results, margin, logdir, world):
        self.attack, self.results, self.margin, self.logdir, self.world = attack, results, margin, logdir, world

    def _before_train(self):
        start = self.trainer.loop.starting_epoch
        self.best = self.world.from_chief(best_recorded(self.logdir, guard_prefix(self.attack) + "/accuracy", start)
                                          if self.world.is_chief else None)

    def epoch_accuracy(self, epoch):
        """The guard attack's accuracy on the guard images after `epoch` (None: not checked then)."""
        return 1.0 - self.results[epoch][0].top1_error if epoch in self.results else None

    def _trigger_epoch(self):
        epoch = self.trainer.epoch_num
        accuracy = self.epoch_accuracy(epoch)
        if accuracy is None:
            return
        if self.best is None or accuracy > self.best["accuracy"]:
            self.best = dict(epoch=epoch, global_step=self.trainer.loop.global_step, accuracy=accuracy)
            if self.world.is_chief:
                keep_best(self.logdir, self.best)
        best = self.best["accuracy"]
        if accuracy < best - self.margin - 1e-9:           # a fall of exactly the margin is not a collapse
            raise TrainingCollapsed(
                "catastrophic overfitting after epoch {}: {} accuracy on the {} guard images fell to {:.1%}, {:.1%} "
                "below its best of {:.1%} after epoch {} (margin {:.0%}); its checkpoint is kept but the run "
                "stopped, and the best epoch's is in {}. Use a random start (fgsm-rs), a smaller step "
                "(--attack-option step_ratio=...), a multi-step attack, or --on-collapse rollback, and train again "
                "or from the best checkpoint (stats.json has the guard's accuracy of every epoch)".format(
                    epoch, self.attack.label, self.results[epoch][0].images, accuracy, best - accuracy, best,
                    self.best["epoch"], self.margin, os.path.join(self.logdir, BEST_FOLDER)),
                epoch=epoch, best=self.best)
        logger.info("collapse guard: {} accuracy {:.1%} on the guard images (best {:.1%})".format(
            self.attack.label, accuracy, best))


def guard_runner(spec, options, attack, data, positions, batch, workers, world, results, classes=None):
    """The guard attack on this rank's share of the guard images after every epoch, its counts into `results`."""
    runner = ShardInferenceRunner(
        build_eval_dataflow(data, batch, image_size=spec.image_size, workers=workers, shard_index=world.rank,
                            num_shards=world.size, split="train", classes=classes, subset=positions),
        [CountGuardOutcomes(guard_prefix(attack), results, world)], tower_name="guard_" + monitor_key(attack),
        tower_func=attack_tower(spec, options, attack))
    runner.set_chief_only(False)
    return runner
