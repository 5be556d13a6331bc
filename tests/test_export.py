"""Exports (tools/export.py): the SavedModel's and the ONNX file's logits are the Predictor's, for the published
architectures (shallow, as tests/test_architectures.py builds them) and every denoising operation, with uint8 and
float inputs; and each refusal exits non-zero with its cause: a missing or mismatched checkpoint, an unknown format,
a taken --out, tf2onnx missing. A failed export leaves nothing half-written."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from engine.predictor import Predictor
from nets import DENOISE_OPS, BuildOptions, logits
from nets.checkpoint import save_npz
from tests.cli import ROOT, arch_spec, environment
from tools import export

tf1 = tf.compat.v1

TOLERANCE = 1e-4            # max abs difference from the Predictor's logits
LOGIT_SCALE = 4.0           # the stand-in models' largest logit on their images
SHALLOW = ["--blocks", "1,1,1,1", "--widths", "4,4,8,8", "--stem", "small", "--stem-width", "8", "--num-classes", "7",
           "--image-size", "16"]
# The published configurations (R152.npz, R152-Denoise.npz, X101-DenoiseAll.npz), shallow; the ResNeXt one with
# tests/test_architectures.py's cardinality. Each exports both formats, with uint8 or float inputs.
PUBLISHED = {
    "ResNet": (["-d", "152"], [("onnx", "uint8"), ("savedmodel", "float")]),
    "ResNetDenoise": (["-d", "152"], [("savedmodel", "uint8"), ("onnx", "float")]),
    "ResNeXtDenoiseAll": (["-d", "101", "--cardinality", "4", "--bottleneck-multiplier", "2"],
                          [("onnx", "uint8"), ("savedmodel", "float")]),
}


def model_flags(arch, *extra):
    return ["--arch", arch, *SHALLOW, *extra]


def stand_in_images(size, levels=(30, 120, 220)):
    """One image per grey level, with noise: images that the model tells apart (random noise alone gives about the
    same logits for every image)."""
    noise = np.random.RandomState(0).randint(-30, 31, [len(levels), size, size, 3])
    return np.clip(np.array(levels)[:, None, None, None] + noise, 0, 255).astype(np.uint8)


def stand_in_value(name, value, rng):
    """A variable's stand-in value: BN gammas near 1 (the denoising blocks' near 0.5, so that the blocks count), betas
    near 0, the classifier N(0, 1 / fan-in); the convs keep their He-normal value, the BN statistics their start."""
    if name.endswith("gamma"):
        return (0.5 if "_denoise/" in name else 1.0) + rng.normal(0, 0.1, value.shape)
    if name.endswith(("beta", "linear/b")):
        return rng.normal(0, 0.1, value.shape)
    if name == "linear/W":
        return rng.normal(0, value.shape[0] ** -0.5, value.shape)
    return value


def assign(session, values):
    """Set variables ({variable: array}) in one run (a run per variable, as Variable.load does, takes seconds)."""
    session.run([v.initializer for v in values], {v.initializer.inputs[1]: value for v, value in values.items()})


def stand_in_weights(path, spec, images, seed=3, passes=40):
    """Random weights of the model `spec` as a .npz file (stand_in_value), then fitted to `images`: the BN statistics
    moved to theirs by training-mode passes (every layer's output near unit scale whatever the operation; a
    dot-product block cubes its input's scale), the classifier scaled to logits of at most LOGIT_SCALE."""
    rng = np.random.RandomState(seed)
    with tf.Graph().as_default():
        tf1.set_random_seed(seed)
        x = tf1.placeholder(tf.float32, [None, spec.image_size, spec.image_size, 3])
        training_pass, inference = logits(x, spec, training=True), logits(x, spec, training=False)
        variables = tf1.global_variables()
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            assign(session, {v: stand_in_value(v.op.name, value, rng) for v, value in zip(
                variables, session.run(variables))})
            for _ in range(passes):
                session.run(training_pass, {x: images})
            scale = LOGIT_SCALE / np.abs(session.run(inference, {x: images})).max()
            classifier = [v for v in variables if v.op.name.startswith("linear/")]
            assign(session, {v: value * scale for v, value in zip(classifier, session.run(classifier))})
            save_npz(session, path)
    return path


class StandIn:
    """Stand-in weights of the model of `flags`, a batch of images and the Predictor's logits of them."""

    def __init__(self, flags, folder):
        self.flags, spec = flags, arch_spec(flags)
        self.images = stand_in_images(spec.image_size)
        self.weights = stand_in_weights(os.path.join(folder, "w.npz"), spec, self.images)
        predictor = Predictor(spec, BuildOptions(), self.weights)
        try:
            self.logits = predictor(self.images)
        finally:
            predictor.close()
        assert np.abs(self.logits).max() <= 1.01 * LOGIT_SCALE and np.ptp(self.logits, axis=0).max() > 0.1, self.logits


def run(argv, capsys):
    """(exit code, stdout, stderr) of tools.export.main(argv) in this process."""
    code = export.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def export_model(model, fmt, kind, out, capsys, *extra):
    code, stdout, err = run(["--load", model.weights, *model.flags, "--format", fmt, "--input", kind, "--out", out,
                             *extra], capsys)
    assert code == 0, err[-3000:]
    assert "wrote {} {}".format(fmt, out) in stdout
    return out


def savedmodel_logits(folder, images):
    """Logits of the SavedModel's serving_default signature, loaded into a fresh graph (its input of images' type)."""
    with tf.Graph().as_default() as graph, tf1.Session(graph=graph) as session:
        signature = tf1.saved_model.loader.load(session, ["serve"], folder).signature_def["serving_default"]
        assert signature.inputs["images"].dtype == tf.as_dtype(images.dtype).as_datatype_enum
        return session.run(signature.outputs["logits"].name, {signature.inputs["images"].name: images})


def onnx_logits(path, images):
    """Logits of the ONNX file in onnxruntime (its input of images' type and size, any batch)."""
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    kind = {np.dtype(np.uint8): "tensor(uint8)", np.dtype(np.float32): "tensor(float)"}[images.dtype]
    assert [(i.name, i.type, i.shape[1:]) for i in session.get_inputs()] == [("images", kind, list(images.shape[1:]))]
    return session.run(["logits"], {"images": images})[0]


def check_exports(model, exports, folder, capsys, record_property, *extra):
    """Each (format, input) export's logits within TOLERANCE of the Predictor's; the differences are recorded as test
    properties (pytest --junitxml shows them)."""
    for fmt, kind in exports:
        out = os.path.join(folder, "model_{}_{}{}".format(kind, fmt, ".onnx" if fmt == "onnx" else ""))
        export_model(model, fmt, kind, out, capsys, *extra)
        images = model.images if kind == "uint8" else model.images.astype(np.float32)
        exported = (onnx_logits if fmt == "onnx" else savedmodel_logits)(out, images)
        difference = float(np.abs(exported - model.logits).max())
        record_property("max_abs_difference {} {}".format(fmt, kind), difference)
        assert exported.shape == model.logits.shape and difference <= TOLERANCE, (fmt, kind, difference)


@pytest.fixture(scope="module")
def denoise_model(tmp_path_factory):
    """The default tier's model: ResNetDenoise, shallow."""
    extra, _ = PUBLISHED["ResNetDenoise"]
    return StandIn(model_flags("ResNetDenoise", *extra), str(tmp_path_factory.mktemp("denoise")))


def test_savedmodel_and_onnx_give_the_predictors_logits(denoise_model, tmp_path, capsys, record_property):
    """Both formats and both input types, an earlier export replaced with --overwrite, and nothing else left."""
    _, exports = PUBLISHED["ResNetDenoise"]
    (tmp_path / "model_float_onnx.onnx").write_bytes(b"an earlier export")
    check_exports(denoise_model, exports, str(tmp_path), capsys, record_property, "--overwrite")
    assert sorted(os.listdir(tmp_path)) == ["model_float_onnx.onnx", "model_uint8_savedmodel"]
    loaded = tf.saved_model.load(str(tmp_path / "model_uint8_savedmodel")).signatures["serving_default"]
    eager = loaded(images=tf.constant(denoise_model.images))["logits"].numpy()
    assert np.abs(eager - denoise_model.logits).max() <= TOLERANCE


@pytest.mark.full
@pytest.mark.parametrize("arch", sorted(set(PUBLISHED) - {"ResNetDenoise"}))      # ResNetDenoise: the test above
def test_every_published_architecture_exports_like_the_predictor(arch, tmp_path, capsys, record_property):
    extra, exports = PUBLISHED[arch]
    model = StandIn(model_flags(arch, *extra), str(tmp_path))
    check_exports(model, exports, str(tmp_path / "out"), capsys, record_property)


@pytest.mark.full
@pytest.mark.parametrize("op", sorted(DENOISE_OPS.names()))
def test_every_denoising_operation_exports_like_the_predictor(op, tmp_path, capsys, record_property):
    model = StandIn(model_flags("ResNet", "--denoise-op", op), str(tmp_path))
    check_exports(model, [("onnx", "uint8"), ("savedmodel", "float")], str(tmp_path / "out"), capsys, record_property)


# ---------------------------------------------------------------- refusals

def test_a_missing_checkpoint_is_named(tmp_path, capsys):
    missing = str(tmp_path / "nowhere.npz")
    code, _, err = run(["--load", missing, *model_flags("ResNet"), "--format", "onnx", "--out", tmp_path / "m.onnx"],
                       capsys)
    assert code == 2 and "error: --load: weights file not found: {}".format(missing) in err
    assert os.listdir(tmp_path) == []


def test_a_checkpoint_of_another_architecture_is_refused_with_the_loaders_message(denoise_model, tmp_path, capsys):
    code, _, err = run(["--load", denoise_model.weights, *model_flags("ResNet"), "--format", "savedmodel", "--out",
                        tmp_path / "m"], capsys)
    assert code == 2
    assert "does not match the model" in err and "unexpected (not in the model): group0_denoise/" in err
    assert "Check --arch and -d" in err and os.listdir(tmp_path) == []


def refused(argv, capsys):
    """What tools.export wrote to stderr, having exited with 2."""
    code, _, err = run(argv, capsys)
    assert code == 2, err
    return err


def onnx_command(model, out, *extra):
    return ["--load", model.weights, *model.flags, "--format", "onnx", "--out", out, *extra]


def test_an_unknown_format_is_refused_with_the_choices(denoise_model, tmp_path, capsys):
    argv = onnx_command(denoise_model, tmp_path / "m.tflite")
    argv[argv.index("onnx")] = "tflite"
    assert "argument --format: invalid choice: 'tflite' (choose from 'savedmodel', 'onnx')" in refused(argv, capsys)
    assert os.listdir(tmp_path) == []


def test_a_taken_out_is_kept_unless_overwrite_and_then_only_an_earlier_export(denoise_model, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"kept")
    assert "--out {} already exists: pass --overwrite".format(out) in refused(onnx_command(denoise_model, out), capsys)
    assert out.read_bytes() == b"kept"
    folder = tmp_path / "photos"
    folder.mkdir()
    err = refused(onnx_command(denoise_model, folder, "--overwrite"), capsys)
    assert "--out {} exists and is not a file: it is not replaced, even with --overwrite".format(folder) in err
    err = refused(onnx_command(denoise_model, folder, "--overwrite", "--format", "savedmodel"), capsys)
    assert "is not a SavedModel folder" in err and sorted(os.listdir(tmp_path)) == ["m.onnx", "photos"]


def test_without_tf2onnx_the_pip_command_is_named(denoise_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)         # import tf2onnx fails
    err = refused(onnx_command(denoise_model, tmp_path / "m.onnx"), capsys)
    assert "--format onnx needs tf2onnx, which is not installed" in err
    assert "pip install -r requirements-export.txt" in err and os.listdir(tmp_path) == []


def test_no_load_and_nchw_are_refused(denoise_model, tmp_path, capsys):
    argv = onnx_command(denoise_model, tmp_path / "m.onnx")
    assert "--load is required" in refused(argv[2:], capsys)
    assert "drop --data-format NCHW" in refused(argv + ["--data-format", "NCHW"], capsys)


def test_a_failed_export_leaves_the_earlier_one_and_no_temporary(denoise_model, tmp_path, capsys, monkeypatch):
    earlier = tmp_path / "m"
    earlier.mkdir()
    (earlier / "saved_model.pb").write_bytes(b"the earlier export")

    def full_disk(graph_def, folder):
        os.makedirs(os.path.join(folder, "variables"))
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(export, "frozen_graph", lambda *args: (tf1.GraphDef(), None))      # no model needed here
    monkeypatch.setattr(export, "write_savedmodel", full_disk)
    code, _, err = run(["--load", denoise_model.weights, *denoise_model.flags, "--format", "savedmodel", "--out",
                        earlier, "--overwrite"], capsys)
    assert code == 2 and "No space left on device" in err
    assert os.listdir(tmp_path) == ["m"] and os.listdir(earlier) == ["saved_model.pb"]
    assert (earlier / "saved_model.pb").read_bytes() == b"the earlier export"


@pytest.mark.full            # the default tier calls main() in this process
def test_as_a_program_a_missing_checkpoint_exits_non_zero(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tools.export", "--load", str(tmp_path / "w.npz"), "--arch", "ResNet",
                           "--format", "onnx", "--out", str(tmp_path / "m.onnx")], cwd=ROOT, env=environment(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "error: --load: weights file not found: {}".format(tmp_path / "w.npz") in done.stderr
