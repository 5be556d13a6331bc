"""Fast adversarial training and its failure caught: FGSM-RS as a training attack, free training (one backward pass
for the weights and the perturbation, each batch replayed), the catastrophic-overfitting guard (engine/guard.py)
deciding on a sequence of accuracies, remembering a resumed run's best, and stopping a real run."""
import importlib.util
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf
from tensorpack.tfutils.tower import TowerContext

from attacker import build_attack
from attacker.metrics import Counts
from config import PUBLISHED
from engine.distributed import World
from engine.graphs import FreeAdversarialTraining, FreeTraining
from engine.guard import CollapseGuard, TrainingCollapsed, best_recorded, guard_images
from nets import BuildOptions
from nets.checkpoint import read_weights
from tests.cli import ARCH, HOROVODRUN, arch_spec, main_py, run_main
from tests.scripted_guard import install as install_scripted_guard
from tools.demo import DEMO_ARCH, DEMO_AUGMENTATION

tf1 = tf.compat.v1

PGD10 = build_attack("pgd", dict(iterations=10, seed=0))


def guard_after(accuracies, margin, logdir="/nonexistent", starting_epoch=1):
    """A guard fed one epoch's accuracy (of 100 images) after another; the epoch it raised at, and its message."""
    results = {}
    guard = CollapseGuard(PGD10, results, margin, logdir, World())
    guard.trainer = SimpleNamespace(loop=SimpleNamespace(starting_epoch=starting_epoch, global_step=0),
                                    epoch_num=starting_epoch)
    guard._before_train()
    for epoch, accuracy in enumerate(accuracies, start=starting_epoch):
        guard.trainer.epoch_num = epoch
        results[epoch] = (Counts(images=100, wrong_top1=round(100 * (1 - accuracy))), 1.0)
        try:
            guard._trigger_epoch()
        except TrainingCollapsed as collapse:
            return epoch, str(collapse)
    return None, None


def test_the_guard_stops_at_a_fall_beyond_the_margin_below_the_best_and_not_before():
    assert guard_after([0.10, 0.40, 0.25, 0.21, 0.45, 0.30], margin=0.2) == (None, None)    # falls of at most 0.19
    epoch, message = guard_after([0.10, 0.40, 0.25, 0.19, 0.45], margin=0.2)
    assert epoch == 4
    assert "catastrophic overfitting after epoch 4: PGD-10 accuracy on the 100 guard images fell to 19.0%" in message
    assert "below its best of 40.0%" in message and "random start" in message
    assert guard_after([0.9, 0.6], margin=0.3)[0] is None and guard_after([0.9, 0.59], margin=0.3)[0] == 2


def test_a_resumed_run_remembers_the_best_of_the_epochs_it_keeps(tmp_path):
    key = "guard-pgd10/accuracy"
    stats = [{"epoch_num": 1, key: 0.3}, {"epoch_num": 2, key: 0.6}, {"epoch_num": 3, key: 0.2}, {"epoch_num": 4}]
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    assert best_recorded(str(tmp_path), key, before_epoch=3) == dict(epoch=2, global_step=None, accuracy=0.6)
    assert best_recorded(str(tmp_path), key, before_epoch=2)["accuracy"] == 0.3
    assert best_recorded(str(tmp_path / "none"), key, before_epoch=3) is None
    # resumed at epoch 3: epoch 2's 60% is the best, so 35% is a collapse with margin 0.2 (a fresh run's would not be)
    assert guard_after([0.35], margin=0.2, logdir=str(tmp_path), starting_epoch=3)[0] == 3
    assert guard_after([0.35], margin=0.2, starting_epoch=3)[0] is None


def test_the_guard_images_are_a_fixed_subset_of_the_training_split(data):
    chosen = guard_images(data, 16, 0)
    assert chosen == guard_images(data, 16, 0) and len(chosen) == 16 and chosen == sorted(chosen)
    assert len(guard_images(data, 512, 0)) == 40          # the whole split when it is smaller


