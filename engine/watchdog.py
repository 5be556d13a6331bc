"""A hang is a failure too: a training rank that makes no progress for `timeout` seconds
prints every thread's stack and the reason to stderr and exits with code 3, so that
horovodrun (or the scheduler) ends the job instead of waiting for ever.

What it covers: a rank alive but stuck, e.g. in a collective that another rank never joins.
A rank that dies is noticed by its peers at once (Gloo closes the connection) and a frozen
one after HOROVOD_GLOO_TIMEOUT_SECONDS; Horovod's own stall shutdown does not act under
Gloo (0.28.1). Progress is a training step or an evaluation batch (`beat()`).
"""
import faulthandler
import os
import sys
import threading
import time

from tensorpack.callbacks import Callback

EXIT_CODE = 3
_last_beat = [time.monotonic()]


def beat():
    _last_beat[0] = time.monotonic()


def start(timeout, what="training"):
    """A daemon thread that ends the process when `beat()` was last called over `timeout` s ago."""
    def watch():
        while True:
            idle = time.monotonic() - _last_beat[0]
            if idle > timeout:
                sys.stderr.write("error: {} made no progress for {:.0f} s (--hang-timeout {:g}); the stacks of every "
                                 "thread follow, then this process exits with code {}\n".format(
                                     what, idle, timeout, EXIT_CODE))
                faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
                sys.stderr.flush()
                os._exit(EXIT_CODE)
            time.sleep(min(max(timeout - idle, 0.1), 10.0))
    beat()
    thread = threading.Thread(target=watch, name="hang-watchdog", daemon=True)
    thread.start()
    return thread


class HangWatchdog(Callback):
    """Starts the watchdog when training starts; every step is progress. On every rank."""
    _chief_only = False

    def __init__(self, timeout):
        self.timeout = timeout

    def _before_train(self):
        if self.timeout > 0:
            start(self.timeout)

    def _trigger_step(self):
        beat()
