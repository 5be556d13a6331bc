"""Horovod, when the job runs under horovodrun / mpirun; a single process otherwise (Horovod is then optional). The
collectives run eagerly (also while a training graph is built or run), so no graph op is made for them."""
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

LAUNCHER_VARIABLES = ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")


class ChiefFailed(RuntimeError):
    """Rank 0 failed at something only it does (its own message is on its stderr too)."""


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    hvd: Any = None

    @property
    def is_chief(self):
        return self.rank == 0

    @property
    def distributed(self):
        return self.hvd is not None

    def _collective(self, op, values, dtype):
        import tensorflow as tf
        from tensorflow.python.eager import context
        with context.eager_mode():              # eager, also while a (finalised) training graph is the default
            return op(tf.constant(np.asarray(values, dtype))).numpy()

    def sum(self, values):
        """A numpy vector summed over all ranks (itself for one process); every rank must call it equally often."""
        if not self.distributed:
            return np.asarray(values)
        total = self._collective(lambda t: self.hvd.allreduce(t, op=self.hvd.Sum), values, np.float64)
        return np.rint(total).astype(np.int64)

    def agree(self, value, what):
        """`value`, checked to be the same integer on every rank (ValueError on every rank if not)."""
        if not self.distributed:
            return value
        low, high = (int(self._collective(lambda t, op=op: self.hvd.allreduce(t, op=op), value, np.int64))
                     for op in (self.hvd.Min, self.hvd.Max))
        if low != high:
            raise ValueError("the ranks disagree on the {}: {} on this rank (rank {}), from {} to {} over all "
                             "ranks; do they read the same data with the same settings?".format(
                                 what, value, self.rank, low, high))
        return value

    def from_chief(self, value):
        """Rank 0's `value` (anything JSON can write) on every rank."""
        if not self.distributed:
            return value
        data = np.frombuffer(json.dumps(value).encode("utf-8"), np.uint8) if self.is_chief else np.zeros(0, np.uint8)
        size = int(self._collective(lambda t: self.hvd.broadcast(t, 0), len(data), np.int64))
        data = self._collective(lambda t: self.hvd.broadcast(t, 0), data if self.is_chief else np.zeros(size), np.int32)
        return json.loads(bytes(data.astype(np.uint8)).decode("utf-8"))

    def chief_does(self, work, what):
        """`work()` on rank 0 only, its result (a JSON value) returned on every rank. If it raises, every rank raises:
        rank 0 its own error, the others ChiefFailed with rank 0's message (e.g. a locked log folder)."""
        outcome, failure = None, None
        if self.is_chief:
            try:
                outcome = dict(result=work())
            except Exception as error:          # handed to the other ranks, then raised here
                failure, outcome = error, dict(error=str(error.args[0] if error.args else "") or repr(error))
        outcome = self.from_chief(outcome)
        if failure is not None:
            raise failure
        if "error" in outcome:
            raise ChiefFailed("rank 0 failed at {}: {}".format(what, outcome["error"]))
        return outcome["result"]


def init_world(require_horovod=False):
    """Initialise Horovod if a launcher started this process (or `require_horovod`)."""
    if not (require_horovod or any(name in os.environ for name in LAUNCHER_VARIABLES)):
        return World()
    try:
        import horovod.tensorflow as hvd
    except ImportError as error:
        raise RuntimeError(
            "this run needs Horovod (started by horovodrun/mpirun, or a distributed feature was asked for) "
            "but it cannot be imported ({}); install it with 'bash scripts/setup.sh'".format(error)) from None
    hvd.init()
    return World(hvd.rank(), hvd.size(), hvd.local_rank(), hvd)
