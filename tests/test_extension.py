"""A new denoising operation, attack and architecture, registered from outside the packages
(tests/toy_plugin.py), used through main.py with `--import`, with no other file edited."""
import json
import os

import numpy as np
import pytest

import flags
import main
from tests.data_tree import make_tree

PLUGIN = ["--import", "tests.toy_plugin"]
SMALL = ["--blocks", "1,1", "--widths", "4,8", "--stem", "small", "--stem-width", "8", "--num-classes", "3",
         "--image-size", "16"]


def run(argv, capsys):
    code = main.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    return out


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """3 classes (the toy architecture's): 24 training images, 9 validation images."""
    root = str(tmp_path_factory.mktemp("data"))
    make_tree(root, train_counts=(8, 8, 8), val_counts=(3, 2, 4))
    return root


def weights_for(path, arch_flags, scale_denoise_conv=1.0, seed=0):
    """Weights for the model of `arch_flags` (each variable N(0, 0.3), variances positive), with
    every denoising block's 1x1 conv multiplied by `scale_denoise_conv`; saved as .npz."""
    from flags import spec_from_args
    from engine.predictor import Predictor
    from nets import BuildOptions
    spec = spec_from_args(flags.build_parser().parse_args(["--eval"] + arch_flags))
    predictor = Predictor(spec, BuildOptions())
    with predictor.graph.as_default():
        import tensorflow as tf
        names = [(v.op.name, v.shape.as_list()) for v in tf.compat.v1.global_variables()]
    predictor.close()
    rng = np.random.RandomState(seed)
    values = {}
    for name, shape in names:
        value = rng.normal(0, 0.3, shape)
        if name.endswith("variance/EMA"):
            value = np.abs(value) + 0.5
        if "_denoise/conv/W" in name:
            value = value * scale_denoise_conv
        values[name] = value.astype(np.float32)
    np.savez(path, **values)
    return path


def test_a_toy_operation_is_used_by_main(tmp_path, tree, capsys):
    """D(x) = x / 2 with weights W gives the logits of the null block with W / 2."""
    import tests.toy_plugin  # noqa: F401  (so that random_weights can build the toy model in-process)
    toy = weights_for(str(tmp_path / "toy.npz"), ["--arch", "ResNet", "--denoise-op", "toy_halve"] + SMALL)
    null = weights_for(str(tmp_path / "null.npz"), ["--arch", "ResNet", "--denoise-op", "null"] + SMALL,
                          scale_denoise_conv=0.5)
    directory = os.path.join(tree, "val", "n01440764")
    outputs = {}
    for op, weights in (("toy_halve", toy), ("null", null)):
        logits_file = str(tmp_path / (op + ".npy"))
        run(PLUGIN + ["--eval-directory", directory, "--load", weights, "--arch", "ResNet", "--denoise-op", op,
                      "--prediction-file", str(tmp_path / (op + ".txt")), "--logits-file", logits_file] + SMALL, capsys)
        outputs[op] = np.load(logits_file)
    assert np.abs(outputs["null"]).max() > 0
    np.testing.assert_allclose(outputs["toy_halve"], outputs["null"], rtol=1e-4, atol=1e-5)


def test_a_toy_attack_is_used_by_main(tmp_path, tree, capsys):
    """--attack toy-invert: the counts are those of the clean model on the inverted images."""
    from data import build_eval_dataflow
    from flags import spec_from_args
    from engine.predictor import Predictor
    from nets import BuildOptions
    arch = ["--arch", "ResNetDenoise"] + SMALL
    weights = weights_for(str(tmp_path / "w.npz"), arch)
    result = str(tmp_path / "r.json")
    out = run(PLUGIN + ["--eval", "--data", tree, "--load", weights, "--attack", "toy-invert", "--attack-option",
                        "strength=1.0", "--batch", 4, "--workers", 0, "--result-file", result] + arch, capsys)
    record = json.load(open(result))
    assert record["attack"] == "Invert-1" and record["attack_settings"] == {"name": "toy-invert", "strength": 1.0}
    assert "Top1 Error" in out
    flow = build_eval_dataflow(tree, 4, image_size=16, workers=0)
    flow.reset_state()
    predictor = Predictor(spec_from_args(flags.build_parser().parse_args(["--eval"] + arch)), BuildOptions(), weights)
    labels = np.concatenate([labels for _, labels, _ in flow])
    predictions = np.concatenate([predictor(255 - images).argmax(1) for images, _, _ in flow])
    predictor.close()
    assert record["images"] == len(labels) == 9
    assert record["wrong_top1"] == int(np.sum(predictions != labels)) == record["successes"]


@pytest.mark.full
def test_a_toy_architecture_trains_and_evaluates_through_main(tmp_path, tree, capsys):
    """A new topology (its own backbone) with the toy operation: trained with the toy attack's
    settings path and evaluated under it, checkpointed with exactly its own variables."""
    from nets.checkpoint import read_weights
    logdir = str(tmp_path / "run")
    run(PLUGIN + ["--train", "--data", tree, "--arch", "ToyNet", "--logdir", logdir, "--epochs", 1, "--batch", 8,
                  "--workers", 0, "--attack", "toy-invert", "--eval-schedule", "clean:1,toy-invert:1",
                  "--eval-final", "clean"], capsys)
    variables = sorted(name for name in read_weights(logdir) if not name.startswith(("global_step", "learning_rate"))
                       and not name.endswith("Momentum"))
    assert variables == ["conv0/W", "conv0/bn/beta", "conv0/bn/gamma", "conv0/bn/mean/EMA", "conv0/bn/variance/EMA",
                         "group0_denoise/conv/W", "group0_denoise/conv/bn/beta", "group0_denoise/conv/bn/gamma",
                         "group0_denoise/conv/bn/mean/EMA", "group0_denoise/conv/bn/variance/EMA", "linear/W",
                         "linear/b"]
    stats = json.load(open(os.path.join(logdir, "stats.json")))
    assert "val-clean/top1_error" in stats[-1] and "val-invert1/top1_error" in stats[-1]
    run(PLUGIN + ["--eval", "--data", tree, "--load", logdir, "--arch", "ToyNet", "--attack", "toy-invert",
                  "--workers", 0], capsys)
