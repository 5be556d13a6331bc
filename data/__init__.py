"""Data layer: ImageNet-layout dataflows (Tensorpack), augmentations, a ZMQ data server and
client, and a demo data set. Nothing here imports the models, the attacker or Horovod.

    data.build_train_dataflow(root, batch_size, image_size=224, workers=None, rank=0, world_size=1)
    data.build_eval_dataflow(root, batch_size, image_size=224, workers=None, shard_index=0, num_shards=1)
    data.fake_dataflow(batch_size, image_size=224, num_classes=1000)
    data.receive_dataflow(addr=None, batch_size=32, image_size=224)      # batches from data.serve
    data.imagenet.list_classes / list_images / shard;  data.DataError

Submodules load on first use, so `python -m data.demo` does not import TensorFlow.
"""
import importlib

from .errors import DataError

_EXPORTS = {
    "build_train_dataflow": "pipelines",
    "build_eval_dataflow": "pipelines",
    "fake_dataflow": "pipelines",
    "train_shard": "pipelines",
    "CorruptImageLog": "flows",
    "receive_dataflow": "transport",
    "send_batches": "transport",
    "default_address": "transport",
    "ZMQBatchReceiver": "transport",
    "list_classes": "imagenet",
    "list_images": "imagenet",
    "shard": "imagenet",
    "train_augmentors": "augment",
    "eval_augmentors": "augment",
    "write_digits_demo": "demo",
}

__all__ = ["DataError"] + sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module("." + _EXPORTS[name], __name__), name)
    raise AttributeError("module 'data' has no attribute {!r}".format(name))
