"""The ablation of denoising operations on data that runs on a laptop.

Feature Denoising, Sec. 6.3 (ablation on denoising operations): the same adversarially
trained network with 4 denoising blocks of each kind (non-local means with Gaussian or
dot-product weights, bilateral, mean and median filters), compared with the baseline
without blocks and with the null block (D = identity), which adds the same parameters
but no denoising. The paper found every operation better than both controls.

    python -m tools.ablation --out ablation_out [--epochs E] [--ops none,null,mean,...]

Builds the demo data set (scikit-learn's digits in the ImageNet layout, `tools.digits`),
trains the demo network (`tools.demo.DEMO_ARCH`) once per operation with PGD adversarial
training, evaluates each on clean images and under targeted PGD (one `main.py --eval
--attack-iter 0,K` per model), and writes DIR/ablation.md (a Markdown table),
DIR/ablation.png and DIR/ablation.json. `none` is the network without denoising blocks.
Each step is a `main.py` command, printed before it runs, its output in DIR/logs/. A
re-run with the same DIR and flags continues: finished models and evaluations are kept, an
interrupted training resumes from its last checkpoint, a larger --epochs trains on.
"""
import argparse
import contextlib
import json
import math
import os
import sys
import time

from tqdm import tqdm

import tf_environment  # noqa: F401,E402  (before TensorFlow)

BASELINE = "none"           # no denoising block at all
TINY = dict(epochs=1, image_size=8, train_attack_iter=1, eval_attack_iter=2, batch=64)
TINY_ARCH = ["--widths", "4,4,8,8", "--stem-width", "8"]


def operation_names():
    """`none`, the null block, then every other operation of the registry."""
    from nets.denoise import DENOISE_OPS
    return [BASELINE, "null"] + [name for name in DENOISE_OPS.names() if name != "null"]


def parse_ops(text):
    known = operation_names()
    ops = [name for name in text.split(",") if name]
    unknown = [name for name in ops if name not in known]
    if unknown or not ops:
        raise argparse.ArgumentTypeError("unknown operation {} in '{}'; choose from: {}".format(
            ", ".join(repr(n) for n in unknown), text, ", ".join(known)))
    return list(dict.fromkeys(ops))


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m tools.ablation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="ablation_out", help="folder for the data, the runs and the results")
    parser.add_argument("--ops", type=parse_ops, help="comma-separated operations (default: none and every "
                                                      "operation of the registry, the null block included)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--train-attack-iter", type=int, default=3, help="PGD steps in adversarial training")
    parser.add_argument("--eval-attack-iter", type=int, default=10, help="PGD steps in the evaluation")
    parser.add_argument("--epsilon", type=float, default=64.0,
                        help="attack budget on the 0..255 scale, in training and evaluation (default 64: at 32 "
                             "these near-binary digits leave PGD-10 error near 2%%, too low to rank operations)")
    parser.add_argument("--image-size", type=int, default=16, help="side of the demo images and the network input")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--tiny", action="store_true",
                        help="a smoke test: {} and narrower layers".format(
                            ", ".join("{}={}".format(k.replace("_", "-"), v) for k, v in TINY.items())))
    return parser


def settings_from_args(args):
    """The flags, with --tiny's sizes applied and checked."""
    settings = dict(vars(args))
    settings["ops"] = args.ops or operation_names()
    if args.tiny:
        settings.update(TINY)
    if settings["epochs"] < 1 or settings["train_attack_iter"] < 1 or settings["eval_attack_iter"] < 1:
        raise ValueError("--epochs, --train-attack-iter and --eval-attack-iter must be >= 1 (the ablation is of "
                         "adversarially trained models)")
    return settings


# ---------------------------------------------------------------- one model

def with_flags(flags, overrides):
    """`flags` (a main.py argument list) with each `--flag value` of `overrides` replacing
    the flag's value there, or appended when absent."""
    flags = [str(f) for f in flags]
    for flag, value in zip(overrides[::2], overrides[1::2]):
        if flag in flags:
            flags[flags.index(flag) + 1] = str(value)
        else:
            flags += [flag, str(value)]
    return flags


def arch_flags(op, settings):
    """The demo network with this denoising operation (or none), at the ablation's image size."""
    from tools.demo import DEMO_ARCH
    denoise = ["--denoise-placement", "none"] if op == BASELINE else ["--denoise-op", op]
    tiny = TINY_ARCH if settings["tiny"] else []
    return with_flags(DEMO_ARCH, ["--image-size", settings["image_size"]] + tiny + denoise)


