"""APGD, Square and the AutoAttack protocol: losses and schedules against the NumPy references
(tests/reference_attacks.py), an APGD run on a linear model number for number, and the
invariants every registered attack keeps (epsilon ball, pixel range, batch independence)."""
import numpy as np
import pytest
import tensorflow as tf

from attacker import ATTACKS, Classifier, build_attack
from attacker.apgd import checkpoints
from attacker.losses import dlr, margin
from attacker.randomness import uniform_per_image
from attacker.square import Square
from tests import reference_attacks as ref
from tests.tf_helpers import CLASSES, mlp

tf1 = tf.compat.v1
MLP = Classifier(mlp, CLASSES)


def run(fetches, feeds=None):
    with tf1.Session() as session:
        return session.run(fetches, feeds)


def test_dlr_losses_and_margin_match_numpy():
    rng = np.random.RandomState(0)
    z = rng.normal(0, 3, [50, 6])
    label, target = rng.randint(0, 6, 50), rng.randint(0, 6, 50)
    target = np.where(target == label, (label + 1) % 6, target)
    with tf.Graph().as_default():
        got = run([dlr(tf.constant(z), tf.constant(label)),
                   dlr(tf.constant(z), tf.constant(label), tf.constant(target)),
                   margin(tf.constant(z), tf.constant(label))])
    np.testing.assert_allclose(got[0], ref.dlr_loss(z, label), rtol=1e-10)
    np.testing.assert_allclose(got[1], ref.targeted_dlr_loss(z, label, target), rtol=1e-10)
    np.testing.assert_allclose(got[2], ref.margin_loss(z, label), rtol=1e-10)


@pytest.mark.parametrize("iterations", [1, 10, 37, 50, 100, 1000])
def test_apgd_checkpoints_are_the_authors_code(iterations):
    assert checkpoints(iterations) == ref.apgd_checkpoints(iterations, "autoattack")
    if iterations == 100:          # where the paper's formula gives the same points
        assert checkpoints(iterations) == ref.apgd_checkpoints(iterations, "paper")


