"""Command-line flags. Each flag maps to one field of the object it configures (ArchSpec,
PGDAttacker, Recipe); the defaults come from those objects, never from here."""
import argparse
import dataclasses

from attacker import PGDAttacker, build_attacker
from attacker.pgd import HALF_DTYPES, LOSSES
from config import PUBLISHED
from data.augment import TRAIN_AUGMENTATIONS
from nets.architectures import ARCHITECTURES, DEPTH_BLOCKS, PLACEMENTS, STEMS, build_spec
from nets.denoise import DENOISE_OPS
from nets.layout import resolve_data_format


def int_tuple(text):
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("expected comma-separated integers, got '{}'".format(text))
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError("expected non-negative integers, got '{}'".format(text))
    return values


def schedule(text):
    """'0:1,10:1,50:20' -> ((0, 1), (10, 1), (50, 20)): attack iterations : every k epochs."""
    try:
        pairs = tuple(tuple(int(v) for v in item.split(":")) for item in text.split(",") if item)
    except ValueError:
        pairs = ((),)
    if any(len(p) != 2 or p[0] < 0 or p[1] < 1 for p in pairs):
        raise argparse.ArgumentTypeError("expected ITERATIONS:EVERY_K_EPOCHS pairs like 0:1,10:1, got '{}'".format(text))
    return pairs


class FieldFlags:
    """A group of flags, each setting one field of a dataclass; `dest` is prefix + field."""

    def __init__(self, title, flags, prefix, defaults=None):
        self.title, self.flags, self.prefix, self.defaults = title, flags, prefix, defaults

    def add_to(self, parser):
        group = parser.add_argument_group(self.title)
        for flag, options in self.flags.items():
            options = dict(options)
            field = options.pop("field")
            default = getattr(self.defaults, field) if self.defaults is not None else None
            help_text = options.pop("help") + (" (default {})".format(default) if default is not None else "")
            group.add_argument(flag, dest=self.prefix + field, default=default, help=help_text, **options)
        return group

    def values(self, args):
        return {options["field"]: getattr(args, self.prefix + options["field"]) for options in self.flags.values()}


# None defaults keep the named architecture's value.
ARCH_FLAGS = FieldFlags("model", {
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
    "--bn-group-size": dict(field="bn_group_size", type=int,
                            help="training BN statistics per group of this many images, as per GPU (0: batch)"),
}, prefix="arch_")

ATTACK_FLAGS = FieldFlags("attack (white-box PGD, SPEC Sec. 4)", {
    "--attack-epsilon": dict(field="epsilon", type=float, help="L-inf budget on the 0..255 scale"),
    "--attack-step-size": dict(field="step_size", type=float, help="step on the 0..255 scale, at least eps/iter"),
    "--attack-restarts": dict(field="restarts", type=int, help="random restarts: correct only if correct under all"),
    "--attack-loss": dict(field="loss", choices=LOSSES, help="cross-entropy or the CW margin"),
    "--attack-target-offset": dict(field="target_offset", type=int,
                                   help="fixed target (label + K) mod classes instead of a random wrong class"),
    "--attack-seed": dict(field="seed", type=int, help="seed for targets and starts (repeatable results)"),
    "--attack-dtype": dict(field="compute_dtype", choices=sorted(HALF_DTYPES),
                           help="compute type of the attack steps (bfloat16/float16: the fast path)"),
    "--attack-fold-bn": dict(field="fold_batch_norm", action="store_true",
                             help="fold each backbone conv's frozen BN into its weights in the attack steps (the same "
                                  "function up to rounding, less elementwise work; part of the fast path)"),
}, prefix="attack_", defaults=PGDAttacker)

