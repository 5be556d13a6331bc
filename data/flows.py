"""Small Tensorpack DataFlows that the pipelines are built from."""
import ctypes
import logging
import signal
import sys

from tensorpack.dataflow import MultiProcessMapDataZMQ, ProxyDataFlow

from .errors import DataError

logger = logging.getLogger(__name__)


class RepeatForever(ProxyDataFlow):
    """Iterate `ds` again and again; len() stays the length of one pass (an epoch)."""

    def __iter__(self):
        while True:
            yield from self.ds


class CorruptImageLog:
    """Counts the images skipped in training; `count` and `paths` are for the caller to read."""

    def __init__(self, max_paths=1000):
        self.count = 0
        self.paths = []
        self.max_paths = max_paths

    def record(self, path, problem):
        self.count += 1
        if len(self.paths) < self.max_paths:
            self.paths.append(path)
        logger.warning("skipping unreadable training image %s (%s); %d skipped so far", path, problem, self.count)


class SkipCorrupt(ProxyDataFlow):
    """Training: drop the images that failed to decode (logged with the path and counted in
    `log`), pass the others as [image, label]. `max_in_a_row` failures in a row raise
    DataError, so a broken data set fails loudly instead of hanging an infinite flow."""

    def __init__(self, ds, log, max_in_a_row=100):
        super().__init__(ds)
        self.log = log
        self.max_in_a_row = max_in_a_row

    def __iter__(self):
        in_a_row = 0
        for _, image, label, path, problem in self.ds:
            if problem is None:
                in_a_row = 0
                yield [image, label]
                continue
            self.log.record(path, problem)
            in_a_row += 1
            if in_a_row >= self.max_in_a_row:
                raise DataError("{} training images in a row could not be read, the last one {} ({}); "
                                "check the data directory".format(in_a_row, path, problem))


class RaiseOnCorrupt(ProxyDataFlow):
    """Evaluation: an image that failed to decode is a DataError naming it, never a skip."""

    def __iter__(self):
        for _, image, label, path, problem in self.ds:
            if problem is not None:
                raise DataError("cannot read evaluation image {} ({}); evaluation needs every image: "
                                "fix or replace the file".format(path, problem))
            yield [image, label]


class RestoreOrder(ProxyDataFlow):
    """Re-emit datapoints [index, ...] in index order 0, 1, 2, ... within each pass.

    Parallel map workers finish out of order; with indices attached (and a strict map that
    yields each input once per pass) this gives back the deterministic input order.
    """

    def __iter__(self):
        pending, expected = {}, 0
        for datapoint in self.ds:
            pending[datapoint[0]] = datapoint
            while expected in pending:
                yield pending.pop(expected)
                expected += 1
        if pending:
            raise RuntimeError("RestoreOrder: indices {} never completed a run from {}".format(
                sorted(pending)[:5], expected))


PR_SET_PDEATHSIG = 1      # linux/prctl.h


def die_with_parent():
    """Ask Linux to send this process SIGKILL when its parent dies (no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


class _OrphanSafeWorker(MultiProcessMapDataZMQ._Worker):
    def run(self):
        die_with_parent()
        super().run()


class OrphanSafeMultiProcessMapData(MultiProcessMapDataZMQ):
    """Tensorpack's multiprocess map whose workers end when their parent does.

    Tensorpack arranges that only with the `python-prctl` package, which needs libcap headers
    to build; without it a training process killed by SIGKILL (a scheduler, the OOM killer)
    leaves its decoding workers running for ever. libc's prctl() does the same directly.
    """

    def _create_worker(self, id, pipename, hwm):
        return _OrphanSafeWorker(id, self.map_func, pipename, hwm)
