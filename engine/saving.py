"""Saves that fail loudly: the first checkpoint, stats.json, event or curve write that fails ends
the run at once, on every rank, with the cause, leaving no partial file and the last good
checkpoint and its stats record as they were; `--resume` continues from them later.

Tensorpack's own saver and stats writer log such an error and carry on, so a full disk or an
unwritable folder trained every later epoch unsaved while the run looked fine. Here each writer
(rank 0's monitors) reports to one `SaveStatus`; after the first failure the epoch's remaining
writes are skipped (a checkpoint is never written after its stats record failed), and `SaveGuard`,
the last monitor, on every rank, stops training where it failed. Order within an epoch's end:
events, stats.json record, checkpoint (engine/resume.py relies on it), then the guard.
"""
import contextlib
import glob
import json
import logging
import os
import re
import shutil

import tensorflow as tf
from tensorpack import logger
from tensorpack.callbacks import JSONWriter, ModelSaver, ScalarPrinter, TFEventWriter
from tensorpack.callbacks.monitor import MonitorBase

from files import atomic_write

from .distributed import decode_text, encode_text

tf1 = tf.compat.v1
log = logging.getLogger(__name__)
WRITE_ERRORS = (OSError, tf.errors.OpError)


class SaveFailed(RuntimeError):
    """A checkpoint, stats record, event or curve could not be written; training stopped there."""


def reason(error):
    """The operating system's words for a failed write: "No space left on device (errno 28)"."""
    if isinstance(error, OSError) and error.strerror:
        return "{} (errno {})".format(error.strerror, error.errno)
    if isinstance(error, tf.errors.OpError):        # TF puts the cause after the file name: "PATH; No space ..."
        causes = [m.group(1) for m in (re.search(r"; ([^;]+)$", line.strip()) for line in error.message.splitlines())
                  if m]
        return "{} ({})".format(causes[0], type(error).__name__) if causes else type(error).__name__
    return str(error) or type(error).__name__


class SaveStatus:
    """The run's first failed write, and the last checkpoint written whole."""

    def __init__(self, logdir, last_checkpoint=None):
        self.logdir, self.last_checkpoint = logdir, last_checkpoint
        self.failure = None

    def attempt(self, what, path, write, clean_up=None):
        """Run `write()`; on a write error record it (the first one only), run `clean_up()` and
        return False. Once something failed, later writes are skipped: False without running."""
        if self.failure is not None:
            return False
        try:
            write()
            return True
        except WRITE_ERRORS as error:
            if clean_up is not None:
                with contextlib.suppress(*WRITE_ERRORS):
                    clean_up()
            self.failure = "could not write {} {}: {}".format(what, path, reason(error))
            return False

    def message(self, when):
        last = ("the last good checkpoint is {}, with its stats.json record".format(self.last_checkpoint)
                if self.last_checkpoint else "no checkpoint was written yet")
        return ("{}. Training stopped {} so that no epoch runs unsaved; {}. Free space or make {} writable, "
                "then continue with --resume".format(self.failure, when, last, self.logdir))


class SafeEventWriter(TFEventWriter):
    """Tensorpack's TensorBoard writer; a failed flush is reported to `status`, and the event
    file is cut back to its size after the last good flush (no half-written record)."""

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

    def process_summary(self, summary):
        self.status.attempt("the TensorBoard events in", self._logdir, lambda: super(SafeEventWriter, self)
                            .process_summary(summary), self.cut_back)

    def process_event(self, evt):
        self.status.attempt("the TensorBoard events in", self._logdir, lambda: super(SafeEventWriter, self)
                            .process_event(evt), self.cut_back)

    def _trigger(self):
        if self.status.attempt("the TensorBoard events in", self._logdir, self._writer.flush, self.cut_back):
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
            with contextlib.suppress(*WRITE_ERRORS):
                super()._after_train()
            with contextlib.suppress(*WRITE_ERRORS):
                self.cut_back()


class ResumableJSONWriter(JSONWriter):
    """Tensorpack's stats.json writer that continues a resumed run's history (the records of
    epochs before the starting epoch are kept, later ones dropped: their epochs are trained
    again; nothing is moved aside) and writes the file whole or not at all."""

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


def checkpoint_leftovers(logdir, step):
    """The files a checkpoint save of `step` may leave: its own and TF's temporary ones."""
    prefix = os.path.join(logdir, "model-{}".format(step))
    return glob.glob(prefix + ".*") + glob.glob(prefix + "_temp*") + glob.glob(os.path.join(logdir, "checkpoint.tmp*"))


class CheckpointAfterStats(ModelSaver, MonitorBase):
    """Tensorpack's ModelSaver run as a monitor after the stats writer, so that a checkpoint of
    epoch N exists only once the record of epoch N does; a failed save is reported to `status`
    and its partial files removed. No meta graph is written (nothing reads it). Chief only."""
    _chief_only = True

    def __init__(self, status, **kwargs):
        super().__init__(**kwargs)
        self.status = status

    def _before_train(self):
        pass

    def _trigger(self):
        step = self.trainer.loop.global_step
        prefix = os.path.join(self.checkpoint_dir, "model-{}".format(step))

        def remove_partial_files():
            for path in checkpoint_leftovers(self.checkpoint_dir, step):
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)

        save = lambda: self.saver.save(tf1.get_default_session(), self.path, global_step=step,     # noqa: E731
                                       write_meta_graph=False)
        if self.status.attempt("the checkpoint", prefix, save, remove_partial_files):
            self.status.last_checkpoint = prefix
            logger.info("Model saved to {}.".format(prefix))


class SaveGuard(MonitorBase):
    """The last monitor, on every rank: after the start and after each epoch's saves, stops
    training on every rank when rank 0 failed to write something (SaveFailed with its message).
    With Horovod the message crosses ranks in one small broadcast per epoch."""
    _chief_only = False

    def __init__(self, status, hvd=None):
        self.status, self.hvd = status, hvd

    def _setup_graph(self):
        if self.hvd is not None:
            self._local = tf1.placeholder(tf.int32, [len(encode_text(""))])
            self._shared = self.hvd.broadcast(self._local, root_rank=0, name="save_guard")

    def check(self, when):
        failure = self.status.message(when) if self.status.failure is not None else ""
        if self.hvd is not None:
            failure = decode_text(self.trainer.sess.run(self._shared, {self._local: encode_text(failure)}))
            if failure and self.hvd.rank() != 0:
                failure = "rank 0 could not save: " + failure
        if failure:
            raise SaveFailed(failure)

    def _before_train(self):
        self.check("before epoch {}".format(self.trainer.loop.starting_epoch))

    def _trigger_epoch(self):
        self.check("after epoch {}".format(self.trainer.epoch_num))


def save_monitors(status, logdir, max_checkpoints, is_chief=True, hvd=None):
    """Rank 0's writers in their order, then the guard (on every rank)."""
    writers = [SafeEventWriter(status, logdir=logdir), ResumableJSONWriter(status), ScalarPrinter(),
               CheckpointAfterStats(status, max_to_keep=max_checkpoints, checkpoint_dir=logdir)] if is_chief else []
    return writers + [SaveGuard(status, hvd)]
