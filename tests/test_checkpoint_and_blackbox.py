"""Weights round trip, strict loading with a useful message, and black-box directory mode."""
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

import main
from engine.classify_folder import read_resized
from engine.predictor import Predictor
from nets import BuildOptions, build_spec
from nets.checkpoint import CheckpointMismatch, read_weights
from tests.tf_helpers import write_random_weights

tf1 = tf.compat.v1

ARCH_ARGS = ["--arch", "ResNetDenoise", "--blocks", "1,1,1,1", "--widths", "4,4,8,8", "--stem", "small",
             "--stem-width", "8", "--num-classes", "5", "--image-size", "16"]
SPEC = build_spec("ResNetDenoise", 50, blocks=(1, 1, 1, 1), widths=(4, 4, 8, 8), stem="small", stem_width=8,
                  num_classes=5, image_size=16)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_random_weights(str(tmp_path_factory.mktemp("w") / "tiny.npz"), SPEC)


def test_npz_round_trip_gives_identical_weights(weights):
    predictor = Predictor(SPEC, BuildOptions(), weights)
    with predictor.graph.as_default():
        loaded = predictor.session.run({v.op.name: v for v in tf1.global_variables()})
    saved = read_weights(weights)
    assert sorted(saved) == sorted(loaded)
    for name in saved:
        np.testing.assert_array_equal(saved[name], loaded[name])


def test_tf_checkpoint_loads_like_npz(tmp_path):
    npz = str(tmp_path / "w.npz")
    write_random_weights(npz, SPEC, checkpoint_prefix=str(tmp_path / "ckpt" / "model"))
    images = np.random.RandomState(0).randint(0, 256, [2, 16, 16, 3]).astype(np.uint8)
    from_npz = Predictor(SPEC, BuildOptions(), npz)(images)
    from_ckpt = Predictor(SPEC, BuildOptions(), str(tmp_path / "ckpt"))(images)    # global_step is skipped
    np.testing.assert_array_equal(from_npz, from_ckpt)


def test_mismatch_lists_missing_unexpected_and_misshaped(weights):
    other = build_spec("ResNet", 50, blocks=(1, 1, 1, 1), widths=(4, 4, 8, 16), stem="small", stem_width=8,
                       num_classes=5, image_size=16)
    with pytest.raises(CheckpointMismatch) as error:
        Predictor(other, BuildOptions(), weights)
    message = str(error.value)
    assert "unexpected (not in the model): group0_denoise/" in message     # ResNetDenoise blocks
    assert "mis-shaped: group3/block0/conv1/W (checkpoint [1, 1, 32, 8] vs model [1, 1, 32, 16])" in message
    assert "and " in message and "more" in message                          # long lists are cut
    assert "--ignore-mismatch" in message


def test_ignore_mismatch_loads_what_matches(weights):
    other = build_spec("ResNet", 50, blocks=(1, 1, 1, 1), widths=(4, 4, 8, 8), stem="small", stem_width=8,
                       num_classes=5, image_size=16)
    predictor = Predictor(other, BuildOptions(), weights, ignore_mismatch=True)
    assert "unexpected" in predictor.load_message
    with predictor.graph.as_default():
        conv0 = predictor.session.run([v for v in tf1.global_variables() if v.op.name == "conv0/W"][0])
    np.testing.assert_array_equal(conv0, read_weights(weights)["conv0/W"])


def write_images(directory, count, size=20):
    os.makedirs(directory, exist_ok=True)
    rng = np.random.RandomState(7)
    names = []
    for i in range(count):
        name = "img{:02d}.{}".format(count - i, "png" if i % 2 else "jpg")   # not created in sorted order
        cv2.imwrite(os.path.join(directory, name), rng.randint(0, 256, [size, size + 3, 3]).astype(np.uint8))
        names.append(name)
    return sorted(names)


def test_eval_directory_writes_predictions_and_logits(tmp_path, weights):
    names = write_images(str(tmp_path / "images"), 5)
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    predictions, logits_file = str(tmp_path / "pred.txt"), str(tmp_path / "logits.npy")
    code = main.main(["--eval-directory", str(tmp_path / "images"), "--load", weights, "--prediction-file",
                      predictions, "--logits-file", logits_file, "--batch", "2"] + ARCH_ARGS)
    assert code == 0
    saved_logits = np.load(logits_file)
    assert saved_logits.dtype == np.float32 and saved_logits.shape == (5, 5)
    lines = open(predictions).read().splitlines()
    assert [line.split(",")[0] for line in lines] == names
    assert [int(line.split(",")[1]) for line in lines] == list(np.argmax(saved_logits, 1))
    # the same logits as classifying the images directly, one by one
    predictor = Predictor(SPEC, BuildOptions(), weights)
    for name, row in zip(names, saved_logits):
        image = read_resized(str(tmp_path / "images" / name), 16)
        np.testing.assert_allclose(predictor(image[None])[0], row, rtol=1e-5, atol=1e-5)


def test_eval_directory_errors(tmp_path, weights, capsys):
    assert main.main(["--eval-directory", str(tmp_path / "missing"), "--load", weights] + ARCH_ARGS) == 2
    assert "no such directory" in capsys.readouterr().err
    write_images(str(tmp_path / "bad"), 2)
    (tmp_path / "bad" / "broken.jpg").write_bytes(b"not a jpeg")
    assert main.main(["--eval-directory", str(tmp_path / "bad"), "--load", weights,
                      "--prediction-file", str(tmp_path / "p.txt")] + ARCH_ARGS) == 2
    err = capsys.readouterr().err
    assert "cannot read image" in err and "broken.jpg (OpenCV cannot decode it" in err
    assert not (tmp_path / "p.txt").exists()
    with pytest.raises(SystemExit):
        main.main(["--eval-directory", str(tmp_path / "bad")] + ARCH_ARGS)     # no --load
    assert "needs --load" in capsys.readouterr().err