def train_flags(settings):
    """Adversarial training, learning rate x0.1 for the last quarter of the epochs, a clean
    evaluation after the last epoch only (the ablation evaluates under attack at the end)."""
    epochs = settings["epochs"]
    return ["--epochs", epochs, "--batch", settings["batch"], "--workers", settings["workers"],
            "--attack-iter", settings["train_attack_iter"], "--attack-epsilon", settings["epsilon"],
            "--lr-per-256", 0.4, "--lr-decay-epochs", max(1, (epochs * 3) // 4 + 1), "--augment", "light",
            "--eval-schedule", "0:{}".format(epochs), "--eval-final", "clean"]


def read_json(path):
    with open(path) as f:
        return json.load(f)


def train_model(op, settings, data, paths):
    """Trains (or resumes) the model of one operation; returns its log directory and the
    seconds spent training it, over all runs."""
    from tools.demo import run_main
    logdir, marker = paths["run"], paths["trained"]
    done = read_json(marker) if os.path.isfile(marker) else None
    recipe = training_identity(op, settings)
    if done is not None and done.get("recipe") != recipe:
        raise ValueError("{} was trained with other settings ({}); use another --out or the same flags".format(
            logdir, marker))
    if done is not None and done["epochs"] == settings["epochs"]:
        return logdir, done["seconds"]
    if done is not None and done["epochs"] > settings["epochs"]:
        raise ValueError("{} was trained for {} epochs, more than --epochs {}; use another --out".format(
            logdir, done["epochs"], settings["epochs"]))
    resume = ["--resume"] if os.path.isdir(logdir) else []
    start = time.time()
    run_main(["--train", "--data", data, "--logdir", logdir] + train_flags(settings) + arch_flags(op, settings)
             + resume, paths["train_log"])
    seconds = (done["seconds"] if done else 0.0) + time.time() - start
    write_record(dict(epochs=settings["epochs"], seconds=round(seconds, 1), recipe=recipe), marker)
    return logdir, seconds


def training_identity(op, settings):
    """What must not change when a re-run continues a model: all but the number of epochs."""
    return dict(model=arch_flags(op, settings), train_attack_iter=settings["train_attack_iter"],
                epsilon=settings["epsilon"], batch=settings["batch"])


def evaluate_model(op, settings, data, logdir, paths):
    """The --eval curve record (clean and PGD-K points) of one trained model, kept if it is
    newer than the training."""
    from tools.demo import run_main
    result = paths["result"]
    if not (os.path.isfile(result) and os.path.getmtime(result) > os.path.getmtime(paths["trained"])):
        run_main(["--eval", "--data", data, "--load", logdir, "--attack-iter", "0,{}".format(settings["eval_attack_iter"]),
                  "--attack-epsilon", settings["epsilon"], "--attack-seed", 0, "--batch", 120,
                  "--workers", settings["workers"], "--result-file", result] + arch_flags(op, settings),
                 paths["eval_log"])
    return read_json(result)


def model_paths(out, op):
    return dict(run=os.path.join(out, "runs", op), trained=os.path.join(out, "runs", op, "ablation_trained.json"),
                result=os.path.join(out, "results", op + ".json"),
                train_log=os.path.join(out, "logs", op + "-train.log"),
                eval_log=os.path.join(out, "logs", op + "-eval.log"))


def ablation_row(op, curve, train_seconds):
    """One table row from an --eval curve record: clean and attacked metrics."""
    clean, attacked = (sorted(curve["points"], key=lambda p: p["attack_iterations"])[i] for i in (0, -1))
    return dict(operation=op, clean_top1_error=clean["top1_error"], pgd_top1_error=attacked["top1_error"],
                pgd_attack_success_rate=attacked["attack_success_rate"], images=attacked["images"],
                attack_iterations=attacked["attack_iterations"], train_seconds=round(train_seconds, 1))


# ---------------------------------------------------------------- the outputs

def write_record(record, path):
    from engine.evaluate import write_json
    write_json(record, path)


def markdown_table(rows, settings):
    k = settings["eval_attack_iter"]
    lines = ["| denoising operation | clean error | PGD-{0} error | PGD-{0} attack success | training time |".format(k),
             "|---|---|---|---|---|"]
    for row in rows:
        lines.append("| {} | {:.1%} | {:.1%} | {:.1%} | {:.0f} s |".format(
            row["operation"], row["clean_top1_error"], row["pgd_top1_error"], row["pgd_attack_success_rate"],
            row["train_seconds"]))
    return "\n".join(lines)


def standard_error(rate, images):
    """One binomial standard error of an error rate measured on `images` images."""
    return math.sqrt(max(rate * (1.0 - rate), 0.0) / images) if images else float("nan")


def settings_line(rows, settings):
    """What was trained and measured, and how far apart two rows must be to mean anything."""
    images = rows[0]["images"]
    typical = sum(row["pgd_top1_error"] for row in rows) / len(rows)
    return ("{} validation digits at {}x{} px; PGD-{} adversarial training for {} epoch(s), evaluation under "
            "targeted PGD-{}, epsilon {:g}/255 in both (attack seed 0). One run per operation: at a PGD error "
            "of {:.0%} on {} images one binomial standard error is {:.1f} points.").format(
        images, settings["image_size"], settings["image_size"], settings["train_attack_iter"], settings["epochs"],
        settings["eval_attack_iter"], settings["epsilon"], typical, images, 100 * standard_error(typical, images))


def plot_rows(rows, settings, out_path):
    """Horizontal bars per operation: top-1 accuracy on clean images and under PGD."""
    import numpy as np
    from tools.figures import pyplot, save_figure
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(8.0, 1.5 + 0.45 * len(rows)), dpi=100)
    positions = np.arange(len(rows))[::-1]
    for offset, key, label in ((0.2, "clean_top1_error", "clean"),
                               (-0.2, "pgd_top1_error", "PGD-{}".format(settings["eval_attack_iter"]))):
        bars = axis.barh(positions + offset, [100.0 * (1.0 - row[key]) for row in rows], height=0.4, label=label)
        axis.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    axis.set_yticks(positions)
    axis.set_yticklabels([row["operation"] for row in rows])
    axis.set_xlabel("top-1 accuracy (%) of models adversarially trained with PGD-{}, epsilon {:g}".format(
        settings["train_attack_iter"], settings["epsilon"]))
    axis.set_xlim(0, 108)
    axis.grid(True, axis="x", alpha=0.3)
    axis.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize="small", frameon=False)
    save_figure(figure, out_path, 100)