def test_a_training_run_records_the_guards_accuracy_every_epoch(tmp_path, data):
    """FGSM-RS training through main(), as a user runs it: the guard (PGD-10 by default) after each epoch. Margin 1:
    the tiny model's accuracy on 24 images swings by more than the default 0.2 between epochs (seen: 50% -> 29%)."""
    logdir = str(tmp_path / "fgsm")
    code, out, err = run_main("--train", "--data", data, "--logdir", logdir, "--epochs", 2, "--batch", 8,
                              "--workers", 0, "--attack", "fgsm-rs", "--eval-schedule", "0:1", "--eval-final", "0",
                              "--collapse-check-images", 24, "--collapse-margin", 1.0, *ARCH)
    assert code == 0, (out + err)[-3000:]
    with open(os.path.join(logdir, "stats.json")) as f:
        stats = json.load(f)
    assert [r["epoch_num"] for r in stats if "guard-pgd10/accuracy" in r] == [1, 2]
    assert all(0 <= r["guard-pgd10/accuracy"] <= 1 for r in stats if "guard-pgd10/accuracy" in r)
    assert "attack FGSM-RS" in out and "collapse guard: PGD-10 accuracy" in out


def test_each_training_attack_makes_its_step_smaller_or_says_it_cannot():
    fgsm = build_attack("fgsm-rs", dict(epsilon=8.0))
    assert fgsm.smaller_step(0.5).step_ratio == 0.625 and fgsm.smaller_step(0.5).as_pgd().step_size == 5.0
    pgd = build_attack("pgd", dict(iterations=2, epsilon=8.0, step_size=6.0))
    assert pgd.smaller_step(0.5).step == 4.0                    # down to the floor epsilon / iterations ...
    assert pgd.smaller_step(0.25).step == 4.0
    with pytest.raises(ValueError, match="PGD-2's step of 4 is already the least"):
        pgd.smaller_step(0.5).smaller_step(0.5)                 # ... and no further
    assert FreeTraining(epsilon=8.0, replays=4).smaller_step(0.5).step_ratio == 0.5
    with pytest.raises(ValueError, match="clean has no step to make smaller"):
        build_attack("clean").smaller_step(0.5)


def fake_checkpoint(folder, step):
    for suffix in (".index", ".data-00000-of-00001"):
        (folder / "model-{}{}".format(step, suffix)).write_text("weights of step {}".format(step))


