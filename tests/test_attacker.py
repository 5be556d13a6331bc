"""PGD: invariants, the target and step-size rules, strength, restarts, BN freezing, one exact step."""
import numpy as np
import pytest
import tensorflow as tf

from attacker import LOSSES, PGD, Classifier, build_attack, outcome, random_wrong_target, step_size_for
from attacker.metrics import Counts
from engine.graphs import FP16_GRADIENT_SCALE
from nets import build_spec, logits
from tests.tf_helpers import CLASSES, SIZE, mlp, randomize_variables, synthetic_data

tf1 = tf.compat.v1
MLP = Classifier(mlp, CLASSES)


def run_attack(trained_mlp, attacker, method="attack"):
    graph, session, image, label, images, labels = trained_mlp
    with graph.as_default():
        out = getattr(attacker, method)(image, label, MLP)
        return session.run(out, {image: images, label: labels}), images, labels


def clean_accuracy(trained_mlp):
    (result, images, labels) = run_attack(trained_mlp, build_attack("clean"))
    return result.correct_top1.mean()


@pytest.mark.parametrize("iterations", [1, 2, 7])
@pytest.mark.parametrize("from_clean", [0.0, 1.0])
@pytest.mark.parametrize("targeted", [True, False])
def test_adversarial_stays_in_epsilon_ball_and_valid_range(trained_mlp, iterations, from_clean, targeted):
    attacker = PGD(iterations, epsilon=16, prob_start_from_clean=from_clean,
                           targeted=targeted, seed=3)
    (adv, target), images, _ = run_attack(trained_mlp, attacker, "perturb")
    assert np.abs(adv - images).max() <= 16 + 1e-4
    assert adv.min() >= 0 and adv.max() <= 255
    assert np.abs(adv - images).max() > 0


def test_zero_iterations_return_the_clean_image(trained_mlp):
    attacker = build_attack("clean")
    result, images, labels = run_attack(trained_mlp, attacker)
    np.testing.assert_array_equal(result.adversarial, images)
    assert not result.success.any()
    with pytest.raises(ValueError, match="iterations must be an integer >= 1, got 0"):
        PGD(0)


def test_step_size_rule():
    assert step_size_for(16, 10, 1.0) == pytest.approx(1.6)
    assert step_size_for(16, 100, 1.0) == 1.0
    assert step_size_for(16, 1, 1.0) == 16.0
    assert step_size_for(8, 4, 1.0) == 2.0
    assert step_size_for(16, 10, 2.0) == 2.0
    assert PGD(10).step == pytest.approx(1.6)


def test_random_target_is_never_the_label_and_covers_the_others():
    classes, n = 10, 20000
    labels = np.random.RandomState(0).randint(0, classes, n).astype(np.int32)
    with tf.Graph().as_default(), tf1.Session() as session:
        targets = session.run(random_wrong_target(tf.constant(labels), classes, seed=1))
    assert not np.any(targets == labels)
    offsets = (targets - labels) % classes
    counts = np.bincount(offsets, minlength=classes)
    assert counts[0] == 0 and np.all(counts[1:] > 0.8 * n / (classes - 1))
    for label in range(classes):
        assert set(targets[labels == label]) == set(range(classes)) - {label}


def test_fixed_target_offset():
    with tf.Graph().as_default(), tf1.Session() as session:
        target = session.run(PGD(1, target_offset=2).choose_target(tf.constant([0, 3, 4]), 5))
    np.testing.assert_array_equal(target, [2, 0, 1])


def test_targeted_loss_falls_and_success_rises_with_iterations(trained_mlp):
    graph, session, image, label, images, labels = trained_mlp
    losses, successes = [], []
    for iterations in (1, 3, 10):
        attacker = PGD(iterations, epsilon=8, step_size=1, target_offset=1,
                               prob_start_from_clean=1.0)
        with graph.as_default():
            adv, target = attacker.perturb(image, label, MLP)
            loss = tf.reduce_mean(-LOSSES["ce"](mlp(adv), label, target))        # the cross-entropy to the target
            reached = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(mlp(adv), 1, output_type=tf.int32), target),
                                             tf.float32))
            values = session.run([loss, reached], {image: images, label: labels})
        losses.append(values[0])
        successes.append(values[1])
    assert losses[0] > losses[1] > losses[2]
    assert successes[0] <= successes[1] <= successes[2] and successes[2] > successes[0]


