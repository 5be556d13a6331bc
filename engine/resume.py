"""What a training run leaves in its log directory, and how it continues: the newest intact
checkpoint, the run's shape, and an epoch history that a resume neither loses nor repeats.

Invariant: the checkpoint of epoch N is written after the stats.json record of epoch N (the
saver runs as the last monitor), so resuming from epoch N's checkpoint finds records 1..N;
records of later epochs (killed after the record, before the checkpoint) are dropped, as
those epochs are trained again. Every file is replaced atomically (write, then rename).
"""
import json
import logging
import os

import tensorflow as tf
from tensorpack import logger
from tensorpack.callbacks import JSONWriter, ModelSaver
from tensorpack.callbacks.monitor import MonitorBase

from files import atomic_write
from nets.checkpoint import CheckpointError, read_weights

log = logging.getLogger(__name__)
RUN_FILE = "run.json"


def checkpoint_candidates(logdir):
    """The log directory's checkpoint prefixes, newest first (from its `checkpoint` file, or
    from the model-*.index files when that file is missing or unreadable)."""
    state = None
    try:
        state = tf.train.get_checkpoint_state(logdir)
    except (tf.errors.OpError, ValueError) as error:
        log.warning("cannot read %s (%s); looking for model-*.index files", os.path.join(logdir, "checkpoint"), error)
    if state is not None and state.all_model_checkpoint_paths:
        paths = list(state.all_model_checkpoint_paths)
    else:
        paths = [os.path.join(logdir, n[:-len(".index")]) for n in os.listdir(logdir) if n.endswith(".index")]
    paths = [p if os.path.isabs(p) else os.path.join(logdir, p) for p in paths]
    return sorted(set(paths), key=lambda p: int(p.rsplit("-", 1)[-1]) if p.rsplit("-", 1)[-1].isdigit() else -1,
                  reverse=True)


def newest_intact_checkpoint(logdir):
    """(prefix, global step) of the newest checkpoint whose every tensor reads back, or None;
    each newer one that does not is skipped with a warning that says why."""
    if not os.path.isdir(logdir):
        return None
    for prefix in checkpoint_candidates(logdir):
        try:
            weights = read_weights(prefix)
            return prefix, int(weights["global_step"])
        except (CheckpointError, KeyError) as error:
            log.warning("--resume: skipping checkpoint %s: %s", prefix, error if error.args else "no global_step")
    return None


def check_run_shape(logdir, shape, write=True):
    """The run's shape ({batch per GPU, ranks, total batch, steps per epoch}) is written at the
    first start (by rank 0: `write`); a resume with another shape is refused on every rank,
    since global steps would map to other epochs."""
    path = os.path.join(logdir, RUN_FILE)
    if os.path.exists(path):
        with open(path) as f:
            before = json.load(f)
        if before != shape:
            raise ValueError(
                "{} was trained with {}; this run has {}. Resuming would map its steps to other epochs: use the same "
                "--batch and number of ranks, or start a new --logdir from its weights with --load and "
                "--starting-epoch".format(logdir, describe(before), describe(shape)))
        return
    if not write:
        return
    with atomic_write(path) as f:
        json.dump(shape, f, indent=2, sort_keys=True)


def describe(shape):
    return "{} ranks x {} images (total batch {}), {} steps per epoch".format(
        shape["ranks"], shape["batch_per_gpu"], shape["total_batch"], shape["steps_per_epoch"])


class ResumableJSONWriter(JSONWriter):
    """Tensorpack's stats.json writer that continues a resumed run's history: the records of
    epochs before the starting epoch are kept, later ones dropped (their epochs are trained
    again), and nothing is moved aside."""

    def _before_train(self):
        self._fname = os.path.join(logger.get_logger_dir(), JSONWriter.FILENAME)
        start = self.trainer.loop.starting_epoch
        stats = JSONWriter.load_existing_json() or []
        self._stats = [record for record in stats if record.get("epoch_num", 0) < start]
        if len(self._stats) < len(stats):
            logger.info("stats.json: dropping the records of epochs {}.. (trained again)".format(start))
        missing = sorted(set(range(1, start)) - {record.get("epoch_num") for record in self._stats})
        if missing and stats:
            logger.warn("stats.json has no record of epoch(s) {}".format(missing))
        self._trigger()


class CheckpointAfterStats(ModelSaver, MonitorBase):
    """Tensorpack's ModelSaver run as the last monitor, so that a checkpoint of epoch N only
    exists once the record of epoch N is written. Chief only."""
    _chief_only = True
