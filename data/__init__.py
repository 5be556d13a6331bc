"""Data layer: ImageNet-layout dataflows (Tensorpack), augmentations, and a ZMQ data server
and client. Nothing here imports the models, the attacker or Horovod."""
from .errors import DataError
from .flows import CheckBatches, CorruptImageLog
from .imagenet import evaluation_subset, list_classes, list_images, model_classes, shard
from .pipelines import build_eval_dataflow, build_train_dataflow, check_readable, fake_dataflow, train_shard
from .transport import ZMQBatchReceiver, default_address, receive_dataflow, send_batches

__all__ = ["CheckBatches", "CorruptImageLog", "DataError", "ZMQBatchReceiver", "build_eval_dataflow",
           "build_train_dataflow", "check_readable", "default_address", "evaluation_subset", "fake_dataflow",
           "list_classes", "list_images", "model_classes", "receive_dataflow", "send_batches", "shard", "train_shard"]
