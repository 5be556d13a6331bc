"""No silent failure, no wrong labels, nothing lost, no hang: a failed run never exits 0,
labels match the model, bad checkpoints are named, a resume keeps the history whole,
validation images are checked at the start, evaluation during training is exact, and a stuck
process ends (one process; the distributed cases are in tests/test_distributed.py)."""
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zmq

import main
from tests.cli import (ARCH, QUICK_TRAINING, ROOT, finish, main_py, main_py_stderr, run_main, wait_for_file,
                       write_split)
from tests.data_tree import free_tcp_address

QUICK = QUICK_TRAINING


def copy_tree(source, target):
    shutil.copytree(source, target)
    return str(target)


def train(data, logdir, epochs=1, *extra):
    """(exit code, output, stderr) of a short training run, in this process."""
    return run_main("--train", "--data", data, "--logdir", logdir, "--epochs", epochs, *QUICK, *extra)


def stats(logdir):
    with open(os.path.join(logdir, "stats.json")) as f:
        return json.load(f)


# ---------------------------------------------------------------- 1. a failed run never exits 0

def test_unreadable_training_images_fail_the_run(tmp_path, data):
    root = copy_tree(data, tmp_path / "data")
    for folder, _, names in os.walk(os.path.join(root, "train")):
        for name in names:
            open(os.path.join(folder, name), "wb").write(b"not an image")
    code, _, err = train(root, str(tmp_path / "run"))
    assert code != 0
    assert "training stopped at step 0 of 5" in err and "could not be read" in err


def test_unreadable_training_images_are_skipped_and_counted_up_to_the_limit(tmp_path, data):
    """README: skipped with a warning naming each, counted in stats.json, up to
    --max-unreadable-fraction of a rank's images; beyond it (the default allows none of 40) the
    run fails at the first one."""
    root = copy_tree(data, tmp_path / "data")
    empty = os.path.join(root, "train", "class1", "0.jpg")
    open(empty, "wb").close()                                    # a 0-byte file, as a failed copy leaves
    code, _, err = train(root, str(tmp_path / "strict"))
    assert code != 0 and "1 of the 40 training images of rank 0 in {} could not be read, more than the 0 that " \
                         "--max-unreadable-fraction allows: {}".format(os.path.join(root, "train"), empty) in err
    code, out, err = train(root, str(tmp_path / "lenient"), 2, "--max-unreadable-fraction", 0.05)
    assert code == 0, err[-3000:]
    assert (out + err).count("skipping unreadable training image {}".format(empty)) == 1
    assert [r["unreadable_train_images"] for r in stats(str(tmp_path / "lenient"))] == [1, 1]


def push_forever(address, frames, stop):
    context = zmq.Context()
    socket = context.socket(zmq.PUSH)
    socket.bind(address)
    while not stop.is_set():
        try:
            socket.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again:           # no receiver, or its queue is full
            time.sleep(0.01)
    socket.close(linger=0)
    context.term()


@pytest.mark.parametrize("frames,message", [
    ([b"garbage"], "malformed batch message from"),
    (None, "the model takes uint8 images of [16, 16, 3]"),          # 32 px batches for a 16 px model
    ("labels", "has label 9 but the model has 4 classes"),
])
def test_bad_batches_from_a_data_server_fail_the_run(tmp_path, data, frames, message):
    from data.transport import encode_batch
    if frames is None:
        frames = encode_batch([np.zeros([8, 32, 32, 3], np.uint8), np.zeros([8], np.int32)])
    elif frames == "labels":
        frames = encode_batch([np.zeros([8, 16, 16, 3], np.uint8), np.full([8], 9, np.int32)])
    frames = [f if isinstance(f, bytes) else f.tobytes() for f in frames]
    address, stop = free_tcp_address(), threading.Event()
    server = threading.Thread(target=push_forever, args=(address, frames, stop))
    server.start()
    try:
        code, _, err = train(data, str(tmp_path / "run"), 1, "--data-server", address)
    finally:
        stop.set()
        server.join()
    assert code != 0 and message in err, err[-3000:]


# ---------------------------------------------------------------- 3. labels match the model

def test_an_empty_class_folder_is_refused_by_evaluation_too(tmp_path, data, random_weights):
    root = copy_tree(data, tmp_path / "data")
    os.makedirs(os.path.join(root, "train", "aaa_empty"))
    code, _, err = run_main("--eval", "--data", root, "--load", random_weights, "--workers", 0, "--attack-iter", 0,
                            *ARCH)
    assert code == 2 and "empty class folder: aaa_empty in {}".format(os.path.join(root, "train")) in err


