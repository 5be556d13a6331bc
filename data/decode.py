"""Decode one image file and augment it, never raising: a failure becomes a `problem` string.

An exception would kill a Tensorpack worker thread or process (a thread pool then waits forever), so the map
functions report the problem in the datapoint and the main process decides: skip and count (training) or raise
(evaluation).

Datapoints: in (index, path, label) -> out [index, image or None, label, path, problem or None].
"""
import cv2
import numpy as np

# Parallelism comes from the dataflow's workers. OpenCV's own thread pool, once started in a process, deadlocks the
# children forked from it at their first resize, so keep it off.
cv2.setNumThreads(0)


def read_bgr(path):
    """uint8 BGR HxWx3 image, or raise ValueError saying why it cannot be read."""
    with open(path, "rb") as f:
        encoded = np.frombuffer(f.read(), dtype=np.uint8)
    if encoded.size == 0:
        raise ValueError("empty file")
    image = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ValueError("OpenCV cannot decode it (corrupt or not an image)")
    return image


class DecodeAndAugment:
    """Picklable map function: read the image at `path` and apply `augmentor` to it."""

    def __init__(self, augmentor):
        self.augmentor = augmentor

    def __call__(self, datapoint):
        index, path, label = datapoint
        try:
            image = self.augmentor.augment(read_bgr(path))
        except Exception as error:      # reported, not raised: see the module docstring
            return [index, None, label, path, "{}: {}".format(type(error).__name__, error)]
        return [index, image, label, path, None]