def test_restarts_never_make_the_attack_weaker(trained_mlp):
    graph, session, image, label, images, labels = trained_mlp
    settings = dict(epsilon=7, seed=11)
    with graph.as_default():
        one = PGD(2, restarts=1, **settings).attack(image, label, MLP)
        five = PGD(2, restarts=5, **settings).attack(image, label, MLP)
        one, five = session.run([one, five], {image: images, label: labels})
    np.testing.assert_array_equal(one.target, five.target)
    assert np.all(five.success >= one.success) and np.all(five.correct_top1 <= one.correct_top1)
    assert np.all(five.correct_top5 <= one.correct_top5)
    assert five.success.sum() > one.success.sum()   # with eps 7 and 2 steps some images need another start
    assert np.abs(five.adversarial - images).max() <= 7 + 1e-4


def test_restart_flags_aggregate_every_restart(trained_mlp):
    """correct only if correct under every restart; success if any restart reached the target."""
    graph, session, image, label, images, labels = trained_mlp
    attacker = PGD(2, epsilon=7, seed=5, restarts=4)
    with graph.as_default():
        combined = attacker.attack(image, label, MLP)
        singles = []
        for r in range(4):
            adv, target = attacker.perturb(image, label, MLP, restart=r)
            prediction, correct_top1, correct_top5 = outcome(mlp(adv), label)
            singles.append((correct_top1, correct_top5, tf.equal(prediction, target)))
        combined, singles = session.run([combined, singles], {image: images, label: labels})
    top1, top5, reached = (np.array([s[k] for s in singles]) for k in range(3))
    assert reached.any(0).sum() > reached[-1].sum() and (~top1).any(0).sum() > (~top1[-1]).sum()   # restarts differ
    np.testing.assert_array_equal(combined.correct_top1, top1.all(0))
    np.testing.assert_array_equal(combined.correct_top5, top5.all(0))
    np.testing.assert_array_equal(combined.success, reached.any(0))
    with graph.as_default():
        chosen = session.run(outcome(mlp(tf.constant(combined.adversarial)), label)[0], {label: labels})
    # the kept image reached the target wherever one did
    np.testing.assert_array_equal(chosen == combined.target, combined.success)


@pytest.mark.parametrize("loss", ["ce", "cw", "dlr"])
def test_untargeted_mode_lowers_accuracy(trained_mlp, loss):
    attacker = PGD(10, epsilon=8, targeted=False, loss=loss, seed=0)
    result, _, labels = run_attack(trained_mlp, attacker)
    np.testing.assert_array_equal(result.target, labels)
    assert result.correct_top1.mean() < clean_accuracy(trained_mlp) - 0.2


def test_attack_losses_match_numpy():
    """Every loss is an objective to maximise: away from the label, or towards the target."""
    z = np.array([[2.0, 0.5, -1.0, 3.0], [0.0, 1.0, 4.0, -2.0]], np.float32)
    label, target = np.array([0, 2], np.int32), np.array([1, 3], np.int32)
    log_softmax = z - np.log(np.exp(z).sum(1, keepdims=True))
    with tf.Graph().as_default(), tf1.Session() as s:
        got = s.run({(loss, targeted): LOSSES[loss](tf.constant(z), tf.constant(label),
                                                    tf.constant(target) if targeted else None)
                     for loss in ("ce", "cw") for targeted in (True, False)})
    np.testing.assert_allclose(got["ce", True], log_softmax[[0, 1], target], rtol=1e-5)
    np.testing.assert_allclose(got["ce", False], -log_softmax[[0, 1], label], rtol=1e-5)
    np.testing.assert_allclose(got["cw", True], [0.5 - 3.0, -2.0 - 4.0], rtol=1e-6)
    np.testing.assert_allclose(got["cw", False], [3.0 - 2.0, 1.0 - 4.0], rtol=1e-6)


