"""End to end through main.py: train with PGD, checkpoint, resume, evaluate; crash and resume; bad flags."""
import json
import os
import re
import signal
import sys
import time

import pytest

import flags
import main
from config import PUBLISHED
from engine import distributed
from tests.cli import ARCH, main_py, run_main


def train_args(data, logdir, epochs, *extra):
    return ["--train", "--data", data, "--logdir", logdir, "--epochs", epochs, "--batch", 8, "--workers", 1,
            "--attack-iter", 1, "--lr-decay-epochs", 2, "--eval-schedule", "0:1,1:2", "--eval-final", "0,1",
            "--collapse-margin", 1.0] + ARCH + list(extra)      # the guard runs and records, and never stops it


def stats(logdir):
    with open(os.path.join(logdir, "stats.json")) as f:
        return json.load(f)


def test_train_checkpoint_resume_and_evaluate(tmp_path, data):
    logdir = str(tmp_path / "run")
    code, out, err = run_main(*train_args(data, logdir, 2))
    assert code == 0, (out + err)[-3000:]
    assert os.path.exists(os.path.join(logdir, "model-10.index"))
    records = stats(logdir)
    assert [r["epoch_num"] for r in records] == [1, 2]
    assert "val-clean/top1_error" in records[0] and "val-pgd1/attack_success_rate" in records[1]
    assert "val-pgd1/top1_error" not in records[0]                        # PGD-1 only every 2 epochs
    assert all("train_error_top1" in r and "learning_rate" in r for r in records)     # the training summaries

    code, out, err = run_main(*train_args(data, logdir, 2))                    # same logdir without --resume
    assert code == 2 and "--resume" in err

    code, out, err = run_main(*train_args(data, logdir, 3, "--resume"))
    assert code == 0, (out + err)[-3000:]
    assert "at epoch 3" in out and os.path.exists(os.path.join(logdir, "model-15.index"))
    assert [r["epoch_num"] for r in stats(logdir)] == [1, 2, 3]
    assert [r["epoch_num"] for r in stats(logdir) if "guard-pgd10/accuracy" in r] == [1, 2, 3]   # resumed too

    code, out, err = run_main(*train_args(data, logdir, 3, "--resume"))          # finished: nothing to do
    assert code == 0 and "has finished all 3 epochs already" in out, (out + err)[-3000:]
    assert [r["epoch_num"] for r in stats(logdir)] == [1, 2, 3]

    result = str(tmp_path / "result.json")
    code, out, err = run_main("--eval", "--data", data, "--load", logdir, "--attack-iter", 2, "--batch", 5,
                                  "--result-file", result, "--workers", 1, *ARCH)
    assert code == 0, (out + err)[-3000:]
    with open(result) as f:
        record = json.load(f)
    assert record["images"] == 12 and record["attack_iterations"] == 2 and record["attack"] == "PGD-2"
    assert record["attack_settings"]["epsilon"] == 16 and record["attack_settings"]["name"] == "pgd"
    for label, key in (("Top1 Error", "top1_error"), ("Attack Success Rate", "attack_success_rate"),
                       ("Top5 Error", "top5_error")):
        printed = float(re.search(label + r": ([0-9.]+)", out).group(1))
        assert printed == pytest.approx(record[key], abs=1e-4)
    assert record["top1_error"] == pytest.approx(record["wrong_top1"] / 12)


