"""Shared pieces of the benchmarks: the header every table starts with, timing, peak memory
and markdown tables.

Timing: wall clock of `session.run` after warm-up runs, the median of the repeats (and the
spread, min..max). Peak memory: TensorFlow's CPU allocator switched to its BFC allocator
(TF_CPU_ALLOCATOR_USE_BFC=true, set before TensorFlow is imported), whose statistics
`tf.config.experimental.get_memory_info("CPU:0")` then reports; we reset the peak just
before one run and report peak minus the bytes in use before it: the transient memory of
that run (inputs held in variables and the weights excluded). The timed runs use TF's
default allocator, so memory is measured in a separate process (`measure_in_subprocess`).
"""
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
import tf_environment  # noqa: F401,E402  (before TensorFlow)

MEMORY_ENV = "TF_CPU_ALLOCATOR_USE_BFC"


def command_line():
    """The exact command that produced a table (relative to the repository root)."""
    return " ".join([".venv/bin/python", "-m", "bench." + os.path.splitext(os.path.basename(sys.argv[0]))[0]]
                    + [shlex.quote(a) for a in sys.argv[1:]])


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine():
    """One line describing where the numbers come from."""
    import tensorflow as tf
    flags = cpu_flags()
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_fp16") if f in flags]
    gpus = tf.config.list_physical_devices("GPU")
    try:
        from tensorflow.python.util import _pywrap_util_port
        onednn = "oneDNN on" if _pywrap_util_port.IsMklEnabled() else "oneDNN off"
    except Exception:   # noqa: BLE001 - informative only
        onednn = "oneDNN ?"
    total_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    return "{} ({} cores, {}), {:.0f} GB RAM, {}; TensorFlow {} ({}); Python {}".format(
        cpu_model(), os.cpu_count(), " ".join(isa) or "no AVX2", total_gb,
        "{} GPU(s)".format(len(gpus)) if gpus else "no GPU", tf.__version__, onednn, platform.python_version())


def header(title, notes=()):
    """Print the table header: title, exact command, machine, date and load."""
    load = os.getloadavg()
    print("## {}".format(title))
    print()
    print("    {}".format(command_line()))
    print()
    print("- machine: {}".format(machine()))
    print("- date: {}; load average at start {:.2f} {:.2f} {:.2f} (other work on the machine inflates timings; "
          "ratios are measured within one run)".format(
              datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), *load))
    for note in notes:
        print("- {}".format(note))
    print()
    sys.stdout.flush()


def table(columns, rows, end=True):
    """Print a markdown table; `rows` are lists of already formatted cells; end=False leaves
    it open for rows printed later (`start_row`)."""
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    if end:
        print()
    sys.stdout.flush()


def start_row(cells):
    """Print one table row as soon as it is measured (long benchmarks)."""
    print("| " + " | ".join(str(c) for c in cells) + " |")
    sys.stdout.flush()


class Timing:
    def __init__(self, seconds):
        self.seconds = list(seconds)

    @property
    def median(self):
        return statistics.median(self.seconds)

    def spread(self):
        return "{:.3g}..{:.3g}".format(min(self.seconds), max(self.seconds))


def interleaved(runs, warmup=1, rounds=3):
    """Time several configurations in alternation (A B A B ...), so that load changes on the
    machine hit all of them alike; returns {name: Timing}."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    seconds = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            t = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - t)
    return {name: Timing(s) for name, s in seconds.items()}


def reset_peak():
    import tensorflow as tf
    tf.config.experimental.reset_memory_stats("CPU:0")
    return tf.config.experimental.get_memory_info("CPU:0")["current"]


def peak_since(baseline):
    import tensorflow as tf
    return tf.config.experimental.get_memory_info("CPU:0")["peak"] - baseline


def measure_in_subprocess(module, args):
    """Run `python -m module args` with the BFC CPU allocator; it prints one JSON object on its
    last stdout line, which is returned."""
    env = dict(os.environ, **{MEMORY_ENV: "true"})
    out = subprocess.run([sys.executable, "-m", module] + list(args), cwd=ROOT, env=env, check=True,
                         stdout=subprocess.PIPE, universal_newlines=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def fmt_bytes(n):
    if n is None:
        return "n/a"
    for unit, size in (("GB", 2 ** 30), ("MB", 2 ** 20), ("KB", 2 ** 10)):
        if n >= size:
            return "{:.1f} {}".format(n / size, unit)
    return "{} B".format(int(n))


def fmt_seconds(s):
    return "{:.1f} ms".format(s * 1e3) if s < 1 else "{:.2f} s".format(s)
