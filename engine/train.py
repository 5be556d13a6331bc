"""Adversarial training with Tensorpack, on one process or on Horovod ranks.

Feature Denoising, Sec. 5: "distributed SGD ... 32 images per GPU ... learning rate 0.1 x
B/256 ... decreased by 10x at the 35th, 70th and 95th epoch ... label smoothing 0.1 ...
weight decay 1e-4 ... 110 epochs", with a linear warm-up when the learning rate is large
(docs/FACTS.md Sec. 5).

Every rank takes the same number of steps per epoch, floor(training images / total batch), agreed over Horovod (else
they would deadlock at the epoch's end). Each rank reads its shard as an endless reshuffled stream: every image once
per pass, the few left over start the next epoch. A failure of the training stream (unreadable data, a bad batch
from a data server) ends the run with that error, never as if it had finished."""
import dataclasses
import functools
import logging
import os
from dataclasses import dataclass, field
from typing import Dict, Optional

import tensorflow as tf
from tensorpack import TrainConfig, launch_train_with_config, logger
from tensorpack.callbacks import EstimatedTimeLeft, ScheduledHyperParamSetter
from tensorpack.dataflow import ProxyDataFlow, RepeatedDataPoint
from tensorpack.input_source import QueueInput
from tensorpack.tfutils.sessinit import SessionInit
from tensorpack.train import HorovodTrainer, SimpleTrainer

from attacker import Attack, monitor_key
from config import DEFAULTS
from data import (CheckBatches, DataError, build_eval_dataflow, build_train_dataflow, check_readable, list_images,
                  model_classes, receive_dataflow)
from nets import BuildOptions
from nets.checkpoint import load_weights, read_weights

from . import tensorpack_compat
from .callbacks import CountUnreadable, evaluation_callbacks, training_defaults
from .graphs import AdversarialTraining, AttackExecution, FreeAdversarialTraining, FreeTraining
from .guard import CollapseGuard, TrainingCollapsed, guard_images, guard_runner
from .lock import LogdirLock
from .resume import check_run_shape, resume_point
from .rollback import roll_back, step_scale
from .saving import SaveFailed, SaveStatus, save_monitors
from .watchdog import HangWatchdog

log = logging.getLogger(__name__)


@dataclass
class TrainJob:
    """Everything a training run needs besides the recipe and the model spec."""
    data: Optional[str]
    logdir: str
    attack: Attack                                  # the training attack
    options: BuildOptions = BuildOptions()
    eval_attacks: Dict[str, Attack] = field(default_factory=dict)     # {schedule entry: attack}
    execution: AttackExecution = AttackExecution()  # the training attack's fast path
    collapse_check: Optional[Attack] = None         # the guard's attack (engine/guard.py), None: no guard
    workers: int = 2
    load: Optional[str] = None
    ignore_mismatch: bool = False
    starting_epoch: Optional[int] = None
    resume: bool = False
    data_server: Optional[str] = None               # ZMQ address of `python -m tools.serve_data`
    max_checkpoints: int = 3
    hang_timeout: float = DEFAULTS.hang_timeout
    max_unreadable_fraction: float = DEFAULTS.max_unreadable_fraction


class TrainingFailed(RuntimeError):
    """Training stopped before its last step; the message says where and why."""


class StrictInit(SessionInit):
    """Loads a .npz or checkpoint with the strict name/shape check (nets.checkpoint), and its training state if any."""

    def __init__(self, path, ignore_mismatch=False):
        self.path, self.ignore_mismatch = path, ignore_mismatch

    def _run_init(self, session):
        message = load_weights(session, read_weights(self.path), source=self.path, ignore_mismatch=self.ignore_mismatch)
        if message:
            log.warning("loaded with --ignore-mismatch: %s", message)


class RecordFailure(ProxyDataFlow):
    """Keeps the exception that ends the stream (Tensorpack's queue thread only logs it) for `train` to raise."""
    error = None

    def __iter__(self):
        try:
            yield from self.ds
        except Exception as error:
            self.error = error
            raise


def default_logdir(spec, arch, depth, recipe, attack, total_batch):
    denoise = spec.denoise_op + "@" + spec.denoise_placement if spec.denoise_placement != "none" else "nodenoise"
    epsilon = "-eps{:g}".format(attack.epsilon) if hasattr(attack, "epsilon") else ""
    return os.path.join("train_log", "{}{}-{}-{}{}-b{}-{}px".format(
        arch, depth, denoise, monitor_key(attack), epsilon, total_batch, spec.image_size))


