"""White-box evaluation over a validation set: top-1/top-5 error and attack success rate,
and the records and lines that report it.

docs/FACTS.md Sec. 4: each image gets its own random wrong target and random start; results
vary by about +-0.3 points from those draws (fix --attack-seed to repeat a run exactly).
"""
import dataclasses
import json
import time

import numpy as np

from tqdm import tqdm

from attacker.metrics import Counts
from files import atomic_write

from . import watchdog


def evaluate(runner, dataflow, sum_across_ranks=None, show_progress=True, description="evaluating"):
    """(Counts, stage records) over one pass of `dataflow` ([uint8 images, int labels,
    indices]), whose reset_state() the caller has run once. `runner.attack(images, labels,
    indices, stage)` gives a batch's AttackResult under each of `runner.stages`: one attack, or
    a composite's clean images and components, each run only on the images still classified
    correctly after the earlier ones (AutoAttack's protocol; an image counts robust only if it
    survives all). With `sum_across_ranks` (a Horovod allreduce of a count vector) the totals
    of all ranks. `description` names the progress bar."""
    watchdog.beat()                 # building and loading the model was progress too
    stages = len(runner.stages)
    counts = Counts()
    attacked, robust_after, seconds = np.zeros(stages, np.int64), np.zeros(stages, np.int64), np.zeros(stages)
    try:
        total = len(dataflow)
    except NotImplementedError:
        total = None
    with tqdm(dataflow, total=total, desc=description, unit="batch", disable=not show_progress) as batches:
        for images, labels, indices in batches:
            result, tallies = run_protocol(runner, images, labels, indices)
            watchdog.beat()
            counts = counts + Counts.from_batch(result.correct_top1, result.correct_top5, result.hit)
            attacked, robust_after, seconds = attacked + tallies[0], robust_after + tallies[1], seconds + tallies[2]
            batches.set_postfix(top1_error="{:.3f}".format(counts.top1_error),
                                success="{:.3f}".format(counts.attack_success_rate))
    if sum_across_ranks is not None:
        totals = sum_across_ranks(np.concatenate([counts.as_array(), attacked, robust_after]))
        counts, attacked, robust_after = Counts.from_array(totals[:4]), totals[4:4 + stages], totals[4 + stages:]
    if stages == 1:
        return counts, []
    return counts, [dict(attack=stage.label, images_attacked=int(a), robust_accuracy=float(r) / max(counts.images, 1),
                         seconds=round(float(t), 1))
                    for stage, a, r, t in zip(runner.stages, attacked, robust_after, seconds)]


def run_protocol(runner, images, labels, indices):
    """One batch through every stage of `runner.stages`: (the AttackResult, per stage the
    images attacked, the images still robust after it and its seconds). An image's outcome is
    that of the stage that broke it, else the last one's; for a composite, a success is any
    misclassification."""
    stages = len(runner.stages)
    attacked, robust_after, seconds = np.zeros(stages, np.int64), np.zeros(stages, np.int64), np.zeros(stages)
    result = None
    robust = np.ones(len(labels), bool)
    for k in range(stages):
        todo = np.nonzero(robust)[0]
        attacked[k] = len(todo)
        if len(todo):
            started = time.time()
            part = runner.attack(images[todo], labels[todo], indices[todo], stage=k)
            seconds[k] = time.time() - started
            watchdog.beat()
            if result is None:
                result = type(part)(*(np.array(a) for a in part))
            else:
                for whole, new in zip(result, part):
                    whole[todo] = new
            robust[todo] = part.correct_top1
        robust_after[k] = int(robust.sum())
    if stages > 1:
        result = result._replace(hit=~robust)
    return result, (attacked, robust_after, seconds)


def point_record(counts, attack, seconds, stages=()):
    """The metrics of one attack, its label, iterations (0 for clean images; the x axis of a
    robustness curve, paper Fig. 6), settings and wall time; for a composite attack its
    "stages": robust accuracy after each, images attacked and seconds."""
    record = counts.summary()
    record.update(attack=attack.label, attack_iterations=getattr(attack, "iterations", 0),
                  attack_settings=dict(name=attack.name, **dataclasses.asdict(attack)), seconds=round(seconds, 1))
    if stages:
        record["stages"] = list(stages)
    return record


def result_record(points, model):
    """The JSON record of an evaluation: one attack's point itself, or several under "points"
    (read by tools/plot_curves.py); with the model."""
    if len(points) == 1:
        return dict(points[0], model=model)
    return dict(points=points, model=model)


def print_table(points):
    """One line per attack, after the per-attack results."""
    print("{:>14} {:>8} {:>11} {:>15} {:>8}".format("attack", "images", "top1 error", "attack success", "seconds"))
    for point in points:
        print("{:>14} {:>8} {:>11.4f} {:>15.4f} {:>8.0f}".format(
            point["attack"], point["images"], point["top1_error"], point["attack_success_rate"], point["seconds"]))


def print_stages(stages):
    """A composite attack's report: robust accuracy after each stage."""
    print("{:>28} {:>15} {:>16} {:>8}".format("after", "images attacked", "robust accuracy", "seconds"))
    for stage in stages:
        print("{:>28} {:>15} {:>16.4f} {:>8.0f}".format(stage["attack"], stage["images_attacked"],
                                                       stage["robust_accuracy"], stage["seconds"]))


def print_result(counts):
    """The original code's three lines."""
    print("Top1 Error: {:.4f}".format(counts.top1_error))
    print("Attack Success Rate: {:.4f}".format(counts.attack_success_rate))
    print("Top5 Error: {:.4f}".format(counts.top5_error))


def write_json(record, path):
    with atomic_write(path) as f:
        json.dump(record, f, indent=2, sort_keys=True)
