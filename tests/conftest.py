"""What the tests share: the two tiers, small data sets and tiny models made once per session,
and the registries put back after every test.

Tiers: `bash scripts/test.sh` runs every test not marked `full` (minutes); `bash scripts/test.sh
--full` runs them all. A test is `full` when it is a slower repetition of what the default tier
already exercises (more configurations, more processes, the independent oracles).
"""
import os
import sys

import pytest

import tf_environment  # noqa: F401,E402  (before TensorFlow)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Modules whose file must stay as it is (tests/test_pinned_logits.py pins numbers across
# refactors): their tier is set here. The default tier keeps one pinned model.
FULL_TIER_UNLESS = {
    "test_pinned_logits.py": ("[ResNetDenoise]", "test_every_pinned_model_computes_something_different")}


def pytest_collection_modifyitems(config, items):
    for item in items:
        keep = FULL_TIER_UNLESS.get(os.path.basename(str(item.fspath)))
        if keep is not None and not any(k in item.nodeid for k in keep):
            item.add_marker(pytest.mark.full)


@pytest.fixture(autouse=True)
def registries_restored():
    """Registries are process-wide: what a test registers (an `--import`ed plugin) is removed
    afterwards, and the plugin module forgotten, so that no test depends on the order of tests."""
    from attacker import ATTACKS
    from nets import ARCHITECTURES, BACKBONES, DENOISE_OPS
    from nets.denoise import FAST_KERNELS
    registries = [r._entries for r in (ATTACKS, ARCHITECTURES, BACKBONES, DENOISE_OPS)] + [FAST_KERNELS]
    saved, modules = [dict(r) for r in registries], set(sys.modules)
    yield
    for registry, before in zip(registries, saved):
        registry.clear()
        registry.update(before)
    for name in set(sys.modules) - modules:
        if name.startswith("tests.") and name.endswith("_plugin"):
            del sys.modules[name]


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    """ROOT/train and ROOT/val, 4 classes: 40 training images (5 steps of 8), 12 validation images."""
    from tests.cli import write_split
    root = str(tmp_path_factory.mktemp("data"))
    write_split(root, "train", 10, seed=0)
    write_split(root, "val", 3, seed=1)
    return root


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, data):
    """A log folder of 2 epochs of tests.cli.QUICK_TRAINING on `data` (model-5, model-10,
    stats.json); tests copy it (shutil.copytree) before they change it."""
    from tests.cli import QUICK_TRAINING, run_main
    logdir = str(tmp_path_factory.mktemp("finished") / "run")
    code, out, err = run_main("--train", "--data", data, "--logdir", logdir, "--epochs", 2, *QUICK_TRAINING)
    assert code == 0, (out + err)[-3000:]
    return logdir


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory):
    """Random weights of the tests' model (tests.cli.ARCH) as a .npz file, the denoising
    blocks' BN gammas at 0.5 so that the blocks change their input."""
    from tests.cli import arch_spec
    from tests.tf_helpers import write_random_weights
    return write_random_weights(str(tmp_path_factory.mktemp("random") / "w.npz"), arch_spec(), denoise_gamma=0.5)


@pytest.fixture(scope="session")
def eval_data(tmp_path_factory):
    """A validation set of 20 images (4 classes x 5) for the evaluation tests."""
    from tests.cli import write_split
    return write_split(str(tmp_path_factory.mktemp("eval_data")), "val", 5, seed=1)


@pytest.fixture(scope="session")
def trained_weights(tmp_path_factory, eval_data):
    """The tests' model trained on `eval_data`'s images themselves (BN in inference mode):
    accurate and not robust, so that every attack and stage has images to break."""
    from data import build_eval_dataflow
    from tests.cli import arch_spec
    from tests.tf_helpers import train_on
    flow = build_eval_dataflow(eval_data, 20, image_size=16, workers=0)
    flow.reset_state()
    images, labels, _ = next(iter(flow))
    return train_on(images, labels, arch_spec(), str(tmp_path_factory.mktemp("trained") / "w.npz"))


@pytest.fixture(scope="session")
def trained_mlp():
    """(graph, session, image placeholder, label placeholder, test images, test labels) with a
    small classifier (tests.tf_helpers.mlp) trained on synthetic patterns: accurate, worth attacking."""
    import numpy as np
    import tensorflow as tf
    from tests.tf_helpers import SIZE, mlp, synthetic_data
    tf1 = tf.compat.v1
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
    # every strength test assumes a model worth attacking
    assert accuracy > 0.95, "the fixture's classifier did not train ({:.2f})".format(accuracy)
    yield graph, session, image, label, test_images, test_labels
    session.close()

