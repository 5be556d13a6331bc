"""One run per log folder: a second training run (same host or another one sharing the folder)
is refused, naming the holder; the stale lock of a dead process is taken over with a message."""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest

from engine.lock import LOCK_FILE, LogdirLock, LogdirLocked
from tests.cli import QUICK_TRAINING, ROOT, command, environment, finish, main_py, run_main, wait_for_file


def dead_pid():
    """The pid of a process of this host that has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_holder(logdir, **holder):
    os.makedirs(logdir, exist_ok=True)
    record = dict(host=socket.gethostname(), pid=1, process_started=0.0, since="2026-01-01 00:00:00 +0000",
                  command="main.py --train")
    record.update(holder)
    with open(os.path.join(logdir, LOCK_FILE), "w") as f:
        json.dump(record, f)


def test_a_second_lock_on_the_folder_is_refused_naming_the_holder(tmp_path):
    logdir = str(tmp_path / "run")
    with LogdirLock(logdir) as first:
        holder = json.load(open(os.path.join(logdir, LOCK_FILE)))
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(LogdirLocked, match=re.escape("log folder {} is in use by another training run: pid {} on "
                                                         "host {} since {}".format(logdir, os.getpid(),
                                                                                   socket.gethostname(),
                                                                                   holder["since"]))):
            LogdirLock(logdir).acquire()
        assert first.held
    assert not os.path.exists(os.path.join(logdir, LOCK_FILE))          # released on exit
    LogdirLock(logdir).acquire().release()                             # and free again


def test_the_lock_of_a_dead_process_on_this_host_is_taken_over_with_a_message(tmp_path, caplog):
    logdir = str(tmp_path / "run")
    pid = dead_pid()
    write_holder(logdir, pid=pid)
    with LogdirLock(logdir):
        assert json.load(open(os.path.join(logdir, LOCK_FILE)))["pid"] == os.getpid()
    assert "taking over the lock of {}: pid {} on host {}".format(logdir, pid, socket.gethostname()) in caplog.text
    assert "that process no longer exists on this host" in caplog.text


def test_a_reused_pid_does_not_keep_a_stale_lock(tmp_path, caplog):
    """A live process with the holder's pid but another start time is not the holder."""
    logdir = str(tmp_path / "run")
    write_holder(logdir, pid=os.getppid(), process_started=1.0)
    with LogdirLock(logdir):
        pass
    assert "that process no longer exists on this host" in caplog.text


def test_another_hosts_lock_is_refused_while_it_is_refreshed_and_taken_over_after_the_lease(tmp_path, caplog):
    logdir = str(tmp_path / "run")
    write_holder(logdir, host="node-17", pid=4242)
    with pytest.raises(LogdirLocked, match="in use by another training run: pid 4242 on host node-17 since "
                                           "2026-01-01 00:00:00"):
        LogdirLock(logdir).acquire()
    old = time.time() - 700
    os.utime(os.path.join(logdir, LOCK_FILE), (old, old))               # no heartbeat for 700 s > the 600 s lease
    with LogdirLock(logdir):
        pass
    assert "taking over the lock of {}: pid 4242 on host node-17".format(logdir) in caplog.text
    assert "not refreshed for 70" in caplog.text


def test_the_holder_refreshes_the_lock_while_it_runs(tmp_path):
    logdir = str(tmp_path / "run")
    with LogdirLock(logdir, heartbeat=0.05):
        path = os.path.join(logdir, LOCK_FILE)
        old = time.time() - 1000
        os.utime(path, (old, old))
        time.sleep(0.5)
        assert time.time() - os.stat(path).st_mtime < 5


# ---------------------------------------------------------------- two trainings, as a cluster user starts them

TRAIN = QUICK_TRAINING


def other_host_unavailable():
    if shutil.which("unshare") is None:
        return "no unshare command"
    done = subprocess.run(["unshare", "--uts", "sh", "-c", "hostname other-node && hostname"], capture_output=True,
                          text=True)
    return None if done.stdout.strip() == "other-node" else "cannot make a UTS namespace: " + done.stderr.strip()


@pytest.mark.full
def test_a_second_training_into_a_running_ones_folder_is_refused_on_this_host_and_another(tmp_path, data):
    logdir = str(tmp_path / "run")
    first = main_py("--train", "--data", data, "--logdir", logdir, "--epochs", 200, *TRAIN, wait=False)
    try:
        wait_for_file(os.path.join(logdir, "checkpoint"), first)
        holder = json.load(open(os.path.join(logdir, LOCK_FILE)))
        assert holder["pid"] == first.pid
        # a requeued --resume while the old job still runs
        code, out, err = run_main("--train", "--data", data, "--logdir", logdir, "--epochs", 200, "--resume", *TRAIN)
        assert code == 2 and "log folder {} is in use by another training run: pid {} on host {} since {}".format(
            logdir, first.pid, socket.gethostname(), holder["since"]) in err, (out + err)[-3000:]
        # the same from another host sharing the folder (its own host name, in a UTS namespace)
        why = other_host_unavailable()
        if why is None:
            line = " ".join("'{}'".format(a) for a in command(["--train", "--data", data, "--logdir", logdir,
                                                               "--epochs", 200, "--resume"] + TRAIN))
            done = subprocess.run(["unshare", "--uts", "sh", "-c", "hostname other-node && exec " + line], cwd=ROOT,
                                  env=environment(), capture_output=True, text=True, timeout=600)
            assert done.returncode == 2 and "is in use by another training run: pid {} on host {}".format(
                first.pid, socket.gethostname()) in done.stderr, done.stderr[-3000:]
        records = json.load(open(os.path.join(logdir, "stats.json")))
        assert first.poll() is None and [r["epoch_num"] for r in records] == list(range(1, len(records) + 1))
    finally:
        first.kill()
        finish(first)
    # killed with SIGKILL: its lock stays, and the next run on this host takes it over
    assert os.path.exists(os.path.join(logdir, LOCK_FILE))
    epochs = len(json.load(open(os.path.join(logdir, "stats.json"))))
    code, out, err = run_main("--train", "--data", data, "--logdir", logdir, "--epochs", epochs + 1, "--resume", *TRAIN)
    assert code == 0, (out + err)[-3000:]
    assert "taking over the lock of {}: pid {}".format(logdir, first.pid) in out
    assert not os.path.exists(os.path.join(logdir, LOCK_FILE))
    if why is not None:
        pytest.skip("the other-host half did not run: " + why)
