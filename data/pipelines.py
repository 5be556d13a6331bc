"""Tensorpack DataFlows for training and evaluation: files -> decoded, augmented batches.

Both yield [images uint8 [B, S, S, 3] BGR, labels int32 [B]]. Feature Denoising, Sec. 5: Horovod data parallel,
32 images per GPU; each rank evaluates a shard of the validation set (docs/FACTS.md Sec. 5). The rank is a plain int
from the caller (`hvd.rank()`): nothing here imports Horovod, TensorFlow models or the attacker.
"""
import logging
import os

import numpy as np
from tensorpack.dataflow import BatchData, DataFromList, FakeData, MapData, MultiThreadMapData

from config import DEFAULTS

from . import augment, imagenet
from .decode import DecodeAndAugment, read_bgr
from .errors import DataError, first_few
from .flows import (CorruptImageLog, OrphanSafeMultiProcessMapData, RaiseOnCorrupt, RepeatForever, RestoreOrder,
                    SkipCorrupt)

logger = logging.getLogger(__name__)

PARALLEL_KINDS = ("process", "thread")


def check_positive(minimum=1, **values):
    for name, value in values.items():
        if not (isinstance(value, (int, np.integer)) and value >= minimum):
            raise ValueError("{} must be an int >= {}, got {!r}".format(name, minimum, value))


def decode_items(items, augmentor, workers, parallel, strict, buffer_size, first=0):
    """The (path, label) `items` decoded and augmented by `augmentor` (decode.py: [index, image or None, label, path,
    problem or None]), indices from `first` (an index restores the order of evaluation and seeds its image's random
    draws in an attack). MapData for 0 workers, else Tensorpack's multiprocess (ZMQ) or multithread map (None workers:
    the default count). strict=False shuffles the items and repeats them forever (the workers read ahead into the
    next pass); strict=True yields each of them exactly once per pass, in any order."""
    if parallel not in PARALLEL_KINDS:
        raise ValueError("parallel must be one of {}, got {!r}".format(PARALLEL_KINDS, parallel))
    workers = DEFAULTS.workers() if workers is None else workers
    check_positive(minimum=0, workers=workers)
    ds = DataFromList([(first + k, path, int(label)) for k, (path, label) in enumerate(items)], shuffle=not strict)
    if workers == 0:
        return MapData(ds if strict else RepeatForever(ds), DecodeAndAugment(augmentor))
    buffer_size = max(1, min(buffer_size, len(ds))) if strict else buffer_size
    runner = OrphanSafeMultiProcessMapData if parallel == "process" else MultiThreadMapData
    return runner(ds, workers, DecodeAndAugment(augmentor), buffer_size=buffer_size, strict=strict)


def train_shard(items, rank, world_size, seed=0):
    """This rank's part of the training set: one fixed, seeded shuffle of all items (the same on every rank), cut
    into `world_size` disjoint shards that cover every item."""
    order = np.random.RandomState(seed).permutation(len(items))
    return imagenet.shard([items[k] for k in order], rank, world_size)


def build_train_dataflow(root, batch_size, image_size=224, workers=None, rank=0, world_size=1,
                         parallel="process", buffer_size=200, seed=0, classes=None, corrupt_log=None,
                         augmentation="imagenet", max_unreadable_fraction=DEFAULTS.max_unreadable_fraction):
    """Training batches from ROOT/train for Horovod rank `rank` of `world_size`. Each rank reads a disjoint shard
    (`train_shard`) and reshuffles it every pass. The flow is INFINITE; len() is one epoch of this rank,
    shard_size // batch_size batches (a last partial batch is dropped; the next pass is reshuffled). With workers > 0
    the workers read ahead across pass boundaries, as in Tensorpack's ImageNet examples. Decoding runs in `workers`
    processes (parallel="process", Tensorpack's MultiProcessMapDataZMQ; they end with their parent, even on SIGKILL)
    or threads ("thread"); 0 decodes in the calling thread. An unreadable image is skipped with a warning and counted
    in `corrupt_log`, also available as the returned flow's `.corrupt_images` (a CorruptImageLog); more than
    floor(max_unreadable_fraction x this rank's images) distinct unreadable ones are a DataError. `augmentation`
    names an entry of augment.TRAIN_AUGMENTATIONS."""
    check_positive(batch_size=batch_size, image_size=image_size)
    everything = imagenet.list_images(root, "train", classes)
    items = train_shard(everything, rank, world_size, seed)
    if len(items) < batch_size:
        raise DataError("{}: rank {} of {} has {} training images, fewer than one batch of {}".format(
            os.path.join(root, "train"), rank, world_size, len(items), batch_size))
    corrupt_log = CorruptImageLog() if corrupt_log is None else corrupt_log
    ds = decode_items(items, augment.train_augmentor(image_size, augmentation), workers, parallel, strict=False,
                      buffer_size=buffer_size)
    if not 0 <= max_unreadable_fraction < 1:
        raise ValueError("max_unreadable_fraction must be in [0, 1), got {}".format(max_unreadable_fraction))
    limit = int(max_unreadable_fraction * len(items))
    what = "the {} training images of rank {} in {}".format(len(items), rank, os.path.join(root, "train"))
    ds = BatchData(SkipCorrupt(ds, corrupt_log, limit, what), batch_size, remainder=False)
    ds.corrupt_images, ds.num_images, ds.total_images = corrupt_log, len(items), len(everything)
    logger.info("training data: %d images in %s for rank %d of %d, %d batches of %d per epoch",
                len(items), os.path.join(root, "train"), rank, world_size, len(ds), batch_size)
    return ds


