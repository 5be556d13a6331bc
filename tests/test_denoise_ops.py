"""Every denoising operation against the independent NumPy reference, in both layouts."""
import numpy as np
import pytest
import tensorflow as tf

from nets import BuildOptions
from nets.denoise import DENOISE_OPS, denoising_block
from nets.denoise.attention import dot_product_order
from tests import reference_ops as ref
from tests.tf_helpers import from_layout, run_graph, to_layout

tf1 = tf.compat.v1

# registry name -> (reference function, uses a window, embedded)
REFERENCES = {
    "nonlocal_gaussian": (ref.nonlocal_gaussian, False, True),
    "nonlocal_gaussian_plain": (ref.nonlocal_gaussian, False, False),
    "nonlocal_dot": (ref.nonlocal_dot, False, False),
    "nonlocal_dot_embedded": (ref.nonlocal_dot, False, True),
    "bilateral_gaussian": (ref.bilateral_gaussian, True, True),
    "bilateral_gaussian_plain": (ref.bilateral_gaussian, True, False),
    "bilateral_dot": (ref.bilateral_dot, True, False),
    "mean": (ref.mean_filter, True, False),
    "median": (ref.median_filter, True, False),
    "null": (lambda x: ref.null_op(x), False, False),
}
LAYOUTS = ["NHWC", pytest.param("NCHW", marks=pytest.mark.skipif(
    "not __import__('tests.tf_helpers', fromlist=['x']).nchw_runs_here()", reason="NCHW needs a GPU or XLA"))]


def options(layout, formulation="fast"):
    return BuildOptions(data_format=layout.data_format, formulation=formulation)


def test_every_registered_operation_has_a_reference_and_the_papers_properties():
    assert sorted(REFERENCES) == DENOISE_OPS.names()
    for name, (_, windowed, embedded) in REFERENCES.items():
        op = DENOISE_OPS.get(name)
        assert (op.windowed, op.embedded) == (windowed, embedded), name


def run_op(name, x_nhwc, data_format, window, embedding=None, formulation="fast"):
    """Run registry op `name` on x (given NHWC), with theta/phi weights [C, C/2] if embedded."""
    def build(layout, x):
        with tf1.variable_scope("op"):
            return DENOISE_OPS.get(name)(x, window, options(layout, formulation))

    def load_embedding(session):
        for var in tf1.global_variables():
            key = var.op.name.split("/")[-2]           # embedding_theta / embedding_phi
            var.load(embedding[key][None, None], session)

    out = run_graph(build, [to_layout(x_nhwc, data_format)], data_format,
                    init=load_embedding if embedding else None)
    return from_layout(out, data_format)


@pytest.mark.parametrize("formulation", ["definition", "fast"])
@pytest.mark.parametrize("data_format", LAYOUTS)
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_operation_matches_numpy(name, data_format, formulation):
    reference, windowed, embedded = REFERENCES[name]
    rng = np.random.RandomState(1)
    x = rng.normal(size=[2, 5, 6, 4])
    kwargs, embedding = {}, None
    if embedded:
        embedding = {"embedding_theta": rng.normal(size=[4, 2]), "embedding_phi": rng.normal(size=[4, 2])}
        kwargs = dict(theta_w=embedding["embedding_theta"], phi_w=embedding["embedding_phi"])
    for window in ([3, 5] if windowed else [3]):
        args = (x, window) if windowed else (x,)
        expected = reference(*args, **kwargs)
        got = run_op(name, x.astype(np.float32), data_format, window,
                     {k: v.astype(np.float32) for k, v in embedding.items()} if embedding else None, formulation)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4, err_msg="{} window {}".format(name, window))


@pytest.mark.parametrize("data_format", LAYOUTS)
@pytest.mark.parametrize("channels,size", [(3, 4), (12, 2)])   # C < N and C > N
def test_dot_product_orders_agree(data_format, channels, size):
    x = np.random.RandomState(2).normal(size=[2, size, size + 1, channels]).astype(np.float32)
    outs = {formulation: run_op("nonlocal_dot", x, data_format, 3, formulation=formulation)
            for formulation in ("fast", "definition")}
    np.testing.assert_allclose(outs["fast"], outs["definition"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outs["fast"], ref.nonlocal_dot(x.astype(np.float64)), rtol=1e-4, atol=1e-4)


def test_dot_product_order_rule():
    assert dot_product_order(channels=256, positions=56 * 56) == "channel"
    assert dot_product_order(channels=2048, positions=7 * 7) == "pairwise"


def test_median_output_is_an_element_of_its_window():
    x = np.random.RandomState(3).normal(size=[1, 4, 5, 2]).astype(np.float32)
    got = run_op("median", x, "NHWC", 3)
    for i in range(4):
        for j in range(5):
            for c in range(2):
                window = x[0, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2, c].ravel()
                assert got[0, i, j, c] in window
                # a median: no more than half of the window on either side
                assert (window < got[0, i, j, c]).sum() <= len(window) // 2
                assert (window > got[0, i, j, c]).sum() <= len(window) // 2


def test_mean_filter_is_unbiased_at_the_border():
    """Zero padding would pull a constant image towards 0 at the border (4/9 in a corner)."""
    x = np.full([1, 4, 4, 2], 7.0, np.float32)
    np.testing.assert_allclose(run_op("mean", x, "NHWC", 3), x, rtol=1e-6)
    x = np.arange(16, dtype=np.float32).reshape([1, 4, 4, 1])
    corner = run_op("mean", x, "NHWC", 3)[0, 0, 0, 0]
    assert corner == pytest.approx((0 + 1 + 4 + 5) / 4.0)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_block_is_identity_at_initialisation(name):
    x = np.random.RandomState(4).normal(size=[2, 4, 4, 6]).astype(np.float32)

    def build(layout, t):
        return denoising_block("denoise", t, name, options(layout), training=False)
    np.testing.assert_array_equal(run_graph(build, [x]), x)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_every_operation_has_a_gradient(name):
    """Gradients reach the input and every variable of the block (through a non-zero BN gamma)."""
    rng = np.random.RandomState(5)
    x = rng.normal(size=[2, 4, 4, 6]).astype(np.float32)

    def build(layout, t):
        y = denoising_block("denoise", t, name, options(layout), training=True)
        loss = tf.reduce_sum(y * tf.constant(rng.normal(size=x.shape).astype(np.float32)))
        variables = [v for v in tf1.trainable_variables()]
        op_out = DENOISE_OPS.get(name)(t, 3, options(layout)) if name != "null" else t * 1.0
        op_grad = tf.gradients(tf.reduce_sum(op_out * tf.constant(rng.normal(size=x.shape), tf.float32)), t)[0]
        return [op_grad] + tf.gradients(loss, [t] + variables), [v.op.name for v in variables]

    def nonzero_gamma(session):
        for var in tf1.global_variables():
            if var.op.name.endswith("gamma"):
                var.load(np.ones(var.shape.as_list(), np.float32), session)

    grads, names = run_graph(build, [x], init=nonzero_gamma)
    for label, grad in zip(["op input", "block input"] + names, grads):
        assert grad is not None, label
        assert np.all(np.isfinite(grad)), label
        assert np.abs(grad).max() > 0, "zero gradient for {} of {}".format(label, name)
