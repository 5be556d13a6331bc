"""Distribution is real: two Gloo ranks on this machine (horovodrun -np 2 -H localhost:2 --gloo)."""
import importlib.util
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from nets.checkpoint import read_weights
from tests.horovod_train_check import CLASSES, SIZE, write_initial_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOROVODRUN = os.path.join(os.path.dirname(sys.executable), "horovodrun")
CHECK = os.path.join(ROOT, "tests", "horovod_train_check.py")
pytestmark = [pytest.mark.horovod, pytest.mark.skipif(
    importlib.util.find_spec("horovod") is None or not os.path.exists(HOROVODRUN),
    reason="horovod is not installed (bash scripts/setup.sh builds it)")]
ARCH_ARGS = ["--arch", "ResNetDenoise", "--blocks", "1,1", "--widths", "4,8", "--stem", "small",
             "--stem-width", "8", "--num-classes", str(CLASSES), "--image-size", str(SIZE)]      # horovod_train_check's


def run(command, two_ranks):
    if two_ranks:
        command = [HOROVODRUN, "-np", "2", "-H", "localhost:2", "--gloo"] + command
    env = dict(os.environ, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def initial_weights(tmp_path_factory):
    """The model's own initialisation (random weights with BN gammas near zero would make a few
    steps chaotic enough to amplify float rounding, hiding what the test is about)."""
    return write_initial_weights(str(tmp_path_factory.mktemp("init") / "init.npz"))


def trainable(weights):
    return {k: v for k, v in weights.items() if "EMA" not in k}


def train_check(out, init, two_ranks, attack_iter=0):
    command = [sys.executable, CHECK, "--out", str(out), "--init", init, "--attack-iter", str(attack_iter)]
    run(command, two_ranks)


@pytest.mark.full
def test_two_ranks_match_each_other_and_one_process(tmp_path, initial_weights):
    train_check(tmp_path / "hvd", initial_weights, two_ranks=True)
    train_check(tmp_path / "one", initial_weights, two_ranks=False)
    rank0, rank1 = (trainable(read_weights(str(tmp_path / "hvd" / "rank{}.npz".format(r)))) for r in (0, 1))
    single = trainable(read_weights(str(tmp_path / "one" / "rank0.npz")))
    init = trainable(read_weights(initial_weights))
    moved = max(np.abs(rank0[k] - init[k]).max() for k in init)
    assert moved > 1e-3, "training did not change the weights"
    for name in init:
        np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=name)
        np.testing.assert_allclose(rank0[name], single[name], rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.full
def test_pgd_training_keeps_ranks_identical(tmp_path, initial_weights):
    train_check(tmp_path / "pgd", initial_weights, two_ranks=True, attack_iter=2)
    rank0, rank1 = (trainable(read_weights(str(tmp_path / "pgd" / "rank{}.npz".format(r)))) for r in (0, 1))
    init = trainable(read_weights(initial_weights))
    assert max(np.abs(rank0[k] - init[k]).max() for k in init) > 1e-3, "training did not change the weights"
    for name in rank0:
        np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=name)


def write_val_set(root, per_class=(3, 2, 4, 1, 3)):
    """13 images: an odd count, so the two shards differ in size."""
    rng = np.random.RandomState(0)
    for label, count in enumerate(per_class):
        folder = os.path.join(root, "val", "n{:08d}".format(label))
        os.makedirs(folder)
        for i in range(count):
            cv2.imwrite(os.path.join(folder, "{}.png".format(i)), rng.randint(0, 256, [20, 24, 3]).astype(np.uint8))


def test_distributed_evaluation_counts_equal_single_process(tmp_path, initial_weights):
    write_val_set(str(tmp_path / "data"))
    results = {}
    for two_ranks in (False, True):
        path = str(tmp_path / "result{}.json".format(int(two_ranks)))
        stdout = run([sys.executable, "main.py", "--eval", "--data", str(tmp_path / "data"), "--load", initial_weights,
                      "--attack-iter", "0", "--batch", "4", "--workers", "0", "--result-file", path] + ARCH_ARGS,
                     two_ranks)
        assert stdout.count("Top1 Error:") == 1              # only rank 0 prints
        with open(path) as f:
            results[two_ranks] = json.load(f)
    assert results[True]["images"] == results[False]["images"] == 13
    for key in ("wrong_top1", "wrong_top5", "successes"):
        assert results[True][key] == results[False][key], key
