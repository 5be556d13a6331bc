"""The demo: does adversarial training with denoising blocks hold up under attack?

    python -m tools.demo --out demo_out

Builds the demo data set (scikit-learn's handwritten digits in the ImageNet layout), trains
the same small ResNet with denoising blocks twice, once on clean images and once with PGD
adversarial training, evaluates both on clean images and under a targeted PGD attack, and
prints a table (also written as JSON): the paper's targeted PGD beside untargeted APGD-CE, the first attack
of today's standard evaluation (AutoAttack). Each step is a `main.py` command, printed before it runs.
"""
import argparse
import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time

from tools.digits import write_digits_demo
from engine.evaluate import write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A ResNet with one block per group and a non-local (embedded Gaussian) denoising block after
# each group, sized for 16x16 inputs (cropped from the 32x32 files) and 2 CPU cores.
DEMO_ARCH = ["--arch", "ResNetDenoise", "--blocks", "1,1,1,1", "--widths", "16,32,64,128", "--stem", "small",
             "--stem-width", "16", "--num-classes", "10", "--image-size", "16"]
# Digits fill the frame and a mirrored digit is another digit: big crops, no flip.
DEMO_AUGMENTATION = ["--augment", "light"]


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_out", help="folder for the data, the runs and the results")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--train-attack-iter", type=int, default=3, help="PGD steps in adversarial training")
    parser.add_argument("--eval-attack-iter", type=int, default=10, help="PGD steps in the evaluation")
    parser.add_argument("--epsilon", type=float, default=32.0, help="attack budget on the 0..255 scale")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    return parser


STEP_TIMEOUT = 3 * 3600     # seconds; a step's command far beyond any demo step's time is stopped, not waited for
RUNNING = set()             # the steps' processes now running (each its own process group)


def kill_step(process):
    """Kill one step's process with its children (its process group)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop_running():
    """Kill every running step (a failed or interrupted demo leaves nothing behind)."""
    for process in list(RUNNING):
        kill_step(process)


def run_main(args, log_path, timeout=STEP_TIMEOUT, tag=""):
    """Run `python main.py ARGS`, its output in log_path, and say how long it took (lines prefixed with `tag`); exits
    with its log's end on failure, and after `timeout` seconds stops it (and its children) and exits."""
    command = [sys.executable, os.path.join(ROOT, "main.py")] + [str(a) for a in args]
    print("{}$ {}".format(tag, " ".join(command[1:])), flush=True)
    started = time.time()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        RUNNING.add(process)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_step(process)
            process.wait()
            sys.exit("demo step stopped after {:.0f} s (its limit); its log: {}".format(timeout, log_path))
        finally:
            RUNNING.discard(process)
    if code != 0:
        with open(log_path) as log:
            sys.exit("demo step failed (exit {}); the end of {}:\n{}".format(code, log_path, log.read()[-3000:]))
    print("{}  done in {:.0f} s".format(tag, time.time() - started), flush=True)


# The catastrophic-overfitting guard on 64 training digits (PGD-10 on 512 would cost more than a PGD-3 epoch here),
# its margin wider for so few: a fresh demo run went 46.9% -> 28.1% between epochs 4 and 5 before rising to 86%
DEMO_GUARD = ["--collapse-check-images", 64, "--collapse-margin", 0.3]


def train(args, data, name, method):
    """Train the demo network with `method` (main.py flags: --attack-iter 3, --attack fgsm-rs, --free-replays 4, ...)
    into OUT/runs/NAME, continuing an unfinished run there."""
    logdir = os.path.join(args.out, "runs", name)
    resume = ["--resume"] if os.path.isdir(logdir) else []
    last_epoch = (args.epochs * 3) // 4
    run_main(["--train", "--data", data, "--logdir", logdir, "--epochs", args.epochs, "--batch", args.batch,
              "--workers", args.workers, *method, "--attack-epsilon", args.epsilon,
              "--lr-per-256", 0.4, "--lr-decay-epochs", "{},{}".format(last_epoch - 2, last_epoch + 1),
              "--eval-schedule", "0:4", "--eval-final", "clean"] + DEMO_ARCH + DEMO_AUGMENTATION + DEMO_GUARD + resume,
             os.path.join(args.out, name + "-train.log"), tag="[{}] ".format(name))
    return logdir


