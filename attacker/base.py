"""The attack interface: what an attack receives, what it returns, and the registry.

An attack is a registered name plus settings (the fields of its dataclass). It receives
images, labels and a `Model`, the network as far as an attacker may see it, and never
knows which network that is. Evaluation schedules, progress bars, result records and
monitor names all derive from the attack's `label` (e.g. "PGD-10"), so a new attack is one
module with one `@register_attack(name)` line (docs/ARCHITECTURE.md).
"""
import dataclasses
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

import tensorflow as tf

from nets.registry import Registry
from ranges import check_settings, integer_setting, setting

ATTACKS = Registry("attack")


@dataclass(frozen=True)
class Model:
    """The network as an attacker sees it. Images are float32 [B, H, W, 3] in [0, 255]; BN
    runs in inference mode and its statistics are never updated.

    `logits` is the exact float32 model: every outcome an attack reports uses it.
    `step_logits` may be a faster version of the same function (half precision, BN folded)
    for an attack's inner steps; `compile(fn, inputs)` runs an attack's loop (directly, or
    as one XLA computation); `gradient_scale` multiplies a loss before its gradient is taken
    (float16 steps, so that small gradients do not underflow; a positive scale changes no sign).
    """
    logits: Callable
    num_classes: int
    step_logits: Optional[Callable] = None
    compile: Optional[Callable] = None
    gradient_scale: float = 1.0

    def step(self, image):
        return (self.step_logits or self.logits)(image)

    def run_loop(self, fn, inputs):
        return self.compile(fn, inputs) if self.compile else fn(*inputs)


class AttackResult(NamedTuple):
    """Per image: the adversarial image, the target (the label for an untargeted attack),
    whether the final image is classified correctly (top-1, top-5) and whether the attack
    succeeded (`hit`)."""
    adversarial: tf.Tensor
    target: tf.Tensor
    correct_top1: tf.Tensor
    correct_top5: tf.Tensor
    hit: tf.Tensor


def outcome(logits, label, target):
    """(correct top-1, correct top-5, prediction == target) per image, as booleans."""
    logits = tf.cast(logits, tf.float32)
    prediction = tf.argmax(logits, axis=1, output_type=tf.int32)
    correct_top5 = tf.nn.in_top_k(predictions=logits, targets=label, k=min(5, int(logits.shape[-1])))
    return tf.equal(prediction, label), correct_top5, tf.equal(prediction, target)


def budget_setting(default):
    """An epsilon or step size: positive, at most the whole 0..255 pixel range."""
    return setting(default, minimum=0.0, maximum=255.0, exclusive_minimum=True, unit="on the 0..255 scale")


def count_setting(default, minimum=1):
    """Iterations, restarts, queries, target classes: a whole number, at least `minimum`."""
    return integer_setting(default, minimum=minimum)


def seed_setting():
    """An attack seed: None (drawn per evaluation) or a whole number in 0..2^31-1."""
    return integer_setting(None, minimum=0, maximum=(1 << 31) - 1)


def unless_empty(count, run, empty):
    """`run()` when `count` (images to attack) is positive, else `empty()`. A run on "the images
    still robust" meets an empty batch once every image is broken, and TensorFlow's CPU
    convolutions fail on a batch of zero images."""
    return tf.cond(count > 0, run, empty)


class Attack:
    """Base of the registered attacks (dataclasses). Subclasses implement `attack`; training
    uses `perturb`, which by default is the adversarial image of `attack`."""
    name = None                     # set by register_attack
    targeted = False

    def __post_init__(self):
        """Every setting within the range its field declares (ranges.setting)."""
        check_settings(self, "attack {}".format(self.name))

    @property
    def label(self):
        """The attack's name in results and on the console, e.g. "PGD-10"."""
        return self.name

    def attack(self, image, label, model, index=None):
        """AttackResult for float32 images [B, H, W, 3] in [0, 255] and int32 labels [B];
        `index` (int64 [B]), the images' positions in the data set, seeds per-image randomness."""
        raise NotImplementedError

    def perturb(self, image, label, model, index=None):
        """(adversarial image, target) for training: a constant for the weight update."""
        result = self.attack(image, label, model, index)
        return tf.stop_gradient(result.adversarial), result.target

    def components(self):
        """The attacks this one runs in order, each only on the images every earlier one left
        correctly classified (AutoAttack's protocol); an evaluation reports each one. A single
        attack is its own only component."""
        return [self]


def register_attack(name):
    """Class decorator: register a dataclass subclass of Attack as `name`."""
    def register(cls):
        cls.name = name
        ATTACKS.register(name, cls)
        return cls
    return register


def setting_names(name):
    return [f.name for f in dataclasses.fields(ATTACKS.get(name))]


def build_attack(name, settings=None, required=()):
    """The attack `name` with the settings it has out of `settings` (shared settings such as
    epsilon are offered to every attack); a name in `required` that the attack does not
    have is an error that lists its settings."""
    cls = ATTACKS.get(name)
    known = setting_names(name)
    missing = [key for key in required if key not in known]
    if missing:
        raise ValueError("attack '{}' has no setting {}; its settings are: {}".format(
            name, ", ".join(repr(k) for k in missing), ", ".join(known)))
    return cls(**{key: value for key, value in (settings or {}).items() if key in known})


def parse_attack(text):
    """An attack named on the command line or in a schedule -> (name, settings):
    "NAME" or "NAME@ITERATIONS"; a bare number N is the paper's PGD-N (0: clean images)."""
    text = text.strip()
    if text.isdigit():
        return ("clean", {}) if int(text) == 0 else ("pgd", {"iterations": int(text)})
    name, _, iterations = text.partition("@")
    ATTACKS.get(name)
    if not iterations:
        return name, {}
    if not iterations.isdigit():
        raise ValueError("expected NAME@ITERATIONS with a whole number, got '{}'".format(text))
    return name, {"iterations": int(iterations)}


def canonical_attack(text):
    """The one spelling of an attack text: "0" -> "clean", "10" -> "pgd@10", others kept."""
    name, settings = parse_attack(text)
    return "{}@{}".format(name, settings["iterations"]) if settings else name


def monitor_key(attack):
    """The attack's label as a monitor / file-name key: "PGD-10" -> "pgd10"."""
    return "".join(c for c in attack.label.lower() if c.isalnum())


@register_attack("clean")
@dataclass(frozen=True)
class Clean(Attack):
    """The clean "attack" (`--attack clean`, `--attack-iter 0`): the images themselves; the
    target is the label and nothing counts as a success."""

    def attack(self, image, label, model, index=None):
        correct_top1, correct_top5, _ = outcome(model.logits(image), label, label)
        return AttackResult(image, label, correct_top1, correct_top5, tf.zeros_like(correct_top1))

    def perturb(self, image, label, model, index=None):
        return image, label