def test_a_rollback_moves_the_later_checkpoints_aside_and_puts_the_best_back(tmp_path):
    """The guard kept epoch 2's checkpoint (step 20) in guard-best/; the saver then deleted it (max_to_keep). The
    rollback after epoch 4 moves steps 30 and 40 to collapsed-1/ with a copy of stats.json, links step 20 back, and
    records the step scale; the next collapse past --max-rollbacks raises, nothing moved."""
    from dataclasses import replace
    from engine.rollback import keep_best, recorded_rollbacks, roll_back, step_scale
    for step in (10, 20, 30, 40):
        fake_checkpoint(tmp_path, step)
    (tmp_path / "stats.json").write_text(json.dumps([{"epoch_num": k} for k in (1, 2, 3, 4)]))
    best = dict(epoch=2, global_step=20, accuracy=0.5)
    keep_best(str(tmp_path), dict(epoch=1, global_step=10, accuracy=0.4))
    keep_best(str(tmp_path), best)
    assert sorted(os.listdir(tmp_path / "guard-best")) == ["best.json", "model-20.data-00000-of-00001",
                                                           "model-20.index"]
    assert json.loads((tmp_path / "guard-best" / "best.json").read_text()) == best
    for suffix in (".index", ".data-00000-of-00001"):
        os.remove(tmp_path / ("model-20" + suffix))
    recipe = replace(PUBLISHED, on_collapse="rollback", collapse_step_scale=0.25, max_rollbacks=1)
    record = roll_back(str(tmp_path), TrainingCollapsed("collapsed", epoch=4, best=best), recipe)
    assert record == dict(rollback=1, collapsed_epoch=4, best_epoch=2, best_accuracy=0.5, best_global_step=20,
                          step_scale=0.25, collapsed_checkpoints="collapsed-1")
    checkpoints = sorted(n for n in os.listdir(tmp_path) if n.startswith("model-"))
    assert checkpoints == ["model-10.data-00000-of-00001", "model-10.index", "model-20.data-00000-of-00001",
                           "model-20.index"]
    assert (tmp_path / "model-20.index").read_text() == "weights of step 20"
    assert sorted(os.listdir(tmp_path / "collapsed-1")) == ["model-30.data-00000-of-00001", "model-30.index",
                                                            "model-40.data-00000-of-00001", "model-40.index",
                                                            "stats.json"]
    assert len(json.loads((tmp_path / "collapsed-1" / "stats.json").read_text())) == 4
    assert recorded_rollbacks(str(tmp_path)) == [record] and step_scale(str(tmp_path)) == 0.25
    fake_checkpoint(tmp_path, 30)
    with pytest.raises(TrainingCollapsed, match="rolled back 1 time"):
        roll_back(str(tmp_path), TrainingCollapsed("collapsed again", epoch=3, best=best), recipe)
    assert (tmp_path / "model-30.index").exists() and len(recorded_rollbacks(str(tmp_path))) == 1


def test_a_collapsed_run_rolls_back_to_its_best_epoch_and_finishes_with_a_smaller_step(tmp_path, data, monkeypatch):
    """--on-collapse rollback through main(), the guard's accuracies scripted (tests/scripted_guard.py): 50%, 60%,
    then 10% after epoch 3 is a collapse (margin 0.2): the run goes back to epoch 2's checkpoint, trains epochs 3 and
    4 again with FGSM-RS's step halved (step_ratio 0.625), and ends with exit 0, one stats.json record per epoch. A
    later --resume keeps the smaller step; a second collapse beyond --max-rollbacks 1 stops it with exit 2."""
    steps = 40 // 8
    script = install_scripted_guard(monkeypatch.setattr, [0.5, 0.6, 0.1, 0.55, 0.65, 0.2], steps)
    logdir = str(tmp_path / "run")
    args = ["--train", "--data", data, "--logdir", logdir, "--batch", 8, "--workers", 0, "--attack", "fgsm-rs",
            "--eval-schedule", "0:1", "--eval-final", "0", "--collapse-check-images", 8, "--on-collapse", "rollback",
            "--max-rollbacks", 1, *ARCH]
    code, out, err = run_main(*args, "--epochs", 4)
    assert code == 0, (out + err)[-3000:]
    assert "rolled back to epoch 2 (step {})".format(2 * steps) in out and "step_ratio=0.625" in out
    with open(os.path.join(logdir, "rollbacks.json")) as f:
        assert [(r["collapsed_epoch"], r["best_epoch"], r["step_scale"]) for r in json.load(f)] == [(3, 2, 0.5)]
    with open(os.path.join(logdir, "stats.json")) as f:
        assert [r["epoch_num"] for r in json.load(f)] == [1, 2, 3, 4]
    assert os.path.exists(os.path.join(logdir, "collapsed-1", "model-{}.index".format(3 * steps)))
    assert int(read_weights(os.path.join(logdir, "model-{}".format(4 * steps)))["global_step"]) == 4 * steps
    with open(os.path.join(logdir, "guard-best", "best.json")) as f:
        assert json.load(f)["epoch"] == 4

    code, out, err = run_main(*args, "--epochs", 5, "--resume")
    assert code == 2 and "rolled back 1 time(s) already (--max-rollbacks 1)" in err, (out + err)[-3000:]
    assert "step_ratio=0.625" in out and "catastrophic overfitting after epoch 5" in err
    assert os.path.exists(os.path.join(logdir, "model-{}.index".format(5 * steps))) and not script.accuracies