RECIPE_FLAGS = FieldFlags("training recipe (Feature Denoising, Sec. 5)", {
    "--epochs": dict(field="epochs", type=int, help="training epochs"),
    "--lr-decay-epochs": dict(field="lr_decay_epochs", type=int_tuple, help="epochs where the LR drops x0.1"),
    "--lr-per-256": dict(field="base_lr_per_256", type=float, help="learning rate per 256 images of total batch"),
    "--warmup-epochs": dict(field="warmup_epochs", type=int, help="linear warm-up epochs when the LR is above 0.1"),
    "--augment": dict(field="augmentation", choices=sorted(TRAIN_AUGMENTATIONS),
                      help="training augmentation: imagenet (Sec. 5) or light (bigger crops, no flip)"),
    "--eval-schedule": dict(field="eval_schedule", type=schedule,
                            help="evaluations during training, ITERATIONS:EVERY_K_EPOCHS,..."),
}, prefix="recipe_", defaults=PUBLISHED)


def add_model_arguments(parser):
    group = ARCH_FLAGS.add_to(parser)
    group.add_argument("--arch", default="ResNet", choices=ARCHITECTURES.names(),
                       help="architecture (published: ResNet, ResNetDenoise, ResNeXtDenoiseAll)")
    group.add_argument("-d", "--depth", type=int, default=50, choices=sorted(DEPTH_BLOCKS))
    group.add_argument("--data-format", default="auto", choices=["auto", "NCHW", "NHWC"],
                       help="auto: NCHW with a GPU, NHWC on CPU (NCHW on CPU runs through XLA)")
    group.add_argument("--load", help="weights: a .npz file (published models) or a TF checkpoint")
    group.add_argument("--ignore-mismatch", action="store_true",
                       help="load only the variables whose names and shapes match the model")


def add_attack_arguments(parser):
    group = ATTACK_FLAGS.add_to(parser)
    group.add_argument("--attack-iter", type=int_tuple, default=None,
                       help="PGD iterations; 0 means clean images. --eval takes a comma list (0,10,100: one pass "
                            "each, one JSON); training takes one value (default: {} in training, 10 in "
                            "evaluation)".format(PUBLISHED.attack_iterations))
    group.add_argument("--untargeted", action="store_true", help="push away from the label instead of to a target")
    group.add_argument("--attack-xla", action="store_true", help="compile the attack loop with XLA")


def add_recipe_arguments(parser):
    RECIPE_FLAGS.add_to(parser)


def spec_from_args(args):
    return build_spec(args.arch, args.depth, **ARCH_FLAGS.values(args))


def data_format_from_args(args):
    return resolve_data_format(args.data_format)


def attack_settings_from_args(args):
    """The PGDAttacker keyword arguments the flags set (without iterations and classes)."""
    settings = ATTACK_FLAGS.values(args)
    settings.update(targeted=not args.untargeted, use_xla=args.attack_xla)
    return settings


def attacker_from_args(args, num_classes, iterations):
    if iterations < 0:
        raise ValueError("--attack-iter must be >= 0, got {}".format(iterations))
    return build_attacker(iterations, num_classes=num_classes, **attack_settings_from_args(args))


def recipe_from_args(args, batch_per_gpu):
    """The published recipe with the flags' overrides."""
    fields = RECIPE_FLAGS.values(args)
    fields.update(batch_per_gpu=batch_per_gpu,
                  attack_iterations=single_attack_iterations(args, PUBLISHED.attack_iterations, "--train"))
    return dataclasses.replace(PUBLISHED, **fields)


def attack_iteration_list(args, default):
    """The --attack-iter values in the order given, repeats dropped; (default,) without the flag."""
    values = (default,) if args.attack_iter is None else args.attack_iter
    if min(values) < 0:
        raise ValueError("--attack-iter must be >= 0, got {}".format(",".join(map(str, values))))
    return tuple(dict.fromkeys(values))


def single_attack_iterations(args, default, mode):
    """The one --attack-iter value a mode that attacks with one length (training) accepts."""
    values = attack_iteration_list(args, default)
    if len(values) != 1:
        raise ValueError("{} takes one --attack-iter value, got {}; a comma list of attack lengths is for "
                         "--eval".format(mode, ",".join(map(str, values))))
    return values[0]