def test_single_step_on_linear_model_matches_numpy():
    """One targeted step from the clean image: x - step * sign(dCE/dx), clipped to the ball and [0, 255]."""
    rng = np.random.RandomState(0)
    w, b = rng.normal(size=[12, 3]).astype(np.float32), rng.normal(size=[3]).astype(np.float32)
    x = rng.uniform(0, 255, [4, 2, 2, 3]).astype(np.float32)
    x[0, 0, 0] = [0.0, 255.0, 3.0]          # on the range boundary
    labels = np.array([0, 1, 2, 0], np.int32)

    def linear(t, dtype=tf.float32):
        return tf.matmul(tf.reshape(t / 127.5 - 1.0, [-1, 12]), w) + b

    attacker = PGD(1, epsilon=5, step_size=3, target_offset=1, prob_start_from_clean=1.0)
    with tf.Graph().as_default(), tf1.Session() as session:
        adv, target = session.run(attacker.perturb(tf.constant(x), tf.constant(labels), Classifier(linear, 3)))
    z = (x.reshape(4, 12) / 127.5 - 1.0) @ w + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(3)[(labels + 1) % 3]
    grad = ((p - onehot) @ w.T / 127.5).reshape(x.shape)
    expected = np.clip(x - 5.0 * np.sign(grad), np.maximum(x - 5, 0), np.minimum(x + 5, 255))   # step = max(3, 5/1)
    np.testing.assert_array_equal(target, (labels + 1) % 3)
    np.testing.assert_allclose(adv, expected, atol=1e-4)


TINY_RESNET = build_spec("ResNetDenoise", 50, blocks=(1, 1, 1, 1), widths=(4, 4, 8, 8), stem="small",
                         stem_width=8, image_size=SIZE)


def test_attack_leaves_bn_statistics_alone_and_passes_no_gradient_to_weights():
    with tf.Graph().as_default():
        image = tf1.placeholder(tf.float32, [None, SIZE, SIZE, 3])
        label = tf1.placeholder(tf.int32, [None])
        model = Classifier(lambda x: logits(x, TINY_RESNET, training=False), CLASSES)
        adv, _ = PGD(3, seed=0).perturb(image, label, model)
        train_logits = logits(adv, TINY_RESNET, training=True)
        weights = tf1.trainable_variables()
        assert all(g is None for g in tf.gradients(tf.reduce_sum(adv), weights))
        grads = tf.gradients(tf.reduce_sum(train_logits), weights)
        assert all(g is not None for g in grads)       # the training pass itself does reach them
        statistics = [v for v in tf1.global_variables() if "EMA" in v.op.name]
        assert statistics
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            randomize_variables(session)
            before = session.run(statistics)
            images, labels = synthetic_data(6, seed=5)
            session.run(adv, {image: images, label: labels})
            after = session.run(statistics)
            for a, b in zip(before, after):
                np.testing.assert_array_equal(a, b)
            session.run(train_logits, {image: images, label: labels})   # the training pass does update them
            assert any(not np.array_equal(a, b) for a, b in zip(before, session.run(statistics)))


def test_half_precision_attack_is_close_to_float32(trained_mlp):
    """The attack steps on a half-precision model (its own gradient scale for float16)."""
    attack = PGD(5, epsilon=8, target_offset=1, prob_start_from_clean=1.0)
    full, images, _ = run_attack(trained_mlp, attack)
    graph, session, image, label, _, labels = trained_mlp
    for dtype, scale in ((tf.bfloat16, 1.0), (tf.float16, FP16_GRADIENT_SCALE)):
        model = Classifier(mlp, CLASSES, step_logits=lambda x, dtype=dtype: mlp(x, dtype), gradient_scale=scale)
        with graph.as_default():
            half = session.run(attack.attack(image, label, model), {image: images, label: labels})
        assert np.abs(half.adversarial - images).max() <= 8 + 1e-4
        assert abs(half.success.mean() - full.success.mean()) <= 0.1, dtype


def test_counts_aggregate_exactly():
    rng = np.random.RandomState(0)
    flags = [rng.rand(50) > p for p in (0.3, 0.2, 0.9)]
    top1, top5, success = flags
    top5 = top5 | top1
    total = Counts()
    for part in np.array_split(np.arange(50), 4):
        total = total + Counts.from_batch(top1[part], top5[part], success[part])
    assert total.images == 50
    assert total.top1_error == pytest.approx(1 - top1.mean())
    assert total.top5_error == pytest.approx(1 - top5.mean())
    assert total.attack_success_rate == pytest.approx(success.mean())
    assert Counts.from_array(total.as_array()) == total
