"""A hang is a failure too: a rank that makes no progress for `timeout` seconds prints every thread's stack and the
reason to stderr and exits with code 3, so that horovodrun (or the scheduler) ends the job instead of waiting for
ever: a rank stuck in a collective that another rank never joins (Horovod's stall shutdown does not act under Gloo,
0.28.1), or waiting for a frozen loader. Progress (`beat()`) is a training step, an evaluation batch or attack stage,
or a batch of black-box predictions. No process outlives its rank: data loaders end on SIGKILL of the rank through
PR_SET_PDEATHSIG (data/flows.py), and on any other exit through `end_child_processes()`, which main.py calls last
(Tensorpack joins a frozen loader at exit for ever, which kept a finished rank, and horovodrun, from exiting)."""
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
    """SIGTERM to all descendants, SIGKILL to any alive `grace` s on (stopped ones ignore SIGTERM); returns how many."""
    children = psutil.Process().children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=grace)
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    psutil.wait_procs(alive, timeout=grace)
    return len(alive)


class Watch:
    """One watchdog thread; `stop()` ends it (tests call main() repeatedly: finished runs must not keep theirs)."""

    def __init__(self, timeout, what):
        self.timeout, self.what, self._stopped = timeout, what, threading.Event()
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
