"""The ZMQ data server and its client (loopback only), the wire format, and the demo data set."""
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from tensorpack.dataflow import DataFromList

from data import DataError, receive_dataflow
from tools.digits import write_digits_demo
from data.transport import ZMQBatchReceiver, decode_batch, encode_batch, send_batches
from tests.data_tree import free_tcp_address, make_tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def numbered_batches(count, batch=4, size=6):
    """Batch k: every pixel k, labels k..k+batch-1, so the receiver can tell them apart."""
    return [[np.full((batch, size, size, 3), k, np.uint8), np.arange(k, k + batch, dtype=np.int32)]
            for k in range(count)]


def test_wire_format_round_trip_keeps_dtypes_shapes_and_values():
    arrays = [np.arange(24, dtype=np.uint8).reshape(2, 3, 4), np.array([-1, 7], np.int32),
              np.linspace(0, 1, 5, dtype=np.float32), np.zeros((0, 3), np.float64)]
    frames = [frame if isinstance(frame, bytes) else frame.tobytes() for frame in encode_batch(arrays)]
    decoded = decode_batch(frames)
    for sent, received in zip(arrays, decoded):
        assert received.dtype == sent.dtype and received.shape == sent.shape
        np.testing.assert_array_equal(received, sent)
        assert received.flags.writeable


@pytest.mark.parametrize("frames", [
    [b"not json"],
    [json.dumps({"format": "other", "version": 1, "arrays": []}).encode()],
    [json.dumps({"format": "feature-denoising-batch", "version": 1,
                 "arrays": [{"dtype": "uint8", "shape": [4]}]}).encode(), b"abc"],      # 3 bytes for 4
    [json.dumps({"format": "feature-denoising-batch", "version": 1,
                 "arrays": [{"dtype": "object", "shape": [1]}]}).encode(), b"x" * 8],   # no pickled objects
])
def test_malformed_messages_are_data_errors(frames):
    with pytest.raises(DataError, match="malformed batch message from tcp://peer"):
        decode_batch(frames, "tcp://peer")


def test_object_arrays_are_refused_by_the_sender():
    with pytest.raises(TypeError, match="cannot send dtype object"):
        encode_batch([np.array([{}], dtype=object)])


def test_server_and_client_exchange_batches_in_order():
    address = free_tcp_address()
    sent_batches = numbered_batches(5)
    server = threading.Thread(target=send_batches, args=(DataFromList(sent_batches, shuffle=False), address),
                              kwargs=dict(max_batches=5, progress=False))
    server.start()
    receiver = receive_dataflow(address, timeout=30, length=5)
    assert len(receiver) == 5
    received = []
    for batch in receiver:
        received.append(batch)
        if len(received) == 5:
            break
    server.join(timeout=30)
    assert not server.is_alive()
    for sent, got in zip(sent_batches, received):
        np.testing.assert_array_equal(got[0], sent[0])
        np.testing.assert_array_equal(got[1], sent[1])


def test_a_silent_server_is_a_clear_error_after_the_timeout():
    receiver = ZMQBatchReceiver(free_tcp_address(), timeout=0.5)
    with pytest.raises(DataError, match="no batch from tcp://127.0.0.1:.* within 0.5 s"):
        next(iter(receiver))


def test_an_infinite_receiver_has_no_length_unless_given():
    with pytest.raises(NotImplementedError, match="pass length="):
        len(ZMQBatchReceiver("tcp://127.0.0.1:1"))


def serve_command(*args):
    return [sys.executable, "-m", "tools.serve_data"] + [str(a) for a in args]


