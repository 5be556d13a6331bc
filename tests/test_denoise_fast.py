"""The fast kernels of the denoising operations compute what the definitions compute: same
outputs and same gradients (input and embedding weights), in both layouts, including the
blocked softmax with several blocks and padded rows, inside a PGD-style loop, under XLA, in
half precision, and at the model level (the input gradient an attack follows)."""
import itertools

import numpy as np
import pytest
import tensorflow as tf

from nets import BuildOptions, build_spec, logits
from nets.denoise import DENOISE_OPS
from nets.denoise.attention import blocked_softmax_attention, softmax_attention
from nets.denoise.median import MEDIAN9_NETWORK, median_fill
from nets.denoise.neighbourhood import valid_offsets
from tests import reference_ops as ref
from tests.tf_helpers import from_layout, randomize_variables, run_graph, tiered, to_layout

tf1 = tf.compat.v1

LAYOUTS = ["NHWC", pytest.param("NCHW", marks=pytest.mark.skipif(
    "not __import__('tests.tf_helpers', fromlist=['x']).nchw_runs_here()", reason="NCHW needs a GPU or XLA"))]
SHAPE = [2, 5, 6, 4]           # N = 30 positions


def options(formulation, data_format="NHWC", **settings):
    return BuildOptions(data_format=data_format, formulation=formulation, **settings)


def op_and_gradients(name, x_nhwc, data_format, formulation, window=3, **settings):
    """(output, d input, d variables...) of sum(op(x) * r), r fixed; variables randomised with seed 0."""
    cotangent = np.random.RandomState(7).normal(size=x_nhwc.shape).astype(np.float32)

    def build(layout, x):
        with tf1.variable_scope("op"):
            y = DENOISE_OPS.get(name)(x, window, options(formulation, layout.data_format, **settings))
        variables = tf1.trainable_variables()
        loss = tf.reduce_sum(y * tf.constant(to_layout(cotangent, data_format)))
        return [y] + tf.gradients(loss, [x] + variables)

    out = run_graph(build, [to_layout(x_nhwc, data_format)], data_format,
                    init=lambda s: randomize_variables(s, seed=0, scale=0.5))
    return [from_layout(t, data_format) if t.ndim == 4 and t.shape[0] == SHAPE[0] else t for t in out]


@pytest.mark.parametrize("data_format", LAYOUTS)
@pytest.mark.parametrize("name", DENOISE_OPS.names())
def test_fast_matches_plain_outputs_and_gradients(name, data_format):
    x = np.random.RandomState(3).normal(size=SHAPE).astype(np.float32)
    windowed = name.startswith(("bilateral", "mean", "median"))
    windows = [3, 5] if windowed and data_format == "NHWC" else [3]      # NCHW compiles with XLA: keep it short
    for window in windows:
        # 7 rows per block: the Gaussian's 30 query rows in 5 blocks of 6
        plain = op_and_gradients(name, x, data_format, "definition", window)
        fast = op_and_gradients(name, x, data_format, "fast", window, softmax_block_rows=7)
        assert len(plain) == len(fast)
        for k, (p, f) in enumerate(zip(plain, fast)):
            assert np.abs(p).max() > 0, "{}: zero tensor {}".format(name, k)
            np.testing.assert_allclose(f, p, rtol=2e-4, atol=2e-5 * np.abs(p).max(),
                                       err_msg="{} window {} tensor {}".format(name, window, k))


@pytest.mark.parametrize("data_format", LAYOUTS)
@pytest.mark.parametrize("block_rows", [1, 4, 8, 29, 30, 64])
def test_blocked_gaussian_any_block_size(block_rows, data_format):
    """Blocks that divide N, that need padded rows, one row, and a single block."""
    x = np.random.RandomState(4).normal(size=SHAPE).astype(np.float32) * 3
    plain = op_and_gradients("nonlocal_gaussian", x, data_format, "definition")
    fast = op_and_gradients("nonlocal_gaussian", x, data_format, "fast", softmax_block_rows=block_rows)
    for p, f in zip(plain, fast):
        np.testing.assert_allclose(f, p, rtol=2e-4, atol=2e-5 * np.abs(p).max())


@pytest.mark.parametrize("kernel", [lambda q, k, v: blocked_softmax_attention(q, k, v, rows=4), softmax_attention],
                         ids=["blocked", "one_block"])
def test_softmax_attention_kernels_match_numpy_directly(kernel):
    """Each kernel alone, against a float64 NumPy softmax attention and its analytic gradient."""
    rng = np.random.RandomState(5)
    q, k, v = rng.normal(size=[2, 11, 3]), rng.normal(size=[2, 11, 3]), rng.normal(size=[2, 11, 5])
    dy = rng.normal(size=[2, 11, 5])
    scores = q @ k.transpose(0, 2, 1)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    y = weights @ v
    d_weights = dy @ v.transpose(0, 2, 1)
    d_scores = weights * (d_weights - (d_weights * weights).sum(-1, keepdims=True))
    expected = [y, d_scores @ k, d_scores.transpose(0, 2, 1) @ q, weights.transpose(0, 2, 1) @ dy]

    def build(layout, qt, kt, vt):
        out = kernel(qt, kt, vt)
        return [out] + tf.gradients(out, [qt, kt, vt], grad_ys=tf.constant(dy, tf.float32))
    got = run_graph(build, [a.astype(np.float32) for a in (q, k, v)])
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)


