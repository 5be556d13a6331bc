"""Batches over ZeroMQ: the data server's wire format, its sender and its client.

The client is Tensorpack's `RemoteDataZMQ`, subclassed; the wire format is not Tensorpack's. Tensorpack's serializer is
pickle (or msgpack-numpy, which unpickles object arrays), so any process that can reach the socket could make the
trainer run code, and its `send_dataflow_zmq` cannot stop after N batches. Here a batch (a list of numpy arrays) travels
as one multipart message: a JSON header
{"format": "feature-denoising-batch", "version": 1, "arrays": [{"dtype", "shape"}...]} and one raw frame per array
(native byte order, C order); a malformed or foreign message is a DataError, never code run. The server PUSHes (and
binds), each training process PULLs (and connects), so the processes of one machine share one server, batches dealt
out round-robin, as with the original's `serve-data.py` (docs/FACTS.md Sec. 7).
"""
import contextlib
import itertools
import json
import logging
import time

import numpy as np
import zmq
from tensorpack.dataflow import RemoteDataZMQ

from .errors import DataError

logger = logging.getLogger(__name__)

FORMAT = "feature-denoising-batch"
VERSION = 1
ALLOWED_DTYPES = ("uint8", "int8", "int32", "int64", "float16", "float32", "float64", "bool")


def default_address(batch_size, image_size=224):
    """The endpoint server and client agree on by default: a Linux abstract IPC socket, one per batch size and image
    size (as the original's ipc://@imagenet-train-b<B>)."""
    return "ipc://@feature-denoising-train-b{}-s{}".format(batch_size, image_size)


def encode_batch(arrays):
    """[header bytes, array, array, ...], ready for send_multipart."""
    arrays = [np.ascontiguousarray(a) for a in arrays]
    for a in arrays:
        if a.dtype.name not in ALLOWED_DTYPES:
            raise TypeError("cannot send dtype {} (allowed: {})".format(a.dtype, ", ".join(ALLOWED_DTYPES)))
    header = {"format": FORMAT, "version": VERSION,
              "arrays": [{"dtype": a.dtype.name, "shape": list(a.shape)} for a in arrays]}
    return [json.dumps(header).encode("utf-8")] + arrays


def decode_batch(frames, source="message"):
    """The arrays of one message (writable copies); DataError naming `source` if malformed."""
    try:
        header = json.loads(bytes(frames[0]).decode("utf-8"))
        specs = header["arrays"]
        ok = header.get("format") == FORMAT and header.get("version") == VERSION and len(specs) == len(frames) - 1
    except (ValueError, KeyError, TypeError, AttributeError, IndexError):
        ok = False
    if not ok:
        raise DataError("malformed batch message from {}: not a {} v{} message; is a `python -m tools.serve_data` "
                        "of this version sending there?".format(source, FORMAT, VERSION))
    return [decode_array(spec, frame, source) for spec, frame in zip(specs, frames[1:])]


def decode_array(spec, frame, source):
    """One array from its header entry and frame (a writable copy)."""
    data = memoryview(frame.buffer if isinstance(frame, zmq.Frame) else frame)
    try:
        dtype, shape = spec["dtype"], tuple(int(n) for n in spec["shape"])
        if dtype not in ALLOWED_DTYPES or min(shape, default=0) < 0 or \
                np.dtype(dtype).itemsize * int(np.prod(shape)) != data.nbytes:
            raise ValueError(spec)
        return np.frombuffer(data, dtype=dtype).reshape(shape).copy()
    except (ValueError, KeyError, TypeError):
        raise DataError("malformed batch message from {}: array {!r} with {} bytes of data".format(
            source, spec, data.nbytes)) from None


@contextlib.contextmanager
def open_socket(kind, addr, hwm, bind, linger_seconds=0):
    """A ZMQ socket of `kind` bound (bind=True) or connected to `addr`, a DataError if it cannot be; on exit its
    unsent messages get up to `linger_seconds` to leave, then it and its context close."""
    context = zmq.Context()
    socket = context.socket(kind)
    try:
        socket.set_hwm(hwm)
        try:
            (socket.bind if bind else socket.connect)(addr)
        except zmq.ZMQError as error:
            raise DataError("cannot {} ZMQ address {}: {}".format("bind" if bind else "connect to", addr, error))
        yield socket
    finally:
        socket.setsockopt(zmq.LINGER, int(linger_seconds * 1000))
        socket.close()
        context.term()


def send_batches(dataflow, addr, hwm=50, bind=True, max_batches=None, progress=True, linger_seconds=10):
    """Push the batches of `dataflow` to `addr`, passing over it again and again (for ever, or `max_batches` batches,
    then wait up to `linger_seconds` for them to leave). Returns the number of batches sent."""
    import tqdm
    sent = 0
    with open_socket(zmq.PUSH, addr, hwm, bind, linger_seconds) as socket:
        dataflow.reset_state()
        logger.info("serving batches on %s", addr)
        passes = itertools.chain.from_iterable(itertools.repeat(dataflow))
        with tqdm.tqdm(total=max_batches, unit="batch", desc="sent", disable=not progress) as bar:
            for batch in itertools.islice(passes, max_batches):
                socket.send_multipart(encode_batch(batch), copy=False)
                sent += 1
                bar.update(1)
    return sent


class ZMQBatchReceiver(RemoteDataZMQ):
    """The client side: Tensorpack's RemoteDataZMQ (a PULL socket that by default connects here, so several training
    processes share one server) with what it lacks: the decoding above instead of Tensorpack's serializer, a `length`
    (what len() reports, e.g. the batches of one epoch) and a `timeout` (seconds; a silent server is then a DataError
    naming the address; without it, a warning every `warn_every` seconds). Infinite."""

    def __init__(self, addr, hwm=50, bind=False, timeout=None, length=None, warn_every=60):
        super().__init__(addr, hwm=hwm, bind=bind)
        self.addr, self.timeout, self.length, self.warn_every, self.received = addr, timeout, length, warn_every, 0

    def __len__(self):
        if self.length is None:
            raise NotImplementedError("ZMQBatchReceiver({}) is infinite; pass length= to give it a len()".format(
                self.addr))
        return self.length

    def wait_for_message(self, socket):
        started = time.time()
        while True:
            waited = time.time() - started
            if self.timeout is not None and waited >= self.timeout:
                raise DataError("no batch from {} within {} s; is `python -m tools.serve_data` running with the "
                                "same address?".format(self.addr, self.timeout))
            limit = self.warn_every if self.timeout is None else min(self.warn_every, self.timeout - waited)
            if socket.poll(int(limit * 1000)):
                return
            if self.timeout is None:
                logger.warning("still waiting for batches from %s (%.0f s)", self.addr, time.time() - started)

    def __iter__(self):
        with self._guard, open_socket(zmq.PULL, self.addr, self._hwm, self._bind) as socket:
            while True:
                self.wait_for_message(socket)
                batch = decode_batch(socket.recv_multipart(copy=False), self.addr)
                self.received += 1
                yield batch


def receive_dataflow(addr=None, batch_size=32, image_size=224, hwm=50, timeout=None, length=None):
    """A DataFlow of the batches sent by `python -m tools.serve_data` to `addr` (by default the address that server
    uses for this batch and image size). Wrap it in QueueInput."""
    return ZMQBatchReceiver(addr or default_address(batch_size, image_size), hwm=hwm, timeout=timeout, length=length)
