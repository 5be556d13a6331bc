"""Horovod, when the job runs under horovodrun / mpirun; a single process otherwise.

Horovod is optional for one process: importing it is only required when a launcher started
several ranks, and then its absence is an error that says how to install it.
"""
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

LAUNCHER_VARIABLES = ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")


def launched_by_horovod():
    return any(name in os.environ for name in LAUNCHER_VARIABLES)


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

    def sum(self, values):
        """A numpy vector summed over all ranks (itself for one process); every rank must call
        it the same number of times. Runs eagerly: no graph or session is built."""
        if not self.distributed:
            return np.asarray(values)
        import tensorflow as tf
        total = self.hvd.allreduce(tf.constant(np.asarray(values, np.float64)), op=self.hvd.Sum)
        return np.rint(total.numpy()).astype(np.int64)


    def agree(self, value, what):
        """`value`, checked to be the same integer on every rank (ValueError on every rank if not)."""
        if not self.distributed:
            return value
        import tensorflow as tf
        low, high = (int(self.hvd.allreduce(tf.constant(value, tf.int64), op=op).numpy())
                     for op in (self.hvd.Min, self.hvd.Max))
        if low != high:
            raise ValueError("the ranks disagree on the {}: {} on this rank (rank {}), from {} to {} over all "
                             "ranks; do they read the same data with the same settings?".format(
                                 what, value, self.rank, low, high))
        return value


def init_world(require_horovod=False):
    """Initialise Horovod if a launcher started this process (or `require_horovod`)."""
    if not (launched_by_horovod() or require_horovod):
        return World()
    try:
        import horovod.tensorflow as hvd
    except ImportError as error:
        raise RuntimeError(
            "this run needs Horovod (started by horovodrun/mpirun, or a distributed feature was asked for) "
            "but it cannot be imported ({}); install it with 'bash scripts/setup.sh'".format(error)) from None
    hvd.init()
    return World(hvd.rank(), hvd.size(), hvd.local_rank(), hvd)