def write_tinted_digits(root, tint, size=32, val_fraction=0.2, seed=0):
    """The demo's digits (tools/digits.py: the same split, upscaling and folder names) as ROOT/train|val/digit<k>/*.png,
    their grey squeezed to 64..191, plus `tint` times the class's colour code (a fixed non-zero vector in {-1, 0, 1}^3,
    BGR): the colour alone tells the class. Ortiz-Jimenez et al. (TMLR 2023) induce catastrophic overfitting by adding
    such a feature, as large as epsilon: easy to learn, and one signed step of epsilon erases it."""
    import itertools
    import cv2
    from sklearn.datasets import load_digits
    from tools.digits import class_name, digit_to_bgr, split_indices
    digits = load_digits()
    codes = [c for c in itertools.product((-1, 0, 1), repeat=3) if any(c)]
    colours = np.array([codes[k] for k in np.random.RandomState(seed).choice(len(codes), 10, replace=False)])
    for split, indices in zip(("train", "val"), split_indices(digits.target, val_fraction, seed)):
        for i in indices:
            label = digits.target[i]
            image = 64.0 + digit_to_bgr(digits.images[i], size) * (127.0 / 255.0) + tint * colours[label]
            folder = os.path.join(root, split, class_name(label))
            os.makedirs(folder, exist_ok=True)
            image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
            assert cv2.imwrite(os.path.join(folder, "{}.png".format(i)), image)
    return root


# The demo's network and augmentation (tools/demo.py) on the tinted digits, epsilon as large as the tint; the guard on
# 256 training digits
TINTED_RUN = ["--batch", 64, "--workers", 1, "--attack-epsilon", 32, "--lr-per-256", 0.4, "--eval-schedule", "0:100",
              "--eval-final", "clean", "--collapse-check-images", 256, *DEMO_ARCH, *DEMO_AUGMENTATION]


@pytest.mark.full
def test_fgsm_without_a_random_start_overfits_catastrophically_and_the_guard_stops_it(tmp_path):
    """Wong et al. (ICLR 2020, Sec. 4): FGSM from the clean image overfits catastrophically. PGD-3 training first makes
    the model somewhat robust (PGD-10 accuracy on the guard images of 15-25% at this epsilon; the guard records, it
    does not stop); resumed with FGSM without the random start, PGD accuracy collapses to nearly nothing within a few
    epochs while the FGSM training error keeps falling, and the guard (margin 0.15) stops the run with exit code 2,
    every epoch recorded and the last checkpoint kept."""
    data = write_tinted_digits(str(tmp_path / "data"), tint=32)
    logdir = str(tmp_path / "run")
    common = ["--train", "--data", data, "--logdir", logdir, *TINTED_RUN]
    code, out, err = run_main(*common, "--epochs", 4, "--attack-iter", 3, "--collapse-margin", 1.0)
    assert code == 0, (out + err)[-3000:]

    code, out, err = run_main(*common, "--epochs", 12, "--resume", "--attack", "fgsm-rs", "--attack-option",
                              "random_start=false", "--collapse-margin", 0.15)
    assert code == 2 and "error: catastrophic overfitting after epoch" in err, (out + err)[-3000:]
    assert "attack FGSM," in out
    stopped = int(err.split("catastrophic overfitting after epoch ")[1].split(":")[0])
    with open(os.path.join(logdir, "stats.json")) as f:
        records = json.load(f)
    accuracy = {r["epoch_num"]: r["guard-pgd10/accuracy"] for r in records}
    assert 5 <= stopped < 12 and sorted(accuracy) == list(range(1, stopped + 1))     # every epoch, none after
    assert accuracy[stopped] < max(accuracy.values()) - 0.15
    last = [r for r in records if r["epoch_num"] == stopped][0]
    assert last["train_error_top1"] < 1.0 - accuracy[stopped]          # robust to the training attack, not to PGD
    assert os.path.exists(os.path.join(logdir, "model-{}.index".format(last["global_step"])))

    # Continued with --on-collapse rollback: the collapsed weights fail the guard at once, the run goes back to the
    # best epoch's checkpoint (kept in guard-best/) with FGSM's step halved. Whether the smaller step then holds is
    # the experiment's outcome: the run ends all 12 epochs, or collapses again beyond --max-rollbacks 2.
    best = max(sorted(accuracy), key=lambda epoch: accuracy[epoch])
    code, out, err = run_main(*common, "--epochs", 12, "--resume", "--attack", "fgsm-rs", "--attack-option",
                              "random_start=false", "--collapse-margin", 0.15, "--on-collapse", "rollback")
    with open(os.path.join(logdir, "rollbacks.json")) as f:
        rollbacks = json.load(f)
    assert rollbacks[0]["best_epoch"] == best and rollbacks[0]["collapsed_epoch"] == stopped + 1, (out + err)[-3000:]
    assert "step_ratio=0.625" in out and any(name.endswith(".index") for name in os.listdir(
        os.path.join(logdir, "collapsed-1")))
    with open(os.path.join(logdir, "stats.json")) as f:
        epochs = [r["epoch_num"] for r in json.load(f)]
    if code == 0:
        assert epochs == list(range(1, 13)) and len(rollbacks) <= 2
    else:
        assert code == 2 and "(--max-rollbacks 2)" in err and len(rollbacks) == 2, (out + err)[-3000:]
        assert epochs == list(range(1, epochs[-1] + 1))


