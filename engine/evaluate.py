"""White-box evaluation over a validation set: top-1/top-5 error and attack success rate.

SPEC Sec. 4: each image gets its own random wrong target and random start; results vary
by about +-0.3 points from those draws (fix --attack-seed to repeat a run exactly).
"""
import json
import os

from tqdm import tqdm

from attacker.metrics import Counts


def attack_name(attack_iterations):
    """'clean' for 0 iterations, else 'PGD-<k>'."""
    return "PGD-{}".format(attack_iterations) if attack_iterations else "clean"


def evaluate(predictor, dataflow, sum_across_ranks=None, show_progress=True, description="evaluating"):
    """Counts over one pass of `dataflow` ([uint8 images, int labels]), whose reset_state() the
    caller has run once; with `sum_across_ranks` (a Horovod allreduce of the count vector)
    the totals of all ranks. `description` names the progress bar."""
    counts = Counts()
    try:
        total = len(dataflow)
    except NotImplementedError:
        total = None
    with tqdm(dataflow, total=total, desc=description, unit="batch", disable=not show_progress) as batches:
        for images, labels in batches:
            result = predictor.attack(images, labels)
            counts = counts + Counts.from_batch(result.correct_top1, result.correct_top5, result.hit)
            batches.set_postfix(top1_error="{:.3f}".format(counts.top1_error),
                                success="{:.3f}".format(counts.attack_success_rate))
    if sum_across_ranks is not None:
        counts = Counts.from_array(sum_across_ranks(counts.as_array()))
    return counts


def result_record(counts, attack_iterations, attack_settings, model):
    """The JSON record of one evaluation: the metrics, the attack settings and the model."""
    record = counts.summary()
    record.update(attack_iterations=attack_iterations, attack=attack_settings, model=model)
    return record


def point_record(counts, attack_iterations, seconds):
    """One point of a robustness curve: the metrics at one attack length, and its wall time."""
    record = counts.summary()
    record.update(attack_iterations=attack_iterations, seconds=round(seconds, 1))
    return record


def curve_record(points, attack_settings, model):
    """The JSON record of an evaluation at several attack lengths (paper Fig. 6: error
    against PGD iterations), read by tools/plot_curves.py."""
    return dict(points=sorted(points, key=lambda p: p["attack_iterations"]), attack=attack_settings, model=model)


def print_curve(points):
    """One line per attack length, after the per-length results."""
    print("{:>10} {:>8} {:>11} {:>15} {:>8}".format("attack", "images", "top1 error", "attack success", "seconds"))
    for point in sorted(points, key=lambda p: p["attack_iterations"]):
        print("{:>10} {:>8} {:>11.4f} {:>15.4f} {:>8.0f}".format(
            attack_name(point["attack_iterations"]), point["images"], point["top1_error"],
            point["attack_success_rate"], point["seconds"]))


def print_result(counts):
    """The original code's three lines."""
    print("Top1 Error: {:.4f}".format(counts.top1_error))
    print("Attack Success Rate: {:.4f}".format(counts.attack_success_rate))
    print("Top5 Error: {:.4f}".format(counts.top5_error))


def write_json(record, path):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