@pytest.mark.full
def test_sigkill_mid_training_then_resume_continues_from_last_checkpoint(tmp_path, data):
    logdir = str(tmp_path / "killed")
    process = main_py(*train_args(data, logdir, 200, "--eval-schedule", "0:1"), wait=False)
    deadline = time.time() + 300
    while not os.path.exists(os.path.join(logdir, "checkpoint")):
        assert process.poll() is None and time.time() < deadline, "training ended before its first checkpoint"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)           # in the middle of a later epoch
    process.wait()
    last = int(re.search(r"model-(\d+)", open(os.path.join(logdir, "checkpoint")).read()).group(1))
    assert last < 1000, "the run finished before it was killed"
    final_epoch = last // 5 + 2
    code, out = main_py(*train_args(data, logdir, final_epoch, "--eval-schedule", "0:1", "--resume"))
    assert code == 0, out[-3000:]
    assert "resuming from {} at epoch {}".format(os.path.join(logdir, "model-{}".format(last)), last // 5 + 1) in out
    assert os.path.exists(os.path.join(logdir, "model-{}.index".format(final_epoch * 5)))


def test_summaries_are_fetched_with_every_step_and_written_at_each_epochs_last_step():
    """One set of fetches for every training step (another set would have TensorFlow optimise the graph again)."""
    from types import SimpleNamespace
    from tensorpack.train.config import DEFAULT_CALLBACKS
    from engine.callbacks import SummariesFetchedEveryStep, training_defaults
    defaults, ours = DEFAULT_CALLBACKS(), training_defaults()    # Tensorpack's list, its summaries callback replaced
    assert [type(c).__name__ for c in ours] == [
        "SummariesFetchedEveryStep" if type(c).__name__ == "MergeAllSummaries_RunWithOp" else type(c).__name__
        for c in defaults] and sum(isinstance(c, SummariesFetchedEveryStep) for c in ours) == 1
    written = []
    callback = SummariesFetchedEveryStep()
    callback._fetches = "summary-fetches"
    callback.trainer = SimpleNamespace(steps_per_epoch=3, monitors=SimpleNamespace(put_summary=written.append))
    fetched = []
    for step in range(6):
        callback.trainer.local_step = step % 3
        fetched.append(callback._before_run(None))
        callback._after_run(None, SimpleNamespace(results="summary of step {}".format(step)))
    assert fetched == ["summary-fetches"] * 6
    assert written == ["summary of step 2", "summary of step 5"]


@pytest.mark.parametrize("args,message", [
    (["--train", "--data", "/nonexistent/imagenet"], "/nonexistent/imagenet"),
    (["--eval", "--data", "/tmp"], "--eval needs --load"),
    (["--eval", "--load", "w.npz"], "--eval needs --data"),
    (["--train"], "--train needs --data"),
    (["--train", "--arch", "VGG"], "invalid choice: 'VGG'"),
    (["--eval-directory", "/tmp", "--load", "w.npz", "--denoise-op", "gaussian_blur"], "invalid choice"),
])
def test_bad_flags_give_clear_errors(args, message, capsys):
    try:
        code = main.main(args)
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_distributed_run_without_horovod_says_how_to_install(monkeypatch):
    monkeypatch.setenv("HOROVOD_RANK", "0")
    monkeypatch.setitem(sys.modules, "horovod.tensorflow", None)
    with pytest.raises(RuntimeError, match="scripts/setup.sh"):
        distributed.init_world()
    monkeypatch.delenv("HOROVOD_RANK")
    assert distributed.init_world().size == 1


def test_recipe_schedule_is_the_papers():
    assert PUBLISHED.base_lr(32 * 128) == pytest.approx(1.6)
    assert PUBLISHED.lr_schedule(256) == [(0, 0.1), (35, pytest.approx(0.01)), (70, pytest.approx(0.001)),
                                          (95, pytest.approx(0.0001))]
    assert PUBLISHED.warmup_schedule(256, 100) == []
    assert PUBLISHED.warmup_schedule(1024, 100) == [(0, 0.1), (500, pytest.approx(0.4))]
    assert PUBLISHED.evals_at(1) == ["clean", "pgd@10"]
    assert PUBLISHED.evals_at(20) == ["clean", "pgd@10", "pgd@50", "pgd@100"]
    assert PUBLISHED.evals_at(30) == ["clean", "pgd@10", "pgd@100"]
    assert PUBLISHED.evals_at(105) == ["clean", "pgd@10"]
    assert PUBLISHED.evals_at(106) == PUBLISHED.evals_at(109) == ["clean", "pgd@10", "pgd@100"]   # the last 5 epochs
    # after the last epoch: the schedule and every length 10..100 (the original's final evaluation)
    assert sorted(PUBLISHED.evals_at(110)) == sorted(["clean"] + ["pgd@{}".format(k) for k in range(10, 101, 10)])


def test_attack_flags_reach_the_attack_and_the_execution():
    """Every attack flag sets its field; without flags the attack's own defaults hold; the fast
    path flags set the training attack's execution, never the attack."""
    from attacker import PGD
    from flags import eval_attacks_from_args, execution_from_args
    from engine.graphs import AttackExecution
    args = flags.build_parser().parse_args(["--eval"])
    assert eval_attacks_from_args(args) == [PGD()] and PGD().label == "PGD-10"
    assert execution_from_args(args) == AttackExecution()
    args = flags.build_parser().parse_args(["--eval", "--attack-dtype", "bfloat16", "--attack-fold-bn", "--attack-xla",
                                           "--attack-epsilon", "8", "--untargeted", "--attack-iter", "0,5",
                                           "--attack-option", "step_size=0.5"])
    clean, pgd = eval_attacks_from_args(args)
    assert clean.name == "clean" and pgd == PGD(iterations=5, epsilon=8.0, targeted=False, step_size=0.5)
    assert execution_from_args(args) == AttackExecution("bfloat16", True, True)


def test_fgsm_rs_trains_as_the_paper_wrote_it_not_as_pgd(capsys):
    """--train --attack fgsm-rs is Wong et al.'s attack: one step of 1.25 epsilon from a random start; the recipe's
    PGD-30 length and 20% clean starts are PGD's, not offered to it; --attack-iter is refused with its settings."""
    from attacker.fgsm import FGSMRS
    from flags import recipe_from_args, training_attack_from_args
    args = flags.build_parser().parse_args(["--train", "--attack", "fgsm-rs", "--attack-epsilon", "8"])
    attack = training_attack_from_args(args, recipe_from_args(args, 32))
    assert attack == FGSMRS(epsilon=8.0) and attack.as_pgd().step == 10.0
    code = main.main(["--train", "--data", "/tmp", "--attack", "fgsm-rs", "--attack-iter", "3"])
    assert code == 2 and "attack 'fgsm-rs' has no setting 'iterations'" in capsys.readouterr().err


@pytest.mark.parametrize("flags,message", [
    (["--attack-option", "queries=3"], "attack 'pgd' has no setting 'queries'; its settings are: iterations"),
    (["--attack-option", "restarts=two"], "restarts=two: expected an integer"),
    (["--attack", "clean", "--attack-epsilon", "4"], "attack 'clean' has no setting 'epsilon'"),
])
def test_attack_settings_the_attack_lacks_are_refused(flags, message, capsys):
    code = main.main(["--eval", "--data", "/tmp", "--load", "w.npz"] + flags)
    assert code == 2 and message in capsys.readouterr().err
