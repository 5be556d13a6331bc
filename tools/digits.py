"""A small real data set in the ImageNet layout, from scikit-learn's handwritten digits.

    python -m tools.digits --out DIR [--size 32]

`sklearn.datasets.load_digits()` ships with scikit-learn (1,797 8x8 grey images, 10
classes; nothing is downloaded). Written once as DIR/train/digit<k>/*.JPEG and
DIR/val/digit<k>/*.JPEG: a fixed, seeded, stratified split (20% val), images scaled to
0..255, upscaled to size x size (cubic), 3 identical BGR channels, JPEG quality 95. Folder
names sort in label order, so class id k is digit k. DIR/demo.json records what was written:
a re-run with the same settings is a no-op, and a folder that is half-written, foreign or
made with other settings is refused with a message saying what to do.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import cv2
import numpy as np

from data.errors import DataError

MANIFEST = "demo.json"
JPEG_QUALITY = 95


def demo_settings(size, val_fraction, seed):
    return {"source": "sklearn.datasets.load_digits", "size": size, "val_fraction": val_fraction,
            "seed": seed, "jpeg_quality": JPEG_QUALITY, "layout": "train|val/digit<k>/digit<k>_<index>.JPEG"}


def class_name(label):
    return "digit{}".format(label)


def digit_to_bgr(digit, size):
    """8x8 digit with values 0..16 -> uint8 size x size x 3 (cubic upscaling, grey in BGR)."""
    grey = np.clip(np.asarray(digit, np.float32) * (255.0 / 16.0), 0, 255)
    grey = cv2.resize(grey, (size, size), interpolation=cv2.INTER_CUBIC)
    grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def split_indices(labels, val_fraction, seed):
    """Fixed stratified split: sorted train and val indices into the digits data set."""
    from sklearn.model_selection import train_test_split
    train, val = train_test_split(np.arange(len(labels)), test_size=val_fraction, random_state=seed,
                                  stratify=labels)
    return sorted(train.tolist()), sorted(val.tolist())


def write_jpeg(path, image):
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise DataError("cannot encode {} as JPEG".format(path))
    with open(path, "wb") as f:
        f.write(encoded.tobytes())


def count_images(out_dir):
    """{split: number of .JPEG files under DIR/split/*/}."""
    counts = {}
    for split in ("train", "val"):
        top = os.path.join(out_dir, split)
        counts[split] = sum(len([n for n in os.listdir(os.path.join(top, c)) if n.endswith(".JPEG")])
                            for c in os.listdir(top)) if os.path.isdir(top) else 0
    return counts


def check_existing(out_dir, settings):
    """True if DIR already holds this demo (a no-op); False if DIR is absent or empty;
    DataError if it holds something else, other settings or a damaged copy."""
    if not os.path.exists(out_dir) or (os.path.isdir(out_dir) and not os.listdir(out_dir)):
        return False
    manifest_path = os.path.join(out_dir, MANIFEST)
    if not os.path.isfile(manifest_path):
        raise DataError("{} exists but has no {}: it is half-written or not a demo set; delete it or "
                        "choose another --out".format(out_dir, MANIFEST))
    with open(manifest_path) as f:
        manifest = json.load(f)
    if manifest.get("settings") != settings:
        raise DataError("{} holds a demo set made with other settings ({}); delete it or choose another "
                        "--out".format(out_dir, manifest_path))
    if count_images(out_dir) != manifest.get("counts"):
        raise DataError("{} is damaged: its image counts {} differ from {} in {}; delete it and re-run".format(
            out_dir, count_images(out_dir), manifest.get("counts"), manifest_path))
    return True


def write_split(top, images, labels, indices, size, progress):
    from tqdm import tqdm
    for index in tqdm(indices, desc="writing " + os.path.basename(top), unit="image", disable=not progress):
        folder = os.path.join(top, class_name(labels[index]))
        os.makedirs(folder, exist_ok=True)
        write_jpeg(os.path.join(folder, "{}_{:04d}.JPEG".format(class_name(labels[index]), index)),
                   digit_to_bgr(images[index], size))


def write_digits_demo(out_dir, size=32, val_fraction=0.2, seed=0, progress=True):
    """Write the demo set to `out_dir` unless it is already there; returns (counts, written).

    The files go to a sibling temporary folder of this call's own that is renamed to `out_dir` at the end,
    so `out_dir` is never left half-written by this function, even with another writer at work on it.
    """
    from sklearn.datasets import load_digits
    if size < 8:
        raise DataError("--size must be at least 8 (the digits are 8x8), got {}".format(size))
    out_dir = os.path.abspath(out_dir)
    settings = demo_settings(size, val_fraction, seed)
    if check_existing(out_dir, settings):
        with open(os.path.join(out_dir, MANIFEST)) as f:
            return json.load(f)["counts"], False
    digits = load_digits()
    train, val = split_indices(digits.target, val_fraction, seed)
    # A folder of our own: two writers at once (two demos on one --out) must not delete or mix each other's files
    partial = tempfile.mkdtemp(prefix="." + os.path.basename(out_dir) + ".partial-", dir=os.path.dirname(out_dir))
    os.chmod(partial, 0o755)                               # mkdtemp's 0700 would stay on the data folder
    try:
        for split, indices in (("train", train), ("val", val)):
            write_split(os.path.join(partial, split), digits.images, digits.target, indices, size, progress)
        counts = {"train": len(train), "val": len(val)}
        with open(os.path.join(partial, MANIFEST), "w") as f:
            json.dump({"settings": settings, "counts": counts,
                       "classes": [class_name(k) for k in range(10)]}, f, indent=1)
        try:
            if os.path.isdir(out_dir) and not os.listdir(out_dir):
                os.rmdir(out_dir)                          # empty (checked above)
            os.replace(partial, out_dir)
        except OSError:                                    # another writer finished first: keep its complete set
            if not check_existing(out_dir, settings):
                raise
            return counts, False
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return counts, True


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tools.digits", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to create (train/ and val/ inside)")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels, default 32")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        counts, written = write_digits_demo(args.out, args.size, args.val_fraction, args.seed)
    except DataError as error:
        print("error: {}".format(error), file=sys.stderr)
        return 2
    print("{} {}: {} train + {} val images of {}x{}, 10 classes (digit0..digit9)".format(
        "wrote" if written else "already there, nothing to do:", os.path.abspath(args.out),
        counts["train"], counts["val"], args.size, args.size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