def test_the_guard_attack_is_untargeted_pgd10_with_a_fixed_seed_and_off_for_clean_training():
    import flags
    from attacker import PGD

    def guard_of(*argv):
        args = flags.build_parser().parse_args(["--train"] + list(argv))
        recipe = flags.recipe_from_args(args, 8)
        return flags.collapse_check_from_args(recipe, args, flags.training_attack_from_args(args, recipe))
    assert guard_of() == PGD(iterations=10, seed=0, targeted=False) and guard_of().label == "PGD-10"
    assert guard_of("--attack-epsilon", "4", "--collapse-check", "apgd-ce@20").epsilon == 4.0
    assert guard_of("--attack-iter", "0") is None and guard_of("--collapse-check", "none") is None


@pytest.mark.parametrize("flags,message", [
    (["--collapse-check", "nonsense"], "--collapse-check: bad attack 'nonsense'"),
    (["--collapse-margin", "0"], "collapse_margin must be"),
    (["--on-collapse", "retry"], "--on-collapse: invalid choice: 'retry'"),
    (["--on-collapse", "rollback", "--collapse-check", "none"], "--on-collapse rollback needs the collapse guard"),
    (["--on-collapse", "rollback", "--attack-iter", "0"], "needs the collapse guard, which is off (clean training)"),
    (["--on-collapse", "rollback", "--attack-iter", "3"], "PGD-3's step of 5.33333 is already the least"),
    (["--on-collapse", "rollback", "--attack", "fgsm-rs", "--collapse-step-scale", "0"],
     "collapse_step_scale must be"),
    (["--on-collapse", "rollback", "--attack", "fgsm-rs", "--max-rollbacks", "0"], "max_rollbacks must be"),
])
def test_bad_guard_settings_are_refused(flags, message, data, capsys):
    import main
    try:
        code = main.main(["--train", "--data", data, "--logdir", "/nonexistent/x"] + flags + [str(a) for a in ARCH])
    except SystemExit as exit_:             # argparse's refusal
        code = exit_.code
    assert code == 2 and message in capsys.readouterr().err