APGD_IMAGES = 120      # APGD-CE-100 on a fixed subset of the validation digits: about a minute per model


def evaluate(args, data, logdir, name, attack_iters=(), attack=None, images=APGD_IMAGES):
    """The --eval records (one per attack) of the paper's targeted PGD at each of `attack_iters` (0: clean images; one
    command, one pass each) on every validation digit, or of the named `attack` on a fixed subset of `images` of
    them."""
    if attack:
        chosen, key = ["--attack", attack, "--eval-images", images], attack
    else:
        chosen, key = ["--attack-iter", ",".join(map(str, attack_iters))], "pgd" + "-".join(map(str, attack_iters))
    result = os.path.join(args.out, "{}-eval-{}.json".format(name, key))
    run_main(["--eval", "--data", data, "--load", logdir] + chosen +
             ["--attack-epsilon", args.epsilon, "--attack-seed", 0, "--batch", 120, "--workers", args.workers,
              "--result-file", result] + DEMO_ARCH, os.path.join(args.out, "{}-eval-{}.log".format(name, key)),
             tag="[{}] ".format(name))
    with open(result) as f:
        record = json.load(f)
    return record.get("points", [record])


def table(rows, args):
    """The paper's view (targeted PGD-K: error and the attacker's success) beside today's standard view (untargeted
    APGD-CE, AutoAttack's first attack: error)."""
    header = "| training | clean error | PGD-{0} error | PGD-{0} attack success | APGD-CE error ({1} digits) |".format(
        args.eval_attack_iter, APGD_IMAGES)
    lines = [header, "|---|---|---|---|---|"]
    for row in rows:
        lines.append("| {} | {:.1%} | {:.1%} | {:.1%} | {:.1%} |".format(
            row["training"], row["clean_top1_error"], row["pgd_top1_error"], row["pgd_attack_success_rate"],
            row["apgd_ce_top1_error"]))
    return "\n".join(lines)


def train_and_evaluate(args, data, name, attack_iter):
    """One model of the table: trained (PGD-`attack_iter`, 0: clean images), then evaluated."""
    logdir = train(args, data, name, ["--attack-iter", attack_iter])
    clean, attacked = evaluate(args, data, logdir, name, (0, args.eval_attack_iter))
    apgd, = evaluate(args, data, logdir, name, attack="apgd-ce")
    return dict(training="{} (PGD-{})".format(name, attack_iter) if attack_iter else name, checkpoint=logdir,
                clean_top1_error=clean["top1_error"], pgd_top1_error=attacked["top1_error"],
                pgd_attack_success_rate=attacked["attack_success_rate"], apgd_ce_top1_error=apgd["top1_error"],
                images=attacked["images"])


def main(argv=None):
    args = build_parser().parse_args(argv)
    start = time.time()
    os.makedirs(args.out, exist_ok=True)
    data = os.path.join(args.out, "data")
    write_digits_demo(data)
    models = (("clean", 0), ("adversarial", args.train_attack_iter))
    print("\n== training and evaluating the two models side by side: {} ==".format(", ".join(
        "'{}' ({})".format(name, "PGD-{}".format(k) if k else "clean images") for name, k in models)), flush=True)
    # Side by side: one process keeps about 1.6 of the 2 cores busy (start-ups, Python, the data pipeline)
    with concurrent.futures.ThreadPoolExecutor(len(models)) as pool:
        futures = [pool.submit(train_and_evaluate, args, data, name, k) for name, k in models]
        try:
            concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
            rows = [future.result() for future in futures]
        except BaseException:                   # a failed step, or Ctrl-C: the other model's step is stopped too
            stop_running()
            raise
    text = table(rows, args)
    record = dict(rows=rows, epsilon=args.epsilon, eval_attack_iter=args.eval_attack_iter,
                  train_attack_iter=args.train_attack_iter, epochs=args.epochs, seconds=round(time.time() - start),
                  table=text)
    path = os.path.abspath(os.path.join(args.out, "demo_results.json"))
    write_json(record, path)
    print("\nDemo results: {} validation digits, targeted PGD-{} (the paper's attack) and untargeted APGD-CE-100 "
          "(today's standard) with epsilon {:g}/255, {:.0f} s\n".format(
              rows[0]["images"], args.eval_attack_iter, args.epsilon, time.time() - start))
    print(text)
    print("\nwritten to {}".format(path))


if __name__ == "__main__":
    main()
