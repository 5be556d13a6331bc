"""Saves that fail loudly: the first checkpoint, stats.json, event or curve write that fails ends the run at once, on
every rank, with the cause, leaving no partial file and the last good checkpoint and its stats record as they were,
for `--resume` (Tensorpack's own saver and stats writer log such an error and carry on). Each writer (rank 0's
monitors) reports to one `SaveStatus`; after the first failure the epoch's remaining writes are skipped, and
`SaveGuard`, the last monitor, on every rank, stops training. Order at an epoch's end: events, stats.json record,
checkpoint (engine/resume.py relies on it), then the guard."""
import contextlib
import glob
import json
import os
import re
import shutil

import tensorflow as tf
from tensorpack import logger
from tensorpack.callbacks import JSONWriter, ModelSaver, ScalarPrinter, TFEventWriter
from tensorpack.callbacks.monitor import MonitorBase

from files import atomic_write

from .distributed import World

tf1 = tf.compat.v1
WRITE_ERRORS = (OSError, tf.errors.OpError)
# TF's event writer reports a failed write of its thread as a RuntimeError ("PATH; No space left on device").
EVENT_WRITE_ERRORS = WRITE_ERRORS + (RuntimeError,)


class SaveFailed(RuntimeError):
    """A checkpoint, stats record, event or curve could not be written; training stopped there."""


def reason(error):
    """The operating system's words for a failed write: "No space left on device (errno 28)"."""
    if isinstance(error, OSError) and error.strerror:
        return "{} (errno {})".format(error.strerror, error.errno)
    if isinstance(error, (tf.errors.OpError, RuntimeError)):   # TF puts the cause after the file name: "PATH; No ..."
        message = error.message if isinstance(error, tf.errors.OpError) else str(error)
        causes = [m.group(1) for m in (re.search(r"; ([^;]+)$", line.strip()) for line in message.splitlines()) if m]
        return "{} ({})".format(causes[0], type(error).__name__) if causes else type(error).__name__
    return str(error) or type(error).__name__


class SaveStatus:
    """The run's first failed write, and the last checkpoint written whole."""

    def __init__(self, logdir, last_checkpoint=None):
        self.logdir, self.last_checkpoint, self.failure = logdir, last_checkpoint, None

    def attempt(self, what, path, write, clean_up=None, errors=WRITE_ERRORS):
        """Run `write()`; on a write error (`errors`) record it (the first), run `clean_up()`, return False. Skipped
        after one."""
        if self.failure is not None:
            return False
        try:
            write()
            return True
        except errors as error:
            if clean_up is not None:
                with contextlib.suppress(*errors):
                    clean_up()
            self.failure = "could not write {} {}: {}".format(what, path, reason(error))
            return False

    def message(self, when):
        last = ("the last good checkpoint is {}, with its stats.json record".format(self.last_checkpoint)
                if self.last_checkpoint else "no checkpoint was written yet")
        return ("{}. Training stopped {} so that no epoch runs unsaved; {}. Free space or make {} writable, "
                "then continue with --resume".format(self.failure, when, last, self.logdir))


class SafeEventWriter(TFEventWriter):
    """Tensorpack's TensorBoard writer; a failed flush goes to `status`, the file cut back to its last good size."""

    def __new__(cls, *args, **kwargs):        # Tensorpack's __new__ takes the log folder first
        return MonitorBase.__new__(cls)

    def __init__(self, status, **kwargs):
        super().__init__(**kwargs)
        self.status, self.good_size = status, 0

    def event_file(self):
        try:
            return self._writer.event_writer._ev_writer.FileName().decode()
        except AttributeError:       # another TF: the newest event file of the folder
            files = glob.glob(os.path.join(self._logdir, "events.out.tfevents.*"))
            return max(files, key=os.path.getmtime) if files else None

    def attempt(self, write):
        return self.status.attempt("the TensorBoard events in", self._logdir, write, self.cut_back, EVENT_WRITE_ERRORS)

    def process_summary(self, summary):
        self.attempt(lambda: super(SafeEventWriter, self).process_summary(summary))

    def process_event(self, evt):
        self.attempt(lambda: super(SafeEventWriter, self).process_event(evt))

    def _trigger(self):
        if self.attempt(self._writer.flush):
            path = self.event_file()
            self.good_size = os.path.getsize(path) if path and os.path.exists(path) else 0

    def cut_back(self):
        path = self.event_file()
        if path and os.path.exists(path) and os.path.getsize(path) > self.good_size:
            os.truncate(path, self.good_size)

    def _after_train(self):
        if self.status.failure is None:
            super()._after_train()
        else:       # the writer's thread has failed: closing it would raise the same error again
            with contextlib.suppress(*EVENT_WRITE_ERRORS):
                super()._after_train()
            with contextlib.suppress(*EVENT_WRITE_ERRORS):
                self.cut_back()


class ResumableJSONWriter(JSONWriter):
    """Tensorpack's stats.json writer that continues a resumed run's history (records of epochs before the starting
    epoch are kept, later ones dropped: those epochs are trained again) and writes the file whole or not at all."""

    def __new__(cls, *args, **kwargs):        # Tensorpack's __new__ takes no argument
        return MonitorBase.__new__(cls)

    def __init__(self, status):
        self.status = status

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

    def _write_stat(self):
        def write():
            with atomic_write(self._fname) as f:
                json.dump(self._stats, f)
        self.status.attempt("the stats record", self._fname, write)


class CheckpointAfterStats(ModelSaver, MonitorBase):
    """Tensorpack's ModelSaver as a monitor after the stats writer, so that epoch N's checkpoint exists only once its
    record does; a failed save goes to `status`, its partial files removed. No meta graph. Chief only."""
    _chief_only = True

    def __init__(self, status, **kwargs):
        super().__init__(**kwargs)
        self.status = status

    def _before_train(self):
        pass

    def _trigger(self):
        step = self.trainer.loop.global_step
        prefix = os.path.join(self.checkpoint_dir, "model-{}".format(step))

        def save():
            self.saver.save(tf1.get_default_session(), self.path, global_step=step, write_meta_graph=False)

        def remove_partial_files():
            for path in glob.glob(prefix + ".*") + glob.glob(prefix + "_temp*") + \
                    glob.glob(os.path.join(self.checkpoint_dir, "checkpoint.tmp*")):
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)

        if self.status.attempt("the checkpoint", prefix, save, remove_partial_files):
            self.status.last_checkpoint = prefix
            logger.info("Model saved to {}.".format(prefix))


class SaveGuard(MonitorBase):
    """The last monitor, on every rank: after the start and each epoch's saves, raises SaveFailed on every rank when
    rank 0 failed to write something."""
    _chief_only = False

    def __init__(self, status, world=None):        # None: a single process
        self.status, self.world = status, world if world is not None else World()

    def check(self, when):
        failure = self.world.from_chief(self.status.message(when) if self.status.failure is not None else "")
        if failure:
            raise SaveFailed(failure if self.world.is_chief else "rank 0 could not save: " + failure)

    def _before_train(self):
        self.check("before epoch {}".format(self.trainer.loop.starting_epoch))

    def _trigger_epoch(self):
        self.check("after epoch {}".format(self.trainer.epoch_num))


def save_monitors(status, logdir, max_checkpoints, world):
    """Rank 0's writers in their order, then the guard (on every rank)."""
    if not world.is_chief:
        return [SaveGuard(status, world)]
    return [SafeEventWriter(status, logdir=logdir), ResumableJSONWriter(status), ScalarPrinter(),
            CheckpointAfterStats(status, max_to_keep=max_checkpoints, checkpoint_dir=logdir), SaveGuard(status, world)]
