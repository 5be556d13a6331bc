"""How a model graph is built, as opposed to what it computes (that is `ArchSpec`).

One frozen set of options goes to the backbone and on to every layer and denoising operation (nothing comes from the
environment or module-level state); every combination computes the same function of the same variables, up to
rounding.
"""
import dataclasses
from dataclasses import dataclass
from typing import Optional

import tensorflow as tf

from .layout import Layout

FORMULATIONS = ("fast", "definition")
COMPUTE_DTYPES = {"float32": tf.float32, "bfloat16": tf.bfloat16, "float16": tf.float16}
# One image's N x N affinity up to this size is computed whole; the default leaves every map
# of a 224x224 ResNet unblocked (56x56: 37.5 MiB in float32), blocking starts at 64x64 maps.
DEFAULT_SOFTMAX_BLOCK_BYTES = 64 << 20


@dataclass(frozen=True)
class BuildOptions:
    data_format: str = "NHWC"            # NCHW (fast on GPUs) or NHWC (the only one TF's CPU kernels run)
    formulation: str = "fast"            # denoising ops as registered fast kernels, or as defined (FACTS Sec. 1)
    compute_dtype: str = "float32"       # bfloat16/float16: attack steps (variables, BN statistics stay float32)
    fold_batch_norm: bool = False        # inference-mode BN folded into the conv weights (see layers.conv_bn)
    bn_group_size: int = 0               # training BN statistics per this many images, as per GPU (0: batch)
    softmax_block_bytes: int = DEFAULT_SOFTMAX_BLOCK_BYTES   # memory budget of the fast Gaussian kernel
    softmax_block_rows: Optional[int] = None     # fixed query rows per block (tests); None: from the bytes

    def __post_init__(self):
        Layout(self.data_format)                 # validates the name
        if self.formulation not in FORMULATIONS:
            raise ValueError("denoising formulation must be one of {}, got '{}'".format(FORMULATIONS, self.formulation))
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError("compute dtype must be one of {}, got '{}'".format(
                sorted(COMPUTE_DTYPES), self.compute_dtype))
        if self.bn_group_size < 0:
            raise ValueError("BN group size must be >= 0, got {}".format(self.bn_group_size))
        if self.softmax_block_bytes < 1 or (self.softmax_block_rows is not None and self.softmax_block_rows < 1):
            raise ValueError("softmax block size must be positive")

    @property
    def layout(self):
        return Layout(self.data_format)

    @property
    def dtype(self):
        return COMPUTE_DTYPES[self.compute_dtype]

    @property
    def exact(self):
        """These options for the reported numbers: float32 and BN unfolded, the rest kept."""
        return self.replace(compute_dtype="float32", fold_batch_norm=False)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)