def test_serve_command_sends_decoded_training_batches(tmp_path):
    make_tree(str(tmp_path))
    address = free_tcp_address()
    server = subprocess.Popen(serve_command("--data", tmp_path, "--batch", 3, "--image-size", 16, "--workers", 0,
                                            "--addr", address, "--max-batches", 4),
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        batches = []
        for batch in receive_dataflow(address, timeout=120):
            batches.append(batch)
            if len(batches) == 4:
                break
        output, _ = server.communicate(timeout=60)
    finally:
        server.kill()
    assert server.returncode == 0, output
    assert "sent 4 batches to " + address in output
    for images, labels in batches:
        assert images.shape == (3, 16, 16, 3) and images.dtype == np.uint8
        assert labels.dtype == np.int32 and set(labels.tolist()) <= {0, 1, 2}


def test_serve_names_a_missing_data_folder(tmp_path):
    done = subprocess.run(serve_command("--data", tmp_path / "nowhere", "--batch", 2), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "data directory not found: {}".format(tmp_path / "nowhere") in done.stderr


# ------------------------------------------------------------------------- the demo data set

@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("demo") / "digits")
    counts, written = write_digits_demo(out, size=12, progress=False)
    assert written
    return out, counts


def test_demo_set_has_every_digit_in_the_imagenet_layout(demo_dir):
    from data.imagenet import list_classes, list_images
    out, counts = demo_dir
    assert list_classes(out) == ["digit{}".format(k) for k in range(10)]
    train, val = list_images(out, "train"), list_images(out, "val")
    assert (len(train), len(val)) == (counts["train"], counts["val"])
    assert len(train) + len(val) == 1797                     # all of sklearn's digits, none twice
    assert abs(len(val) / 1797.0 - 0.2) < 0.01
    assert sorted(set(label for _, label in val)) == list(range(10))   # stratified


def test_demo_images_are_the_digits_upscaled(demo_dir):
    import cv2
    from sklearn.datasets import load_digits
    out, _ = demo_dir
    digits = load_digits()
    path = os.path.join(out, "train", "digit{}".format(digits.target[0]), "digit{}_0000.JPEG".format(digits.target[0]))
    if not os.path.exists(path):       # index 0 went to val
        path = path.replace(os.sep + "train" + os.sep, os.sep + "val" + os.sep)
    image = cv2.imread(path)
    assert image.shape == (12, 12, 3)
    assert np.array_equal(image[..., 0], image[..., 1])                  # grey in BGR
    small = cv2.resize(image[..., 0].astype(np.float32), (8, 8), interpolation=cv2.INTER_AREA)
    expected = digits.images[0] * 255.0 / 16.0
    assert np.corrcoef(small.ravel(), expected.ravel())[0, 1] > 0.9


def test_demo_rerun_is_a_no_op(demo_dir):
    out, counts = demo_dir
    manifest = os.path.join(out, "demo.json")
    before = os.stat(manifest).st_mtime_ns
    assert write_digits_demo(out, size=12, progress=False) == (counts, False)
    assert os.stat(manifest).st_mtime_ns == before


def test_two_writers_of_one_demo_folder_leave_one_complete_set(tmp_path):
    """Two demos started on one --out at once: each writes in a folder of its own, the first to finish wins, the
    other keeps it; no file of either is lost (a shared temporary folder once lost 260 training digits)."""
    import concurrent.futures
    from data.imagenet import list_images
    out = str(tmp_path / "digits")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: write_digits_demo(out, size=12, progress=False), range(2)))
    assert sorted(written for _, written in results) == [False, True]
    counts = results[0][0]
    assert (len(list_images(out, "train")), len(list_images(out, "val"))) == (counts["train"], counts["val"])
    assert sorted(os.listdir(str(tmp_path))) == ["digits"]                # no temporary folder left
    assert write_digits_demo(out, size=12, progress=False) == (counts, False)
    assert oct(os.stat(out).st_mode & 0o777) == oct(0o755)


def test_demo_refuses_other_settings_and_foreign_folders(demo_dir, tmp_path):
    out, _ = demo_dir
    with pytest.raises(DataError, match="other settings"):
        write_digits_demo(out, size=16, progress=False)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="half-written or not a demo set"):
        write_digits_demo(str(tmp_path / "mine"), size=12, progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
