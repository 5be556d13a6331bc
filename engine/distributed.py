"""Horovod, when the job runs under horovodrun / mpirun; a single process otherwise.

Horovod is optional for one process: importing it is only required when a launcher started
several ranks, and then its absence is an error that says how to install it.
"""
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

LAUNCHER_VARIABLES = ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")
MESSAGE_BYTES = 4096        # the longest error text one rank hands the others


class ChiefFailed(RuntimeError):
    """Rank 0 failed at something only it does (its own message is on its stderr too)."""


def encode_text(text):
    """`text` as a fixed-size int32 vector (UTF-8 bytes, zero-padded), to cross ranks in a collective."""
    data = text.encode("utf-8")
    if len(data) > MESSAGE_BYTES:
        raise ValueError("a message between ranks is limited to {} bytes, got {}".format(MESSAGE_BYTES, len(data)))
    vector = np.zeros(MESSAGE_BYTES, np.int32)
    vector[:len(data)] = np.frombuffer(data, np.uint8)
    return vector


def decode_text(vector):
    data = bytes(np.asarray(vector, np.int64).clip(0, 255).astype(np.uint8))
    return data.rstrip(b"\0").decode("utf-8", errors="replace")


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


    def chief_does(self, work, what, share_result=False):
        """`work()` on rank 0 only. Returns its result there, and with `share_result` (a JSON
        value) on every rank, else None elsewhere. If it raises, every rank raises: rank 0 its own
        error, the others ChiefFailed with rank 0's message, so a job whose chief cannot start
        (a locked or unwritable log folder) ends everywhere with the cause."""
        result, error = None, None
        if self.is_chief:
            try:
                result = work()
            except Exception as caught:         # handed to the other ranks, then raised here
                error = caught
        if self.distributed:
            import tensorflow as tf
            if error is not None:
                shared = dict(error=(str(error.args[0] if error.args else "") or type(error).__name__)[:2000])
            else:
                shared = dict(result=result if share_result and self.is_chief else None)
            text = decode_text(self.hvd.broadcast(tf.constant(encode_text(json.dumps(shared))), root_rank=0,
                                                  name="chief_" + "_".join(what.split())).numpy())
            shared = json.loads(text)
            if "error" in shared and not self.is_chief:
                raise ChiefFailed("rank 0 failed at {}: {}".format(what, shared["error"]))
            if share_result and not self.is_chief:
                result = shared["result"]
        if error is not None:
            raise error
        return result

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
