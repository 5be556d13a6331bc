"""What robust training costs, measured: the demo network (tools/demo.py) trained on the digits with PGD-3 (the
paper's recipe, shortened), FGSM-RS (Wong et al., ICLR 2020), free training with 4 replays (Shafahi et al., NeurIPS
2019), and PGD-3 in each reduced training dtype; each model's clean error on every validation digit and its robust
error under the standard AutoAttack on a fixed subset of them, all at one epsilon.

    python -m tools.training_cost --out training_cost_out

Writes OUT/training_cost.json (rows: method, train_dtype, seconds, backward_passes, clean_error, robust_error,
robust_attack, ...) and OUT/training_cost.md (the table). `seconds` is the training steps' time (the sum of the
epochs' times in the run's log, evaluations and start-up left out), `wall_seconds` the whole training command's;
`backward_passes` counts minibatch backward passes (one per attack step and one for the weights; free training:
one per replay). An interrupted run continues where it stopped (each training resumes, each result is kept)."""
import argparse
import os
import re
import time

from engine.evaluate import write_json
from tools.demo import DEMO_ARCH, evaluate, train
from tools.digits import write_digits_demo

# (name, method, main.py flags, training dtype, backward passes per step)
RUNS = (
    ("pgd3", "PGD-3", ["--attack-iter", 3], "float32", 4),
    ("fgsm-rs", "FGSM-RS", ["--attack", "fgsm-rs"], "float32", 2),
    ("free4", "Free (m = 4)", ["--free-replays", 4], "float32", 1),
    ("pgd3-bf16", "PGD-3", ["--attack-iter", 3, "--train-dtype", "bfloat16"], "bfloat16", 4),
    ("pgd3-fp16", "PGD-3", ["--attack-iter", 3, "--train-dtype", "float16"], "float16", 4),
)
EPOCH_LINE = re.compile(r"Epoch (\d+) \(global_step (\d+)\) finished, time:(.*)\.$", re.MULTILINE)
TIME_PART = re.compile(r"([\d.]+) (day|hour|minute|second)")      # Tensorpack's humanize_time_delta
UNIT = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}


def seconds_of(text):
    """'1 minute 27 seconds' -> 87.0"""
    return sum(float(value) * UNIT[unit] for value, unit in TIME_PART.findall(text))


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="training_cost_out", help="folder for the data, the runs and the results")
    parser.add_argument("--epochs", type=int, default=16, help="epochs of a clean-cost run (free training: / 4)")
    parser.add_argument("--epsilon", type=float, default=32.0, help="attack budget on the 0..255 scale (all rows)")
    parser.add_argument("--images", type=int, default=120, help="validation digits AutoAttack attacks")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--runs", default=",".join(name for name, *_ in RUNS),
                        help="which rows, by name: " + ", ".join(name for name, *_ in RUNS))
    return parser


def training_time(logdir):
    """(seconds of training steps, global steps) from the epochs' lines of the run's log."""
    epochs = {}
    with open(os.path.join(logdir, "log.log")) as f:
        for match in EPOCH_LINE.finditer(f.read()):
            epochs[int(match.group(1))] = (seconds_of(match.group(3)), int(match.group(2)))
    if not epochs:
        raise SystemExit("no finished epoch in {}".format(os.path.join(logdir, "log.log")))
    return sum(seconds for seconds, _ in epochs.values()), max(step for _, step in epochs.values())


def measure(args, data, name, method, flags, dtype, passes):
    """One row: train (or continue), then clean error on every digit and AutoAttack on `args.images` of them."""
    started = time.time()
    logdir = train(args, data, name, flags)
    wall = time.time() - started
    seconds, steps = training_time(logdir)
    clean, = evaluate(args, data, logdir, name, (0,))
    robust, = evaluate(args, data, logdir, name, attack="autoattack", images=args.images)
    return dict(name=name, method=method, train_dtype=dtype, seconds=round(seconds, 1), wall_seconds=round(wall, 1),
                steps=steps, backward_passes=steps * passes, clean_error=clean["top1_error"],
                robust_error=robust["top1_error"], robust_attack=robust["attack"], robust_images=robust["images"],
                epsilon=args.epsilon, checkpoint=logdir)


def table(rows):
    reference = next((r for r in rows if r["name"] == "pgd3"), None)
    lines = ["| method | train dtype | training s | vs PGD-3 | backward passes | clean error | robust error "
             "(AutoAttack) |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        ratio = "x{:.2f}".format(row["seconds"] / reference["seconds"]) if reference else "-"
        lines.append("| {} | {} | {:.0f} | {} | {} | {:.1%} | {:.1%} |".format(
            row["method"], row["train_dtype"], row["seconds"], ratio, row["backward_passes"], row["clean_error"],
            row["robust_error"]))
    return "\n".join(lines)


def main(argv=None):
    args = build_parser().parse_args(argv)
    wanted = args.runs.split(",")
    unknown = sorted(set(wanted) - {name for name, *_ in RUNS})
    if unknown:
        raise SystemExit("unknown run(s) {}; known: {}".format(", ".join(unknown), ", ".join(n for n, *_ in RUNS)))
    os.makedirs(args.out, exist_ok=True)
    data = os.path.join(args.out, "data")
    write_digits_demo(data)
    rows = []
    for name, method, flags, dtype, passes in RUNS:
        if name in wanted:
            print("\n== {} ({}) ==".format(method, dtype), flush=True)
            rows.append(measure(args, data, name, method, flags, dtype, passes))
    text = table(rows)
    write_json(rows, os.path.join(args.out, "training_cost.json"))
    with open(os.path.join(args.out, "training_cost.md"), "w") as f:
        f.write("Epsilon {:g}/255, {} epochs of clean-training cost, AutoAttack (standard) on {} validation digits; "
                "architecture: {}\n\n{}\n".format(args.epsilon, args.epochs, args.images, " ".join(DEMO_ARCH), text))
    print("\n" + text)
    print("\nwritten to {}".format(os.path.abspath(os.path.join(args.out, "training_cost.md"))))


if __name__ == "__main__":
    main()
