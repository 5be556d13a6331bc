"""White-box evaluation over a validation set: top-1/top-5 error and attack success rate,
and the records and lines that report it.

docs/FACTS.md Sec. 4: each image gets its own random wrong target and random start; results
vary by about +-0.3 points from those draws (fix --attack-seed to repeat a run exactly).
"""
import dataclasses
import json

from tqdm import tqdm

from attacker.metrics import Counts
from files import atomic_write


def evaluate(runner, dataflow, sum_across_ranks=None, show_progress=True, description="evaluating"):
    """Counts over one pass of `dataflow` ([uint8 images, int labels, indices]), whose
    reset_state() the caller has run once; `runner.attack(...)` gives each batch's AttackResult. With
    `sum_across_ranks` (a Horovod allreduce of the count vector) the totals of all ranks.
    `description` names the progress bar."""
    counts = Counts()
    try:
        total = len(dataflow)
    except NotImplementedError:
        total = None
    with tqdm(dataflow, total=total, desc=description, unit="batch", disable=not show_progress) as batches:
        for images, labels, indices in batches:
            result = runner.attack(images, labels, indices)
            counts = counts + Counts.from_batch(result.correct_top1, result.correct_top5, result.hit)
            batches.set_postfix(top1_error="{:.3f}".format(counts.top1_error),
                                success="{:.3f}".format(counts.attack_success_rate))
    if sum_across_ranks is not None:
        counts = Counts.from_array(sum_across_ranks(counts.as_array()))
    return counts


def point_record(counts, attack, seconds):
    """The metrics of one attack, its label, iterations (0 for clean images; the x axis of a
    robustness curve, paper Fig. 6), settings and wall time."""
    record = counts.summary()
    record.update(attack=attack.label, attack_iterations=getattr(attack, "iterations", 0),
                  attack_settings=dict(name=attack.name, **dataclasses.asdict(attack)), seconds=round(seconds, 1))
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


def print_result(counts):
    """The original code's three lines."""
    print("Top1 Error: {:.4f}".format(counts.top1_error))
    print("Attack Success Rate: {:.4f}".format(counts.attack_success_rate))
    print("Top5 Error: {:.4f}".format(counts.top5_error))


def write_json(record, path):
    with atomic_write(path) as f:
        json.dump(record, f, indent=2, sort_keys=True)
