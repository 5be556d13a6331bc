"""PGD: invariants, the target and step-size rules, strength, restarts, BN freezing, one exact step."""
import numpy as np
import pytest
import tensorflow as tf

from attacker import PGD, Model, attack_loss, build_attack, outcome, random_wrong_target, step_size_for
from attacker.metrics import Counts
from engine.model import FP16_GRADIENT_SCALE
from nets import build_spec, logits
from tests.tf_helpers import randomize_variables

tf1 = tf.compat.v1
SIZE, CLASSES = 8, 4


def mlp(x, dtype=tf.float32):
    """A small classifier on 8x8x3 images in [0, 255] (weights shared across calls)."""
    with tf1.variable_scope("mlp", reuse=tf1.AUTO_REUSE):
        h = tf.cast(tf.reshape(x / 127.5 - 1.0, [-1, SIZE * SIZE * 3]), dtype)
        w1 = tf.cast(tf1.get_variable("w1", [SIZE * SIZE * 3, 32]), dtype)
        w2 = tf.cast(tf1.get_variable("w2", [32, CLASSES]), dtype)
        return tf.cast(tf.matmul(tf.nn.relu(tf.matmul(h, w1)), w2), tf.float32)


MLP = Model(mlp, CLASSES)


def synthetic_data(n, seed, size=SIZE, classes=CLASSES, amplitude=10.0, noise=20.0):
    """Class k: a fixed random +-1 pattern of `amplitude` around grey, plus Gaussian noise."""
    templates = np.random.RandomState(0).choice([-1.0, 1.0], [classes, size, size, 3])
    rng = np.random.RandomState(seed)
    labels = rng.randint(0, classes, n)
    images = np.clip(128 + amplitude * templates[labels] + rng.normal(0, noise, [n, size, size, 3]), 0, 255)
    return images.astype(np.float32), labels.astype(np.int32)


@pytest.fixture(scope="module")
def trained():
    """(graph, session, image placeholder, label placeholder, test images, test labels) with a trained MLP."""
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(0)
        image = tf1.placeholder(tf.float32, [None, SIZE, SIZE, 3])
        label = tf1.placeholder(tf.int32, [None])
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=label, logits=mlp(image)))
        train = tf1.train.AdamOptimizer(0.01).minimize(loss)
        session = tf1.Session(graph=graph)
        session.run(tf1.global_variables_initializer())
        images, labels = synthetic_data(2000, seed=1)
        for step in range(150):
            batch = slice((step * 64) % 1936, (step * 64) % 1936 + 64)
            session.run(train, {image: images[batch], label: labels[batch]})
        test_images, test_labels = synthetic_data(200, seed=2)
        accuracy = np.mean(session.run(tf.argmax(mlp(image), 1), {image: test_images}) == test_labels)
    # every strength test below assumes a model worth attacking
    assert accuracy > 0.95, "the fixture's classifier did not train ({:.2f})".format(accuracy)
    yield graph, session, image, label, test_images, test_labels
    session.close()


def run_attack(trained, attacker, method="attack"):
    graph, session, image, label, images, labels = trained
    with graph.as_default():
        out = getattr(attacker, method)(image, label, MLP)
        return session.run(out, {image: images, label: labels}), images, labels


def clean_accuracy(trained):
    (result, images, labels) = run_attack(trained, build_attack("clean"))
    return result.correct_top1.mean()


@pytest.mark.parametrize("iterations", [1, 2, 7])
@pytest.mark.parametrize("from_clean", [0.0, 1.0])
@pytest.mark.parametrize("targeted", [True, False])
def test_adversarial_stays_in_epsilon_ball_and_valid_range(trained, iterations, from_clean, targeted):
    attacker = PGD(iterations, epsilon=16, prob_start_from_clean=from_clean,
                           targeted=targeted, seed=3)
    (adv, target), images, _ = run_attack(trained, attacker, "perturb")
    assert np.abs(adv - images).max() <= 16 + 1e-4
    assert adv.min() >= 0 and adv.max() <= 255
    assert np.abs(adv - images).max() > 0


def test_zero_iterations_return_the_clean_image(trained):
    attacker = build_attack("clean")
    result, images, labels = run_attack(trained, attacker)
    np.testing.assert_array_equal(result.adversarial, images)
    assert not result.hit.any()
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


def test_targeted_loss_falls_and_success_rises_with_iterations(trained):
    graph, session, image, label, images, labels = trained
    losses, successes = [], []
    for iterations in (1, 3, 10):
        attacker = PGD(iterations, epsilon=8, step_size=1, target_offset=1,
                               prob_start_from_clean=1.0)
        with graph.as_default():
            adv, target = attacker.perturb(image, label, MLP)
            loss = tf.reduce_mean(attack_loss(mlp(adv), label, target, "xent", True))
            hit = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(mlp(adv), 1, output_type=tf.int32), target), tf.float32))
            values = session.run([loss, hit], {image: images, label: labels})
        losses.append(values[0])
        successes.append(values[1])
    assert losses[0] > losses[1] > losses[2]
    assert successes[0] <= successes[1] <= successes[2] and successes[2] > successes[0]


