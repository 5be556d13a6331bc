"""What a distributed run guarantees (README, "Distribution"): the same number of steps on
every rank, the same evaluation numbers at any batch size and rank count, a failure or a lost
rank ends the whole job with a non-zero exit, and --resume continues it; also across two
network namespaces on this machine, one rank in each."""
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from tests import multihost
from tests.cli import ARCH, HOROVODRUN, ROOT, main_py, wait_for_file, write_split

pytestmark = [pytest.mark.horovod, pytest.mark.full, pytest.mark.skipif(
    importlib.util.find_spec("horovod") is None or not os.path.exists(HOROVODRUN),
    reason="horovod is not installed (bash scripts/setup.sh builds it)")]
# The collapse guard runs on the ranks (its counts summed, its best from rank 0) but never stops these tiny runs.
QUICK = ["--workers", 0, "--attack-iter", 1, "--eval-schedule", "0:1", "--eval-final", "0",
         "--collapse-margin", 1.0] + ARCH


@pytest.fixture(scope="module")
def uneven_data(tmp_path_factory):
    """47 training images: 3 ranks get shards of 15, 16 and 16, that is 1, 2 and 2 batches of 8;
    40 validation images."""
    root = str(tmp_path_factory.mktemp("uneven_data"))
    write_split(root, "train", 12, seed=0)
    os.remove(os.path.join(root, "train", "class3", "11.jpg"))
    write_split(root, "val", 10, seed=1)
    return root


def test_ranks_with_uneven_shards_take_the_same_steps(tmp_path, uneven_data):
    """floor(47 / (3 x 8)) = 1 step per epoch on every rank (each rank's own shard would give 1, 2, 2)."""
    code, out = main_py("--train", "--data", uneven_data, "--logdir", tmp_path / "run", "--epochs", 2, "--batch", 8,
                        *QUICK, ranks=3, timeout=600)
    assert code == 0, out[-3000:]
    assert out.count("1 steps per epoch") >= 1 and os.path.exists(os.path.join(tmp_path, "run", "model-2.index"))


def eval_counts(data, weights, tmp_path, name, batch, ranks):
    result = str(tmp_path / (name + ".json"))
    code, out = main_py("--eval", "--data", data, "--load", weights, "--attack-iter", 2, "--attack-seed", 0,
                        "--attack-epsilon", 8, "--batch", batch, "--workers", 0, "--result-file", result, *ARCH,
                        ranks=ranks)
    assert code == 0, out[-3000:]
    with open(result) as f:
        record = json.load(f)
    return {key: record[key] for key in ("images", "wrong_top1", "wrong_top5", "successes")}


def test_evaluation_gives_the_same_counts_at_any_batch_size_and_rank_count(tmp_path, uneven_data, random_weights):
    """Targeted PGD with random targets and starts: each image's draws depend on the seed and
    its index only, so one batch of 40, batches of 7 and 3 ranks count the same."""
    whole = eval_counts(uneven_data, random_weights, tmp_path, "whole", 40, 1)
    assert whole["images"] == 40 and 0 < whole["successes"] < 40
    assert eval_counts(uneven_data, random_weights, tmp_path, "sevens", 7, 1) == whole
    assert eval_counts(uneven_data, random_weights, tmp_path, "ranks", 7, 3) == whole


def test_a_failure_on_every_rank_ends_the_job_non_zero(tmp_path, uneven_data):
    import shutil
    root = str(tmp_path / "uneven_data")
    shutil.copytree(uneven_data, root)
    for folder, _, names in os.walk(os.path.join(root, "train")):
        for name in names:
            open(os.path.join(folder, name), "wb").write(b"not an image")
    code, out = main_py("--train", "--data", root, "--logdir", tmp_path / "run", "--epochs", 1, "--batch", 8,
                        *QUICK, ranks=2, timeout=600)
    assert code != 0 and "could not be read" in out


def python_ranks(horovodrun):
    """The main.py processes under a horovodrun process (not their image-decoding children)."""
    def is_main(process):
        with contextlib.suppress(psutil.Error):
            return any(part.endswith("main.py") for part in process.cmdline())
        return False
    return [p for p in psutil.Process(horovodrun.pid).children(recursive=True)
            if is_main(p) and not is_main(p.parent())]


def test_a_lost_rank_ends_the_job_and_resume_continues(tmp_path, uneven_data):
    logdir = str(tmp_path / "run")
    args = ["--train", "--data", uneven_data, "--logdir", logdir, "--epochs", 200, "--batch", 8, *QUICK]
    job = main_py(*args, ranks=2, wait=False)
    deadline = time.time() + 300
    while not os.path.exists(os.path.join(logdir, "checkpoint")):
        assert job.poll() is None and time.time() < deadline, "the job ended before its first checkpoint"
        time.sleep(0.2)
    ranks = python_ranks(job)
    assert len(ranks) == 2
    ranks[-1].send_signal(signal.SIGKILL)
    killed = time.time()
    try:
        code = job.wait(timeout=60)
    finally:
        job.kill()
    assert code != 0 and time.time() - killed < 60
    saved = json.load(open(os.path.join(logdir, "stats.json")))[-1]["epoch_num"]
    assert saved < 200
    code, out = main_py(*(args[:6] + [saved + 2] + args[7:] + ["--resume"]), ranks=2, timeout=600)
    assert code == 0, out[-3000:]
    epochs = [r["epoch_num"] for r in json.load(open(os.path.join(logdir, "stats.json")))]
    assert epochs == list(range(1, saved + 3))


