"""The command line: every flag of main.py (and those tools/ share), each mapped to one field of
the object it configures (ArchSpec, BuildOptions, an attack's settings, AttackExecution,
Recipe, TrainJob); defaults come from those objects and config.py, never from here. The
library (nets/, attacker/, data/, engine/) never sees argparse. Registries are read when the
parser is built, so operations, attacks and architectures registered before that (by
`--import MODULE`) are choices like the built-in ones."""
import argparse
import contextlib
import dataclasses
import importlib
import logging
import math
import typing

from attacker import ATTACKS, LOSS_ALIASES, LOSSES, build_attack, canonical_attack, parse_attack, setting_names
from config import COLLAPSE_ACTIONS, DEFAULTS, PRESETS, PUBLISHED
from data.augment import TRAIN_AUGMENTATIONS
from nets import ARCHITECTURES, DENOISE_OPS, BuildOptions, build_spec, resolve_data_format
from nets.architectures import DEPTH_BLOCKS, PLACEMENTS, STEMS
from nets.options import COMPUTE_DTYPES, FORMULATIONS
from ranges import SettingError

from engine.graphs import AttackExecution


def int_tuple(text):
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("expected comma-separated integers, got '{}'".format(text))
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError("expected non-negative integers, got '{}'".format(text))
    return values


def at_least(minimum):
    """An argparse type: an integer >= minimum, or an error that says so."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError("expected an integer >= {}, got '{}'".format(minimum, text))
        return value
    return parse


def seconds(text):
    """An argparse type: a finite number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError("expected a number of seconds >= 0, got '{}'".format(text))
    return value


def loss_name(text, flag):
    """A name in attacker.LOSSES; an earlier spelling is taken, with a note of the new one."""
    if text in LOSS_ALIASES:
        logging.getLogger(__name__).warning("%s %s: the loss is now called %s", flag, text, LOSS_ALIASES[text])
        return LOSS_ALIASES[text]
    if text not in LOSSES:
        raise argparse.ArgumentTypeError("unknown loss '{}'; the losses are: {}".format(text, ", ".join(LOSSES)))
    return text


