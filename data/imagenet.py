"""ImageNet on disk, read offline: class ids from folder names, image lists, shards.

docs/FACTS.md Sec. 6: `train/<wnid>/*.JPEG` (1000 folders); validation either `val/<wnid>/*.JPEG` or a flat `val/`
with a label file (`val.txt` lines `name label`); nothing is downloaded, class metadata comes from the folders.
Sec. 3: class index k is the k-th of the 1000 ILSVRC-2012 WordNet ids in sorted order.

Layout read here (any number of classes, so small data sets in the same layout work):

    ROOT/train/<class>/<image>          class id k = k-th class folder name in sorted order
    ROOT/val/<class>/<image>            folder layout (class names must be train classes), or
    ROOT/val/<image> + ROOT/val/val.txt flat layout: lines `name label`, where label is a
                                        class index (0 <= label < classes) or a class name

Image files are recognised by extension, case-insensitively (IMAGE_EXTENSIONS); other files and hidden entries are
ignored. Nothing here decodes images or goes online (Tensorpack's ILSVRC12 reader, never used, fetches metadata).
"""
import collections
import logging
import os

import numpy as np

from .errors import DataError, first_few

# What OpenCV decodes; --eval, training and --eval-directory read the same list.
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VAL_LABEL_FILE = "val.txt"        # the flat layout's label file: ROOT/val/val.txt

logger = logging.getLogger(__name__)
_WARNED = set()             # (folder, count) of the absent-class warnings given, each said once per process


def is_image_file(name):
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def split_dir(root, split):
    """ROOT/split, or DataError naming it when it is not a directory."""
    if not os.path.isdir(root):
        raise DataError("data directory not found: {} (pass the folder that holds train/ and val/)".format(root))
    directory = os.path.join(root, split)
    if not os.path.isdir(directory):
        raise DataError("missing folder: {} (expected {}/<class>/*.JPEG{})".format(
            directory, split, " or a flat val/ with val/" + VAL_LABEL_FILE if split == "val" else ""))
    return directory


def subfolders(directory):
    """Sorted names of the visible sub-directories of `directory`."""
    return sorted(name for name in os.listdir(directory)
                  if not name.startswith(".") and os.path.isdir(os.path.join(directory, name)))


def list_classes(root, split="train"):
    """Sorted class-folder names of ROOT/split: class id k is the k-th name. DataError (naming the folder) if
    ROOT/split is missing or has no class folder."""
    directory = split_dir(root, split)
    classes = subfolders(directory)
    if not classes:
        raise DataError("no class folders in {} (expected {}/<class>/<image> sub-folders)".format(directory, split))
    return classes


def has_images(folder):
    return any(entry.is_file() and is_image_file(entry.name) for entry in os.scandir(folder))


def model_classes(root, num_classes):
    """The classes that label ROOT's images for a model with `num_classes` outputs, checked before anything runs:
    the class folders of ROOT/train (none of them empty: an empty folder that sorts first would shift every label
    after it), or, without ROOT/train, those of a folder-layout val/; their number must be `num_classes`. A flat val/
    without ROOT/train is labelled by index: returns the count, and every label of val.txt is checked against it."""
    train = os.path.join(root, "train")
    if os.path.isdir(train):
        source, classes = train, list_classes(root, "train")
        empty = [name for name in classes if not has_images(os.path.join(train, name))]
        if empty:
            raise DataError("empty class folder{}: {} in {}; an empty folder still takes a class index and shifts "
                            "every label after it: add images or remove it".format(
                                "s" if len(empty) > 1 else "", ", ".join(empty[:5]), train))
    elif val_layout(root) == "folders":
        source, classes = os.path.join(root, "val"), list_classes(root, "val")
    else:
        return num_classes
    if len(classes) != num_classes:
        raise DataError("{} has {} class folders but the model has {} classes (--num-classes {}); class k is the "
                        "k-th folder, so they must match".format(source, len(classes), num_classes, num_classes))
    return classes