def write_outputs(rows, settings, command, seconds):
    """DIR/ablation.md, DIR/ablation.png, DIR/ablation.json; returns the Markdown text."""
    out = settings["out"]
    text = "{}\n\n{}\n\n    {}\n".format(markdown_table(rows, settings), settings_line(rows, settings), command)
    with open(os.path.join(out, "ablation.md"), "w") as f:
        f.write(text)
    plot_rows(rows, settings, os.path.join(out, "ablation.png"))
    write_record(dict(rows=rows, settings=settings, seconds=round(seconds), table=text, command=command),
                 os.path.join(out, "ablation.json"))
    return text


# ---------------------------------------------------------------- the command

def run_ablation(settings):
    """Trains and evaluates every operation; returns the table rows."""
    from tools.digits import write_digits_demo
    out = settings["out"]
    data = os.path.join(out, "data")
    write_digits_demo(data, size=settings["image_size"])
    for folder in ("runs", "results", "logs"):
        os.makedirs(os.path.join(out, folder), exist_ok=True)
    rows = []
    with contextlib.redirect_stdout(AboveProgressBar(sys.stdout)):
        for op in tqdm(settings["ops"], desc="ablation", unit="model"):
            paths = model_paths(out, op)
            logdir, train_seconds = train_model(op, settings, data, paths)
            rows.append(ablation_row(op, evaluate_model(op, settings, data, logdir, paths), train_seconds))
    return rows


class AboveProgressBar:
    """A stdout that prints each line to `stream` above the progress bar, not through it."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        if text.strip():
            tqdm.write(text.rstrip("\n"), file=self.stream)

    def flush(self):
        self.stream.flush()


def main(argv=None):
    from data.errors import DataError
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = build_parser().parse_args(argv)
    start = time.time()
    try:
        settings = settings_from_args(args)
        os.makedirs(settings["out"], exist_ok=True)
        rows = run_ablation(settings)
    except (ValueError, DataError) as error:
        print("error: {}".format(error), file=sys.stderr)
        return 2
    text = write_outputs(rows, settings, " ".join(["python -m tools.ablation"] + argv), time.time() - start)
    print("\n" + text)
    print("{:.0f} s; wrote {}".format(time.time() - start, ", ".join(
        os.path.join(settings["out"], name) for name in ("ablation.md", "ablation.png", "ablation.json"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
