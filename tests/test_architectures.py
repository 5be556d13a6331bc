"""Architectures: published variable names/shapes, layouts, small configurations, bad settings."""
import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from nets import ARCHITECTURES, BuildOptions, build_spec, logits
from tests.tf_helpers import nchw_runs_here, randomize_variables, run_graph, tiered

tf1 = tf.compat.v1

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST_DIR = os.path.join(ROOT, "docs", "checkpoints")
MANIFESTS = sorted(glob.glob(os.path.join(MANIFEST_DIR, "*.json")))


def model_variables(spec):
    """{name: shape} of the graph built for `spec` (training graph: nothing extra is created)."""
    with tf.Graph().as_default():
        image = tf1.placeholder(tf.float32, [None, spec.image_size, spec.image_size, 3])
        logits(image, spec, training=True)
        logits(image, spec, training=False)      # a second call reuses every variable
        return {v.op.name: v.shape.as_list() for v in tf1.global_variables()}


def test_nine_manifests_are_present():
    assert len(MANIFESTS) == 9, "expected the 9 checkpoint manifests in {}".format(MANIFEST_DIR)


@pytest.mark.full
@pytest.mark.parametrize("path", MANIFESTS, ids=[os.path.basename(p) for p in MANIFESTS])
def test_variables_match_published_manifest(path):
    with open(path) as f:
        manifest = json.load(f)
    got = model_variables(build_spec(manifest["arch"], manifest["depth"]))
    want = manifest["variables"]
    assert sorted(set(want) - set(got)) == [], "missing"
    assert sorted(set(got) - set(want)) == [], "unexpected"
    assert {k: got[k] for k in want} == want


TINY = dict(blocks=(1, 1, 1, 1), widths=(4, 4, 8, 8), stem="small", stem_width=8, num_classes=7, image_size=16)
TINY_ARCHS = {
    "ResNet": {},
    "ResNetDenoise": {},
    "ResNeXtDenoiseAll": dict(cardinality=4, widths=(4, 4, 8, 8), bottleneck_multiplier=2),
    "ResNet+median@block": dict(denoise_op="median", denoise_placement="block"),
    "ResNet+bilateral@group": dict(denoise_op="bilateral_gaussian", denoise_window=5),
}


def tiny_logits(name, data_format, images, seed=0):
    arch = name.split("+")[0]
    spec = build_spec(arch, 50, **{**TINY, **TINY_ARCHS[name]})
    return run_graph(lambda layout, x: logits(x, spec, training=False, options=BuildOptions(layout.data_format)),
                     [images], data_format,
                     init=lambda s: randomize_variables(s, seed))


@pytest.mark.parametrize("name", sorted(TINY_ARCHS))
def test_small_configuration_any_size_and_classes(name):
    images = np.random.RandomState(0).uniform(0, 255, [3, 16, 16, 3]).astype(np.float32)
    out = tiny_logits(name, "NHWC", images)
    assert out.shape == (3, 7) and np.all(np.isfinite(out))


@pytest.mark.skipif(not nchw_runs_here(), reason="NCHW needs a GPU or XLA")
@pytest.mark.parametrize("name", tiered(sorted(TINY_ARCHS), default=("ResNetDenoise",)))
def test_nchw_and_nhwc_give_the_same_logits(name):
    images = np.random.RandomState(1).uniform(0, 255, [2, 16, 16, 3]).astype(np.float32)
    nhwc = tiny_logits(name, "NHWC", images)
    nchw = tiny_logits(name, "NCHW", images)
    scale = np.abs(nhwc).max()
    assert scale > 0
    np.testing.assert_allclose(nchw, nhwc, rtol=1e-4, atol=1e-4 * scale)


def test_published_architectures_are_registered():
    assert {"ResNet", "ResNetDenoise", "ResNeXtDenoiseAll"} <= set(ARCHITECTURES.names())
    assert build_spec("ResNetDenoise", 152).blocks == (3, 8, 36, 3)
    assert build_spec("ResNeXtDenoiseAll", 101).cardinality == 32


@pytest.mark.parametrize("arch,depth,overrides,message", [
    ("ResNetX", 50, {}, "unknown architecture 'ResNetX'; choose one of"),
    ("ResNet", 34, {}, "unsupported depth 34"),
    ("ResNet", 50, dict(denoise_op="wavelet"), "unknown denoising operation 'wavelet'"),
    ("ResNet", 50, dict(denoise_placement="group"), "needs a denoising operation"),
    ("ResNet", 50, dict(denoise_op="mean", denoise_window=4), "positive odd number"),
    ("ResNet", 50, dict(blocks=(1, 1)), "one entry per group"),
])
def test_bad_settings_name_the_problem(arch, depth, overrides, message):
    with pytest.raises((KeyError, ValueError), match=message):
        build_spec(arch, depth, **overrides)


