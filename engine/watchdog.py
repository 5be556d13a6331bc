"""A hang is a failure too: a rank that makes no progress for `timeout` seconds prints every
thread's stack and the reason to stderr and exits with code 3, so that horovodrun (or the
scheduler) ends the job instead of waiting for ever. And no process outlives its rank.

What it covers: a rank alive but stuck, e.g. in a collective that another rank never joins,
or waiting for data from a frozen loader. A rank that dies is noticed by its peers at once
(Gloo closes the connection) and a frozen one after HOROVOD_GLOO_TIMEOUT_SECONDS; Horovod's
own stall shutdown does not act under Gloo (0.28.1). Progress is a training step, an
evaluation batch or attack stage, or a batch of black-box predictions (`beat()`).

Data-loading processes end with their rank: on SIGKILL of the rank through PR_SET_PDEATHSIG
(data/flows.py), and on any other exit through `end_child_processes()`, which main.py calls last;
without it, a frozen loader (Tensorpack joins its workers at exit, for ever) kept a finished
rank, and with it horovodrun, from exiting.
"""
import contextlib
import faulthandler
import os
import sys
import threading
import time

import psutil
from tensorpack.callbacks import Callback

EXIT_CODE = 3
_last_beat = [time.monotonic()]


def beat():
    _last_beat[0] = time.monotonic()


def end_child_processes(grace=2.0):
    """SIGTERM to every descendant of this process, SIGKILL to those alive `grace` s later (a
    stopped process never acts on SIGTERM). Returns how many had to be killed."""
    children = psutil.Process().children(recursive=True)
    for child in children:
        try:
            child.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(children, timeout=grace)
    for child in alive:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace)
    return len(alive)


class Watch:
    """One watchdog thread; `stop()` ends it (a process that calls main() more than once, as
    the tests do, must not keep the watchdogs of finished runs)."""

    def __init__(self, timeout, what):
        self.timeout, self.what = timeout, what
        self._stopped = threading.Event()
        beat()
        threading.Thread(target=self._watch, name="hang-watchdog", daemon=True).start()

    def stop(self):
        self._stopped.set()

    def _watch(self):
        while True:
            idle = time.monotonic() - _last_beat[0]
            if self._stopped.is_set():
                return
            if idle > self.timeout:
                sys.stderr.write("error: {} made no progress for {:.0f} s (--hang-timeout {:g}); the stacks of every "
                                 "thread follow, then this process exits with code {}\n".format(
                                     self.what, idle, self.timeout, EXIT_CODE))
                faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
                sys.stderr.flush()
                end_child_processes(grace=0.5)
                os._exit(EXIT_CODE)
            self._stopped.wait(min(max(self.timeout - idle, 0.1), 10.0))


def start(timeout, what="training"):
    """A daemon thread that ends the process when `beat()` was last called over `timeout` s ago."""
    return Watch(timeout, what)


@contextlib.contextmanager
def watching(timeout, what):
    """The watchdog while the block runs (none for a timeout of 0)."""
    watch = start(timeout, what) if timeout > 0 else None
    try:
        yield watch
    finally:
        if watch is not None:
            watch.stop()


class HangWatchdog(Callback):
    """Starts the watchdog when training starts; every step is progress. On every rank."""
    _chief_only = False

    def __init__(self, timeout):
        self.timeout = timeout

    def _before_train(self):
        self.watch = start(self.timeout) if self.timeout > 0 else None

    def _trigger_step(self):
        beat()

    def _after_train(self):
        if self.watch is not None:
            self.watch.stop()
