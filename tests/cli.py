"""Running main.py the way a user does, on small generated data (no test functions here):
in this process (`run_main`, no TensorFlow start-up) or as a program (`main_py`, when the test
needs a process of its own: signals, Horovod ranks, a crash, another working directory's
environment)."""
import contextlib
import io
import logging
import os
import subprocess
import sys
import time

import cv2
import numpy as np
import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOROVODRUN = os.path.join(os.path.dirname(sys.executable), "horovodrun")
CLASSES = 4
# The tests' model: a ResNet with the published non-local (embedded Gaussian) block after each
# of two groups, on 16 px images; small enough that a graph with an attack builds in seconds.
ARCH = ["--arch", "ResNetDenoise", "--blocks", "1,1", "--widths", "4,8", "--stem", "small", "--stem-width", "8",
        "--num-classes", CLASSES, "--image-size", "16"]


# A short training run: PGD-1, the clean images evaluated after each epoch and at the end. Without the
# catastrophic-overfitting guard: these tiny models' robust accuracy swings by more than its margin from epoch to
# epoch, and it would stop long runs (tests/test_fast_training.py tests the guard).
QUICK_TRAINING = ["--batch", 8, "--workers", 0, "--attack-iter", 1, "--eval-schedule", "0:1", "--eval-final", "0",
                  "--collapse-check", "none", *ARCH]


def arch_spec(arch=ARCH):
    """The ArchSpec that the flags `arch` give."""
    import flags
    return flags.spec_from_args(flags.build_parser().parse_args(["--eval"] + [str(a) for a in arch]))


def write_split(root, split, per_class, seed, classes=CLASSES, extension="jpg"):
    """ROOT/split/class<k>/<i>.<extension>: 20x20 images whose grey level tells the class."""
    rng = np.random.RandomState(seed)
    for label in range(classes):
        folder = os.path.join(root, split, "class{}".format(label))
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            image = np.full([20, 20, 3], 40 + 50 * label % 200, np.uint8) + rng.randint(0, 30, [20, 20, 3]).astype(
                np.uint8)
            assert cv2.imwrite(os.path.join(folder, "{}.{}".format(i, extension)), image)
    return root


def run_main(*args, cwd=None):
    """(exit code, what it printed and logged, what it wrote to stderr) of `main.main(args)` in
    this process, in `cwd`; the child processes it started (image decoders) are ended
    afterwards, as main.py's are."""
    import main
    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(out)
    loggers = [logging.getLogger(), logging.getLogger("tensorpack")]
    root_level, before, here = loggers[0].level, set(psutil.Process().children()), os.getcwd()
    for logger in loggers:
        logger.addHandler(handler)
    loggers[0].setLevel(logging.INFO)
    try:
        os.chdir(cwd or here)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main.main([str(a) for a in args])
            except SystemExit as exit_:
                code = exit_.code
    finally:
        os.chdir(here)
        loggers[0].setLevel(root_level)
        for logger in loggers:
            logger.removeHandler(handler)
        end_processes(set(psutil.Process().children()) - before)
    return code, out.getvalue(), err.getvalue()


def end_processes(processes):
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(list(processes), timeout=10)


def command(args, ranks=1):
    """`python main.py ARGS`, under `horovodrun -np RANKS` when ranks > 1."""
    line = [sys.executable, os.path.join(ROOT, "main.py")] + [str(a) for a in args]
    return [HOROVODRUN, "-np", str(ranks), "-H", "localhost:{}".format(ranks), "--gloo"] + line if ranks > 1 else line


def environment():
    return dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=ROOT)


def main_py(*args, ranks=1, wait=True, timeout=600, cwd=ROOT):
    """(exit code, stdout + stderr) of main.py run in `cwd`; with wait=False the running Popen."""
    if not wait:
        return subprocess.Popen(command(args, ranks), cwd=cwd, env=environment(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    done = subprocess.run(command(args, ranks), cwd=cwd, env=environment(), capture_output=True, text=True,
                          timeout=timeout)
    return done.returncode, done.stdout + done.stderr


def main_py_stderr(*args, ranks=1, timeout=600, cwd=ROOT):
    """(exit code, stdout, stderr) of main.py run in `cwd`, kept apart."""
    done = subprocess.run(command(args, ranks), cwd=cwd, env=environment(), capture_output=True, text=True,
                          timeout=timeout)
    return done.returncode, done.stdout, done.stderr


def wait_for_file(path, process, timeout=300):
    """Wait until `path` exists while `process` (a Popen) runs; AssertionError if it ends first."""
    deadline = time.time() + timeout
    while not os.path.exists(path):
        assert process.poll() is None, "the run ended before {} appeared: {}".format(
            path, process.stdout.read()[-3000:])
        assert time.time() < deadline, "{} did not appear within {} s".format(path, timeout)
        time.sleep(0.02)


def finish(process, timeout=600):
    """(exit code, output) of a Popen from main_py(wait=False); killed if it outlives `timeout`."""
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
        raise AssertionError("the run did not end within {} s: {}".format(timeout, out[-3000:]))
    return process.returncode, out
