"""Small Tensorpack DataFlows that the pipelines are built from."""
import ctypes
import logging
import signal
import sys

import numpy as np
from tensorpack.dataflow import MultiProcessMapDataZMQ, ProxyDataFlow

from .errors import DataError, first_few

logger = logging.getLogger(__name__)


class RepeatForever(ProxyDataFlow):
    """Iterate `ds` again and again; len() stays the length of one pass (an epoch)."""

    def __iter__(self):
        while True:
            yield from self.ds


class CorruptImageLog:
    """The training images skipped as unreadable: `count` skips, `paths` the distinct files
    (each is skipped again on every pass), for the caller and stats.json to read."""

    def __init__(self):
        self.count, self.paths, self._seen = 0, [], set()

    def record(self, path, problem):
        self.count += 1
        if path not in self._seen:
            self._seen.add(path)
            self.paths.append(path)
            logger.warning("skipping unreadable training image %s (%s); %d unreadable so far", path, problem,
                           len(self.paths))


class SkipCorrupt(ProxyDataFlow):
    """Training: drop the images that failed to decode (each logged with its path once, counted in `log`), pass the
    others as [image, label]. Over `limit` distinct unreadable images raise DataError: a few bad files in a large data
    set are skipped, a broken data set (or limit 0) fails at once instead of training on the rest or looping."""

    def __init__(self, ds, log, limit, what="training images"):
        super().__init__(ds)
        self.log, self.limit, self.what = log, limit, what

    def __iter__(self):
        for _, image, label, path, problem in self.ds:
            if problem is None:
                yield [image, label]
                continue
            self.log.record(path, problem)
            if len(self.log.paths) > self.limit:
                raise DataError("{} of {} could not be read, more than the {} that --max-unreadable-fraction allows: "
                                "{}; fix or remove them, or raise --max-unreadable-fraction (the last one: {})".format(
                                    len(self.log.paths), self.what, self.limit, first_few(self.log.paths, 3), problem))


class CheckBatches(ProxyDataFlow):
    """Training batches as the model takes them, [uint8 images [B, S, S, 3], integer labels in 0..classes-1], from
    anywhere (decoded here or from a data server at `source`); anything else is a DataError saying what arrived."""

    def __init__(self, ds, image_size, num_classes, source):
        super().__init__(ds)
        self.image_size, self.num_classes, self.source = image_size, num_classes, source

    def __iter__(self):
        for batch in self.ds:
            self.check(batch)
            yield batch

    def check(self, batch):
        size = self.image_size
        if len(batch) != 2:
            raise DataError("a batch from {} has {} parts; expected [images, labels]".format(self.source, len(batch)))
        images, labels = batch
        if images.dtype != np.uint8 or images.shape[1:] != (size, size, 3):
            raise DataError("a batch from {} holds {} images of shape {}; the model takes uint8 images of "
                            "[{}, {}, 3] (is the data server's --image-size the model's?)".format(
                                self.source, images.dtype, list(images.shape[1:]), size, size))
        if labels.shape != images.shape[:1] or labels.dtype.kind not in "iu":
            raise DataError("a batch from {} has labels {} {} for {} images".format(
                self.source, labels.dtype, list(labels.shape), len(images)))
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            wrong = labels.max() if labels.max() >= self.num_classes else labels.min()
            raise DataError("a batch from {} has label {} but the model has {} classes (0..{}); do the data and "
                            "--num-classes agree?".format(self.source, wrong, self.num_classes, self.num_classes - 1))


class RaiseOnCorrupt(ProxyDataFlow):
    """Evaluation: [image, label, index]; an image that failed to decode is a DataError naming it, never a skip."""

    def __iter__(self):
        for index, image, label, path, problem in self.ds:
            if problem is not None:
                raise DataError("cannot read evaluation image {} ({}); evaluation needs every image: "
                                "fix or replace the file".format(path, problem))
            yield [image, label, index]


class RestoreOrder(ProxyDataFlow):
    """Re-emit datapoints [index, ...] in index order first, first + 1, ... within each pass: parallel map workers
    finish out of order; the indices (with a strict map, yielding each input once per pass) restore the input order."""

    def __init__(self, ds, first=0):
        super().__init__(ds)
        self.first = first

    def __iter__(self):
        pending, expected = {}, self.first
        for datapoint in self.ds:
            pending[datapoint[0]] = datapoint
            while expected in pending:
                yield pending.pop(expected)
                expected += 1
        if pending:
            raise RuntimeError("RestoreOrder: indices {} never completed a run from {}".format(
                sorted(pending)[:5], expected))


PR_SET_PDEATHSIG = 1      # linux/prctl.h


class _OrphanSafeWorker(MultiProcessMapDataZMQ._Worker):
    def run(self):
        if sys.platform.startswith("linux"):        # Linux then sends this worker SIGKILL when its parent dies
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        super().run()


class OrphanSafeMultiProcessMapData(MultiProcessMapDataZMQ):
    """Tensorpack's multiprocess map whose workers end when their parent does. Tensorpack arranges that only with the
    `python-prctl` package, which needs libcap headers to build; without it a training process killed by SIGKILL (a
    scheduler, the OOM killer) leaves its decoding workers running for ever. libc's prctl() does the same directly."""

    def _create_worker(self, id, pipename, hwm):
        return _OrphanSafeWorker(id, self.map_func, pipename, hwm)
