"""Black-box mode: classify every image of a directory (docs/FACTS.md Sec. 4). Images are read with OpenCV (BGR) and
resized to the model's input size with cubic interpolation (a plain resize, no crop), in sorted file-name order; the
output is one `filename,label` line per image and, optionally, the logits as float32 [images, classes]."""
import os

import cv2
import numpy as np
from tqdm import tqdm

from data.decode import read_bgr
from data.imagenet import IMAGE_EXTENSIONS, is_image_file
from files import atomic_write

from . import watchdog


def list_image_files(directory):
    if not os.path.isdir(directory):
        raise FileNotFoundError("--eval-directory: no such directory: {}".format(directory))
    names = sorted(n for n in os.listdir(directory) if is_image_file(n) and os.path.isfile(os.path.join(directory, n)))
    if not names:
        raise ValueError("--eval-directory: no image files ({}) in {}".format(" ".join(IMAGE_EXTENSIONS), directory))
    return names


def read_resized(path, size):
    try:
        image = read_bgr(path)
    except (OSError, ValueError) as error:
        raise ValueError("cannot read image {} ({}); remove it or fix it".format(path, error)) from None
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_CUBIC)


def classify_files(predictor, directory, names, batch_size=32):
    """Logits [len(names), classes] float32 for the named images of `directory`, in order."""
    size = predictor.spec.image_size
    outputs = []
    for start in tqdm(range(0, len(names), batch_size), desc="classifying", unit="batch"):
        batch = [read_resized(os.path.join(directory, n), size) for n in names[start:start + batch_size]]
        outputs.append(predictor(np.stack(batch)))
        watchdog.beat()
    return np.concatenate(outputs).astype(np.float32)


def write_predictions(names, logits, prediction_file, logits_file=None):
    """`filename,label` lines (label = argmax class index), written atomically; logits as .npy."""
    with atomic_write(prediction_file) as f:
        for name, label in zip(names, np.argmax(logits, axis=1)):
            f.write("{},{}\n".format(name, label))
    if logits_file:
        with open(logits_file, "wb") as f:      # exactly this path (np.save would append .npy)
            np.save(f, logits.astype(np.float32))
