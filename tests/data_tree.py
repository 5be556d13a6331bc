"""Helpers for the data tests: small generated ImageNet-layout trees (no test functions here)."""
import os
import socket

import cv2
import numpy as np

CLASSES = ("n01440764", "n01443537", "n01484850")      # sorted, ImageNet-style names


def write_image(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(path, image), path
    return path


def random_image(rng, height=None, width=None):
    height = height or int(rng.randint(12, 41))
    width = width or int(rng.randint(12, 41))
    return rng.randint(0, 256, size=(height, width, 3), dtype=np.uint8)


def solid_image(value, height=20, width=28):
    """A one-value grey image: it survives JPEG and cubic resizing, so its mean names it."""
    return np.full((height, width, 3), value, dtype=np.uint8)


def make_tree(root, train_counts=(5, 4, 6), val_counts=(3, 2, 4), val_layout="folders", seed=0,
              solid_val=False):
    """ROOT/train/<class>/*.JPEG and ROOT/val in the given layout. Returns the val
    (file name, label, grey value or None) in the expected listing order."""
    rng = np.random.RandomState(seed)
    for label, count in enumerate(train_counts):
        for k in range(count):
            write_image(os.path.join(root, "train", CLASSES[label], "{}_{}.JPEG".format(CLASSES[label], k)),
                        random_image(rng))
    val, value = [], 10
    for label, count in enumerate(val_counts):
        for k in range(count):
            name = "ILSVRC2012_val_{:08d}.JPEG".format(len(val) + 1)
            image = solid_image(value) if solid_val else random_image(rng)
            folder = os.path.join(root, "val", CLASSES[label]) if val_layout == "folders" else os.path.join(root, "val")
            write_image(os.path.join(folder, name), image)
            val.append((name, label, value if solid_val else None))
            value += 12
    if val_layout == "flat":
        with open(os.path.join(root, "val", "val.txt"), "w") as f:
            f.writelines("{} {}\n".format(name, label) for name, label, _ in val)
    else:       # folder layout lists class folders in sorted order, then file names
        val.sort(key=lambda item: (item[1], item[0]))
    return val


def free_tcp_address():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return "tcp://127.0.0.1:{}".format(s.getsockname()[1])
