"""Adversarial training with Tensorpack, on one process or on Horovod ranks.

Feature Denoising, Sec. 5: "distributed SGD ... 32 images per GPU ... learning rate 0.1 x
B/256 ... decreased by 10x at the 35th, 70th and 95th epoch ... label smoothing 0.1 ...
weight decay 1e-4 ... 110 epochs", with a linear warm-up when the learning rate is large
(docs/FACTS.md Sec. 5).
"""
import logging
import os
from dataclasses import dataclass, field
from typing import Dict, Optional

import tensorflow as tf
from tensorpack import TrainConfig, launch_train_with_config, logger
from tensorpack.callbacks import EstimatedTimeLeft, ModelSaver, ScheduledHyperParamSetter
from tensorpack.input_source import QueueInput
from tensorpack.tfutils.sessinit import SessionInit

from attacker import Attack, monitor_key
from nets import BuildOptions
from nets.checkpoint import load_weights, read_weights

from . import tensorpack_compat
from .callbacks import evaluation_callbacks
from .model import AdversarialModel, AttackExecution

tf1 = tf.compat.v1
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
    workers: int = 2
    load: Optional[str] = None
    ignore_mismatch: bool = False
    starting_epoch: Optional[int] = None
    resume: bool = False
    data_server: Optional[str] = None               # ZMQ address of `python -m tools.serve_data`
    max_checkpoints: int = 3


class StrictInit(SessionInit):
    """Loads a .npz or a checkpoint with the strict name/shape check (nets.checkpoint), and
    the training state (step, learning rate, momentum) when the checkpoint has it."""

    def __init__(self, path, ignore_mismatch=False):
        self.path, self.ignore_mismatch = path, ignore_mismatch

    def _run_init(self, session):
        message = load_weights(session, read_weights(self.path), source=self.path,
                               ignore_mismatch=self.ignore_mismatch)
        if message:
            log.warning("loaded with --ignore-mismatch: %s", message)


def default_logdir(spec, arch, depth, recipe, attack, total_batch):
    denoise = spec.denoise_op + "@" + spec.denoise_placement if spec.denoise_placement != "none" else "nodenoise"
    epsilon = "-eps{:g}".format(attack.epsilon) if hasattr(attack, "epsilon") else ""
    return os.path.join("train_log", "{}{}-{}-{}{}-b{}-{}px".format(
        arch, depth, denoise, monitor_key(attack), epsilon, total_batch, spec.image_size))


def latest_checkpoint(logdir):
    return tf.train.latest_checkpoint(logdir) if os.path.isdir(logdir) else None


def checkpoint_step(path):
    return int(tf.train.load_checkpoint(path).get_tensor("global_step"))


def resolve_start(job, steps_per_epoch):
    """(weights to load, starting epoch): --resume continues the log directory's last
    checkpoint; --load starts from given weights at --starting-epoch (1 by default)."""
    found = latest_checkpoint(job.logdir)
    if job.resume:
        if found is None:
            log.info("--resume: no checkpoint in %s yet, starting from scratch", job.logdir)
            return job.load, job.starting_epoch or 1
        epoch = checkpoint_step(found) // steps_per_epoch + 1
        log.info("resuming from %s at epoch %d", found, epoch)
        return found, epoch
    if found is not None and job.load is None:
        raise ValueError("log directory {} already holds a training run ({}); pass --resume to continue it, "
                         "or --logdir to start a new one".format(job.logdir, os.path.basename(found)))
    starting_epoch = job.starting_epoch or 1
    if job.load and starting_epoch == 1 and not job.load.endswith(".npz"):
        step = checkpoint_step(job.load) if "global_step" in read_weights(job.load) else 0
        if step:
            log.warning("%s was saved at step %d; training restarts the schedule at epoch 1 "
                        "(pass --starting-epoch to continue it)", job.load, step)
    return job.load, starting_epoch


def training_dataflow(job, recipe, spec, world):
    """Batches decoded here, or received from `python -m tools.serve_data` at job.data_server.

    A data server's stream has no end, so one epoch is counted from job.data: this rank's
    share of ROOT/train in batches, as when decoding locally.
    """
    from data import build_train_dataflow, list_images, receive_dataflow
    if job.data_server:
        images = len(list_images(job.data, "train")) // world.size
        return receive_dataflow(job.data_server, length=images // recipe.batch_per_gpu)
    return build_train_dataflow(job.data, recipe.batch_per_gpu, image_size=spec.image_size,
                                workers=job.workers, rank=world.rank, world_size=world.size,
                                augmentation=recipe.augmentation)


def train(spec, recipe, job, world, dataflow=None, extra_callbacks=()):
    """Run (or continue) a training run. Returns the log directory.

    `dataflow` replaces the one built from job.data/job.data_server (tests feed fixed batches).
    """
    from data import build_eval_dataflow
    tensorpack_compat.install()
    total_batch = recipe.batch_per_gpu * world.size
    dataflow = dataflow if dataflow is not None else training_dataflow(job, recipe, spec, world)
    steps_per_epoch = len(dataflow)
    load, starting_epoch = resolve_start(job, steps_per_epoch)
    if starting_epoch > recipe.epochs:
        log.info("%s has finished all %d epochs already; nothing to train", job.logdir, recipe.epochs)
        return job.logdir
    if world.is_chief:
        logger.set_logger_dir(job.logdir, action="k")
    lr_schedule = recipe.lr_schedule(total_batch)
    model = AdversarialModel(spec, job.options, job.attack, recipe, learning_rate=lr_schedule[0][1],
                             execution=job.execution)
    callbacks = [
        ModelSaver(max_to_keep=job.max_checkpoints, checkpoint_dir=job.logdir),
        ScheduledHyperParamSetter("learning_rate", lr_schedule),
        EstimatedTimeLeft(),
    ] + list(extra_callbacks)
    warmup = recipe.warmup_schedule(total_batch, steps_per_epoch)
    if warmup:
        callbacks.append(ScheduledHyperParamSetter("learning_rate", warmup, interp="linear", step_based=True))
    if job.data and job.eval_attacks:
        def shard():
            return build_eval_dataflow(job.data, recipe.batch_per_gpu, image_size=spec.image_size,
                                       workers=job.workers, shard_index=world.rank, num_shards=world.size)
        callbacks += evaluation_callbacks(spec, job.options, recipe, job.eval_attacks, shard, world.hvd)
    config = TrainConfig(
        model=model, data=QueueInput(dataflow), callbacks=callbacks, steps_per_epoch=steps_per_epoch,
        max_epoch=recipe.epochs, starting_epoch=starting_epoch,
        session_init=StrictInit(load, job.ignore_mismatch) if load else None)
    if world.distributed:
        from tensorpack.train import HorovodTrainer
        trainer = HorovodTrainer(average=True)
    else:
        from tensorpack.train import SimpleTrainer
        trainer = SimpleTrainer()
    log.info("training %s: total batch %d on %d rank(s), %d steps per epoch, epochs %d..%d, attack %s",
             job.logdir, total_batch, world.size, steps_per_epoch, starting_epoch, recipe.epochs, job.attack.label)
    launch_train_with_config(config, trainer)
    return job.logdir
