"""Command-line flags, each mapped to one field of the object it configures."""
import argparse

from nets.architectures import ARCHITECTURES, DEPTH_BLOCKS, PLACEMENTS, STEMS, build_spec
from nets.denoise import DENOISE_OPS
from nets.layout import resolve_data_format


def int_tuple(text):
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("expected comma-separated integers, got '{}'".format(text))
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected positive integers, got '{}'".format(text))
    return values


# flag -> ArchSpec field; None defaults keep the named architecture's value.
ARCH_FLAGS = {
    "--denoise-op": dict(field="denoise_op", choices=DENOISE_OPS.names(),
                         help="denoising operation (default: the architecture's)"),
    "--denoise-placement": dict(field="denoise_placement", choices=PLACEMENTS,
                                help="after each of the 4 groups, after every residual block, or none"),
    "--denoise-window": dict(field="denoise_window", type=int, help="k of the k x k window of local operations (3)"),
    "--blocks": dict(field="blocks", type=int_tuple, help="residual blocks per group, e.g. 1,1,1,1 (overrides -d)"),
    "--widths": dict(field="widths", type=int_tuple, help="bottleneck width per group, e.g. 16,32,64,128"),
    "--stem": dict(field="stem", choices=STEMS, help="'small' for small images: a 3x3 stride-1 conv, no pooling"),
    "--stem-width": dict(field="stem_width", type=int, help="channels of the first conv (64)"),
    "--cardinality": dict(field="cardinality", type=int, help="groups of the 3x3 conv (ResNeXt: 32)"),
    "--bottleneck-multiplier": dict(field="bottleneck_multiplier", type=int,
                                    help="inner bottleneck width = width x this (ResNeXt 32x8d: 4)"),
    "--num-classes": dict(field="num_classes", type=int, help="classes (1000)"),
    "--image-size": dict(field="image_size", type=int, help="input side length (224)"),
}


def add_model_arguments(parser):
    group = parser.add_argument_group("model")
    group.add_argument("--arch", default="ResNet", choices=ARCHITECTURES.names(),
                       help="architecture (published: ResNet, ResNetDenoise, ResNeXtDenoiseAll)")
    group.add_argument("-d", "--depth", type=int, default=50, choices=sorted(DEPTH_BLOCKS))
    for flag, options in ARCH_FLAGS.items():
        options = dict(options)
        group.add_argument(flag, dest=options.pop("field"), default=None, **options)
    group.add_argument("--data-format", default="auto", choices=["auto", "NCHW", "NHWC"],
                       help="auto: NCHW with a GPU, NHWC on CPU (NCHW on CPU runs through XLA)")
    group.add_argument("--load", help="weights: a .npz file (published models) or a TF checkpoint")
    group.add_argument("--ignore-mismatch", action="store_true",
                       help="load only the variables whose names and shapes match the model")


def spec_from_args(args):
    fields = {options["field"]: getattr(args, options["field"]) for options in ARCH_FLAGS.values()}
    return build_spec(args.arch, args.depth, **fields)


def data_format_from_args(args):
    return resolve_data_format(args.data_format)
