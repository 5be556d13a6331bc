"""Adversarial training with Tensorpack, on one process or on Horovod ranks.

Feature Denoising, Sec. 5: "distributed SGD ... 32 images per GPU ... learning rate 0.1 x
B/256 ... decreased by 10x at the 35th, 70th and 95th epoch ... label smoothing 0.1 ...
weight decay 1e-4 ... 110 epochs", with a linear warm-up when the learning rate is large.
"""
import logging
import os
from dataclasses import dataclass
from typing import Optional

import tensorflow as tf
from tensorpack import TrainConfig, launch_train_with_config, logger
from tensorpack.callbacks import EstimatedTimeLeft, ModelSaver, ScheduledHyperParamSetter
from tensorpack.input_source import QueueInput
from tensorpack.tfutils.sessinit import SessionInit

from attacker import build_attacker
from nets import Layout
from nets.checkpoint import load_weights, read_weights

from . import tensorpack_compat
from .callbacks import AttackEvaluation
from .distributed import sum_across_ranks_fn
from .model import AdversarialModel

tf1 = tf.compat.v1
log = logging.getLogger(__name__)


@dataclass
class TrainJob:
    """Everything a training run needs besides the recipe and the model spec."""
    data: Optional[str]
    logdir: str
    data_format: str
    attack_settings: dict                 # PGDAttacker keyword arguments (epsilon, step size, ...)
    workers: int = 2
    load: Optional[str] = None
    ignore_mismatch: bool = False
    starting_epoch: Optional[int] = None
    resume: bool = False
    data_server: Optional[str] = None     # ZMQ address of `python -m data.serve`
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


def default_logdir(spec, arch, depth, recipe, epsilon, total_batch):
    denoise = spec.denoise_op + "@" + spec.denoise_placement if spec.denoise_placement != "none" else "nodenoise"
    return os.path.join("train_log", "{}{}-{}-pgd{}-eps{:g}-b{}-{}px".format(
        arch, depth, denoise, recipe.attack_iterations, epsilon, total_batch, spec.image_size))


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


def training_attacker(recipe, spec, attack_settings):
    """Sec. 5: PGD with `recipe.attack_iterations` steps, 20% of batches from the clean image."""
    return build_attacker(recipe.attack_iterations, num_classes=spec.num_classes,
                          prob_start_from_clean=recipe.attack_prob_start_from_clean, **attack_settings)


def evaluation_attackers(recipe, spec, attack_settings):
    """{iterations: attacker} for the evaluation schedule (always from noise, one restart)."""
    settings = dict(attack_settings, restarts=1)
    return {iterations: build_attacker(iterations, num_classes=spec.num_classes, **settings)
            for iterations, _ in recipe.eval_schedule}


def training_dataflow(job, recipe, spec, world):
    """Batches decoded here, or received from `python -m data.serve` at job.data_server.

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
    layout = Layout(job.data_format)
    attacker = training_attacker(recipe, spec, job.attack_settings)
    lr_schedule = recipe.lr_schedule(total_batch)
    model = AdversarialModel(spec, job.data_format, attacker, recipe, learning_rate=lr_schedule[0][1])
    callbacks = [
        ModelSaver(max_to_keep=job.max_checkpoints, checkpoint_dir=job.logdir),
        ScheduledHyperParamSetter("learning_rate", lr_schedule),
        EstimatedTimeLeft(),
    ] + list(extra_callbacks)
    warmup = recipe.warmup_schedule(total_batch, steps_per_epoch)
    if warmup:
        callbacks.append(ScheduledHyperParamSetter("learning_rate", warmup, interp="linear", step_based=True))
    if job.data and recipe.eval_schedule:
        eval_flow = build_eval_dataflow(job.data, recipe.batch_per_gpu, image_size=spec.image_size,
                                        workers=job.workers, shard_index=world.rank, num_shards=world.size)
        callbacks.append(AttackEvaluation(spec, layout, evaluation_attackers(recipe, spec, job.attack_settings),
                                          recipe, eval_flow, sum_across_ranks_fn(world), world.is_chief))
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
             job.logdir, total_batch, world.size, steps_per_epoch, starting_epoch, recipe.epochs,
             "PGD-{}".format(recipe.attack_iterations) if recipe.attack_iterations else "none (clean)")
    launch_train_with_config(config, trainer)
    return job.logdir