def images_in_folder(folder):
    """Sorted paths of the image files directly inside `folder`; DataError if there are none."""
    names = sorted(name for name in os.listdir(folder)
                   if is_image_file(name) and os.path.isfile(os.path.join(folder, name)))
    if not names:
        raise DataError("empty class folder: {} has no image files ({}); add images or remove the folder".format(
            folder, " ".join(IMAGE_EXTENSIONS)))
    return [os.path.join(folder, name) for name in names]


def val_layout(root):
    """'flat' when ROOT/val/val.txt exists, 'folders' when ROOT/val has class folders."""
    directory = split_dir(root, "val")
    has_label_file = os.path.isfile(os.path.join(directory, VAL_LABEL_FILE))
    has_folders = bool(subfolders(directory))
    if has_label_file and has_folders:
        raise DataError("ambiguous validation layout in {}: it has both {} and class folders; "
                        "keep one of them".format(directory, VAL_LABEL_FILE))
    if not (has_label_file or has_folders):
        raise DataError("no validation data in {}: expected val/<class>/<image> folders or a flat val/ with "
                        "val/{}".format(directory, VAL_LABEL_FILE))
    return "flat" if has_label_file else "folders"


def resolve_classes(root, split, classes):
    """The class names (a list) or count (an int) to label `split` with. Default: the train folders (the class ids of
    training). Without ROOT/train, a folder-layout val/ names its own classes; a flat val/ then needs `classes`."""
    if isinstance(classes, int) and classes < 1:
        raise DataError("classes must be >= 1, got {}".format(classes))
    if classes is not None:
        return classes if isinstance(classes, int) else list(classes)
    if os.path.isdir(os.path.join(root, "train")) or split == "train":
        return list_classes(root, "train")
    if val_layout(root) == "folders":
        return list_classes(root, "val")
    raise DataError("cannot tell the classes of {}: {} is missing; pass classes= (names or a count)".format(
        os.path.join(root, split, VAL_LABEL_FILE), os.path.join(root, "train")))


def list_folder_images(root, split, classes):
    """(path, label) for ROOT/split/<class>/<image>, classes in sorted order, files sorted."""
    directory = split_dir(root, split)
    if isinstance(classes, int):
        raise DataError("{} is in the folder layout: pass class names, not a count".format(directory))
    index = {name: k for k, name in enumerate(classes)}
    folders = subfolders(directory)
    if not folders:
        raise DataError("no class folders in {}".format(directory))
    unknown = [name for name in folders if name not in index]
    if unknown:
        raise DataError("{} names classes that are not training classes: {} (class folders must match {})".format(
            directory, first_few(unknown), os.path.join(root, "train")))
    return [(path, index[name]) for name in folders for path in images_in_folder(os.path.join(directory, name))]


def parse_label(token, classes, where):
    """A val.txt label: a class index, or a class name when the class names are known."""
    count = classes if isinstance(classes, int) else len(classes)
    try:
        label = int(token)
    except ValueError:
        if isinstance(classes, int) or token not in classes:
            raise DataError("{}: unknown class {!r} (not a class index in 0..{}{})".format(
                where, token, count - 1, "" if isinstance(classes, int) else " nor a class folder name"))
        return classes.index(token)
    if not 0 <= label < count:
        raise DataError("{}: label {} names no class (there are {} classes, 0..{})".format(
            where, label, count, count - 1))
    return label


def list_flat_val_images(root, classes):
    """(path, label) from ROOT/val/val.txt, in the file's line order; every line is checked."""
    directory = split_dir(root, "val")
    label_file = os.path.join(directory, VAL_LABEL_FILE)
    items, seen = [], set()
    with open(label_file) as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = "{} line {}".format(label_file, number)
            fields = line.split()
            if len(fields) != 2:
                raise DataError("{}: expected `name label`, got {!r}".format(where, line.rstrip("\n")))
            name, token = fields
            path = os.path.join(directory, name)
            if name in seen:
                raise DataError("{}: {} is listed twice".format(where, name))
            if not os.path.isfile(path):
                raise DataError("{}: image not found: {}".format(where, path))
            seen.add(name)
            items.append((path, parse_label(token, classes, where)))
    if not items:
        raise DataError("{} lists no images (expected lines `name label`)".format(label_file))
    unlisted = sum(1 for name in os.listdir(directory) if is_image_file(name) and name not in seen)
    if unlisted:
        logger.warning("%d image files in %s are not listed in %s and are not used", unlisted, directory,
                       VAL_LABEL_FILE)
    return items


