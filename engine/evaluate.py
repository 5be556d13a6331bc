"""White-box evaluation over a validation set: top-1/top-5 error and attack success rate, and the records and lines
that report it. docs/FACTS.md Sec. 4: each image gets its own random wrong target and random start; results vary by
about +-0.3 points from those draws (fix --attack-seed to repeat a run exactly)."""
import dataclasses
import json
import time

import numpy as np
from tqdm import tqdm

from attacker.metrics import Counts
from files import atomic_write

from . import watchdog


def evaluate(predictor, dataflow, sum_across_ranks=None, show_progress=True, description="evaluating"):
    """(Counts, stage records) over one pass of `dataflow` ([uint8 images, int labels, indices]; reset_state() run once
    by the caller) under the predictor's attack, a composite's stages each reported (images attacked, robust accuracy
    after it, seconds). With `sum_across_ranks` (a Horovod allreduce of a count vector), the totals of all ranks."""
    watchdog.beat()                 # building and loading the model was progress too
    stages = len(predictor.stages)
    counts, tallies = Counts(), np.zeros([3, stages])
    try:
        total = len(dataflow)
    except NotImplementedError:
        total = None
    with tqdm(dataflow, total=total, desc=description, unit="batch", disable=not show_progress) as batches:
        def show_stage(stage):      # a composite's stage can run for minutes: the bar says which one
            batches.set_postfix(stage="{} ({}/{})".format(predictor.stages[stage].label, stage + 1, stages))
        for images, labels, indices in batches:
            result, batch_tallies = attack_batch(predictor, images, labels, indices, show_stage)
            counts, tallies = counts + Counts.from_result(result), tallies + batch_tallies
            watchdog.beat()
            batches.set_postfix(top1_error="{:.3f}".format(counts.top1_error),
                                success="{:.3f}".format(counts.attack_success_rate))
    if sum_across_ranks is not None:
        totals = sum_across_ranks(np.concatenate([counts.as_array(), tallies[0], tallies[1]]).astype(np.int64))
        counts, tallies[0], tallies[1] = Counts.from_array(totals[:4]), totals[4:4 + stages], totals[4 + stages:]
    if stages == 1:
        return counts, []
    return counts, [dict(attack=stage.label, images_attacked=int(a), robust_accuracy=float(r) / max(counts.images, 1),
                         seconds=round(float(t), 1)) for stage, a, r, t in zip(predictor.stages, *tallies)]


def attack_batch(predictor, images, labels, indices=None, on_stage=None):
    """(AttackResult, tallies) of one batch: a single attack, or a composite's stages in turn under AutoAttack's
    protocol (a run per stage, to count and time each; `on_stage(k)` called as stage k starts). Tallies per stage:
    images attacked, robust after, seconds."""
    tallies = np.zeros([3, len(predictor.stages)])
    if len(predictor.stages) == 1:
        started = time.time()
        result = predictor.attack(images, labels, indices)
        tallies[:, 0] = len(labels), result.correct_top1.sum(), time.time() - started
        return result, tallies
    kept, robust = np.asarray(images, np.float32), np.ones(len(labels), bool)
    for stage in range(len(predictor.stages)):
        if on_stage:
            on_stage(stage)
        started, tallies[0, stage] = time.time(), robust.sum()
        kept, robust = predictor.run_stage(stage, images, labels, indices, kept, robust)
        tallies[1:, stage] = robust.sum(), time.time() - started
        watchdog.beat()
    return predictor.judge(images, labels, kept), tallies


def point_record(counts, attack, seconds, stages=()):
    """The metrics of one attack, its label, iterations (0 for clean images; the x axis of a robustness curve, paper
    Fig. 6), settings and wall time; for a composite attack its "stages": robust accuracy, images attacked, seconds."""
    record = counts.summary()
    record.update(attack=attack.label, attack_iterations=getattr(attack, "iterations", 0),
                  attack_settings=dict(name=attack.name, **dataclasses.asdict(attack)), seconds=round(seconds, 1))
    if stages:
        record["stages"] = list(stages)
    return record


def result_record(points, model):
    """An evaluation record (read by tools/plot_curves.py): one point, or several under "points"; with the model."""
    return dict(points[0], model=model) if len(points) == 1 else dict(points=points, model=model)


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