def test_blocked_gaussian_never_builds_the_full_affinity():
    """Outside the blocked loops (whose bodies work on [rows, N] pieces), no tensor of the fast
    graph, forward or backward, has N x N elements per image; the plain graph has one."""
    n, rows = 48, 8
    with tf.Graph().as_default():
        x = tf1.placeholder(tf.float32, [2, 6, 8, 4])
        y = DENOISE_OPS.get("nonlocal_gaussian")(x, 3, options("fast", softmax_block_rows=rows))
        tf.gradients(tf.reduce_sum(y * y), [x] + tf1.trainable_variables())
        graph_def = tf1.get_default_graph().as_graph_def()
        library_nodes = [node for f in graph_def.library.function for node in f.node_def]
        sizes = []
        for op in tf1.get_default_graph().get_operations():
            for t in op.outputs:
                if t.shape.rank is not None and None not in t.shape.as_list()[1:]:
                    sizes.append(int(np.prod(t.shape.as_list()[1:])))
    assert library_nodes, "the blocked loops should live in while-loop functions"
    assert max(sizes) < n * n
    with tf.Graph().as_default():
        x = tf1.placeholder(tf.float32, [2, 6, 8, 4])
        DENOISE_OPS.get("nonlocal_gaussian")(x, 3, options("definition"))
        assert any(t.shape.as_list()[1:] == [n, n] for op in tf1.get_default_graph().get_operations()
                   for t in op.outputs if t.shape.rank == 3)


def test_median_network_selects_the_median_of_every_binary_input():
    """0-1 principle: a comparator network that selects the median of all 2^9 binary inputs
    selects it for every input."""
    for bits in itertools.product([0, 1], repeat=9):
        wires = list(bits)
        for i, j in MEDIAN9_NETWORK:
            wires[i], wires[j] = min(wires[i], wires[j]), max(wires[i], wires[j])
        assert wires[4] == sorted(bits)[4]