def prepare_logdir(job, recipe, shape, lock):
    """Rank 0: lock the log folder, choose where training starts, check and record the run's shape, send Tensorpack's
    log there. Returns [weights to load, starting epoch, resumed]: --resume continues the newest intact checkpoint,
    --load starts from given weights at --starting-epoch (default 1); a start over an earlier run is refused."""
    try:
        os.makedirs(job.logdir, exist_ok=True)
    except OSError as error:
        raise SaveFailed("cannot create the log folder {}: {}".format(job.logdir, error.strerror)) from None
    lock.acquire()
    found = resume_point(job.logdir, job.resume)
    if found is not None:
        load, step = found
        starting_epoch, resumed = step // shape["steps_per_epoch"] + 1, True
        log.info("resuming from %s at epoch %d", load, starting_epoch)
    else:
        load, starting_epoch, resumed = job.load, job.starting_epoch or 1, False
        if load and starting_epoch == 1 and not load.endswith(".npz"):
            step = int(read_weights(load).get("global_step", 0))
            if step:
                log.warning("%s was saved at step %d; training restarts the schedule at epoch 1 "
                            "(pass --starting-epoch to continue it)", load, step)
    if starting_epoch <= recipe.epochs:
        check_run_shape(job.logdir, shape, continuing=resumed)
        logger.set_logger_dir(job.logdir, action="k")
        tensorpack_compat.log_file_errors_once()
    return [load, starting_epoch, resumed]


def training_stream(job, recipe, spec, world, classes):
    """(this rank's checked training batches, steps per epoch, its log of unreadable images or None): decoded here,
    or received from `python -m tools.serve_data` at job.data_server (whose epoch is counted from job.data)."""
    unreadable = None
    if job.data_server:
        total = len(list_images(job.data, "train", classes))
        flow, source = receive_dataflow(job.data_server, timeout=DEFAULTS.data_server_timeout), job.data_server
    else:
        flow = build_train_dataflow(job.data, recipe.batch_per_gpu, image_size=spec.image_size, workers=job.workers,
                                    rank=world.rank, world_size=world.size, augmentation=recipe.augmentation,
                                    classes=classes, max_unreadable_fraction=job.max_unreadable_fraction)
        total, source, unreadable = flow.total_images, os.path.join(job.data, "train"), flow.corrupt_images
    steps = total // (recipe.batch_per_gpu * world.size)
    if steps < 1:
        raise DataError("{} training images in {} do not make one batch of {} on each of {} rank(s)".format(
            total, os.path.join(job.data, "train"), recipe.batch_per_gpu, world.size))
    return CheckBatches(flow, spec.image_size, spec.num_classes, source), steps, unreadable


def replayed(stream, steps, attack):
    """Free training (FreeAdversarialTraining): each batch `replays` times in a row, an epoch that many steps longer."""
    if not isinstance(attack, FreeTraining):
        return stream, steps
    return RepeatedDataPoint(stream, attack.replays), steps * attack.replays


def train(spec, recipe, job, world, dataflow=None, extra_callbacks=()):
    """Run or continue a training run; returns the log folder. `dataflow` overrides job.data / job.data_server. With
    --on-collapse rollback, a collapse (engine/guard.py) sends the run back to its best epoch with a smaller attack
    step (engine/rollback.py), on every rank alike, at most recipe.max_rollbacks times."""
    tensorpack_compat.install()
    while True:
        try:
            return train_once(spec, recipe, with_rollbacks(job, world), world, dataflow, extra_callbacks)
        except TrainingCollapsed as collapse:
            if recipe.on_collapse != "rollback":
                raise
            world.chief_does(functools.partial(roll_back, job.logdir, collapse, recipe), "rolling the run back")
            job = dataclasses.replace(job, resume=True)


def with_rollbacks(job, world):
    """The job with the attack's step made smaller by the run's recorded rollbacks (engine/rollback.py), if any."""
    scale = world.from_chief(step_scale(job.logdir) if world.is_chief else None)
    if scale == 1.0:
        return job
    attack = job.attack.smaller_step(scale)
    log.info("after the rollbacks in %s, the training attack's step is x%g: %s", job.logdir, scale, attack)
    return dataclasses.replace(job, attack=attack)


