"""Augmentations and the train/eval dataflows: shapes, dtypes, order, shards, corrupt files."""
import logging
import os
import re

import numpy as np
import pytest

from data import build_eval_dataflow, build_train_dataflow, fake_dataflow
from data.augment import (PCA_EIGVAL_BGR, PCA_EIGVEC_BGR, colour_jitter, eval_augmentor,
                          eval_resize_size, train_augmentor)
from data.errors import DataError
from data.imagenet import list_images, shard
from tests.data_tree import CLASSES, make_tree, random_image, write_image


# ------------------------------------------------------------------ augmentations

@pytest.mark.parametrize("size", [16, 32])
@pytest.mark.parametrize("shape", [(5, 7), (40, 30), (23, 90)])
def test_train_augmentation_shape_dtype_range(size, shape):
    augmentor = train_augmentor(size)
    rng = np.random.RandomState(0)
    for _ in range(10):
        out = augmentor.augment(random_image(rng, *shape))
        assert out.shape == (size, size, 3) and out.dtype == np.uint8


def test_train_augmentation_is_random_and_keeps_a_grey_image_grey_on_average():
    augmentor = train_augmentor(16)
    image = np.full((30, 30, 3), 128, np.uint8)
    outputs = [augmentor.augment(image) for _ in range(20)]
    assert len({out.tobytes() for out in outputs}) > 1
    assert 40 < np.mean(outputs) < 220


def test_eval_resize_size_scales_with_image_size():
    assert eval_resize_size(224) == 256
    assert eval_resize_size(32) == 37
    assert eval_resize_size(112) == 128


def test_eval_is_deterministic_and_shaped():
    augmentor = eval_augmentor(32)
    image = random_image(np.random.RandomState(1), 50, 70)
    first = augmentor.augment(image)
    assert first.shape == (32, 32, 3) and first.dtype == np.uint8
    for _ in range(3):
        np.testing.assert_array_equal(eval_augmentor(32).augment(image), first)


@pytest.mark.parametrize("size, shape, top, left", [(224, (256, 320), 16, 48), (32, (37, 50), 2, 9),
                                                    (32, (61, 37), 14, 2)])
def test_known_image_is_centre_cropped(size, shape, top, left):
    """When the shorter side already has the resize length, eval is a pure centre crop."""
    image = random_image(np.random.RandomState(2), *shape)
    out = eval_augmentor(size).augment(image)
    np.testing.assert_array_equal(out, image[top:top + size, left:left + size])


def test_lighting_constants_are_bgr():
    np.testing.assert_allclose(PCA_EIGVAL_BGR, np.array([0.0045, 0.0188, 0.2175]) * 255, rtol=1e-6)
    assert PCA_EIGVEC_BGR[0, 0] == pytest.approx(0.4203) and PCA_EIGVEC_BGR[2, 2] == pytest.approx(-0.5675)


