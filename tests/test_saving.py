"""The first save that fails ends the run at once, on every rank, with the cause: the last good
checkpoint and its stats record stay as they were, no partial file is left, and --resume
continues once the folder is writable again. Tested on a full file system (a small tmpfs) and
an unwritable folder (chattr +i), as a cluster user meets them."""
import contextlib
import importlib.util
import json
import os
import re
import signal
import shutil
import subprocess

import pytest
import tensorflow as tf

from engine.saving import SaveFailed, SafeEventWriter, SaveGuard, SaveStatus
from tests.cli import HOROVODRUN, QUICK_TRAINING, finish, main_py, run_main, wait_for_file

tf1 = tf.compat.v1
TRAIN = QUICK_TRAINING
PARTIAL = re.compile(r"\.tmp|tempstate|_temp")


# ---------------------------------------------------------------- the writers, one at a time

def test_a_failed_write_is_recorded_once_and_later_writes_are_skipped(tmp_path):
    status = SaveStatus(str(tmp_path), last_checkpoint="run/model-5")
    cleaned, written = [], []

    def fail():
        raise OSError(28, "No space left on device")
    assert status.attempt("the stats record", "run/stats.json", lambda: written.append(1))
    assert not status.attempt("the stats record", "run/stats.json", fail, lambda: cleaned.append(1))
    assert not status.attempt("the checkpoint", "run/model-10", lambda: written.append(2))
    assert written == [1] and cleaned == [1]
    assert status.failure == "could not write the stats record run/stats.json: No space left on device (errno 28)"
    message = status.message("after epoch 2")
    assert "Training stopped after epoch 2" in message and "the last good checkpoint is run/model-5" in message
    guard = SaveGuard(status)
    with pytest.raises(SaveFailed, match="could not write the stats record"):
        guard.check("after epoch 2")
    SaveGuard(SaveStatus(str(tmp_path))).check("after epoch 1")           # nothing failed: no error


def test_the_event_file_is_cut_back_to_its_last_good_flush(tmp_path):
    status = SaveStatus(str(tmp_path))
    writer = SafeEventWriter(status, logdir=str(tmp_path))
    with tf.Graph().as_default():
        writer._setup_graph()
        writer._writer.add_summary(tf1.Summary(value=[tf1.Summary.Value(tag="loss", simple_value=1.0)]), 1)
        writer._trigger()
        good = os.path.getsize(writer.event_file())
        assert good > 0 and status.failure is None and writer.good_size == good

        def half_written_flush():
            with open(writer.event_file(), "ab") as f:
                f.write(b"\0" * 100)                    # a record the disk could only half take
            raise OSError(28, "No space left on device")
        writer._writer.flush = half_written_flush
        writer._trigger()
        assert "could not write the TensorBoard events in" in status.failure
        assert os.path.getsize(writer.event_file()) == good
        writer._after_train()                         # closing after a failure raises nothing


def test_a_failed_flush_of_the_event_writers_thread_is_a_failed_save(tmp_path):
    """TF's event writer raises a RuntimeError ("PATH; No space left on device") for what its thread failed to write:
    recorded like any failed write, not raised as it is (a run once ended with that raw message)."""
    status = SaveStatus(str(tmp_path))
    writer = SafeEventWriter(status, logdir=str(tmp_path))
    with tf.Graph().as_default():
        writer._setup_graph()

        def failed_thread():
            raise RuntimeError("{}/events.out.tfevents.1; No space left on device\n\tFailed to flush 9 events to "
                               "{}/events.out.tfevents.1".format(tmp_path, tmp_path))
        writer._writer.flush = failed_thread
        writer._trigger()
        assert status.failure == "could not write the TensorBoard events in {}: No space left on device " \
                                 "(RuntimeError)".format(tmp_path)
        writer._after_train()


def test_a_robustness_curve_that_cannot_be_written_is_a_failed_save(tmp_path):
    from attacker import build_attack
    from attacker.metrics import Counts
    from config import PUBLISHED
    from engine.callbacks import WriteRobustnessCurve
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    status = SaveStatus(str(tmp_path))
    recipe = PUBLISHED.__class__(epochs=1, eval_schedule=(("clean", 1, 0),), eval_final=())
    curve = WriteRobustnessCurve(str(blocked / "robustness_curve.json"), recipe, {"clean": build_attack("clean")},
                                 {"clean": {1: (Counts(images=4), 1.0)}}, {}, status)
    curve.trainer = type("Trainer", (), {"epoch_num": 1})()
    curve._trigger_epoch()
    expected = "could not write the robustness curve {}".format(blocked / "robustness_curve.json")
    assert status.failure.startswith(expected)


# ---------------------------------------------------------------- a real run on a full or locked folder