def build_eval_dataflow(root, batch_size, image_size=224, workers=None, shard_index=0, num_shards=1,
                        buffer_size=200, split="val", classes=None, subset=None):
    """Evaluation batches [images, labels, indices] of shard `shard_index` of `num_shards` of ROOT/split (default val),
    or of its images at the sorted positions `subset` (imagenet.evaluation_subset); index = position in the split. One
    pass yields every image of the shard exactly once, in the fixed order of `imagenet.list_images`; the last batch may
    be smaller (nothing is dropped), so len() = ceil(shard_size / batch_size). The shards of 0..num_shards-1 are
    disjoint and cover the whole split. Decoding uses threads (Tensorpack's MultiThreadMapData): no fork under MPI, and
    Tensorpack's strict multiprocess map was seen to hang in a process that had run other flows before; the output order
    is restored after the threads. An unreadable image raises DataError naming it."""
    check_positive(batch_size=batch_size, image_size=image_size)
    everything = imagenet.list_images(root, split, classes)
    positions = range(len(everything)) if subset is None else list(subset)
    start, end = imagenet.shard_bounds(len(positions), shard_index, num_shards)
    positions = positions[start:end]
    items = [everything[k] for k in positions]
    if not items:
        logger.warning("evaluation shard %d of %d of %s is empty", shard_index, num_shards, root)
        workers = 0
    ds = decode_items(items, augment.eval_augmentor(image_size), workers, "thread", strict=True,
                      buffer_size=buffer_size, first=start)
    ds = RaiseOnCorrupt(RestoreOrder(ds, first=start))
    if subset is not None:          # order k of the subset -> the image's position in the split
        ds = MapData(ds, lambda dp: [dp[0], dp[1], positions[dp[2] - start]])
    ds = BatchData(ds, batch_size, remainder=True)
    ds.num_images = len(items)
    return ds


def read_problem(path):
    """None if the image at `path` decodes, else "PATH (why not)"."""
    try:
        read_bgr(path)
    except (OSError, ValueError) as error:
        return "{} ({})".format(path, error)


def check_readable(root, split="val", classes=None, shard_index=0, num_shards=1, workers=None, progress=False):
    """Decode each image of shard `shard_index` of ROOT/split once; a DataError names the unreadable ones. Training
    calls it first when it will evaluate, so a corrupt validation image fails the job in seconds, not an epoch later."""
    from multiprocessing.pool import ThreadPool

    from tqdm import tqdm
    items = imagenet.shard(imagenet.list_images(root, split, classes), shard_index, num_shards)
    with ThreadPool(max(1, DEFAULTS.workers() if workers is None else workers)) as pool:
        found = [p for p in tqdm(pool.imap(read_problem, [path for path, _ in items], chunksize=16), total=len(items),
                                 desc="checking " + split, unit="image", disable=not progress) if p]
    if found:
        raise DataError("{} unreadable {} image{}: {}; evaluation needs every image: fix or replace them".format(
            len(found), split, "s" if len(found) > 1 else "", first_few(found)))
    return len(items)


def fake_dataflow(batch_size, image_size=224, num_classes=1000, length=1000):
    """`length` copies of one random batch [uint8 [B,S,S,3], int32 [B]]: no decoding cost, for benchmarks downstream."""
    check_positive(batch_size=batch_size, image_size=image_size, num_classes=num_classes)
    return FakeData([[batch_size, image_size, image_size, 3], [batch_size]], size=length, random=False,
                    dtype=["uint8", "int32"], domain=[(0, 256), (0, num_classes)])