def test_contrast_jitter_stretches_each_channel_around_its_own_mean():
    """The original's imgaug.Contrast((0.6, 1.4), clip=False) keeps each channel's mean."""
    contrast = [aug for aug in colour_jitter().aug_lists if type(aug).__name__ == "Contrast"]
    assert len(contrast) == 1
    rng = np.random.RandomState(3)
    image = np.stack([rng.uniform(10, 40, (8, 9)), rng.uniform(100, 140, (8, 9)),
                      rng.uniform(200, 250, (8, 9))], axis=-1).astype(np.float32)
    factor = 1.3
    out = contrast[0]._augment(image, factor)
    channel_mean = image.mean(axis=(0, 1), keepdims=True)
    np.testing.assert_allclose(out, (image - channel_mean) * factor + channel_mean, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(out.mean(axis=(0, 1)), image.mean(axis=(0, 1)), atol=1e-3)


def test_photometric_augmentors_describe_themselves_once_and_augment_as_tensorpacks(monkeypatch):
    """Same images and text as Tensorpack's own augmentors; the text (Tensorpack rebuilds it for each image it
    augments) is built once per augmentor, not once per image."""
    from tensorpack.dataflow import imgaug
    from tensorpack.dataflow.imgaug import base
    ours = train_augmentor(16, "light").augmentors[1:2] + colour_jitter().aug_lists
    assert [type(aug).__name__ for aug in ours] == ["ToFloat32", "BrightnessScale", "Contrast", "Saturation",
                                                   "Lighting"]
    image = random_image(np.random.RandomState(4), 12, 12).astype(np.float32)
    for aug in ours:
        tensorpacks = getattr(imgaug, type(aug).__name__)
        plain = tensorpacks.__new__(tensorpacks)
        plain.__dict__.update({k: v for k, v in aug.__dict__.items() if k != "_description"})
        aug.rng, plain.rng = np.random.RandomState(5), np.random.RandomState(5)
        np.testing.assert_array_equal(aug.augment(image.copy()), plain.augment(image.copy()))
        assert str(aug) == str(plain) and type(aug).__name__ + "(" in str(aug)

    described = []
    original = base._default_repr
    monkeypatch.setattr(base, "_default_repr", lambda self: described.append(type(self).__name__) or original(self))
    augmentor = train_augmentor(16, "light")
    for k in range(20):
        augmentor.augment(random_image(np.random.RandomState(k), 20, 20))
    assert sorted(described) == ["BrightnessScale", "Contrast", "Lighting", "Saturation", "ToFloat32"]


# ------------------------------------------------------------------ training flow

@pytest.fixture
def tree(tmp_path):
    root = str(tmp_path / "imagenet")
    make_tree(root, solid_val=True)
    return root


@pytest.mark.parametrize("workers, parallel", [(0, "process"), (2, "thread"), (2, "process")])
def test_train_batches(tree, workers, parallel):
    flow = build_train_dataflow(tree, batch_size=4, image_size=16, workers=workers, parallel=parallel)
    assert len(flow) == 15 // 4
    flow.reset_state()
    stream = iter(flow)
    for _ in range(len(flow) * 2 + 1):                      # infinite: more than an epoch
        images, labels = next(stream)
        assert images.shape == (4, 16, 16, 3) and images.dtype == np.uint8
        assert labels.shape == (4,) and labels.dtype == np.int32
        assert set(labels.tolist()) <= {0, 1, 2}
    assert flow.corrupt_images.count == 0


def test_train_rank_flows_read_their_shard(tree):
    lengths = [build_train_dataflow(tree, 2, 16, workers=0, rank=r, world_size=3).num_images for r in range(3)]
    assert lengths == [5, 5, 5]
    with pytest.raises(DataError, match="fewer than one batch"):
        build_train_dataflow(tree, 8, 16, workers=0, rank=0, world_size=3)


def test_train_skips_and_counts_a_corrupt_image_up_to_the_limit(tree, caplog):
    bad = os.path.join(tree, "train", CLASSES[1], "broken.JPEG")
    open(bad, "wb").write(b"not a jpeg at all")
    flow = build_train_dataflow(tree, batch_size=4, image_size=16, workers=0, max_unreadable_fraction=0.1)
    flow.reset_state()
    stream = iter(flow)
    with caplog.at_level(logging.WARNING):
        for _ in range(len(flow) * 3):
            images, _ = next(stream)
            assert images.shape == (4, 16, 16, 3)
    assert flow.corrupt_images.count >= 2 and flow.corrupt_images.paths == [bad]     # skipped each pass, one file
    assert caplog.text.count(bad) == 1                                                # and said once
    # the default limit, 0.1% of 16 images, is 0: the first unreadable image ends the stream
    flow = build_train_dataflow(tree, batch_size=4, image_size=16, workers=0)
    flow.reset_state()
    # one stream, whose first pass over the 17 files meets the broken one; a new stream for each batch read 4 files
    # of a new shuffle each time and missed it in all 12 about once in 25 runs
    stream = iter(flow)
    with pytest.raises(DataError, match=r"1 of the 16 training images of rank 0 in .* could not be read, more than "
                                        r"the 0 that --max-unreadable-fraction allows: " + re.escape(bad)):
        for _ in range(len(flow) * 3):
            next(stream)


def test_train_with_only_corrupt_images_fails_instead_of_hanging(tmp_path):
    root = str(tmp_path)
    for k in range(3):
        os.makedirs(os.path.join(root, "train", "c"), exist_ok=True)
        open(os.path.join(root, "train", "c", "{}.jpg".format(k)), "wb").write(b"")
    flow = build_train_dataflow(root, batch_size=2, image_size=16, workers=0, max_unreadable_fraction=0.9)
    flow.reset_state()
    with pytest.raises(DataError, match="3 of the 3 training images .* could not be read, more than the 2"):
        next(iter(flow))


# ------------------------------------------------------------------ evaluation flow

def batches_of(flow):
    flow.reset_state()
    return list(flow)


@pytest.mark.parametrize("layout", ["folders", "flat"])
@pytest.mark.parametrize("count", [1, 2, 3, 4, 5])
def test_eval_shards_yield_every_image_once_in_order(tmp_path, layout, count):
    root = str(tmp_path)
    val = make_tree(root, train_counts=(1, 1, 1), val_layout=layout, solid_val=True)
    seen_values, seen_labels, seen_indices = [], [], []
    for index in range(count):
        flow = build_eval_dataflow(root, batch_size=2, image_size=16, workers=0, shard_index=index,
                                   num_shards=count)
        batches = batches_of(flow)
        size = len(shard(val, index, count))
        assert len(flow) == len(batches) == -(-size // 2)
        assert sum(len(labels) for _, labels, _ in batches) == size
        for images, labels, indices in batches:
            assert images.dtype == np.uint8 and labels.dtype == np.int32 and images.shape[1:] == (16, 16, 3)
            seen_values += [int(round(image.mean())) for image in images]
            seen_labels += labels.tolist()
            seen_indices += indices.tolist()
    assert seen_labels == [label for _, label, _ in val]
    assert seen_indices == list(range(len(val)))          # each image's position in the whole split
    assert np.allclose(seen_values, [value for _, _, value in val], atol=2)


def test_eval_order_is_deterministic_with_workers(tree):
    expected = batches_of(build_eval_dataflow(tree, 4, 16, workers=0))
    flow = build_eval_dataflow(tree, 4, 16, workers=2, buffer_size=3)
    flow.reset_state()
    for _ in range(2):                                       # two passes, same result
        got = list(flow)
        assert len(got) == len(expected) == 3
        for batch, want in zip(got, expected):
            for part, want_part in zip(batch, want):
                np.testing.assert_array_equal(part, want_part)


def test_eval_dataflow_centre_crops_a_png(tmp_path):
    root = str(tmp_path)
    image = random_image(np.random.RandomState(3), 37, 50)
    write_image(os.path.join(root, "train", "only", "a.png"), image)
    write_image(os.path.join(root, "val", "only", "a.png"), image)
    (images, labels, _), = batches_of(build_eval_dataflow(root, 8, 32, workers=0))
    np.testing.assert_array_equal(images[0], image[2:34, 9:41])
    assert labels.tolist() == [0]


@pytest.mark.parametrize("workers", [0, 2])
def test_eval_corrupt_image_is_an_error(tree, workers):
    bad = list_images(tree, "val")[4][0]
    open(bad, "wb").write(b"\xff\xd8 truncated")
    flow = build_eval_dataflow(tree, 4, 16, workers=workers)
    with pytest.raises(DataError, match="cannot read evaluation image {}".format(bad)):
        batches_of(flow)


def test_empty_eval_shard_yields_nothing(tree):
    flow = build_eval_dataflow(tree, 4, 16, workers=2, shard_index=0, num_shards=12)
    assert len(flow) == 0 and batches_of(flow) == []


def test_fake_dataflow():
    flow = fake_dataflow(3, 8, 10, length=4)
    batches = batches_of(flow)
    assert len(batches) == len(flow) == 4
    images, labels = batches[0]
    assert images.shape == (3, 8, 8, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int32 and labels.max() < 10


@pytest.mark.parametrize("augmentation, flips", [("imagenet", True), ("light", False)])
def test_light_augmentation_never_mirrors_and_keeps_large_crops(augmentation, flips):
    """Left half black, right half white: a mirrored output is darker on the right."""
    image = np.zeros((32, 32, 3), np.uint8)
    image[:, 16:] = 255
    augmentor = train_augmentor(16, augmentation)
    mirrored, smallest_white = 0, 1.0
    for _ in range(60):
        out = augmentor.augment(image).astype(np.float32)
        mirrored += out[:, :8].mean() > out[:, 8:].mean()
        smallest_white = min(smallest_white, float((out > (out.max() + out.min()) / 2).mean()))
    assert (mirrored > 0) == flips
    if not flips:     # a crop of >= 50% of the area with aspect <= 4/3 keeps both halves in view
        assert 0.1 < smallest_white < 0.9


def test_unknown_augmentation_is_named():
    with pytest.raises(DataError, match="unknown training augmentation 'digits'; choose one of imagenet, light"):
        train_augmentor(16, "digits")



DECODE_AND_WAIT = """
import sys, time
sys.path.insert(0, {root!r})
from data import build_train_dataflow
flow = build_train_dataflow({tree!r}, batch_size=2, image_size=8, workers=2, parallel="process")
flow.reset_state()
next(iter(flow))
print("ready", flush=True)
time.sleep(600)
"""


def test_decode_workers_end_when_training_is_killed(tree):
    """A SIGKILLed training process (scheduler, OOM killer) must not leave its workers behind."""
    import signal
    import subprocess
    import sys
    import time
    import psutil
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    process = subprocess.Popen([sys.executable, "-c", DECODE_AND_WAIT.format(root=root, tree=tree)],
                               stdout=subprocess.PIPE, text=True)
    try:
        lines = iter(process.stdout.readline, "")
        assert any(line.strip() == "ready" for line in lines)     # after Tensorpack's warnings
        workers = psutil.Process(process.pid).children()
        assert len(workers) == 2
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    deadline = time.time() + 20
    while any(worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE for worker in workers):
        assert time.time() < deadline, "decode workers outlived their parent"
        time.sleep(0.1)
