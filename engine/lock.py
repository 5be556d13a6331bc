"""One run per log folder: a second training run is refused on a lock file (two runs in one folder, e.g. a requeued
`--resume` while the old job runs, overwrite each other's checkpoints). `LOGDIR/run.lock` names its holder (host,
pid, start time, command) and is created atomically (written beside, then hard-linked into place, which fails if the
name exists, also on NFS), so it works between hosts too. A thread refreshes it every HEARTBEAT seconds. A lock is
stale, and taken over naming the old holder, when its holder is a process of this host that no longer exists, or
when it was not refreshed for LEASE seconds. A live holder is never taken over: the second run stops naming it."""
import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time

import psutil

LOCK_FILE = "run.lock"
HEARTBEAT = 60.0        # seconds between refreshes of the lock file's modification time
LEASE = 600.0           # a lock not refreshed for this long is stale, whichever host holds it

log = logging.getLogger(__name__)


class LogdirLocked(RuntimeError):
    """Another live run holds the log folder."""


def process_started(pid):
    """The start time of process `pid` on this host (seconds since the epoch), or None if there is none."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None


def describe(holder):
    return "pid {} on host {} since {} ({})".format(
        holder.get("pid"), holder.get("host"), holder.get("since"), holder.get("command", "")[:200])


class LogdirLock:
    """`acquire()` takes LOGDIR/run.lock or raises LogdirLocked naming its holder; `release()` frees it if ours."""

    def __init__(self, logdir, heartbeat=HEARTBEAT, lease=LEASE):
        self.logdir, self.path, self.heartbeat, self.lease = logdir, os.path.join(logdir, LOCK_FILE), heartbeat, lease
        self.me = dict(host=socket.gethostname(), pid=os.getpid(), process_started=process_started(os.getpid()),
                       since=time.strftime("%Y-%m-%d %H:%M:%S %z"), command=" ".join(sys.argv))
        self._stop, self.held = threading.Event(), False

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()

    def acquire(self):
        os.makedirs(self.logdir, exist_ok=True)
        if not self._create():
            with self._guard():                 # one taker at a time among this host's processes
                holder = self._read()
                reason = self._stale(holder) if holder is not None else "gone"
                if reason is None:
                    raise LogdirLocked(
                        "log folder {} is in use by another training run: {}. Two runs in one folder overwrite "
                        "each other's checkpoints; wait for it to end, stop it, or train into another --logdir. "
                        "If it is certainly gone, delete {}".format(self.logdir, describe(holder), self.path))
                if holder is not None:
                    log.warning("taking over the lock of %s: %s (%s)", self.logdir, describe(holder), reason)
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(self.path)
                if not self._create():
                    raise LogdirLocked("log folder {} was locked by another run at the same moment: {}".format(
                        self.logdir, describe(self._read() or {})))
        self.held = True
        threading.Thread(target=self._refresh, name="logdir-lock-heartbeat", daemon=True).start()
        return self

    def release(self):
        """Remove the lock if this process holds it (a no-op otherwise)."""
        self._stop.set()
        if not self.held:
            return
        self.held = False
        holder = self._read()
        if holder is not None and all(holder.get(k) == self.me[k] for k in ("host", "pid", "process_started")):
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
            except OSError as error:        # an unwritable folder: the next run on this host takes it over
                log.warning("cannot remove the lock %s (%s); the next run takes it over", self.path, error.strerror)

    def _create(self):
        """Write the holder record beside the lock, then link it into place; False if the lock exists."""
        tmp = "{}.{}.{}".format(self.path, self.me["host"], self.me["pid"])
        with open(tmp, "w") as f:
            json.dump(self.me, f)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        finally:
            os.remove(tmp)

    def _read(self):
        try:
            with open(self.path) as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}           # unreadable or half-written by a crashed writer: judged by its age only

    def _stale(self, holder):
        """Why `holder`'s lock is stale, or None when its run may be alive."""
        try:
            age = time.time() - os.stat(self.path).st_mtime
        except FileNotFoundError:
            return "gone"
        if holder.get("host") == self.me["host"] and holder.get("pid") is not None:
            started = process_started(holder["pid"])
            if started is None or (holder.get("process_started") is not None and
                                   abs(started - holder["process_started"]) > 1.0):
                return "that process no longer exists on this host"
            return None
        return ("not refreshed for {:.0f} s (the lease is {:.0f} s)".format(age, self.lease)
                if age > self.lease else None)

    @contextlib.contextmanager
    def _guard(self):
        with open(self.path + ".guard", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _refresh(self):
        while not self._stop.wait(self.heartbeat):
            with contextlib.suppress(OSError):
                os.utime(self.path)