def test_free_training_divides_the_recipes_epochs_by_the_replays():
    free = PUBLISHED.with_replays(4)          # 110 epochs, decays at 35, 70, 95, 5 warm-up epochs
    assert (free.epochs, free.lr_decay_epochs, free.warmup_epochs) == (28, (9, 18, 24), 2)
    assert PUBLISHED.with_replays(1) == PUBLISHED


@pytest.mark.parametrize("step_ratio", [1.0, 0.5])
def test_one_backward_pass_moves_the_weights_and_the_perturbation(step_ratio):
    """Shafahi et al., Algorithm 1: after a step, delta = clip(delta + epsilon sign(grad_x), -epsilon, epsilon), the
    gradient taken at clip(x + delta, 0, 255) of the same loss the weights descend; delta persists between steps.
    After a rollback the step is step_ratio x epsilon."""
    spec, epsilon = arch_spec(), 8.0
    recipe = PUBLISHED.__class__(batch_per_gpu=6)
    rng = np.random.RandomState(0)
    images, labels = rng.randint(0, 256, [6, 16, 16, 3]).astype(np.uint8), rng.randint(0, 4, 6).astype(np.int32)
    with tf.Graph().as_default():
        image, label = tf1.placeholder(tf.uint8, [None, 16, 16, 3]), tf1.placeholder(tf.int32, [None])
        free = FreeTraining(epsilon=epsilon, replays=2, step_ratio=step_ratio)
        model = FreeAdversarialTraining(spec, BuildOptions(), free, recipe, 0.1)
        with TowerContext("", is_training=True):
            cost = model.build_graph(image, label)
        optimizer = model.optimizer()
        grad_x, = tf1.gradients(cost, model.perturbed)
        step = optimizer.apply_gradients(optimizer.compute_gradients(cost))
        weights = [v for v in tf1.trainable_variables() if v.op.name.endswith("/W")][0]
        feed = {image: images, label: labels}
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            deltas = [session.run(model.delta)]
            for _ in range(2):
                gradient, before = session.run([grad_x, weights], feed)
                session.run(step, feed)
                deltas.append(session.run(model.delta))
                want = np.clip(deltas[-2] + step_ratio * epsilon * np.sign(gradient), -epsilon, epsilon)
                np.testing.assert_allclose(deltas[-1], want, atol=1e-5)
                assert not np.allclose(session.run(weights), before)
    assert np.abs(deltas[1]).max() == step_ratio * epsilon and not np.allclose(deltas[2], deltas[1])


def test_free_training_runs_the_replays_and_resumes(tmp_path, data):
    """--free-replays 2 --epochs 2: one epoch of 10 steps (5 batches, each twice); the perturbation is saved with the
    weights; --resume after the last epoch has nothing to do; other training attacks are refused beside it."""
    logdir = str(tmp_path / "free")
    args = ["--train", "--data", data, "--logdir", logdir, "--batch", 8, "--workers", 0, "--free-replays", 2,
            "--attack-epsilon", 8, "--eval-schedule", "0:1", "--eval-final", "0", "--collapse-check", "none", *ARCH]
    code, out, err = run_main(*args, "--epochs", 2)
    assert code == 0, (out + err)[-3000:]
    assert "attack Free-2" in out and "10 steps per epoch, epochs 1..1" in out
    saved = read_weights(os.path.join(logdir, "model-10"))
    assert int(saved["global_step"]) == 10 and 0 < np.abs(saved["free_delta"]).max() <= 8.0
    code, out, err = run_main(*args, "--epochs", 2, "--resume")
    assert code == 0 and "has finished all 1 epochs already" in out + err
    code, out, err = run_main(*args, "--epochs", 2, "--attack", "pgd")
    assert code == 2 and "--free-replays trains on its own perturbation" in err


