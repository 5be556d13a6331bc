"""Tensorpack DataFlows for training and evaluation: files -> decoded, augmented batches.

Both yield [images uint8 [B, S, S, 3] BGR, labels int32 [B]]. Feature Denoising, Sec. 5:
Horovod data parallel, 32 images per GPU; each rank evaluates a shard of the validation set
(docs/FACTS.md Sec. 5). The rank is a plain int from the caller (`hvd.rank()`): nothing here imports
Horovod, TensorFlow models or the attacker.
"""
import logging
import os

import numpy as np
from tensorpack.dataflow import BatchData, DataFromList, FakeData, MapData, MultiThreadMapData

from config import DEFAULTS

from . import augment, imagenet
from .decode import DecodeAndAugment
from .errors import DataError
from .flows import (CorruptImageLog, OrphanSafeMultiProcessMapData, RaiseOnCorrupt, RepeatForever,
                    RestoreOrder, SkipCorrupt)

logger = logging.getLogger(__name__)

PARALLEL_KINDS = ("process", "thread")


def check_positive(name, value, minimum=1):
    if not (isinstance(value, (int, np.integer)) and value >= minimum):
        raise ValueError("{} must be an int >= {}, got {!r}".format(name, minimum, value))


def indexed(items):
    """(index, path, label) datapoints: the index lets evaluation restore the order."""
    return [(index, path, int(label)) for index, (path, label) in enumerate(items)]


def parallel_map(ds, map_function, workers, parallel, strict, buffer_size):
    """MapData for 0 workers, else Tensorpack's multiprocess (ZMQ) or multithread map.

    strict=False repeats `ds` forever (the workers read ahead into the next pass);
    strict=True yields each datapoint of `ds` exactly once per pass, in any order.
    """
    if parallel not in PARALLEL_KINDS:
        raise ValueError("parallel must be one of {}, got {!r}".format(PARALLEL_KINDS, parallel))
    check_positive("workers", workers, minimum=0)
    if workers == 0:
        return MapData(ds if strict else RepeatForever(ds), map_function)
    buffer_size = max(1, min(buffer_size, len(ds))) if strict else buffer_size
    runner = OrphanSafeMultiProcessMapData if parallel == "process" else MultiThreadMapData
    return runner(ds, workers, map_function, buffer_size=buffer_size, strict=strict)


def train_shard(items, rank, world_size, seed=0):
    """This rank's part of the training set: one fixed, seeded shuffle of all items (the
    same on every rank), cut into `world_size` disjoint shards that cover every item."""
    order = np.random.RandomState(seed).permutation(len(items))
    return imagenet.shard([items[k] for k in order], rank, world_size)


def build_train_dataflow(root, batch_size, image_size=224, workers=None, rank=0, world_size=1,
                         parallel="process", buffer_size=200, seed=0, classes=None, corrupt_log=None,
                         augmentation="imagenet"):
    """Training batches from ROOT/train for Horovod rank `rank` of `world_size`.

    Each rank reads a disjoint shard (`train_shard`) and reshuffles it every pass. The flow
    is INFINITE; len() is one epoch of this rank, shard_size // batch_size batches (a last
    partial batch is dropped; the next pass is reshuffled). With workers > 0 the workers
    read ahead across pass boundaries, as in Tensorpack's ImageNet examples.

    Decoding runs in `workers` processes (parallel="process", Tensorpack's
    MultiProcessMapDataZMQ; they end with their parent, even on SIGKILL) or threads
    ("thread"); 0 decodes in the calling thread.
    An unreadable image is skipped with a warning and counted in `corrupt_log`, also
    available as the returned flow's `.corrupt_images` (a CorruptImageLog).
    `augmentation` names an entry of augment.TRAIN_AUGMENTATIONS.
    """
    check_positive("batch_size", batch_size)
    check_positive("image_size", image_size)
    workers = DEFAULTS.workers() if workers is None else workers
    items = train_shard(imagenet.list_images(root, "train", classes), rank, world_size, seed)
    if len(items) < batch_size:
        raise DataError("{}: rank {} of {} has {} training images, fewer than one batch of {}".format(
            os.path.join(root, "train"), rank, world_size, len(items), batch_size))
    corrupt_log = CorruptImageLog() if corrupt_log is None else corrupt_log
    ds = DataFromList(indexed(items), shuffle=True)
    ds = parallel_map(ds, DecodeAndAugment(augment.train_augmentor(image_size, augmentation)), workers, parallel,
                      strict=False, buffer_size=buffer_size)
    ds = BatchData(SkipCorrupt(ds, corrupt_log), batch_size, remainder=False)
    ds.corrupt_images = corrupt_log
    ds.num_images = len(items)
    logger.info("training data: %d images in %s for rank %d of %d, %d batches of %d per epoch",
                len(items), os.path.join(root, "train"), rank, world_size, len(ds), batch_size)
    return ds


def build_eval_dataflow(root, batch_size, image_size=224, workers=None, shard_index=0, num_shards=1,
                        buffer_size=200, split="val", classes=None):
    """Evaluation batches of shard `shard_index` of `num_shards` of ROOT/split (default val).

    One pass yields every image of the shard exactly once, in the fixed order of
    `imagenet.list_images`; the last batch may be smaller (nothing is dropped), so
    len() = ceil(shard_size / batch_size). The shards of 0..num_shards-1 are disjoint and
    cover the whole split. Decoding uses threads (Tensorpack's MultiThreadMapData): no fork
    under MPI, and Tensorpack's strict multiprocess map was seen to hang in a process that had
    run other flows before; the output order is restored after the threads. An unreadable image raises DataError naming it.
    """
    check_positive("batch_size", batch_size)
    check_positive("image_size", image_size)
    workers = DEFAULTS.workers() if workers is None else workers
    items = imagenet.shard(imagenet.list_images(root, split, classes), shard_index, num_shards)
    if not items:
        logger.warning("evaluation shard %d of %d of %s is empty", shard_index, num_shards, root)
        workers = 0
    ds = DataFromList(indexed(items), shuffle=False)
    ds = parallel_map(ds, DecodeAndAugment(augment.eval_augmentor(image_size)), workers, "thread",
                      strict=True, buffer_size=buffer_size)
    ds = BatchData(RaiseOnCorrupt(RestoreOrder(ds)), batch_size, remainder=True)
    ds.num_images = len(items)
    return ds


def fake_dataflow(batch_size, image_size=224, num_classes=1000, length=1000):
    """`length` batches [uint8 [B,S,S,3], int32 [B]], one random batch repeated (no decoding cost:
    for benchmarks of everything downstream of the data)."""
    check_positive("batch_size", batch_size)
    check_positive("image_size", image_size)
    check_positive("num_classes", num_classes)
    return FakeData([[batch_size, image_size, image_size, 3], [batch_size]], size=length, random=False,
                    dtype=["uint8", "int32"], domain=[(0, 256), (0, num_classes)])
