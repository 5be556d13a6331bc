"""Rolling a collapsed run back (--on-collapse rollback). Wong, Rice & Kolter (ICLR 2020, Sec. 5.3) keep the weights
of the epoch before the collapse ("early stopping"), and find that a smaller FGSM step makes the collapse come later
or not at all. Here the collapse guard (engine/guard.py) keeps the best epoch's checkpoint in LOGDIR/guard-best/;
on a collapse, the checkpoints written after the best epoch go to LOGDIR/collapsed-<n>/ with a copy of stats.json
(nothing is deleted), the best checkpoint is put back in the folder, the rollback is recorded in rollbacks.json, and
training resumes from it with the attack's step times the recipe's collapse_step_scale. The record is what makes the
smaller step survive a crash: a later --resume applies the product of every recorded scale."""
import json
import logging
import os
import shutil

from .evaluate import write_json
from .resume import STATS_FILE, checkpoint_files

log = logging.getLogger(__name__)
BEST_FOLDER = "guard-best"
ROLLBACK_FILE = "rollbacks.json"


def link_or_copy(source, target):
    try:
        os.link(source, target)
    except OSError:                             # a file system without hard links
        shutil.copy2(source, target)


def keep_best(logdir, best):
    """Put the checkpoint of the best epoch ({epoch, global_step, accuracy}; just written by the saver) in
    LOGDIR/guard-best/ in place of the earlier best, as hard links where the file system has them."""
    files = checkpoint_files(logdir, best["global_step"]).get(best["global_step"])
    if not files:
        log.warning("collapse guard: no checkpoint of epoch %d (step %d) in %s to keep as the best", best["epoch"],
                    best["global_step"], logdir)
        return
    folder, staging = os.path.join(logdir, BEST_FOLDER), os.path.join(logdir, BEST_FOLDER + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    for name in files:
        link_or_copy(os.path.join(logdir, name), os.path.join(staging, name))
    write_json(best, os.path.join(staging, "best.json"))
    shutil.rmtree(folder, ignore_errors=True)
    os.rename(staging, folder)


def recorded_rollbacks(logdir):
    """The rollbacks of the run so far (a list of records, oldest first)."""
    path = os.path.join(logdir, ROLLBACK_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)


def step_scale(logdir):
    """What the training attack's step is multiplied by after the run's rollbacks (1.0: none)."""
    scale = 1.0
    for record in recorded_rollbacks(logdir):
        scale *= record["step_scale"]
    return scale


def roll_back(logdir, collapse, recipe):
    """Rank 0, after `collapse` (a TrainingCollapsed): the checkpoints after the best epoch to collapsed-<n>/, the best
    checkpoint back in the folder, the rollback recorded; returns the record. Raises the collapse itself when the run
    has had recipe.max_rollbacks already, or when no best checkpoint is kept."""
    done = recorded_rollbacks(logdir)
    if len(done) >= recipe.max_rollbacks:
        raise type(collapse)("{}; this run was rolled back {} time(s) already (--max-rollbacks {})".format(
            collapse.args[0], len(done), recipe.max_rollbacks), epoch=collapse.epoch, best=collapse.best)
    best_step, kept = collapse.best["global_step"], os.path.join(logdir, BEST_FOLDER)
    kept_files = checkpoint_files(kept, best_step).get(best_step)
    if not kept_files:
        raise type(collapse)("{}; no checkpoint of the best epoch {} in {} to roll back to".format(
            collapse.args[0], collapse.best["epoch"], kept), epoch=collapse.epoch, best=collapse.best)
    moved_to = os.path.join(logdir, "collapsed-{}".format(len(done) + 1))
    os.makedirs(moved_to, exist_ok=True)
    for step, names in checkpoint_files(logdir).items():
        if step > best_step:
            for name in names:
                os.replace(os.path.join(logdir, name), os.path.join(moved_to, name))
    if os.path.exists(os.path.join(logdir, STATS_FILE)):
        shutil.copy2(os.path.join(logdir, STATS_FILE), os.path.join(moved_to, STATS_FILE))
    for name in kept_files:
        if not os.path.exists(os.path.join(logdir, name)):
            link_or_copy(os.path.join(kept, name), os.path.join(logdir, name))
    record = dict(rollback=len(done) + 1, collapsed_epoch=collapse.epoch, best_epoch=collapse.best["epoch"],
                  best_accuracy=collapse.best["accuracy"], best_global_step=best_step,
                  step_scale=recipe.collapse_step_scale, collapsed_checkpoints=os.path.basename(moved_to))
    write_json(done + [record], os.path.join(logdir, ROLLBACK_FILE))
    log.warning("collapse guard: rolled back to epoch %d (step %d); the checkpoints after it and a copy of stats.json "
                "are in %s; training goes on from epoch %d with the attack's step x%g", record["best_epoch"],
                best_step, moved_to, record["best_epoch"] + 1, step_scale(logdir))
    return record