@pytest.mark.parametrize("iterations", [10, 400, 5000])
def test_square_schedule_matches_the_authors(iterations):
    for rescale in (False, True):
        attack = Square(queries=iterations, rescale_schedule=rescale)
        queries = list(range(1, iterations, max(1, iterations // 97)))
        with tf.Graph().as_default():
            got = run([attack.fraction(q) for q in queries])
        want = [ref.square_p_schedule(0.8, q, iterations, rescale) for q in queries]
        np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("loss", ["ce", "dlr", "dlr-targeted"])
def test_apgd_on_a_linear_model_follows_the_reference_run(loss):
    """Same start, same checkpoints, same halving rule: the images broken and, for the others,
    the best point found agree with the NumPy run of Algorithm 1 as the authors code it. APGD-T
    with one target class aims at the clean image's second most likely class."""
    rng = np.random.RandomState(1)
    w, b = rng.normal(0, 0.02, [48, 5]), rng.normal(0, 0.5, 5)
    x = rng.uniform(0, 255, [60, 4, 4, 3])
    clean_logits = x.reshape(60, -1) @ w + b
    labels = np.argmax(clean_logits, axis=1)
    targets = np.argsort(-clean_logits, axis=1, kind="stable")[:, 1]
    name = "apgd-t" if loss == "dlr-targeted" else "apgd-" + loss
    attack = build_attack(name, dict(iterations=30, epsilon=3.0, seed=7, target_classes=1))

    def linear(t):
        return tf.matmul(tf.reshape(tf.cast(t, tf.float64), [-1, 48]), w) + b
    with tf.Graph().as_default():
        index = tf.range(60, dtype=tf.int64)
        start_noise = uniform_per_image(index, 7, 0, [4, 4, 3], -1.0, 1.0)
        result = attack.attack(tf.constant(x, tf.float32), tf.constant(labels, tf.int32), Classifier(linear, 5), index)
        noise, result = run([start_noise, result])
    want = ref.apgd_linear(w, b, x.astype(np.float32).astype(np.float64), labels, 3.0, 30, loss=loss,
                           x_init=ref.autoattack_linf_start(x.astype(np.float32), 3.0, (noise + 1) / 2),
                           variant="autoattack", targets=targets)
    broken = ~result.correct_top1
    assert 0 < want["fooled"].sum() < 60
    assert np.mean(broken == want["fooled"]) >= 0.95
    kept = ~broken & ~want["fooled"]
    assert np.mean(np.isclose(result.adversarial[kept], want["x_best"][kept], atol=1e-3)) > 0.95


@pytest.mark.parametrize("random_start", [True, False])
def test_fgsm_rs_is_one_signed_step_from_a_uniform_start(random_start):
    """Wong, Rice & Kolter, Algorithm 3, against NumPy on a linear softmax model: a start uniform in the epsilon ball
    (the per-image draws of PGD's start), one step of 1.25 epsilon along the sign of the cross-entropy's gradient,
    clipped to the ball and [0, 255]; without the random start, the step from the clean image."""
    rng = np.random.RandomState(3)
    w, b = rng.normal(0, 0.02, [48, 5]), rng.normal(0, 0.5, 5)
    x = rng.uniform(0, 255, [40, 4, 4, 3]).astype(np.float32)
    labels = np.argmax(x.reshape(40, -1) @ w + b, axis=1)
    attack = build_attack("fgsm-rs", dict(epsilon=4.0, seed=5, random_start=random_start))
    assert attack.label == ("FGSM-RS" if random_start else "FGSM")

    def linear(t):
        return tf.matmul(tf.reshape(tf.cast(t, tf.float64), [-1, 48]), w) + b
    with tf.Graph().as_default():
        index = tf.range(40, dtype=tf.int64)
        noise = uniform_per_image(index, 5, 1, [4, 4, 3], -4.0, 4.0)
        result = attack.attack(tf.constant(x), tf.constant(labels, tf.int32), Classifier(linear, 5), index)
        noise, result = run([noise, result])
    start = np.clip(x + noise, 0, 255) if random_start else x
    logits = start.reshape(40, -1).astype(np.float64) @ w + b
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    grad = ((p - np.eye(5)[labels]) @ w.T).reshape(x.shape)           # d CE / d x
    want = np.clip(start + 5.0 * np.sign(grad), np.maximum(x - 4.0, 0), np.minimum(x + 4.0, 255))
    np.testing.assert_allclose(result.adversarial, want, atol=1e-3)
    np.testing.assert_array_equal(result.success, np.argmax(want.reshape(40, -1) @ w + b, axis=1) != labels)


def test_fgsm_rs_with_a_step_of_two_epsilon_ends_on_the_balls_faces():
    """From step_ratio 2 on, start + step crosses the ball in every coordinate: the perturbation is epsilon in each
    (short of the [0, 255] box), wherever the random start was."""
    rng = np.random.RandomState(4)
    w = rng.normal(0, 0.02, [48, 5])
    x = rng.uniform(20, 235, [30, 4, 4, 3]).astype(np.float32)
    labels = np.argmax(x.reshape(30, -1) @ w, axis=1)
    with tf.Graph().as_default():
        found = [build_attack("fgsm-rs", dict(epsilon=8.0, seed=2, step_ratio=ratio)).attack(
            tf.constant(x), tf.constant(labels, tf.int32),
            Classifier(lambda t: tf.matmul(tf.reshape(tf.cast(t, tf.float64), [-1, 48]), w), 5),
            tf.range(30, dtype=tf.int64)).adversarial for ratio in (1.25, 2.0)]
        short, faces = run(found)
    np.testing.assert_allclose(np.abs(faces - x), 8.0, atol=1e-3)
    assert np.mean(np.abs(np.abs(short - x) - 8.0) > 0.01) > 0.2     # 1.25 epsilon: many coordinates inside


ATTACK_SETTINGS = {"pgd": dict(iterations=5), "fgsm-rs": dict(), "apgd-ce": dict(iterations=10), "apgd-dlr": dict(iterations=10),
                   "apgd-t": dict(iterations=5, target_classes=2), "square": dict(queries=300, p_init=0.3),
                   "fab-t": dict(iterations=10, target_classes=2),
                   "autoattack": dict(iterations=5, target_classes=2, queries=40)}


def test_every_registered_attack_is_covered():
    assert sorted(ATTACK_SETTINGS) == sorted(set(ATTACKS.names()) - {"clean"})


@pytest.mark.parametrize("name", sorted(ATTACK_SETTINGS))
def test_every_attack_stays_in_the_ball_and_the_range_and_ignores_the_batch(name, trained_mlp):
    graph, session, image, label, images, labels = trained_mlp
    attack = build_attack(name, dict(ATTACK_SETTINGS[name], epsilon=6.0, seed=4))
    with graph.as_default():
        index = tf1.placeholder(tf.int64, [None])
        result = attack.attack(image, label, MLP, index)
        whole = session.run(result, {image: images, label: labels, index: np.arange(200)})
        part = session.run(result, {image: images[50:90], label: labels[50:90], index: np.arange(50, 90)})
    assert np.abs(whole.adversarial - images).max() <= 6.0 + 1e-4
    assert whole.adversarial.min() >= 0 and whole.adversarial.max() <= 255
    assert (~whole.correct_top1).sum() > 0                        # it does something
    np.testing.assert_array_equal(part.correct_top1, whole.correct_top1[50:90])
    if name != "pgd":
        np.testing.assert_array_equal(whole.success, ~whole.correct_top1)     # untargeted: success = misclassified


def test_square_uses_no_gradient_and_breaks_a_clean_model(trained_mlp):
    """Square reads logits only: it works through a model whose gradient is zero everywhere."""
    graph, session, image, label, images, labels = trained_mlp

    def masked(x):          # the same function, but a zero gradient (stop_gradient): gradient masking
        return mlp(tf.stop_gradient(x) + 0.0 * x)
    with graph.as_default():
        # 1000 queries: the authors' windows never start in the last row or column, which on these 8x8 images
        # leaves 15 of 64 pixels at their start (docs/FACTS.md Sec. 8): 63% error after 300 queries, 98.5% after 1000
        square = build_attack("square", dict(epsilon=16.0, queries=1000, p_init=0.3, seed=0)).attack(image, label,
                                                                                         Classifier(masked, CLASSES))
        pgd = build_attack("pgd", dict(iterations=10, epsilon=16.0, targeted=False, seed=0)).attack(
            image, label, Classifier(masked, CLASSES))
        square, pgd = session.run([square, pgd], {image: images, label: labels})
    assert (~square.correct_top1).mean() > 0.8
    assert (~pgd.correct_top1).mean() < 0.2          # gradient attacks are blind here


def test_the_composite_is_at_least_as_strong_as_each_component(trained_mlp):
    graph, session, image, label, images, labels = trained_mlp
    composite = build_attack("autoattack", dict(epsilon=5.0, iterations=10, target_classes=2, queries=60, seed=1))
    with graph.as_default():
        clean = build_attack("clean").attack(image, label, MLP)
        results = session.run([a.attack(image, label, MLP) for a in [composite] + composite.stages()[1:]] + [clean],
                              {image: images, label: labels})
    errors = [(~r.correct_top1).mean() for r in results[:-1]]
    assert errors[0] >= max(errors[1:]) and errors[0] > 0
    union = np.any([~r.correct_top1 for r in results[1:]], axis=0)       # the clean errors included
    np.testing.assert_array_equal(~results[0].correct_top1, union)


@pytest.mark.parametrize("name", [pytest.param("apgd-ce", marks=pytest.mark.full),
                                  pytest.param("apgd-t", marks=pytest.mark.full), "autoattack"])
def test_later_runs_on_no_image_still_robust_are_skipped(name):
    """Once every image is broken, the later runs attack an empty batch, on which TensorFlow's
    CPU convolutions fail: they must be skipped (seen on the demo's clean model)."""
    from nets import build_spec, logits
    spec = build_spec("ResNetDenoise", 50, blocks=(1, 1), widths=(4, 8), stem="small", stem_width=8,
                      num_classes=4, image_size=12)
    settings = dict(epsilon=255.0, iterations=2, target_classes=2, queries=5, restarts=2, seed=0)
    images = np.random.RandomState(0).uniform(0, 255, [5, 12, 12, 3])
    with tf.Graph().as_default():
        model = Classifier(lambda t: logits(t, spec, training=False), 4)
        image, label = tf.constant(images, tf.float32), tf1.placeholder(tf.int32, [5])
        attack = build_attack(name, settings).attack(image, label, model)
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            wrong = (session.run(model.logits(image)).argmax(1) + 1) % 4     # misclassified from the start
            result = session.run(attack, {label: wrong})
    assert not result.correct_top1.any()


def test_fab_projection_matches_the_reference():
    """The box-constrained projection onto a hyperplane (FAB, Sec. 3.1) against the NumPy one, reachable,
    box-bound and unreachable cases alike."""
    from attacker.fab import project_onto_boundary
    rng = np.random.RandomState(3)
    points = rng.uniform(0, 255, [300, 40])
    points[rng.uniform(size=points.shape) < 0.1] = 0.0
    w = rng.normal(0, 1, [300, 40]) * rng.choice([0.01, 1.0, 30.0], [300, 1])
    w[rng.uniform(size=w.shape) < 0.1] = 0.0
    b = np.sum(w * points, axis=1) + rng.normal(0, 1, 300) * np.abs(w).sum(axis=1) * rng.choice([3, 60, 400], 300)
    with tf.Graph().as_default():
        got = run(project_onto_boundary(tf.constant(points), tf.constant(w), tf.constant(b)))
    want = ref.fab_project_linf(points, w, b)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    reached = np.isclose(np.sum(w * (points + want), axis=1), b, rtol=1e-9, atol=1e-6)
    assert 0 < reached.sum() < 300                                   # both kinds of case occur


def linear_model(seed, classes=5, size=4):
    rng = np.random.RandomState(seed)
    w, b = rng.normal(0, 0.02, [size * size * 3, classes]), rng.normal(0, 0.5, classes)
    x = rng.uniform(0, 255, [60, size, size, 3])
    labels = np.argmax(x.reshape(60, -1) @ w + b, axis=1)
    labels[:6] = (labels[:6] + 1) % classes                          # 6 images misclassified from the start

    def logits(t):
        return tf.matmul(tf.reshape(tf.cast(t, tf.float64), [-1, size * size * 3]), w) + b
    return w, b, x, labels, Classifier(logits, classes)


def test_fab_t_on_a_linear_model_follows_the_reference_run():
    """FAB-T (two target classes, 20 iterations) breaks the same images with the same closest points as the
    NumPy run of the authors' algorithm; the images misclassified from the start are left as they are."""
    w, b, x, labels, classifier = linear_model(5)
    attack = build_attack("fab-t", dict(iterations=20, epsilon=6.0, target_classes=2))
    with tf.Graph().as_default():
        result = run(attack.attack(tf.constant(x, tf.float32), tf.constant(labels, tf.int32), classifier))
    want = ref.fab_t_linear(w, b, x.astype(np.float32).astype(np.float64), labels, 6.0, target_classes=2, n_iter=20)
    broken = ~result.correct_top1
    assert 6 < broken.sum() < 60 and np.mean(broken[6:] == ~want["robust"][6:]) >= 0.95
    np.testing.assert_allclose(result.adversarial[:6], x[:6], atol=1e-4)
    both = broken & ~want["robust"]
    np.testing.assert_allclose(result.adversarial[both], want["adv"][both], atol=1e-2)
    assert np.abs(result.adversarial - x).max() <= 6.0 + 1e-3


@pytest.mark.parametrize("name", ["apgd-ce", "square", "fab-t"])
def test_an_attack_run_alone_leaves_misclassified_images_alone(name):
    """As in the authors' code: an image the model already gets wrong is not attacked (kept as it is)."""
    _, _, x, labels, classifier = linear_model(6)
    attack = build_attack(name, dict(ATTACK_SETTINGS[name], epsilon=8.0, seed=2))
    with tf.Graph().as_default():
        result = run(attack.attack(tf.constant(x, tf.float32), tf.constant(labels, tf.int32), classifier))
    np.testing.assert_array_equal(result.adversarial[:6], x[:6].astype(np.float32))
    assert not result.correct_top1[:6].any() and (~result.correct_top1[6:]).any()