def test_denoise_op_alone_places_blocks_after_groups():
    spec = build_spec("ResNet", 50, denoise_op="median")
    assert spec.denoise_placement == "group"
    names = model_variables(build_spec("ResNet", 50, **{**TINY, "denoise_op": "median"}))
    assert "group3_denoise/conv/W" in names and not any("non_local" in n for n in names)


@pytest.mark.parametrize("data_format", ["NHWC", pytest.param("NCHW", marks=pytest.mark.skipif(
    not nchw_runs_here(), reason="NCHW needs a GPU or XLA"))])
def test_bn_groups_equal_separate_batches(data_format):
    """Training BN over groups of 3 images = BN run on each 3-image batch on its own; the
    EMAs move by the groups' average statistics."""
    from nets.layers import batch_norm
    from tests.tf_helpers import from_layout, to_layout
    x = np.random.RandomState(0).normal(2.0, 3.0, [6, 4, 4, 5]).astype(np.float32)

    def build(layout, t):
        with tf1.variable_scope("grouped"):
            grouped = batch_norm("bn", t, BuildOptions(layout.data_format, bn_group_size=3), training=True)
        with tf1.variable_scope("alone"):
            alone = [batch_norm("bn{}".format(k), part, BuildOptions(layout.data_format), training=True)
                     for k, part in enumerate(tf.split(t, 2))]
        with tf.control_dependencies([grouped] + alone):
            ema = {v.op.name: tf.identity(v) for v in tf1.global_variables() if "EMA" in v.op.name}
        return grouped, tf.concat(alone, 0), ema
    grouped, alone, ema = run_graph(build, [to_layout(x, data_format)], data_format)
    np.testing.assert_allclose(grouped, alone, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(from_layout(grouped, data_format)[:3].mean((0, 1, 2)), 0, atol=1e-4)
    for stat in ("mean", "variance"):
        expected = (ema["alone/bn0/{}/EMA".format(stat)] + ema["alone/bn1/{}/EMA".format(stat)]) / 2
        np.testing.assert_allclose(ema["grouped/bn/{}/EMA".format(stat)], expected, rtol=1e-5)


# ---------------------------------------------------------------- BN folded into the conv weights

def folded_and_plain(name, data_format, images, training=False):
    """(logits, d logits[:, 0] / d image) of the same weights built with and without
    BuildOptions.fold_batch_norm, and the variables each graph created."""
    spec = build_spec(name, 50, **{**TINY, **TINY_ARCHS[name]})

    def build(layout, x, fold):
        out = logits(x, spec, training=training, options=BuildOptions(layout.data_format, fold_batch_norm=fold))
        names = sorted((v.op.name, tuple(v.shape.as_list())) for v in tf1.global_variables())
        return out, tf.gradients(out[:, 0], x)[0], tf.constant(repr(names))
    return [run_graph(lambda layout, x: build(layout, x, fold), [images], data_format,
                      init=lambda s: randomize_variables(s, seed=3)) for fold in (True, False)]


@pytest.mark.parametrize("data_format", ["NHWC", pytest.param("NCHW", marks=[pytest.mark.full, pytest.mark.skipif(
    not nchw_runs_here(), reason="NCHW needs a GPU or XLA")])])
@pytest.mark.parametrize("name", tiered(["ResNetDenoise", "ResNeXtDenoiseAll"], default=("ResNeXtDenoiseAll",)))
def test_folded_batch_norm_is_the_same_model(name, data_format):
    """conv(x, W) * scale + shift == conv(x, W * scale) + shift: same variables, logits and input
    gradient (ResNeXt: grouped convs with a bias, which the CPU graph optimizer must not break)."""
    images = np.random.RandomState(2).uniform(0, 255, [3, 16, 16, 3]).astype(np.float32)
    (out, grad, names), (out_ref, grad_ref, names_ref) = folded_and_plain(name, data_format, images)
    assert names == names_ref
    assert np.abs(out_ref).max() > 0 and np.abs(grad_ref).max() > 0
    np.testing.assert_allclose(out, out_ref, rtol=1e-4, atol=1e-5 * np.abs(out_ref).max())
    np.testing.assert_allclose(grad, grad_ref, rtol=1e-3, atol=1e-5 * np.abs(grad_ref).max())


def test_training_mode_batch_norm_is_never_folded():
    """Batch statistics cannot be folded: in training mode the scope changes nothing."""
    images = np.random.RandomState(4).uniform(0, 255, [4, 16, 16, 3]).astype(np.float32)
    (out, grad, _), (out_ref, grad_ref, _) = folded_and_plain("ResNet", "NHWC", images, training=True)
    np.testing.assert_array_equal(out, out_ref)
    np.testing.assert_array_equal(grad, grad_ref)
