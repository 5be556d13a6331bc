"""What a training run leaves in its log folder, and how it continues: the newest intact checkpoint, the run's shape,
and an epoch history that a resume neither loses nor repeats. The checkpoint of epoch N is written after the
stats.json record of epoch N (engine/saving.py), so resuming from it finds records 1..N; later records are dropped
(those epochs are trained again). Every file is replaced atomically. Checkpoints are found by their files, not from
TF's `checkpoint` file, which lists only what the last process wrote and stores paths relative to the folder."""
import json
import logging
import os
import re

from files import atomic_write
from nets.checkpoint import CheckpointError, read_weights

log = logging.getLogger(__name__)
RUN_FILE = "run.json"
STATS_FILE = "stats.json"
CHECKPOINT_FILE = re.compile(r"^model-(\d+)\.(index|data-\d+-of-\d+)$")


def checkpoint_files(folder, step=None):
    """{step: [file names]} of the checkpoints in `folder` (only `step`'s when given)."""
    found = {}
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        match = CHECKPOINT_FILE.match(name)
        if match and (step is None or int(match.group(1)) == step):
            found.setdefault(int(match.group(1)), []).append(name)
    return found


def checkpoint_candidates(logdir):
    """Prefixes (LOGDIR/model-STEP) of every checkpoint with a file in the folder, newest first."""
    return [os.path.join(logdir, "model-{}".format(step)) for step in sorted(checkpoint_files(logdir), reverse=True)]


def newest_intact_checkpoint(logdir):
    """(prefix, global step) of the newest checkpoint that reads back whole, or None; broken ones warn, skip."""
    for prefix in checkpoint_candidates(logdir):
        try:
            return prefix, int(read_weights(prefix)["global_step"])
        except (CheckpointError, FileNotFoundError, KeyError) as error:
            log.warning("--resume: skipping checkpoint %s: %s", prefix, error if error.args else "no global_step")
    return None


def previous_run(logdir):
    """What of an earlier run the folder holds, as text ('' if nothing): its checkpoints and stats.json records."""
    found = []
    names = [os.path.basename(p) for p in checkpoint_candidates(logdir)]
    if names:
        found.append("checkpoint{} {}".format("s" if len(names) > 1 else "", ", ".join(names[:5])))
    path, records = os.path.join(logdir, STATS_FILE), []
    if os.path.exists(path):
        try:
            with open(path) as f:
                records = json.load(f)
            records = records if isinstance(records, list) else [records]
        except (OSError, ValueError):
            records = [{"unreadable": path}]
    if records:
        found.append("{} with {} epoch record{}".format(STATS_FILE, len(records), "s" if len(records) > 1 else ""))
    return " and ".join(found)


def resume_point(logdir, resume):
    """(checkpoint prefix, global step) to continue from, or None to start afresh (refused over an earlier run)."""
    found = newest_intact_checkpoint(logdir) if resume else None
    if found is not None:
        return found
    earlier = previous_run(logdir)
    if earlier and resume:
        raise ValueError("--resume found no intact checkpoint in {}, but it holds {}; refusing to start from scratch "
                         "over them. Restore a good checkpoint there, or train into a new --logdir (with --load "
                         "and --starting-epoch to start from given weights)".format(logdir, earlier))
    if earlier:
        raise ValueError("log folder {} already holds a training run ({}); pass --resume to continue it, or "
                         "--logdir to start a new one".format(logdir, earlier))
    if resume:
        log.info("--resume: nothing to continue in %s yet, starting from scratch", logdir)
    return None


def check_run_shape(logdir, shape, continuing):
    """The run's shape ({batch per GPU, ranks, total batch, steps per epoch}) is recorded in LOGDIR/run.json; a run
    `continuing` a checkpoint with another shape is refused, since its global steps would map to other epochs."""
    path = os.path.join(logdir, RUN_FILE)
    if continuing and os.path.exists(path):
        with open(path) as f:
            before = json.load(f)
        if before != shape:
            raise ValueError(
                "{} was trained with {}; this run has {}. Resuming would map its steps to other epochs: use the same "
                "--batch and number of ranks, or start a new --logdir from its weights with --load and "
                "--starting-epoch".format(logdir, describe(before), describe(shape)))
        return
    with atomic_write(path) as f:
        json.dump(shape, f, indent=2, sort_keys=True)


def describe(shape):
    return "{} ranks x {} images (total batch {}), {} steps per epoch".format(
        shape["ranks"], shape["batch_per_gpu"], shape["total_batch"], shape["steps_per_epoch"])