@pytest.mark.parametrize("mode", ["--train", "--eval"])
def test_more_class_folders_than_classes_is_refused(tmp_path, mode, random_weights):
    root = str(tmp_path / "data")
    write_split(root, "train", 2, seed=0, classes=5)
    write_split(root, "val", 1, seed=1, classes=5)
    extra = ["--logdir", str(tmp_path / "run")] if mode == "--train" else ["--load", random_weights]
    code, _, err = run_main(mode, "--data", root, *extra, *QUICK)
    assert code == 2 and "has 5 class folders but the model has 4 classes (--num-classes 4)" in err


def test_one_class_is_not_a_classifier(capsys):
    assert main.main(["--train", "--data", "/tmp", "--num-classes", "1"]) == 2
    assert "at least 2 classes, got --num-classes 1" in capsys.readouterr().err


# ---------------------------------------------------------------- 4. bad checkpoints

@pytest.mark.parametrize("content,message", [
    ("truncated", "cannot read weights file {path}: it is truncated or not a .npz of arrays (BadZipFile"),
    ("text", "cannot read weights file {path}: it is truncated or not a .npz of arrays"),
])
def test_a_bad_npz_names_the_file(tmp_path, data, content, message, capsys, random_weights):
    path = shutil.copy(random_weights, str(tmp_path / "w.npz"))
    if content == "truncated":
        blob = open(path, "rb").read()
        open(path, "wb").write(blob[:len(blob) // 2])
    else:
        open(path, "w").write("hello")
    assert main.main(["--eval", "--data", data, "--load", path, "--workers", "0"] + [str(a) for a in ARCH]) == 2
    assert message.format(path=path) in capsys.readouterr().err


def test_a_text_file_as_checkpoint_names_the_file(tmp_path, data, capsys):
    path = str(tmp_path / "model-5")
    open(path + ".index", "w").write("not a checkpoint index")
    open(path + ".data-00000-of-00001", "w").write("nor data")
    assert main.main(["--eval", "--data", data, "--load", path, "--workers", "0"] + [str(a) for a in ARCH]) == 2
    assert "cannot read checkpoint {}: it is truncated or corrupt".format(path) in capsys.readouterr().err


def test_resume_skips_a_truncated_checkpoint_and_keeps_the_history(tmp_path, data, finished_run):
    logdir = copy_tree(finished_run, tmp_path / "run")                  # 2 epochs: model-5, model-10
    latest = os.path.join(logdir, "model-10.data-00000-of-00001")
    blob = open(latest, "rb").read()
    open(latest, "wb").write(blob[:len(blob) // 3])
    code, out, err = train(data, logdir, 3, "--resume")
    assert code == 0, err[-3000:]
    assert "skipping checkpoint {}".format(os.path.join(logdir, "model-10")) in out + err
    assert "resuming from {} at epoch 2".format(os.path.join(logdir, "model-5")) in out + err
    assert [r["epoch_num"] for r in stats(logdir)] == [1, 2, 3]          # epoch 2 trained again, recorded once
    assert not [n for n in os.listdir(logdir) if n.startswith("stats.json.")]      # nothing moved aside


# ---------------------------------------------------------------- 5. resuming keeps the history whole

def test_resume_drops_records_of_epochs_it_trains_again_and_refuses_another_batch(tmp_path, data, finished_run):
    logdir = copy_tree(finished_run, tmp_path / "run")                  # 2 epochs
    records = stats(logdir)
    # a kill after epoch 3's record, before its checkpoint: the record exists, the checkpoint does not
    with open(os.path.join(logdir, "stats.json"), "w") as f:
        json.dump(records + [dict(records[-1], epoch_num=3, global_step=15)], f)
    code, _, err = train(data, logdir, 3, "--resume")
    assert code == 0, err[-3000:]
    assert [r["epoch_num"] for r in stats(logdir)] == [1, 2, 3]
    assert stats(logdir)[2]["global_step"] == 15 and "val-clean/top1_error" in stats(logdir)[2]
    code, _, err = run_main("--train", "--data", data, "--logdir", logdir, "--epochs", 4, "--resume", *QUICK[2:],
                            "--batch", 4)
    assert code == 2 and "was trained with 1 ranks x 8 images (total batch 8), 5 steps per epoch" in err


# ---------------------------------------------------------------- 7. validation images are checked at the start

def test_a_corrupt_validation_image_fails_training_before_the_first_step(tmp_path, data):
    root = copy_tree(data, tmp_path / "data")
    bad = os.path.join(root, "val", "class2", "1.jpg")
    open(bad, "wb").write(b"\xff\xd8 broken")
    started = time.time()
    code, _, err = train(root, str(tmp_path / "run"), 50)
    assert code == 2 and "1 unreadable val image: {} (".format(bad) in err
    assert time.time() - started < 120 and not os.path.exists(os.path.join(tmp_path, "run", "checkpoint"))


# ---------------------------------------------------------------- 8. bad numbers and other image formats

@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_a_nonsense_epsilon_is_refused(value, capsys):
    assert main.main(["--eval", "--data", "/tmp", "--load", "w.npz", "--attack-epsilon", value]) == 2
    assert "attack pgd: epsilon must be a number in (0, 255] on the 0..255 scale" in capsys.readouterr().err


def test_eval_reads_every_format_that_the_black_box_mode_reads(tmp_path, random_weights):
    root = str(tmp_path / "data")
    write_split(root, "train", 1, seed=0)
    for extension in ("tif", "webp", "png"):
        write_split(root, "val", 1, seed=1, extension=extension)
    result = str(tmp_path / "r.json")
    code, out, err = run_main("--eval", "--data", root, "--load", random_weights, "--attack-iter", 0, "--workers", 0,
                              "--result-file", result, *ARCH)
    assert code == 0, (out + err)[-3000:]
    assert json.load(open(result))["images"] == 3 * 4


# ---------------------------------------------------------------- 9-10. evaluation during and after training

def test_training_evaluates_in_float32_and_writes_the_robustness_curve(tmp_path, data):
    """The training attack runs on bfloat16 with folded BN; the in-training PGD-2 evaluation of
    the last epoch equals a standalone float32 --eval of the same checkpoint, image by image
    seeded alike; the final evaluations are written as a curve."""
    logdir = str(tmp_path / "run")
    code, _, err = train(data, logdir, 1, "--attack-dtype", "bfloat16", "--attack-fold-bn", "--attack-seed", 3,
                         "--eval-schedule", "2:1", "--eval-final", "0,2,1")
    assert code == 0, err[-3000:]
    record = stats(logdir)[-1]
    result = str(tmp_path / "eval.json")
    code, out, err = run_main("--eval", "--data", data, "--load", logdir, "--attack-iter", 2, "--attack-seed", 3,
                              "--batch", 5, "--workers", 0, "--result-file", result, *ARCH)
    assert code == 0, (out + err)[-3000:]
    standalone = json.load(open(result))
    assert record["val-pgd2/top1_error"] == pytest.approx(standalone["top1_error"])
    assert record["val-pgd2/attack_success_rate"] == pytest.approx(standalone["attack_success_rate"])
    curve = json.load(open(os.path.join(logdir, "robustness_curve.json")))
    assert [p["attack"] for p in curve["points"]] == ["PGD-2", "clean", "PGD-1"] and curve["epoch"] == 1
    assert curve["points"][0]["top1_error"] == pytest.approx(standalone["top1_error"])


# ---------------------------------------------------------------- a hang ends the process

@pytest.mark.full
def test_the_watchdog_ends_an_evaluation_that_makes_no_progress(tmp_path, data, random_weights):
    code, _, err = main_py_stderr("--import", "tests.hang_plugin", "--eval", "--data", data, "--load", random_weights,
                                  "--attack", "hang", "--hang-timeout", 15, "--workers", 0, *ARCH, timeout=300)
    assert code == 3, err[-3000:]
    assert re.search(r"error: evaluation made no progress for \d+ s \(--hang-timeout 15\)", err), err[-3000:]
    assert "engine/evaluate.py" in err                                      # the stacks, of the stuck evaluation
    assert int(re.search(r"no progress for (\d+) s", err).group(1)) < 60      # it fired soon after the 15 s


@pytest.mark.full
def test_a_frozen_image_decoder_does_not_keep_a_finished_run_alive(tmp_path, data):
    """One of the two decoding processes is stopped (SIGSTOP) once the training queue holds the
    run's remaining batches; the run still ends when training has finished, and no process of
    it is left (before: Tensorpack joined the frozen worker at exit, for ever)."""
    import psutil
    logdir = str(tmp_path / "run")
    process = main_py("--train", "--data", data, "--logdir", logdir, "--epochs", 3, *QUICK, "--workers", 2,
                      wait=False)
    wait_for_file(os.path.join(logdir, "checkpoint"), process)
    decoders = psutil.Process(process.pid).children()
    assert len(decoders) == 2
    decoders[0].suspend()
    try:
        code, out = finish(process, timeout=300)
        assert code == 0 and "Training has finished!" in out, out[-3000:]
        assert not decoders[0].is_running() or decoders[0].status() == psutil.STATUS_ZOMBIE
    finally:
        for decoder in decoders:
            if decoder.is_running():
                decoder.kill()


def test_the_watchdog_ends_a_process_that_makes_no_progress():
    # the clock starts when the watchdog does (the import before it takes seconds on a busy machine)
    script = ("from engine import watchdog; import time; watchdog.start(1.0); print(time.time(), flush=True); "
              "time.sleep(30)")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert done.returncode == 3 and time.time() - float(done.stdout.split()[0]) < 20
    assert re.search(r"training made no progress for \d s", done.stderr) and "Thread" in done.stderr
