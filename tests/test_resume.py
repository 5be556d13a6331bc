"""--resume always continues the newest intact checkpoint of the log folder, from any working
directory and with relative, absolute and default log folders, and never starts from scratch
over an earlier run's checkpoints or stats records."""
import json
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from engine.resume import checkpoint_candidates, newest_intact_checkpoint, previous_run, resume_point
from tests.cli import QUICK_TRAINING, ROOT, run_main

tf1 = tf.compat.v1


def write_checkpoint(logdir, step, listed_alone=True):
    """A small TF checkpoint LOGDIR/model-STEP with a global_step; TF's `checkpoint` state file
    then lists it alone (as a new process's saver does)."""
    with tf.Graph().as_default():
        tf1.train.get_or_create_global_step()
        tf1.get_variable("w", initializer=np.full([3], float(step), np.float32))
        assign = tf1.assign(tf1.train.get_global_step(), step)
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            session.run(assign)
            tf1.train.Saver(save_relative_paths=True).save(session, os.path.join(logdir, "model"), global_step=step,
                                                           write_meta_graph=False)
    if listed_alone:
        with open(os.path.join(logdir, "checkpoint")) as f:
            assert re.findall(r'"(model-\d+)"', f.read()) == ["model-{}".format(step)] * 2
    return os.path.join(logdir, "model-{}".format(step))


def truncate(prefix):
    data = prefix + ".data-00000-of-00001"
    blob = open(data, "rb").read()
    open(data, "wb").write(blob[:len(blob) // 3])


def test_the_newest_intact_checkpoint_is_found_whether_the_state_file_lists_it_or_not(tmp_path):
    logdir = str(tmp_path)
    write_checkpoint(logdir, 5)
    write_checkpoint(logdir, 10)
    newest = write_checkpoint(logdir, 15)                 # the state file lists only model-15
    assert checkpoint_candidates(logdir) == [os.path.join(logdir, "model-{}".format(s)) for s in (15, 10, 5)]
    assert newest_intact_checkpoint(logdir) == (newest, 15)
    truncate(newest)
    os.remove(os.path.join(logdir, "model-10.index"))     # half a checkpoint: skipped too
    assert newest_intact_checkpoint(logdir) == (os.path.join(logdir, "model-5"), 5)
    os.remove(os.path.join(logdir, "checkpoint"))         # no state file at all
    assert newest_intact_checkpoint(logdir) == (os.path.join(logdir, "model-5"), 5)


def test_relative_log_folders_are_not_joined_twice(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs("train_log/run")
    write_checkpoint("train_log/run", 44)
    assert resume_point("train_log/run", resume=True) == ("train_log/run/model-44", 44)


def test_a_start_from_scratch_over_an_earlier_run_is_refused_naming_what_is_there(tmp_path):
    logdir = str(tmp_path)
    assert resume_point(logdir, resume=True) is None and resume_point(logdir, resume=False) is None
    truncate(write_checkpoint(logdir, 5))
    with open(os.path.join(logdir, "stats.json"), "w") as f:
        json.dump([{"epoch_num": 1}], f)
    assert previous_run(logdir) == "checkpoint model-5 and stats.json with 1 epoch record"
    with pytest.raises(ValueError, match="--resume found no intact checkpoint in {}, but it holds checkpoint model-5 "
                                         "and stats.json with 1 epoch record; refusing to start from scratch".format(
                                             re.escape(logdir))):
        resume_point(logdir, resume=True)
    with pytest.raises(ValueError, match="already holds a training run .*pass --resume to continue it"):
        resume_point(logdir, resume=False)
    for name in os.listdir(logdir):
        if name.startswith("model-"):
            os.remove(os.path.join(logdir, name))
    with pytest.raises(ValueError, match=r"holds stats.json with 1 epoch record; refusing"):
        resume_point(logdir, resume=True)            # a history without checkpoints is not thrown away either


# ---------------------------------------------------------------- as users run it: main.py, relative paths

def slurm_logdir():
    """The log folder scripts/slurm_train.sh trains into (and resumes)."""
    with open(os.path.join(ROOT, "scripts", "slurm_train.sh")) as f:
        script = f.read()
    assert "--resume" in script
    return re.search(r'--logdir "([^"]+)"', script).group(1)


@pytest.mark.parametrize("logdir", ["r_rel", pytest.param("slurm", marks=pytest.mark.full),
                                    pytest.param("default", marks=pytest.mark.full)])
def test_resume_from_a_relative_log_folder_in_the_working_directory(tmp_path, data, logdir):
    cwd = tmp_path / "job"
    shutil.copytree(data, cwd / "data")
    given = {"r_rel": ["--logdir", "r_rel"], "slurm": ["--logdir", slurm_logdir()], "default": []}[logdir]
    # the Slurm script passes --resume on its first submission too: nothing to continue yet, so it starts
    code, out, err = run_main("--train", "--data", "data", "--epochs", 1, "--resume", *given, *QUICK_TRAINING, cwd=cwd)
    assert code == 0, (out + err)[-3000:]
    folder = given[1] if given else re.search(r"training (train_log/\S+): total batch", out).group(1)
    assert not os.path.isabs(folder) and os.path.exists(cwd / folder / "model-5.index")
    code, out, err = run_main("--train", "--data", "data", "--epochs", 2, "--resume", *given, *QUICK_TRAINING, cwd=cwd)
    assert code == 0, (out + err)[-3000:]
    assert "resuming from {} at epoch 2".format(os.path.join(folder, "model-5")) in out
    assert [r["epoch_num"] for r in json.load(open(cwd / folder / "stats.json"))] == [1, 2]


def test_resume_uses_an_older_intact_checkpoint_the_state_file_does_not_list(tmp_path, data, finished_run):
    """The issue's case: the last process wrote (and listed) only model-10; with it corrupt, the
    run continues from model-5 instead of starting over at epoch 1."""
    cwd = tmp_path / "job"
    shutil.copytree(data, cwd / "data")
    shutil.copytree(finished_run, cwd / "run")                      # 2 epochs: model-5, model-10
    with open(cwd / "run" / "checkpoint", "w") as f:                # as a resumed second process leaves it
        f.write('model_checkpoint_path: "model-10"\nall_model_checkpoint_paths: "model-10"\n')
    truncate(str(cwd / "run" / "model-10"))
    run = ["--train", "--data", "data", "--logdir", "run"] + QUICK_TRAINING
    code, out, err = run_main(*run, "--epochs", 3, "--resume", cwd=cwd)
    assert code == 0, (out + err)[-3000:]
    assert "skipping checkpoint run/model-10" in out and "resuming from run/model-5 at epoch 2" in out
    assert [r["epoch_num"] for r in json.load(open(cwd / "run" / "stats.json"))] == [1, 2, 3]
    assert newest_intact_checkpoint(str(cwd / "run")) == (str(cwd / "run" / "model-15"), 15)
    for step in (15, 10, 5):
        truncate(str(cwd / "run" / "model-{}".format(step)))
    before = open(cwd / "run" / "stats.json").read()
    code, out, err = run_main(*run, "--epochs", 4, "--resume", cwd=cwd)
    assert code == 2 and "--resume found no intact checkpoint in run, but it holds checkpoints model-15, model-10, " \
                         "model-5 and stats.json with 3 epoch records; refusing to start from scratch" in err
    assert open(cwd / "run" / "stats.json").read() == before
