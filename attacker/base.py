"""The attack interface: what an attack receives, what it returns, and the registry.

An attack is a registered name plus settings (its dataclass fields); it receives images, labels and a `Classifier`,
never knowing which network that is. All it shows derives from its `label` (e.g. "PGD-10"), so a new attack is one
module with one `@register_attack(name)` line (docs/ARCHITECTURE.md). An attack's `success`: the image *reached its
target* (the prediction is the target class; targeted) or is *misclassified* (not its label; untargeted)."""
import dataclasses
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

import tensorflow as tf

from config import DEFAULTS
from nets.registry import Registry
from ranges import check_settings, integer_setting, setting

ATTACKS = Registry("attack")


@dataclass(frozen=True)
class Classifier:
    """The network as an attacker sees it; images are float32 [B, H, W, 3] in [0, 255], BN in inference mode. `logits`
    is the exact float32 model: every outcome an attack reports uses it. `step_logits` may be a faster version (half
    precision, BN folded) for the inner steps; `compile(fn, inputs)` runs an attack's loop (directly, or as one XLA
    computation); `gradient_scale` multiplies a loss before its gradient (float16 steps; a positive scale changes no
    sign)."""
    logits: Callable
    num_classes: int
    step_logits: Optional[Callable] = None
    compile: Optional[Callable] = None
    gradient_scale: float = 1.0

    def step(self, image):
        return (self.step_logits or self.logits)(image)

    def run_loop(self, fn, inputs):
        """fn(*inputs), or its XLA computation; a single result comes back unwrapped."""
        result = self.compile(fn, inputs) if self.compile else fn(*inputs)
        return result[0] if isinstance(result, (list, tuple)) and len(result) == 1 else result


class AttackResult(NamedTuple):
    """Per image: adversarial image, target (untargeted: the label), correct top-1 / top-5 (exact model), success."""
    adversarial: tf.Tensor
    target: tf.Tensor
    correct_top1: tf.Tensor
    correct_top5: tf.Tensor
    success: tf.Tensor


def outcome(logits, label):
    """(prediction, correct top-1, correct top-5) per image."""
    logits = tf.cast(logits, tf.float32)
    prediction = tf.argmax(logits, axis=1, output_type=tf.int32)
    correct_top5 = tf.nn.in_top_k(predictions=logits, targets=label, k=min(5, int(logits.shape[-1])))
    return prediction, tf.equal(prediction, label), correct_top5


def targeted_result(adversarial, label, target, classifier):
    """The AttackResult of a targeted attack's images on the exact model: a success when it reached its target."""
    adversarial = tf.stop_gradient(adversarial)
    prediction, correct_top1, correct_top5 = outcome(classifier.logits(adversarial), label)
    return AttackResult(adversarial, target, correct_top1, correct_top5, tf.equal(prediction, target))


def untargeted_result(adversarial, label, classifier):
    """The AttackResult of an untargeted attack's images on the exact model: a success when misclassified."""
    adversarial = tf.stop_gradient(adversarial)
    _, correct_top1, correct_top5 = outcome(classifier.logits(adversarial), label)
    return AttackResult(adversarial, label, correct_top1, correct_top5, ~correct_top1)


def image_indices(label, index=None):
    """The images' positions in the data set (int64), 0, 1, ... when not given."""
    return tf.range(tf.shape(label, out_type=tf.int64)[0]) if index is None else tf.cast(index, tf.int64)


def epsilon_ball(image, epsilon):
    """(lower, upper): the L-inf ball of radius `epsilon` around `image`, within [0, 255]."""
    return tf.maximum(image - epsilon, 0.0), tf.minimum(image + epsilon, 255.0)


def budget_setting(default=DEFAULTS.attack_epsilon):
    """An epsilon or step size: positive, at most the whole 0..255 pixel range (default: the paper's epsilon)."""
    return setting(default, minimum=0.0, maximum=255.0, exclusive_minimum=True, unit="on the 0..255 scale")


def count_setting(default, minimum=1):
    """Iterations, restarts, queries, target classes: a whole number, at least `minimum`."""
    return integer_setting(default, minimum=minimum)


def seed_setting():
    """An attack seed: None (drawn per evaluation) or a whole number in 0..2^31-1."""
    return integer_setting(None, minimum=0, maximum=(1 << 31) - 1)


class Attack:
    """Base of the registered attacks (dataclasses): subclasses implement `attack`; training uses `perturb`."""
    name = None                     # set by register_attack
    targeted = False
    fast_steps = False              # may its steps use Classifier.step_logits? Only if they decide nothing

    def __post_init__(self):
        """Every setting within the range its field declares (ranges.setting)."""
        check_settings(self, "attack {}".format(self.name))

    @property
    def label(self):
        """The attack's name in results and on the console, e.g. "PGD-10"."""
        return self.name

    def attack(self, image, label, classifier, index=None):
        """AttackResult for float32 images [B, H, W, 3] in [0, 255] and int32 labels [B]; `index` (int64 [B]), the
        images' positions in the data set, seeds per-image randomness."""
        raise NotImplementedError

    def perturb(self, image, label, classifier, index=None):
        """(adversarial image, target) for training: a constant for the weight update."""
        result = self.attack(image, label, classifier, index)
        return tf.stop_gradient(result.adversarial), result.target

    def smaller_step(self, scale):
        """This attack with its step `scale` (0 < scale <= 1) times as large: what training continues with after the
        collapse guard rolls a run back (engine/rollback.py). An attack with no step to shrink refuses."""
        raise ValueError("{} has no step to make smaller; --on-collapse rollback needs a training attack with one "
                         "(fgsm-rs, pgd with a step above epsilon/iterations, or --free-replays)".format(self.label))

    def stages(self):
        """What an evaluation runs and reports: this attack, or a composite's stages in order (attacker/protocol.py)."""
        return [self]

    def deciding_stages(self):
        """The labels of the stages whose steps take decisions from the logits (which point to keep, when an image
        is broken): those run on the exact model only."""
        return [stage.label for stage in self.stages() if not stage.fast_steps]


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
    """The attack `name` with the settings it has out of `settings` (shared ones such as epsilon are offered to every
    attack); a name in `required` that the attack does not have is an error that lists its settings."""
    cls, known = ATTACKS.get(name), setting_names(name)
    missing = [key for key in required if key not in known]
    if missing:
        raise ValueError("attack '{}' has no setting {}; its settings are: {}".format(
            name, ", ".join(repr(k) for k in missing), ", ".join(known)))
    return cls(**{key: value for key, value in (settings or {}).items() if key in known})


def parse_attack(text):
    """An attack text -> (name, settings): NAME or NAME@ITERATIONS; a bare number N is the paper's PGD-N (0: clean)."""
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
    """The clean "attack" (`--attack clean`, `--attack-iter 0`): the images; target = label, nothing is a success."""

    fast_steps = True               # it takes no step

    def attack(self, image, label, classifier, index=None):
        _, correct_top1, correct_top5 = outcome(classifier.logits(image), label)
        return AttackResult(image, label, correct_top1, correct_top5, tf.zeros_like(correct_top1))

    def perturb(self, image, label, classifier, index=None):
        return image, label