def training_gradients(dtype, weights=None):
    """({variable: gradient}, {variable: value}) of the clean training cost of 4 fixed images with the training pass in
    `dtype`, from `weights` (else the initial values); checks the graph: convolutions in `dtype`, variables float32."""
    from engine.graphs import AdversarialTraining, ScaledLossOptimizer
    from nets.checkpoint import load_weights
    rng = np.random.RandomState(1)
    images, labels = rng.randint(0, 256, [4, 16, 16, 3]).astype(np.uint8), rng.randint(0, 4, 4).astype(np.int32)
    with tf.Graph().as_default():
        model = AdversarialTraining(arch_spec(), BuildOptions(compute_dtype=dtype), build_attack("clean"), PUBLISHED,
                                    0.1)
        with TowerContext("", is_training=True):
            cost = model.build_graph(tf.constant(images), tf.constant(labels))
        optimizer = model.optimizer()
        convolutions = [op for op in tf1.get_default_graph().get_operations() if op.type == "Conv2D"]
        assert convolutions and all(op.get_attr("T") == tf.as_dtype(dtype) for op in convolutions)
        assert all(v.dtype.base_dtype == tf.float32 for v in tf1.global_variables())
        assert isinstance(optimizer, ScaledLossOptimizer) == (dtype == "float16")
        pairs = optimizer.compute_gradients(cost)
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            if weights:
                load_weights(session, weights)
            return session.run({v.op.name: g for g, v in pairs}), session.run(
                {v.op.name: v for v in tf1.global_variables()})


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_mixed_precision_training_computes_in_its_dtype_and_keeps_float32_state(dtype):
    """--train-dtype: the training pass's convolutions in the reduced type, the variables float32; float16 scales the
    loss before the backward pass and unscales the gradients: the float32 gradients up to the type's rounding
    (measured: 0.55% and 0.15% relative error of the whole gradient)."""
    exact, weights = training_gradients("float32")
    reduced, _ = training_gradients(dtype, weights)
    want = np.concatenate([exact[name].ravel() for name in sorted(exact)])
    got = np.concatenate([reduced[name].ravel() for name in sorted(exact)])
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < {"bfloat16": 0.02, "float16": 0.005}[dtype]


def test_a_bfloat16_run_trains_and_is_evaluated_in_float32(tmp_path, data):
    logdir = str(tmp_path / "bf16")
    code, out, err = run_main("--train", "--data", data, "--logdir", logdir, "--epochs", 1, "--batch", 8, "--workers",
                              0, "--attack-iter", 1, "--train-dtype", "bfloat16", "--eval-schedule", "0:1",
                              "--eval-final", "0", "--collapse-check", "none", *ARCH)
    assert code == 0, (out + err)[-3000:]
    assert "attack PGD-1, in bfloat16" in out
    code, out, err = run_main("--eval", "--data", data, "--load", logdir, "--attack-iter", 0, "--workers", 0, *ARCH)
    assert code == 0, (out + err)[-3000:]


@pytest.mark.full
@pytest.mark.horovod
@pytest.mark.skipif(importlib.util.find_spec("horovod") is None or not os.path.exists(HOROVODRUN),
                    reason="horovod is not installed (bash scripts/setup.sh builds it)")
def test_free_training_and_the_guard_on_two_ranks_take_one_process_steps(tmp_path, data):
    """--free-replays 2 on 2 Horovod ranks of 4 images: every rank replays in step, 10 steps as one process of 8
    images takes; each rank's perturbation is its own batch's; the guard counts over both ranks (margin 1: never
    stops)."""
    common = ["--train", "--data", data, "--epochs", 2, "--workers", 0, "--free-replays", 2, "--attack-epsilon", 8,
              "--eval-schedule", "0:1", "--eval-final", "0", "--collapse-margin", 1.0, "--collapse-check-images", 24,
              *ARCH]
    code, out = main_py(*common, "--logdir", tmp_path / "two", "--batch", 4, ranks=2, timeout=600)
    assert code == 0, out[-3000:]
    assert "10 steps per epoch, epochs 1..1, attack Free-2" in out
    two = read_weights(str(tmp_path / "two" / "model-10"))
    assert two["free_delta"].shape == (4, 16, 16, 3) and 0 < np.abs(two["free_delta"]).max() <= 8.0
    with open(tmp_path / "two" / "stats.json") as f:
        assert [r["epoch_num"] for r in json.load(f) if "guard-pgd10/accuracy" in r] == [1]
    code, out, err = run_main(*common, "--logdir", tmp_path / "one", "--batch", 8)
    assert code == 0 and int(read_weights(str(tmp_path / "one" / "model-10"))["global_step"]) == 10