def list_images(root, split, classes=None):
    """[(path, label)] of ROOT/split in a fixed order (class folders sorted, then file names; a flat val/ in the order
    of val/val.txt). `classes`: the class names (label k = classes[k]) or, for a flat val/, a class count. Default:
    the sorted folder names of ROOT/train (see `resolve_classes`)."""
    classes = resolve_classes(root, split, classes)
    flat = split == "val" and val_layout(root) == "flat"
    items = list_flat_val_images(root, classes) if flat else list_folder_images(root, split, classes)
    if split == "val":
        warn_about_absent_classes(items, classes, os.path.join(root, split))
    return items


def warn_about_absent_classes(items, classes, directory):
    """A warning naming the classes that no image of `items` has (their error is not measured)."""
    names = list(classes) if not isinstance(classes, int) else [str(k) for k in range(classes)]
    absent = sorted(set(range(len(names))) - {label for _, label in items})
    if absent and (directory, len(absent)) not in _WARNED:
        _WARNED.add((directory, len(absent)))
        logger.warning("%d of the %d classes have no image in %s: %s; the evaluation does not measure them",
                       len(absent), len(names), directory, first_few([names[k] for k in absent]))


def shard_bounds(num_items, index, count):
    """[start, end) of shard `index` of `count`: contiguous, sizes differ by at most 1."""
    if not (isinstance(count, int) and count >= 1):
        raise ValueError("number of shards must be an int >= 1, got {!r}".format(count))
    if not (isinstance(index, int) and 0 <= index < count):
        raise ValueError("shard index must be an int in 0..{}, got {!r}".format(count - 1, index))
    return index * num_items // count, (index + 1) * num_items // count


def shard(items, index, count):
    """Shard `index` of `count` of `items`: the shards are disjoint, cover every item exactly once (the remainder
    included: the original code dropped it) and differ in size by <= 1."""
    start, end = shard_bounds(len(items), index, count)
    return list(items[start:end])


def evaluation_subset(items, split_folder, count=None, seed=0, list_file=None):
    """Sorted positions in `items` ([(path, label)] of one split) of a fixed subset: the images a file lists (one path
    per line, relative to `split_folder`, optionally followed by more fields, e.g. a label, which are ignored), or
    `count` images drawn with `seed` (RobustBench evaluates ImageNet on a fixed subset of val). None: every image."""
    if list_file is not None:
        return listed_positions(items, split_folder, list_file)
    if not count:
        return None
    if count > len(items):
        raise DataError("--eval-images {} asks for more images than {} holds ({})".format(
            count, split_folder, len(items)))
    return sorted(int(i) for i in np.random.RandomState(seed).choice(len(items), count, replace=False))


def listed_positions(items, split_folder, list_file):
    try:
        with open(list_file) as f:
            names = [line.split()[0] for line in f if line.strip()]
    except OSError as error:
        raise DataError("cannot read the evaluation list {}: {}".format(list_file, error.strerror)) from None
    position = {os.path.relpath(path, split_folder): k for k, (path, _) in enumerate(items)}
    prefix = os.path.basename(os.path.normpath(split_folder)) + "/"
    names = [name[len(prefix):] if name.startswith(prefix) else name for name in names]
    unknown = [name for name in names if name not in position]
    if unknown:
        raise DataError("{} of the {} images in {} are not in {}, e.g. {}; paths are relative to that folder".format(
            len(unknown), len(names), list_file, split_folder, ", ".join(unknown[:3])))
    if not names:
        raise DataError("{} lists no image".format(list_file))
    twice = [name for name, n in collections.Counter(names).items() if n > 1]
    if twice:
        raise DataError("{} lists {} more than once".format(list_file, ", ".join(twice[:3])))
    return sorted(position[name] for name in names)
