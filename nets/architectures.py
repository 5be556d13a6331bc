"""Named architectures (the CLI's `--arch`): each is a function of the depth returning an `ArchSpec`, the settings of
a registered backbone (nets/backbone.py `BACKBONES`).

A new architecture is one function with one `@ARCHITECTURES.register(name)` line; a new topology registers a backbone
and names it in `ArchSpec.backbone`. The published ones (docs/FACTS.md Sec. 2) keep exactly the variable names and
shapes of docs/checkpoints/<Arch>-<depth>.json.
"""
import dataclasses
from dataclasses import dataclass
from typing import Optional, Tuple

from config import DEFAULTS
from ranges import check_settings, integer_setting, setting

from .backbone import BACKBONES
from .denoise import DENOISE_OPS
from .registry import Registry

ARCHITECTURES = Registry("architecture")

DEPTH_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
STEMS = ("imagenet", "small")
PLACEMENTS = ("none", "group", "block")         # where denoising blocks go


@dataclass(frozen=True)
class ArchSpec:
    """Everything that determines the graph. Defaults: ImageNet ResNet-50."""
    blocks: Tuple[int, ...] = integer_setting(DEPTH_BLOCKS[50], minimum=1)
    widths: Tuple[int, ...] = integer_setting((64, 128, 256, 512), minimum=1)   # bottleneck width of each group
    expansion: int = integer_setting(4, minimum=1)               # output channels = width * expansion
    cardinality: int = integer_setting(1, minimum=1)             # groups of the 3x3 conv (ResNeXt: 32)
    bottleneck_multiplier: int = integer_setting(1, minimum=1)   # inner width = width * this (ResNeXt 32x8d: 4)
    stem: str = setting("imagenet", choices=STEMS)
    stem_width: int = integer_setting(64, minimum=1)
    denoise_op: Optional[str] = None
    denoise_placement: str = setting("none", choices=PLACEMENTS)    # none | group | block
    denoise_window: int = integer_setting(3, minimum=1)
    num_classes: int = integer_setting(1000, minimum=2)
    image_size: int = integer_setting(DEFAULTS.image_size, minimum=1)
    backbone: str = "resnet"                        # a name in nets.backbone.BACKBONES

    def __post_init__(self):
        if self.num_classes < 2:
            raise ValueError("a classifier needs at least 2 classes, got --num-classes {}".format(self.num_classes))
        check_settings(self, "architecture")
        if len(self.widths) != len(self.blocks):
            raise ValueError("widths {} and blocks {} must have one entry per group".format(self.widths, self.blocks))
        uneven = [n for n in (w * self.bottleneck_multiplier for w in self.widths) if n % self.cardinality]
        if uneven:
            raise ValueError("architecture: the grouped 3x3 conv splits width x bottleneck_multiplier into cardinality "
                             "{} groups, which does not divide {}".format(self.cardinality, uneven[0]))
        if self.denoise_placement != "none":
            if self.denoise_op is None:
                raise ValueError("denoise placement '{}' needs a denoising operation (--denoise-op)".format(
                    self.denoise_placement))
            DENOISE_OPS.get(self.denoise_op)       # raises with the list of known operations
        BACKBONES.get(self.backbone)                # raises with the list of known backbones
        if self.denoise_window < 1 or self.denoise_window % 2 == 0:
            raise ValueError("denoise window must be a positive odd number, got {}".format(self.denoise_window))

    @property
    def group_strides(self):
        return (1,) + (2,) * (len(self.blocks) - 1)


def blocks_for_depth(depth):
    try:
        return DEPTH_BLOCKS[depth]
    except KeyError:
        raise ValueError("unsupported depth {}; choose one of {}".format(depth, sorted(DEPTH_BLOCKS))) from None


@ARCHITECTURES.register("ResNet")
def resnet(depth):
    return ArchSpec(blocks=blocks_for_depth(depth))


@ARCHITECTURES.register("ResNetDenoise")
def resnet_denoise(depth):
    """Feature Denoising, Sec. 5: 4 non-local (embedded Gaussian) blocks, one after each group."""
    return ArchSpec(blocks=blocks_for_depth(depth), denoise_op="nonlocal_gaussian", denoise_placement="group")


@ARCHITECTURES.register("ResNeXtDenoiseAll")
def resnext_denoise_all(depth):
    """ResNeXt 32x8d with a dot-product non-local block after every residual block (CAAD 2018)."""
    return ArchSpec(blocks=blocks_for_depth(depth), cardinality=32, bottleneck_multiplier=4,
                    denoise_op="nonlocal_dot", denoise_placement="block")


def build_spec(arch, depth, **overrides):
    """The spec of a named architecture, with any field overridden (None means keep). Overriding `denoise_op` alone on
    an architecture without denoising places the blocks after each group, as ResNetDenoise does."""
    spec = ARCHITECTURES.get(arch)(depth)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "denoise_op" in overrides and spec.denoise_placement == "none" and "denoise_placement" not in overrides:
        overrides["denoise_placement"] = "group"
    unknown = set(overrides) - {f.name for f in dataclasses.fields(ArchSpec)}
    if unknown:
        raise ValueError("unknown architecture settings: {}".format(sorted(unknown)))
    return dataclasses.replace(spec, **overrides)