def fraction(text):
    """An argparse type: a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError("expected a fraction in [0, 1), got '{}'".format(text))
    return value


def schedule(text):
    """'clean:1,50:20,pgd@100:10:5' -> (("clean", 1, 0), ("pgd@50", 20, 0), ("pgd@100", 10, 5)):
    ATTACK:EVERY_K_EPOCHS[:AND_IN_THE_LAST_N]."""
    entries = []
    for item in filter(None, text.split(",")):
        attack, *numbers = item.split(":")
        try:
            every, last = (int(n) for n in (numbers + ["0"])[:2]) if len(numbers) in (1, 2) else (0, 0)
            entries.append((canonical_attack(attack), every, last))
        except (ValueError, KeyError) as error:
            raise argparse.ArgumentTypeError("bad evaluation '{}' in '{}': {}".format(
                item, text, error.args[0] if error.args else "expected ATTACK:EVERY_K_EPOCHS[:LAST_N]"))
        if every < 1 or last < 0:
            raise argparse.ArgumentTypeError("'{}': evaluate every k >= 1 epochs (and in the last n >= 0)".format(item))
    return tuple(entries)


def attack_list(text):
    """'clean,pgd@10,20' -> ("clean", "pgd@10", "pgd@20")."""
    try:
        return tuple(dict.fromkeys(canonical_attack(a) for a in text.split(",") if a))
    except (ValueError, KeyError) as error:
        raise argparse.ArgumentTypeError("bad attack in '{}': {}".format(text, error.args[0]))


def attack_or_none(text):
    """One attack text in its canonical spelling, or "none"."""
    if text.strip() == "none":
        return "none"
    try:
        return canonical_attack(text)
    except (ValueError, KeyError) as error:
        raise argparse.ArgumentTypeError("bad attack '{}': {}".format(text, error.args[0]))


class FieldFlags:
    """A group of flags, each setting one field of a dataclass; `dest` is prefix + field.
    With `defaults`, the flag's default is that object's field, else None (keep the object's)."""

    def __init__(self, title, flags, prefix, defaults=None):
        self.title, self.flags, self.prefix, self.defaults = title, flags, prefix, defaults

    def add_to(self, parser):
        group = parser.add_argument_group(self.title)
        for flag, options in self.flags.items():
            options = dict(options)
            field = options.pop("field")
            if callable(options.get("choices")):      # a registry: read now, after any --import
                options["choices"] = options["choices"]()
            default = getattr(self.defaults, field) if self.defaults is not None else None
            help_text = options.pop("help") + (" (default {})".format(default) if default is not None else "")
            group.add_argument(flag, dest=self.prefix + field, default=default, help=help_text, **options)
        return group

    def flag_of(self, field):
        return next((flag for flag, options in self.flags.items() if options["field"] == field), None)

    def values(self, args, given_only=False):
        values = {options["field"]: getattr(args, self.prefix + options["field"]) for options in self.flags.values()}
        return {k: v for k, v in values.items() if v is not None} if given_only else values


# None defaults keep the named architecture's value.
ARCH_FLAGS = FieldFlags("model", {
    "--denoise-op": dict(field="denoise_op", choices=DENOISE_OPS.names,
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
}, prefix="arch_")

BUILD_FLAGS = FieldFlags("graph building (the same function, other kernels)", {
    "--denoise-formulation": dict(field="formulation", choices=FORMULATIONS,
                                  help="denoising operations as fast kernels or as the paper's definitions"),
    "--bn-group-size": dict(field="bn_group_size", type=int,
                            help="training BN statistics per group of this many images, as per GPU (0: batch)"),
}, prefix="build_", defaults=BuildOptions())

ATTACK_FLAGS = FieldFlags("attack settings (docs/FACTS.md Sec. 4; default: the attack's own, e.g. PGD's)", {
    "--attack-epsilon": dict(field="epsilon", type=float, help="L-inf budget on the 0..255 scale ({:g})".format(
        DEFAULTS.attack_epsilon)),
    "--attack-step-size": dict(field="step_size", type=float,
                               help="step on the 0..255 scale (PGD: 1, at least epsilon / iterations)"),
    "--attack-restarts": dict(field="restarts", type=int, help="random restarts: correct only if correct under all"),
    "--attack-loss": dict(field="loss", type=lambda text: loss_name(text, "--attack-loss"),
                          help="the loss every attack maximises: {} (PGD: ce; xent is ce's old name)".format(
                              ", ".join(LOSSES))),
    "--attack-target-offset": dict(field="target_offset", type=int,
                                   help="fixed target (label + K) mod classes instead of a random wrong class"),
    "--attack-seed": dict(field="seed", type=int, help="seed for targets and starts (repeatable results)"),
    "--untargeted": dict(field="targeted", action="store_false", help="push away from the label, not to a target"),
}, prefix="attack_")

EXECUTION_FLAGS = FieldFlags("attack execution (the fast path of the attack steps; results are float32)", {
    "--attack-dtype": dict(field="compute_dtype", choices=sorted(COMPUTE_DTYPES),
                           help="compute type of the attack steps (bfloat16/float16: the fast path)"),
    "--attack-fold-bn": dict(field="fold_batch_norm", action="store_true",
                             help="fold each backbone conv's frozen BN into its weights in the attack steps"),
    "--attack-xla": dict(field="xla", action="store_true", help="compile the attack loop with XLA (GPUs)"),
}, prefix="execution_", defaults=AttackExecution())

RECIPE_FLAGS = FieldFlags("training recipe (Feature Denoising, Sec. 5)", {
    "--epochs": dict(field="epochs", type=int, help="training epochs"),
    "--lr-decay-epochs": dict(field="lr_decay_epochs", type=int_tuple, help="epochs where the LR drops x0.1"),
    "--lr-per-256": dict(field="base_lr_per_256", type=float, help="learning rate per 256 images of total batch"),
    "--warmup-epochs": dict(field="warmup_epochs", type=int, help="linear warm-up epochs when the LR is above 0.1"),
    "--augment": dict(field="augmentation", choices=sorted(TRAIN_AUGMENTATIONS),
                      help="training augmentation: imagenet (Sec. 5) or light (bigger crops, no flip)"),
    "--eval-schedule": dict(field="eval_schedule", type=schedule,
                            help="evaluations during training, ATTACK:EVERY_K_EPOCHS[:AND_IN_THE_LAST_N],... "
                                 "(ATTACK: NAME, NAME@ITERATIONS, or N for PGD-N, 0 for clean)"),
    "--collapse-check": dict(field="collapse_check", type=attack_or_none,
                             help="after each epoch, this attack on a fixed subset of the training images stops a "
                                  "run whose accuracy under it collapses (engine/guard.py); none: off"),
    "--collapse-check-images": dict(field="collapse_check_images", type=int, help="training images it checks"),
    "--collapse-margin": dict(field="collapse_margin", type=float,
                              help="stop when the check's accuracy falls this far (0..1) below its best"),
    "--on-collapse": dict(field="on_collapse", choices=COLLAPSE_ACTIONS,
                          help="what a collapse does: stop the run (exit 2), or go back to the best epoch's "
                               "checkpoint and train on with a smaller attack step (engine/rollback.py)"),
    "--collapse-step-scale": dict(field="collapse_step_scale", type=float,
                                  help="each rollback multiplies the training attack's step by this (0..1]"),
    "--max-rollbacks": dict(field="max_rollbacks", type=int, help="rollbacks allowed in a run; one more collapse "
                                                                  "stops it"),
    "--eval-final": dict(field="eval_final", type=attack_list,
                         help="attacks evaluated after the last epoch besides the schedule, written as "
                              "robustness_curve.json"),
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
    BUILD_FLAGS.add_to(parser)


def add_attack_arguments(parser):
    group = parser.add_argument_group("attack")
    group.add_argument("--attack", choices=ATTACKS.names(),
                       help="the attack (default: '{}' with {} iterations in training, '{}' with {} in evaluation, the "
                            "paper's targeted PGD)".format(PUBLISHED.attack, PUBLISHED.attack_iterations,
                                                            DEFAULTS.eval_attack,
                                                            build_attack(DEFAULTS.eval_attack).iterations))
    group.add_argument("--attack-iter", type=int_tuple, default=None,
                       help="attack iterations; 0 means clean images. --eval takes a comma list (0,10,100: one pass "
                            "each, one JSON); training takes one value")
    group.add_argument("--attack-option", action="append", default=[], metavar="KEY=VALUE",
                       help="any other setting of the chosen attack (repeatable)")
    ATTACK_FLAGS.add_to(parser)
    EXECUTION_FLAGS.add_to(parser)


@contextlib.contextmanager
def naming_the_flag(flags, option=None):
    """A setting out of range (ranges.SettingError) reported with the flag that set it: one of
    `flags` (a FieldFlags), else `option` (e.g. "--attack-option"), KEY=VALUE style."""
    try:
        yield
    except SettingError as error:
        flag = flags.flag_of(error.setting)
        hint = flag or ("{} {}=..".format(option, error.setting) if option else None)
        raise SettingError("{} ({})".format(error.args[0], hint) if hint else error.args[0], error.setting) from None


def spec_from_args(args):
    with naming_the_flag(ARCH_FLAGS):
        return build_spec(args.arch, args.depth, **ARCH_FLAGS.values(args))


def build_options_from_args(args):
    return BuildOptions(data_format=resolve_data_format(args.data_format), **BUILD_FLAGS.values(args))


def execution_from_args(args):
    return AttackExecution(**EXECUTION_FLAGS.values(args))


def training_build_from_args(args):
    """(build options, training attack execution) of --train: --train-dtype is the training pass's compute type and,
    unless --attack-dtype names another, that of the training attack's steps (the fast path)."""
    options = build_options_from_args(args).replace(compute_dtype=args.train_dtype)
    execution = execution_from_args(args)
    if execution.compute_dtype == "float32":
        execution = dataclasses.replace(execution, compute_dtype=args.train_dtype)
    return options, execution


def _coerce(name, key, text):
    """An --attack-option value as the type of the attack's field `key`."""
    hints = typing.get_type_hints(ATTACKS.get(name))
    kind = hints.get(key, str)
    kind = next((k for k in typing.get_args(kind) if k is not type(None)), kind)    # Optional[X] -> X
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError("--attack-option {}={}: expected true or false".format(key, text))
        return text.lower() in ("true", "1")
    try:
        return kind(text)
    except ValueError:
        raise ValueError("--attack-option {}={}: expected {}".format(
            key, text, {int: "an integer", float: "a number"}.get(kind, kind.__name__))) from None


def attack_settings(args, name):
    """The settings the flags give (shared flags and --attack-option KEY=VALUE)."""
    settings = ATTACK_FLAGS.values(args, given_only=True)
    for option in args.attack_option:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise ValueError("--attack-option expects KEY=VALUE, got '{}'".format(option))
        if key not in setting_names(name):
            raise ValueError("attack '{}' has no setting '{}'; its settings are: {}".format(
                name, key, ", ".join(setting_names(name))))
        # an earlier loss spelling is translated; an unknown one is refused by the attack, naming its choices
        aliased = key == "loss" and value in LOSS_ALIASES
        settings[key] = loss_name(value, "--attack-option loss") if aliased else _coerce(name, key, value)
    return settings


def attack_with_iterations(name, iterations, settings, iterations_given=True):
    """The attack `name` with `iterations` (0: the clean images; None: the attack's default)
    and every given setting; iterations that were not given are only offered to the attack."""
    if iterations == 0:
        return build_attack("clean")
    with naming_the_flag(ATTACK_FLAGS, option="--attack-option"):
        if iterations is None:
            return build_attack(name, settings, required=settings)
        return build_attack(name, dict(settings, iterations=iterations),
                            required=list(settings) + (["iterations"] if iterations_given else []))


def eval_attacks_from_args(args):
    """--eval's attacks: --attack (PGD-10 by default) at each --attack-iter length, in order."""
    name = args.attack or DEFAULTS.eval_attack
    settings = attack_settings(args, name)
    lengths = (None,) if args.attack_iter is None else tuple(dict.fromkeys(args.attack_iter))
    return [attack_with_iterations(name, n, settings) for n in lengths]


def training_attack_from_args(args, recipe):
    """The training attack: --attack with the recipe's iterations, 20% of batches from clean images."""
    settings = attack_settings(args, recipe.attack)
    attack = attack_with_iterations(recipe.attack, recipe.attack_iterations, settings,
                                    iterations_given=args.attack_iter is not None)
    if "prob_start_from_clean" in setting_names(attack.name):
        attack = dataclasses.replace(attack, prob_start_from_clean=recipe.attack_prob_start_from_clean)
    return attack


def free_training_from_args(args, recipe):
    """--free-replays m: (the recipe with its epochs divided by m, what the run trains on); other training attacks
    are refused with it."""
    from engine.graphs import FreeTraining
    if args.attack is not None or args.attack_iter is not None or args.attack_option:
        raise ValueError("--free-replays trains on its own perturbation (an epsilon step per replay, carried over); "
                         "drop --attack, --attack-iter and --attack-option (--attack-epsilon sets its budget)")
    epsilon = args.attack_epsilon if args.attack_epsilon is not None else DEFAULTS.attack_epsilon
    return recipe.with_replays(args.free_replays), FreeTraining(epsilon=epsilon, replays=args.free_replays)


def schedule_attacks(recipe, args):
    """{attack text: attack} for the recipe's evaluations, with the flags' shared settings
    where an attack has them (always from noise, one restart, the exact float32 model)."""
    settings = dict(ATTACK_FLAGS.values(args, given_only=True), restarts=1)
    attacks = {}
    for text in recipe.scheduled_attacks():
        name, overrides = parse_attack(text)
        attacks[text] = build_attack(name, dict(settings, **overrides))
    return attacks


def collapse_check_from_args(recipe, args, training_attack):
    """The guard's attack (engine/guard.py): untargeted (as Wong et al. check), a fixed seed (the same starts every
    epoch), the flags' shared settings over those; or None: switched off, or clean training (nothing to collapse)."""
    if recipe.collapse_check == "none" or training_attack.name == "clean":
        if recipe.on_collapse == "rollback":
            raise ValueError("--on-collapse rollback needs the collapse guard, which is off ({}); give "
                             "--collapse-check an attack".format("clean training" if training_attack.name == "clean"
                                                                 else "--collapse-check none"))
        return None
    if recipe.on_collapse == "rollback":
        training_attack.smaller_step(recipe.collapse_step_scale)       # refuses an attack with no step to shrink
    name, overrides = parse_attack(recipe.collapse_check)
    settings = dict(ATTACK_FLAGS.values(args, given_only=True), restarts=1, **overrides)
    return build_attack(name, dict({"seed": 0, "targeted": False}, **settings))


def recipe_from_args(args, batch_per_gpu):
    """The published recipe with the flags' overrides."""
    fields = RECIPE_FLAGS.values(args)
    iterations = PUBLISHED.attack_iterations
    if args.attack_iter is not None:
        if len(args.attack_iter) != 1:
            raise ValueError("--train takes one --attack-iter value, got {}; a comma list of attack lengths is "
                             "for --eval".format(",".join(map(str, args.attack_iter))))
        iterations = args.attack_iter[0]
    fields.update(batch_per_gpu=batch_per_gpu, attack_iterations=iterations, attack=args.attack or PUBLISHED.attack)
    with naming_the_flag(RECIPE_FLAGS):
        return dataclasses.replace(PUBLISHED, **fields)


def preset_flags(name):
    """The flags preset `name` sets, as command-line text."""
    return " ".join("--{} {:g}".format(dest.replace("_", "-"), value) if isinstance(value, float) else
                    "--{} {}".format(dest.replace("_", "-"), value) for dest, value in PRESETS[name].items())


def apply_preset(args):
    """Give the flags of --preset that the command line left unset their preset values; returns
    {flag: {"preset": its value, "used": the given one}} for the settings the command line changed
    (then the run is not the preset's protocol, and its records do not carry the preset's name)."""
    if getattr(args, "preset", None) is None:
        return {}
    if not args.eval:
        raise ValueError("--preset {} is an evaluation protocol: use it with --eval".format(args.preset))
    changed = {}
    for dest, value in PRESETS[args.preset].items():
        given = getattr(args, dest)
        if given is None:
            setattr(args, dest, value)
        elif given != value:
            used = "the images of --eval-list {}".format(args.eval_list) if dest == "eval_images" and \
                getattr(args, "eval_list", None) else given
            changed["--" + dest.replace("_", "-")] = dict(preset=value, used=used)
    default = build_attack(args.attack)
    for key, value in attack_settings(args, args.attack).items():
        preset_sets_it = ATTACK_FLAGS.prefix + key in PRESETS[args.preset]
        if key != "seed" and not preset_sets_it and value != getattr(default, key):
            flag = ATTACK_FLAGS.flag_of(key) or "--attack-option " + key
            changed[flag] = dict(preset=getattr(default, key), used=value)
    if args.attack_iter is not None:
        changed["--attack-iter"] = dict(preset=getattr(default, "iterations", None),
                                        used=",".join(map(str, args.attack_iter)))
    return changed


def import_plugins(argv):
    """Import every `--import MODULE` of argv (before the parser reads the registries)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--import", dest="modules", action="append", default=[])
    for module in pre.parse_known_args(argv)[0].modules:
        importlib.import_module(module)


def build_parser(description=None):
    """main.py's parser: the mode, the data and every setting."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--train", action="store_true", help="adversarial training (Horovod under horovodrun)")
    mode.add_argument("--eval", action="store_true", help="white-box evaluation of the validation set")
    mode.add_argument("--eval-directory", metavar="DIR",
                      help="black-box mode: classify every image in DIR, write filename,label lines")
    parser.add_argument("--import", dest="modules", action="append", default=[], metavar="MODULE",
                        help="import MODULE first (it may register operations, attacks, architectures)")
    parser.add_argument("--data", help="ImageNet-layout root: train/<class>/, val/<class>/ or val/ + val.txt")
    parser.add_argument("--batch", type=at_least(1), default=PUBLISHED.batch_per_gpu,
                        help="images per batch and process (per GPU in training; default %(default)s)")
    parser.add_argument("--workers", type=at_least(0), default=DEFAULTS.workers(),
                        help="image decoding processes/threads per rank (default: the CPU count, %(default)s)")
    add_model_arguments(parser)
    add_attack_arguments(parser)
    RECIPE_FLAGS.add_to(parser)
    training = parser.add_argument_group("training")
    training.add_argument("--logdir", help="log and checkpoint directory (default: named after the settings)")
    training.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --logdir")
    training.add_argument("--train-dtype", choices=sorted(COMPUTE_DTYPES), default="float32",
                          help="compute type of the training step (float32 variables and BN statistics; float16 with "
                               "loss scaling); also the training attack's unless --attack-dtype; evaluations float32")
    training.add_argument("--free-replays", type=at_least(1), metavar="M",
                          help="free adversarial training (Shafahi et al. 2019): each batch M times, the "
                               "perturbation carried over; the epochs divided by M")
    training.add_argument("--starting-epoch", type=at_least(1), help="epoch to start at when --load gives a checkpoint")
    training.add_argument("--max-unreadable-fraction", type=fraction, default=DEFAULTS.max_unreadable_fraction,
                          metavar="F", help="skip unreadable training images (each logged, counted in stats.json) up "
                                            "to this fraction of a rank's images, fail beyond it (default %(default)g)")
    training.add_argument("--data-server", metavar="ADDR",
                          help="receive training batches from 'python -m tools.serve_data' at this ZMQ address")
    parser.add_argument("--hang-timeout", type=seconds, default=DEFAULTS.hang_timeout, metavar="SECONDS",
                        help="a rank with no training step or evaluation batch for this long prints its stacks "
                             "and exits with code 3, so a stuck job ends (0: never; default %(default)g)")
    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument("--result-file", help="write the metrics and settings as JSON")
    evaluation.add_argument("--preset", choices=sorted(PRESETS),
                            help="a named protocol: sets its flags where not given ({})".format(
                                "; ".join("{}: {}".format(name, preset_flags(name)) for name in sorted(PRESETS))))
    evaluation.add_argument("--eval-images", type=at_least(1), metavar="N",
                            help="evaluate a fixed subset of N validation images, drawn with --eval-subset-seed")
    evaluation.add_argument("--eval-subset-seed", type=at_least(0), default=0, help="seed of --eval-images (default 0)")
    evaluation.add_argument("--eval-list", metavar="FILE",
                            help="evaluate only the validation images FILE lists (one path relative to val/ per "
                                 "line, e.g. RobustBench's ImageNet subset)")
    blackbox = parser.add_argument_group("black-box mode")
    blackbox.add_argument("--prediction-file", default="predictions.txt")
    blackbox.add_argument("--logits-file", help="also write the logits, float32 [images, classes] (.npy)")
    return parser




def check_eval_subset(args, parser):
    if args.eval_images is not None and args.eval_list:
        parser.error("give --eval-images or --eval-list, not both")
    if args.eval_list and args.preset:      # the list replaces the preset's drawn subset
        args.eval_images = 0


def parse(argv, description=None):
    """(parser, args) of main.py's command line: plugins imported first, then the flags parsed,
    checked, and the preset's settings filled in (`args.preset_changes`: those the command
    line changed)."""
    import_plugins(argv)
    parser = build_parser(description)
    args = parser.parse_args(argv)
    check_eval_subset(args, parser)
    args.preset_changes = apply_preset(args)
    return parser, args