@pytest.mark.full
@pytest.mark.horovod
@pytest.mark.skipif(importlib.util.find_spec("horovod") is None or not os.path.exists(HOROVODRUN),
                    reason="needs horovod and horovodrun")
def test_a_rollback_on_two_ranks_takes_one_process_steps(tmp_path, data, monkeypatch):
    """--on-collapse rollback on 2 Horovod ranks of 4 images, the guard's accuracies scripted alike on both (50%, 60%,
    then 10%: a collapse after epoch 3): both ranks go back to epoch 2 with the halved step and finish epoch 3, 5
    steps per epoch as one process of 8 images takes."""
    monkeypatch.setenv("SCRIPTED_GUARD", "0.5,0.6,0.1,0.55")
    monkeypatch.setenv("SCRIPTED_GUARD_STEPS", "5")
    logdir = tmp_path / "two"
    code, out = main_py("--import", "tests.scripted_guard", "--train", "--data", data, "--logdir", logdir, "--epochs",
                        3, "--batch", 4, "--workers", 0, "--attack", "fgsm-rs", "--eval-schedule", "0:1",
                        "--eval-final", "0", "--collapse-check-images", 8, "--on-collapse", "rollback", *ARCH,
                        ranks=2, timeout=600)
    assert code == 0, out[-3000:]
    assert "5 steps per epoch, epochs 3..3, attack FGSM-RS" in out and "step_ratio=0.625" in out
    with open(logdir / "rollbacks.json") as f:
        assert [(r["collapsed_epoch"], r["best_epoch"]) for r in json.load(f)] == [(3, 2)]
    with open(logdir / "stats.json") as f:
        assert [r["epoch_num"] for r in json.load(f)] == [1, 2, 3]
    assert int(read_weights(str(logdir / "model-15"))["global_step"]) == 15
    assert os.path.exists(logdir / "collapsed-1" / "model-15.index")


@pytest.mark.full
@pytest.mark.horovod
@pytest.mark.skipif(importlib.util.find_spec("horovod") is None or not os.path.exists(HOROVODRUN),
                    reason="needs horovod and horovodrun")
def test_fgsm_rs_in_bfloat16_on_two_ranks_takes_one_process_steps(tmp_path, data):
    """--attack fgsm-rs --train-dtype bfloat16 on 2 Horovod ranks of 4 images: the step count of one process of 8,
    the weights float32."""
    common = ["--train", "--data", data, "--epochs", 1, "--workers", 0, "--attack", "fgsm-rs", "--train-dtype",
              "bfloat16", "--attack-epsilon", 8, "--eval-schedule", "0:1", "--eval-final", "0", "--collapse-check",
              "none", *ARCH]
    code, out = main_py(*common, "--logdir", tmp_path / "two", "--batch", 4, ranks=2, timeout=600)
    assert code == 0, out[-3000:]
    assert "5 steps per epoch, epochs 1..1, attack FGSM-RS, in bfloat16" in out
    two = read_weights(str(tmp_path / "two" / "model-5"))
    assert int(two["global_step"]) == 5 and all(v.dtype.name != "bfloat16" for v in two.values())
    code, out, err = run_main(*common, "--logdir", tmp_path / "one", "--batch", 8)
    assert code == 0 and int(read_weights(str(tmp_path / "one" / "model-5"))["global_step"]) == 5