def mount_tmpfs(path, size):
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size={}".format(size), "tmpfs", str(path)],
                          capture_output=True, text=True)
    return done.returncode == 0, done.stderr.strip()


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MB file system of its own (tmpfs; needs root, as the CI runs)."""
    disk = tmp_path / "disk"
    mounted, why = mount_tmpfs(disk, "8m")
    if not mounted:
        pytest.skip("cannot mount a tmpfs here ({}); the test needs root".format(why))
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(disk, leave=0):
    """Fill `disk` up to `leave` bytes."""
    free = shutil.disk_usage(disk).free - leave
    with open(disk / "fill", "wb") as f:
        while free > 0:
            chunk = min(free, 1 << 20)
            try:
                f.write(b"\0" * chunk)
                f.flush()
            except OSError:
                break
            free -= chunk


@contextlib.contextmanager
def paused(process):
    """Stop `process` (SIGSTOP) while the block changes its world, then let it go on."""
    process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        process.send_signal(signal.SIGCONT)


def epochs_recorded(logdir):
    return [r["epoch_num"] for r in json.load(open(os.path.join(logdir, "stats.json")))]


def assert_left_as_after_epoch_1(logdir, steps_per_epoch=5):
    names = os.listdir(logdir)
    first, second = "model-{}".format(steps_per_epoch), "model-{}".format(2 * steps_per_epoch)
    assert first + ".index" in names and first + ".data-00000-of-00001" in names
    assert not [n for n in names if n.startswith(second) or PARTIAL.search(n)], names
    assert epochs_recorded(logdir)[0] == 1


def break_after_first_checkpoint(data, logdir, breaking, ranks=1):
    """Train 3 epochs into `logdir`, run `breaking()` while the run is paused right after epoch
    1's checkpoint, and return (exit code, output)."""
    process = main_py("--train", "--data", data, "--logdir", logdir, "--epochs", 3, *TRAIN, ranks=ranks, wait=False)
    wait_for_file(os.path.join(logdir, "checkpoint"), process)
    stopped = [process] if ranks == 1 else rank_processes(process)
    for p in stopped:
        p.send_signal(signal.SIGSTOP)
    try:
        breaking()
    finally:
        for p in stopped:
            p.send_signal(signal.SIGCONT)
    return finish(process)


def rank_processes(horovodrun):
    import psutil
    return [p for p in psutil.Process(horovodrun.pid).children(recursive=True)
            if any(part.endswith("main.py") for part in p.cmdline())]


def resume_to_the_end(data, logdir):
    code, out, err = run_main("--train", "--data", data, "--logdir", logdir, "--epochs", 3, "--resume", *TRAIN)
    assert code == 0, (out + err)[-3000:]
    assert "resuming from {} at epoch 2".format(os.path.join(logdir, "model-5")) in out
    assert epochs_recorded(logdir) == [1, 2, 3] and os.path.exists(os.path.join(logdir, "model-15.index"))


@pytest.mark.full
def test_a_full_disk_stops_the_run_at_the_stats_record_and_resume_continues(data, small_disk):
    logdir = str(small_disk / "run")
    code, out = break_after_first_checkpoint(data, logdir, lambda: fill(small_disk))
    assert code != 0 and "Training has finished" not in out
    assert re.search(r"error: could not write the stats record {}: No space left on device \(errno 28\)\. Training "
                     r"stopped after epoch 2 .* the last good checkpoint is {}".format(
                         re.escape(os.path.join(logdir, "stats.json")), re.escape(os.path.join(logdir, "model-5"))),
                     out), out[-3000:]
    assert_left_as_after_epoch_1(logdir)
    assert epochs_recorded(logdir) == [1]
    os.remove(small_disk / "fill")
    resume_to_the_end(data, logdir)


@pytest.mark.full
def test_a_checkpoint_that_does_not_fit_is_removed_whole_and_resume_continues(data, small_disk):
    logdir = str(small_disk / "run")
    code, out = break_after_first_checkpoint(data, logdir, lambda: fill(small_disk, leave=40 << 10))
    assert code != 0
    assert "error: could not write the checkpoint {}: No space left on device".format(
        os.path.join(logdir, "model-10")) in out, out[-3000:]
    assert_left_as_after_epoch_1(logdir)
    assert epochs_recorded(logdir) == [1, 2]          # epoch 2's record, not its checkpoint: trained again
    os.remove(small_disk / "fill")
    resume_to_the_end(data, logdir)


@pytest.mark.full
def test_an_unwritable_log_folder_stops_the_run_and_resume_continues(tmp_path, data):
    logdir = str(tmp_path / "run")
    if subprocess.run(["chattr", "+i", str(tmp_path)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i needs root and a file system that supports it")
    subprocess.run(["chattr", "-i", str(tmp_path)], check=True)
    try:
        code, out = break_after_first_checkpoint(
            data, logdir, lambda: subprocess.run(["chattr", "+i", logdir], check=True))
    finally:
        subprocess.run(["chattr", "-i", logdir], check=True)
    assert code != 0
    assert "error: could not write the stats record {}: Operation not permitted".format(
        os.path.join(logdir, "stats.json")) in out, out[-3000:]
    assert_left_as_after_epoch_1(logdir)
    resume_to_the_end(data, logdir)


@pytest.mark.full
@pytest.mark.horovod
@pytest.mark.skipif(importlib.util.find_spec("horovod") is None or not os.path.exists(HOROVODRUN),
                    reason="horovod is not installed (bash scripts/setup.sh builds it)")
def test_a_failed_save_ends_every_rank_with_the_cause(data, small_disk):
    logdir = str(small_disk / "run")
    code, out = break_after_first_checkpoint(data, logdir, lambda: fill(small_disk), ranks=2)
    assert code != 0
    assert "[0]<stderr>:error: could not write the stats record" in out, out[-3000:]
    assert "[1]<stderr>:error: rank 0 could not save: could not write the stats record" in out, out[-3000:]
    assert_left_as_after_epoch_1(logdir, steps_per_epoch=2)           # 40 images, 2 ranks x 8


def test_a_log_folder_that_cannot_be_made_is_a_clear_error(tmp_path, data):
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    code, _, err = run_main("--train", "--data", data, "--logdir", blocked / "run", "--epochs", 1, *TRAIN)
    assert code == 2 and "Traceback" not in err
    assert "error: cannot create the log folder {}: Not a directory".format(blocked / "run") in err