def test_median_fill_makes_the_fifth_smallest_the_lower_median():
    valid = valid_offsets(4, 5, 3)
    fill = median_fill(valid)
    rng = np.random.RandomState(0)
    for i in range(4):
        for j in range(5):
            values = rng.normal(size=9)
            valid_values = np.sort(values[valid[:, i, j]])
            filled = np.where(fill[:, i, j] < 0, -np.inf, np.where(fill[:, i, j] > 0, np.inf, values))
            assert np.sort(filled)[4] == valid_values[(len(valid_values) - 1) // 2]


def test_fast_median_with_ties_returns_an_input_value():
    x = np.random.RandomState(8).randint(0, 3, size=[2, 4, 5, 3]).astype(np.float32)
    fast = op_and_gradients("median", x, "NHWC", "fast")[0]
    np.testing.assert_array_equal(fast, ref.median_filter(x.astype(np.float64), 3))


def test_dot_product_fast_picks_the_cheaper_order():
    for channels, size, expected in [(4, 6, "channel"), (64, 4, "pairwise")]:
        with tf.Graph().as_default():
            x = tf1.placeholder(tf.float32, [2, size, size, channels])
            DENOISE_OPS.get("nonlocal_dot")(x, 3, options("fast"))
            square = [t for op in tf1.get_default_graph().get_operations() for t in op.outputs
                      if t.shape.rank == 3 and t.shape.as_list()[1:] == [size * size] * 2]
        assert bool(square) == (expected == "pairwise")


def pgd_like_gradient(formulation, use_xla):
    """Input gradient of the denoising op taken inside a tf.while_loop, as PGD builds it (with
    XLA: the whole loop compiled as one computation, as --attack-xla does)."""
    x = np.random.RandomState(9).normal(size=SHAPE).astype(np.float32)

    def build(layout, t):
        def body(i, adv):
            with tf1.variable_scope("op", reuse=tf1.AUTO_REUSE):
                y = DENOISE_OPS.get("nonlocal_gaussian")(adv, 3, options(formulation, softmax_block_rows=4))
            grad, = tf.gradients(tf.reduce_sum(y * y), adv)
            return i + 1, adv - 0.1 * tf.sign(grad)
        with tf1.variable_scope("op", reuse=tf1.AUTO_REUSE):     # create the variables outside the loop
            DENOISE_OPS.get("nonlocal_gaussian")(t, 3, options(formulation))
        def loop(start):
            return tf.while_loop(lambda i, _: i < 3, body, [tf.constant(0), start])[1]
        return tf1.xla.experimental.compile(loop, [t])[0] if use_xla else loop(t)
    return run_graph(build, [x], init=lambda s: randomize_variables(s, seed=0, scale=0.5))


@pytest.mark.parametrize("use_xla", [False, True])
def test_fast_gaussian_inside_a_loop_and_under_xla(use_xla):
    np.testing.assert_allclose(pgd_like_gradient("fast", use_xla), pgd_like_gradient("definition", False),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", DENOISE_OPS.names())
def test_fast_ops_run_in_bfloat16(name):
    """The fast attack path runs the model in bfloat16: every fast op must accept it."""
    x = np.random.RandomState(10).normal(size=SHAPE).astype(np.float32)

    def build(formulation):
        def fn(layout, t):
            with tf1.variable_scope("op"):
                return tf.cast(DENOISE_OPS.get(name)(tf.cast(t, tf.bfloat16), 3,
                                                     options(formulation, softmax_block_rows=7)), tf.float32)
        return fn
    init = lambda s: randomize_variables(s, seed=0, scale=0.5)     # noqa: E731
    fast, plain = run_graph(build("fast"), [x], init=init), run_graph(build("definition"), [x], init=init)
    np.testing.assert_allclose(fast, plain, rtol=0.05, atol=0.05 * np.abs(plain).max())


def test_unknown_formulation_is_an_error():
    with pytest.raises(ValueError, match="fast"):
        BuildOptions(formulation="quick")


@pytest.mark.parametrize("name", tiered(DENOISE_OPS.names(), default=("nonlocal_gaussian", "median")))
def test_fast_kernels_give_the_definitions_input_gradient_at_the_model_level(name):
    """What the default attack path relies on: in a whole model (every block, NHWC), the fast
    kernels give the input gradient of the attack loss that the definitions give."""
    spec = build_spec("ResNet", 50, blocks=(1, 1, 1, 1), widths=(4, 4, 8, 8), stem="small", stem_width=8,
                      num_classes=7, image_size=12, denoise_op=name, denoise_placement="block")
    images = np.random.RandomState(12).uniform(0, 255, [3, 12, 12, 3]).astype(np.float32)

    def gradient(formulation):
        def build(layout, image):
            out = logits(image, spec, training=False, options=options(formulation, softmax_block_rows=5))
            loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.constant([1, 2, 3]), logits=out)
            return tf.gradients(tf.reduce_sum(loss), image)[0]
        return run_graph(build, [images], init=lambda s: randomize_variables(s, seed=4))
    fast, definition = gradient("fast"), gradient("definition")
    assert np.abs(definition).max() > 0
    np.testing.assert_allclose(fast, definition, rtol=1e-3, atol=1e-4 * np.abs(definition).max())
    assert np.mean(np.sign(fast) == np.sign(definition)) > 0.999


# ---------------------------------------------------------------- the fast PGD path

def tiny_attack(**execution):
    """PGD-3 adversarial images of a tiny ResNetDenoise (random weights, non-trivial BN
    statistics), its variables created inside the attack loop (as in training), and the
    logits of the result."""
    from attacker import PGD
    from engine.graphs import AttackExecution, attacked_classifier
    spec = build_spec("ResNetDenoise", 50, blocks=(1, 1, 1, 1), widths=(4, 4, 8, 8), stem="small", stem_width=8,
                      num_classes=7, image_size=16)
    rng = np.random.RandomState(11)
    images = rng.uniform(0, 255, [4, 16, 16, 3]).astype(np.float32)
    labels = rng.randint(0, 7, [4]).astype(np.int32)

    def build(layout, image, label):
        model = attacked_classifier(spec, BuildOptions(layout.data_format), AttackExecution(**execution))
        adv, _ = PGD(3, epsilon=16, seed=1).perturb(image, label, model)
        return adv, model.logits(adv)
    return run_graph(build, [images, labels], init=lambda s: randomize_variables(s, seed=2)), images


@pytest.mark.parametrize("settings,tolerance", [
    pytest.param(dict(fold_batch_norm=True), 1e-3, marks=pytest.mark.full, id="folded_bn"),
    pytest.param(dict(xla=True), 1e-2, marks=pytest.mark.full, id="xla"),     # compiles the loop: about 8 s
])
def test_same_function_variants_are_the_float32_attack(settings, tolerance):
    """Folded BN and XLA compute the float32 attack's function: the same adversarial images."""
    (adv, out), images = tiny_attack()
    (adv_variant, out_variant), _ = tiny_attack(**settings)
    assert np.abs(adv - images).max() > 0
    # a sign(gradient) can flip where the gradient is ~0: allow a few pixels to differ
    assert np.mean(np.isclose(adv_variant, adv, atol=1e-3)) > 0.99
    np.testing.assert_allclose(out_variant, out, rtol=tolerance, atol=tolerance * np.abs(out).max())


def test_fast_pgd_path_stays_in_the_ball_and_mostly_agrees_with_float32():
    """bfloat16 + folded BN: a valid attack whose steps mostly follow the float32 gradient's signs."""
    (adv, _), images = tiny_attack()
    (adv_fast, out_fast), _ = tiny_attack(compute_dtype="bfloat16", fold_batch_norm=True)
    assert np.abs(adv_fast - images).max() <= 16 + 1e-3
    assert adv_fast.min() >= 0 and adv_fast.max() <= 255 and np.all(np.isfinite(out_fast))
    assert np.mean(np.isclose(adv_fast, adv, atol=1e-3)) > 0.8