def test_restarts_never_make_the_attack_weaker(trained):
    graph, session, image, label, images, labels = trained
    settings = dict(epsilon=7, seed=11)
    with graph.as_default():
        one = PGD(2, restarts=1, **settings).attack(image, label, MLP)
        five = PGD(2, restarts=5, **settings).attack(image, label, MLP)
        one, five = session.run([one, five], {image: images, label: labels})
    np.testing.assert_array_equal(one.target, five.target)
    assert np.all(five.hit >= one.hit) and np.all(five.correct_top1 <= one.correct_top1)
    assert np.all(five.correct_top5 <= one.correct_top5)
    assert five.hit.sum() > one.hit.sum()          # with eps 7 and 2 steps some images need another start
    assert np.abs(five.adversarial - images).max() <= 7 + 1e-4


def test_restart_flags_aggregate_every_restart(trained):
    """correct only if correct under every restart; success if any restart hits."""
    graph, session, image, label, images, labels = trained
    attacker = PGD(2, epsilon=7, seed=5, restarts=4)
    with graph.as_default():
        combined = attacker.attack(image, label, MLP)
        singles = []
        for r in range(4):
            adv, target = attacker.perturb(image, label, MLP, restart=r)
            singles.append(outcome(mlp(adv), label, target))
        combined, singles = session.run([combined, singles], {image: images, label: labels})
    top1, top5, hit = (np.array([s[k] for s in singles]) for k in range(3))
    assert hit.any(0).sum() > hit[-1].sum() and (~top1).any(0).sum() > (~top1[-1]).sum()   # restarts differ
    np.testing.assert_array_equal(combined.correct_top1, top1.all(0))
    np.testing.assert_array_equal(combined.correct_top5, top5.all(0))
    np.testing.assert_array_equal(combined.hit, hit.any(0))
    with graph.as_default():
        chosen = session.run(outcome(mlp(tf.constant(combined.adversarial)), label, tf.constant(combined.target)),
                             {label: labels})
    np.testing.assert_array_equal(chosen[2], combined.hit)           # the kept image is a hit wherever one was


@pytest.mark.parametrize("loss", ["xent", "cw"])
def test_untargeted_mode_lowers_accuracy(trained, loss):
    attacker = PGD(10, epsilon=8, targeted=False, loss=loss, seed=0)
    result, _, labels = run_attack(trained, attacker)
    np.testing.assert_array_equal(result.target, labels)
    assert result.correct_top1.mean() < clean_accuracy(trained) - 0.2


def test_attack_loss_matches_numpy():
    z = np.array([[2.0, 0.5, -1.0, 3.0], [0.0, 1.0, 4.0, -2.0]], np.float32)
    label, target = np.array([0, 2], np.int32), np.array([1, 3], np.int32)
    log_softmax = z - np.log(np.exp(z).sum(1, keepdims=True))
    with tf.Graph().as_default(), tf1.Session() as s:
        got = s.run({(loss, targeted): attack_loss(tf.constant(z), tf.constant(label), tf.constant(target),
                                                     loss, targeted)
                     for loss in ("xent", "cw") for targeted in (True, False)})
    np.testing.assert_allclose(got["xent", True], -log_softmax[[0, 1], target], rtol=1e-5)
    np.testing.assert_allclose(got["xent", False], log_softmax[[0, 1], label], rtol=1e-5)
    np.testing.assert_allclose(got["cw", True], [3.0 - 0.5, 4.0 - (-2.0)], rtol=1e-6)
    np.testing.assert_allclose(got["cw", False], [2.0 - 3.0, 4.0 - 1.0], rtol=1e-6)


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
        adv, target = session.run(attacker.perturb(tf.constant(x), tf.constant(labels), Model(linear, 3)))
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
        model = Model(lambda x: logits(x, TINY_RESNET, training=False), CLASSES)
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


def test_half_precision_attack_is_close_to_float32(trained):
    """The attack steps on a half-precision model (its own gradient scale for float16)."""
    attack = PGD(5, epsilon=8, target_offset=1, prob_start_from_clean=1.0)
    full, images, _ = run_attack(trained, attack)
    graph, session, image, label, _, labels = trained
    for dtype, scale in ((tf.bfloat16, 1.0), (tf.float16, FP16_GRADIENT_SCALE)):
        model = Model(mlp, CLASSES, step_logits=lambda x, dtype=dtype: mlp(x, dtype), gradient_scale=scale)
        with graph.as_default():
            half = session.run(attack.attack(image, label, model), {image: images, label: labels})
        assert np.abs(half.adversarial - images).max() <= 8 + 1e-4
        assert abs(half.hit.mean() - full.hit.mean()) <= 0.1, dtype


def test_counts_aggregate_exactly():
    rng = np.random.RandomState(0)
    flags = [rng.rand(50) > p for p in (0.3, 0.2, 0.9)]
    top1, top5, hit = flags
    top5 = top5 | top1
    total = Counts()
    for part in np.array_split(np.arange(50), 4):
        total = total + Counts.from_batch(top1[part], top5[part], hit[part])
    assert total.images == 50
    assert total.top1_error == pytest.approx(1 - top1.mean())
    assert total.top5_error == pytest.approx(1 - top5.mean())
    assert total.attack_success_rate == pytest.approx(hit.mean())
    assert Counts.from_array(total.as_array()) == total
