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
from tools.demo import DEMO_ARCH, DEMO_AUGMENTATION

tf1 = tf.compat.v1

PGD10 = build_attack("pgd", dict(iterations=10, seed=0))


def guard_after(accuracies, margin, logdir="/nonexistent", starting_epoch=1):
    """A guard fed one epoch's accuracy (of 100 images) after another; the epoch it raised at, and its message."""
    results = {}
    guard = CollapseGuard(PGD10, results, margin, logdir, World())
    guard.trainer = SimpleNamespace(loop=SimpleNamespace(starting_epoch=starting_epoch), epoch_num=starting_epoch)
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
    assert best_recorded(str(tmp_path), key, before_epoch=3) == 0.6
    assert best_recorded(str(tmp_path), key, before_epoch=2) == 0.3
    assert best_recorded(str(tmp_path / "none"), key, before_epoch=3) is None
    # resumed at epoch 3: epoch 2's 60% is the best, so 35% is a collapse with margin 0.2 (a fresh run's would not be)
    assert guard_after([0.35], margin=0.2, logdir=str(tmp_path), starting_epoch=3)[0] == 3
    assert guard_after([0.35], margin=0.2, starting_epoch=3)[0] is None


def test_the_guard_images_are_a_fixed_subset_of_the_training_split(data):
    chosen = guard_images(data, 16, 0)
    assert chosen == guard_images(data, 16, 0) and len(chosen) == 16 and chosen == sorted(chosen)
    assert len(guard_images(data, 512, 0)) == 40          # the whole split when it is smaller


def test_a_training_run_records_the_guards_accuracy_every_epoch(tmp_path, data):
    """FGSM-RS training through main(), as a user runs it: the guard (PGD-10 by default) after each epoch."""
    logdir = str(tmp_path / "fgsm")
    code, out, err = run_main("--train", "--data", data, "--logdir", logdir, "--epochs", 2, "--batch", 8,
                              "--workers", 0, "--attack", "fgsm-rs", "--eval-schedule", "0:1", "--eval-final", "0",
                              "--collapse-check-images", 24, *ARCH)
    assert code == 0, (out + err)[-3000:]
    with open(os.path.join(logdir, "stats.json")) as f:
        stats = json.load(f)
    assert [r["epoch_num"] for r in stats if "guard-pgd10/accuracy" in r] == [1, 2]
    assert all(0 <= r["guard-pgd10/accuracy"] <= 1 for r in stats if "guard-pgd10/accuracy" in r)
    assert "attack FGSM-RS" in out and "collapse guard: PGD-10 accuracy" in out


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


def test_one_backward_pass_moves_the_weights_and_the_perturbation():
    """Shafahi et al., Algorithm 1: after a step, delta = clip(delta + epsilon sign(grad_x), -epsilon, epsilon), the
    gradient taken at clip(x + delta, 0, 255) of the same loss the weights descend; delta persists between steps."""
    spec, epsilon = arch_spec(), 8.0
    recipe = PUBLISHED.__class__(batch_per_gpu=6)
    rng = np.random.RandomState(0)
    images, labels = rng.randint(0, 256, [6, 16, 16, 3]).astype(np.uint8), rng.randint(0, 4, 6).astype(np.int32)
    with tf.Graph().as_default():
        image, label = tf1.placeholder(tf.uint8, [None, 16, 16, 3]), tf1.placeholder(tf.int32, [None])
        model = FreeAdversarialTraining(spec, BuildOptions(), FreeTraining(epsilon=epsilon, replays=2), recipe, 0.1)
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
                want = np.clip(deltas[-2] + epsilon * np.sign(gradient), -epsilon, epsilon)
                np.testing.assert_allclose(deltas[-1], want, atol=1e-5)
                assert not np.allclose(session.run(weights), before)
    assert np.abs(deltas[1]).max() == epsilon and not np.allclose(deltas[2], deltas[1])


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