def train_once(spec, recipe, job, world, dataflow, extra_callbacks):
    classes = model_classes(job.data, spec.num_classes) if job.data else None
    stream, steps, unreadable = (dataflow, len(dataflow), None) if dataflow is not None else \
        training_stream(job, recipe, spec, world, classes)
    steps = world.agree(steps, "steps per epoch")
    stream, steps = replayed(stream, steps, job.attack)
    stream = RecordFailure(stream)
    shape = dict(batch_per_gpu=recipe.batch_per_gpu, ranks=world.size, total_batch=recipe.batch_per_gpu * world.size,
                 steps_per_epoch=steps)
    lock = LogdirLock(job.logdir)
    try:
        load, starting_epoch, _ = world.chief_does(lambda: prepare_logdir(job, recipe, shape, lock),
                                                   "preparing the log folder")
        if starting_epoch > recipe.epochs:
            log.info("%s has finished all %d epochs already; nothing to train", job.logdir, recipe.epochs)
            return job.logdir
        if unreadable is not None:
            extra_callbacks = list(extra_callbacks) + [CountUnreadable(unreadable, world)]
        with tf.Graph().as_default():       # Tensorpack's training loop in a graph of its own
            trainer = launch_training(spec, recipe, job, world, stream, steps, classes, load, starting_epoch,
                                      extra_callbacks)
        step, last_step = trainer.loop.global_step, recipe.epochs * steps
        if stream.error is not None:
            raise TrainingFailed("training stopped at step {} of {}: {}".format(step, last_step, stream.error)) \
                from stream.error
        if step < last_step:
            raise TrainingFailed("training stopped at step {} of {} without finishing; the log is {}".format(
                step, last_step, os.path.join(job.logdir, "log.log")))
    finally:
        lock.release()
    return job.logdir


def launch_training(spec, recipe, job, world, stream, steps, classes, load, starting_epoch, extra_callbacks):
    """Tensorpack's training loop from `starting_epoch`, `load` loaded first; returns the trainer."""
    total_batch = recipe.batch_per_gpu * world.size
    lr_schedule = recipe.lr_schedule(total_batch)
    model = FreeAdversarialTraining(spec, job.options, job.attack, recipe, lr_schedule[0][1]) \
        if isinstance(job.attack, FreeTraining) else \
        AdversarialTraining(spec, job.options, job.attack, recipe, lr_schedule[0][1], job.execution)
    callbacks = [ScheduledHyperParamSetter("learning_rate", lr_schedule), EstimatedTimeLeft(),
                 HangWatchdog(job.hang_timeout)] + list(extra_callbacks)
    warmup = recipe.warmup_schedule(total_batch, steps)
    if warmup:
        callbacks.append(ScheduledHyperParamSetter("learning_rate", warmup, interp="linear", step_based=True))
    status = SaveStatus(job.logdir, last_checkpoint=load if load and load.startswith(job.logdir) else None)
    if job.data and job.eval_attacks:
        check_readable(job.data, "val", classes, world.rank, world.size, job.workers, progress=world.is_chief)
        callbacks += evaluation_callbacks(
            spec, job.options, recipe, job.eval_attacks, world=world, status=status,
            make_dataflow=lambda: build_eval_dataflow(job.data, recipe.batch_per_gpu, image_size=spec.image_size,
                                                      workers=job.workers, shard_index=world.rank,
                                                      num_shards=world.size, classes=classes),
            logdir=job.logdir if world.is_chief else None, model=dict(logdir=job.logdir, spec=spec.__dict__))
    monitors = save_monitors(status, job.logdir, job.max_checkpoints, world)
    if job.collapse_check is not None:
        results = {}
        callbacks.append(guard_runner(spec, job.options, job.collapse_check,
                                      job.data, guard_images(job.data, recipe.collapse_check_images, 0, classes),
                                      recipe.batch_per_gpu, job.workers, world, results, classes))
        monitors.append(CollapseGuard(job.collapse_check, results, recipe.collapse_margin, job.logdir, world))
    config = TrainConfig(
        model=model, data=QueueInput(stream), callbacks=callbacks, extra_callbacks=training_defaults(),
        monitors=monitors, steps_per_epoch=steps, max_epoch=recipe.epochs, starting_epoch=starting_epoch,
        session_init=StrictInit(load, job.ignore_mismatch) if load else None)
    trainer = HorovodTrainer(average=True) if world.distributed else SimpleTrainer()
    log.info("training %s: total batch %d on %d rank(s), %d steps per epoch, epochs %d..%d, attack %s, in %s",
             job.logdir, total_batch, world.size, steps, starting_epoch, recipe.epochs, job.attack.label,
             job.options.compute_dtype)
    launch_train_with_config(config, trainer)
    return trainer