# ---------------------------------------------------------------- two hosts: network namespaces

NETNS = multihost.netns_unavailable_reason()


@pytest.mark.skipif(NETNS is not None, reason="network namespaces: {}".format(NETNS))
def test_two_hosts_in_network_namespaces_train_and_evaluate_like_one_process(tmp_path, uneven_data, random_weights):
    """One rank in each of two namespaces joined by a veth pair, Horovod over Gloo/TCP on the
    pair's addresses: two epochs of training give the weights of one process (BN statistics
    per rank, as --bn-group-size gives in one process), and evaluation counts equal one process'."""
    from nets.checkpoint import read_weights
    from tests.horovod_train_check import write_initial_weights
    init = write_initial_weights(str(tmp_path / "init.npz"))
    check = [sys.executable, os.path.join(ROOT, "tests", "horovod_train_check.py"), "--init", init, "--epochs", 2]
    with multihost.two_hosts() as hosts:
        results = multihost.run_ranks(hosts, [str(a) for a in check + ["--out", tmp_path / "hosts"]], cwd=ROOT)
        assert [code for code, _ in results] == [0, 0], results[0][1][-2000:] + results[1][1][-2000:]
        result = str(tmp_path / "hosts.json")
        evaluation = [sys.executable, os.path.join(ROOT, "main.py"), "--eval", "--data", uneven_data, "--load",
                      random_weights, "--attack-iter", 1, "--attack-seed", 0, "--batch", 7, "--workers", 0,
                      "--result-file",
                      result] + ARCH
        results = multihost.run_ranks(hosts, [str(a) for a in evaluation], cwd=ROOT)
        assert [code for code, _ in results] == [0, 0], results[0][1][-2000:]
    subprocess.run([str(a) for a in check + ["--out", tmp_path / "one", "--ranks", 2]], cwd=ROOT, check=True,
                   env=dict(os.environ, PYTHONPATH=ROOT), timeout=600, capture_output=True)
    rank0, rank1, one = (read_weights(str(tmp_path / d / "rank{}.npz".format(r)))
                         for d, r in (("hosts", 0), ("hosts", 1), ("one", 0)))
    moved = max(np.abs(one[k] - read_weights(init)[k]).max() for k in one if "EMA" not in k)
    assert moved > 1e-3
    for name in one:
        if "EMA" not in name:
            np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=name)
            np.testing.assert_allclose(rank0[name], one[name], rtol=1e-4, atol=1e-5, err_msg=name)
    code, out = main_py("--eval", "--data", uneven_data, "--load", random_weights, "--attack-iter", 1,
                        "--attack-seed", 0, "--batch", 7, "--workers", 0,
                      "--result-file", tmp_path / "one.json", *ARCH)
    assert code == 0, out[-2000:]
    keys = ("images", "wrong_top1", "wrong_top5", "successes")
    hosts_record, one_record = (json.load(open(tmp_path / n)) for n in ("hosts.json", "one.json"))
    assert {k: hosts_record[k] for k in keys} == {k: one_record[k] for k in keys}


def test_a_locked_log_folder_stops_every_rank_with_the_holder_named(tmp_path, uneven_data):
    from engine.lock import LogdirLock
    logdir = str(tmp_path / "run")
    with LogdirLock(logdir):
        code, out = main_py("--train", "--data", uneven_data, "--logdir", logdir, "--epochs", 1, "--batch", 8, *QUICK,
                            ranks=2, timeout=600)
    assert code != 0
    holder = "is in use by another training run: pid {}".format(os.getpid())
    assert "[0]<stderr>:error: log folder {} {}".format(logdir, holder) in out, out[-3000:]
    assert "[1]<stderr>:error: rank 0 failed at preparing the log folder: log folder {} {}".format(
        logdir, holder) in out, out[-3000:]


def test_a_frozen_image_decoder_of_one_rank_does_not_keep_horovodrun_alive(tmp_path, uneven_data):
    """One decoding process of rank 1 is stopped (SIGSTOP) once the training queues hold the
    run's remaining batches: horovodrun still exits 0 when training has finished, and no
    process of the job is left."""
    logdir = str(tmp_path / "run")
    job = main_py("--train", "--data", uneven_data, "--logdir", logdir, "--epochs", 3, "--batch", 8, "--workers", 2,
                  *QUICK[2:], ranks=2, wait=False)
    wait_for_file(os.path.join(logdir, "checkpoint"), job)
    ranks = python_ranks(job)
    decoders = psutil.Process(ranks[-1].pid).children()
    assert len(ranks) == 2 and len(decoders) == 2
    decoders[0].suspend()
    everything = {p.pid: " ".join(p.cmdline()[:4]) for p in [psutil.Process(job.pid)] +
                  psutil.Process(job.pid).children(recursive=True)}
    try:
        out, _ = job.communicate(timeout=300)          # before: no end while the decoder is frozen
        deadline = time.time() + 10                    # processes being reaped
        while time.time() < deadline and any(alive(pid) for pid in everything):
            time.sleep(0.2)
        left = {pid: line for pid, line in everything.items() if alive(pid)}
    finally:
        job.kill()
        for pid in everything:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
    assert job.returncode == 0 and "Training has finished!" in out, out[-3000:]
    assert left == {}


def alive(pid):
    with contextlib.suppress(psutil.NoSuchProcess):
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    return False
