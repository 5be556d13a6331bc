"""Every default in one place: the published training recipe (Feature Denoising, Sec. 5;
docs/FACTS.md Sec. 5) and the defaults of the command-line tools.

Flags override these fields; main.py, tools/ (the data server among them), bench/, the tests and the README
read the same objects.
"""
import dataclasses
import os
from dataclasses import dataclass
from typing import Tuple

from ranges import SettingError, check_settings, integer_setting, setting

COLLAPSE_ACTIONS = ("stop", "rollback")     # what the catastrophic-overfitting guard does (engine/guard.py)


@dataclass(frozen=True)
class Recipe:
    batch_per_gpu: int = integer_setting(32, minimum=1)
    base_lr_per_256: float = setting(0.1, minimum=0.0, exclusive_minimum=True)   # base LR = 0.1 x total batch / 256
    momentum: float = setting(0.9, minimum=0.0, maximum=1.0)                      # Nesterov
    weight_decay: float = setting(1e-4, minimum=0.0)     # on conv and FC weights only
    weight_decay_pattern: str = r"(^|/)W$"  # variable names ending in W (conv, embedding, linear)
    label_smoothing: float = setting(0.1, minimum=0.0, maximum=1.0)
    augmentation: str = "imagenet"          # a name in data.augment.TRAIN_AUGMENTATIONS
    epochs: int = integer_setting(110, minimum=1)
    lr_decay_epochs: Tuple[int, ...] = integer_setting((35, 70, 95), minimum=1)
    lr_decay_factor: float = setting(0.1, minimum=0.0, maximum=1.0, exclusive_minimum=True)
    warmup_epochs: int = integer_setting(5, minimum=0)    # linear warm-up from warmup_start_lr, when base LR > it
    warmup_start_lr: float = setting(0.1, minimum=0.0, exclusive_minimum=True)
    attack: str = "pgd"                     # the training attack (a name in attacker.ATTACKS)
    attack_iterations: int = integer_setting(30, minimum=0)    # PGD-30 in training; 0 = clean training
    attack_prob_start_from_clean: float = setting(0.2, minimum=0.0, maximum=1.0)
    # Evaluations during training (docs/FACTS.md Sec. 5 and 7). An attack is NAME or
    # NAME@ITERATIONS (attacker.parse_attack); a bare number N is PGD-N.
    # (attack, every k epochs, and in each of the last n epochs): the original runs PGD-100
    # every 10 epochs and after epoch 105
    eval_schedule: Tuple[Tuple[str, int, int], ...] = (("clean", 1, 0), ("pgd@10", 1, 0), ("pgd@50", 20, 0),
                                                       ("pgd@100", 10, 5))
    # after the last epoch, besides the schedule: the robustness curve (every length 10..100)
    eval_final: Tuple[str, ...] = ("clean",) + tuple("pgd@{}".format(k) for k in range(10, 101, 10))
    # Not in the paper: the catastrophic-overfitting guard (engine/guard.py; Wong et al., ICLR 2020). After each
    # epoch of adversarial training, this attack (an attack text; "none": off) on a fixed subset of the training
    # images; the run stops when its accuracy falls more than the margin below its best, or ("rollback") goes back to
    # the best epoch's checkpoint and trains on with the attack's step times collapse_step_scale, at most
    # max_rollbacks times in the run (engine/rollback.py).
    collapse_check: str = "pgd@10"
    collapse_check_images: int = integer_setting(512, minimum=1)
    collapse_margin: float = setting(0.2, minimum=0.0, maximum=1.0, exclusive_minimum=True)
    on_collapse: str = setting("stop", choices=COLLAPSE_ACTIONS)
    collapse_step_scale: float = setting(0.5, minimum=0.0, maximum=1.0, exclusive_minimum=True)
    max_rollbacks: int = integer_setting(2, minimum=1)

    def __post_init__(self):
        check_settings(self, "training recipe")
        if list(self.lr_decay_epochs) != sorted(set(self.lr_decay_epochs)):
            raise SettingError("training recipe: lr_decay_epochs must increase, got {}".format(
                ",".join(map(str, self.lr_decay_epochs))), "lr_decay_epochs")

    def base_lr(self, total_batch):
        return self.base_lr_per_256 * total_batch / 256.0

    def lr_schedule(self, total_batch):
        """[(epoch, lr)] step schedule: base LR, x0.1 at each decay epoch."""
        lr = self.base_lr(total_batch)
        schedule = [(0, lr)]
        for epoch in self.lr_decay_epochs:
            lr *= self.lr_decay_factor
            schedule.append((epoch, lr))
        return schedule

    def warmup_schedule(self, total_batch, steps_per_epoch):
        """[(step, lr)] linear warm-up, or [] when the base LR is not above the warm-up start."""
        base = self.base_lr(total_batch)
        if base <= self.warmup_start_lr or self.warmup_epochs == 0:
            return []
        return [(0, self.warmup_start_lr), (self.warmup_epochs * steps_per_epoch, base)]

    def with_replays(self, replays):
        """Free training's recipe (Shafahi et al., NeurIPS 2019, Sec. 4: "we divide the number of epochs by m"): each
        batch is replayed `replays` times, so the epochs, the LR decay epochs and the warm-up are divided by it
        (rounded up): as many backward passes as a clean run."""
        def shorter(epochs):
            return -(-epochs // replays)
        return dataclasses.replace(self, epochs=shorter(self.epochs), warmup_epochs=shorter(self.warmup_epochs),
                                   lr_decay_epochs=tuple(dict.fromkeys(shorter(e) for e in self.lr_decay_epochs)))

    def evals_at(self, epoch):
        """Attacks to evaluate after `epoch` (1-based), in order, each once."""
        due = [attack for attack, every, last in self.eval_schedule
               if epoch % every == 0 or epoch > self.epochs - max(last, 1)]
        if epoch >= self.epochs:
            due += list(self.eval_final)
        return list(dict.fromkeys(due))

    def scheduled_attacks(self):
        """Every attack that some epoch evaluates, each once."""
        return list(dict.fromkeys([attack for attack, _, _ in self.eval_schedule] + list(self.eval_final)))


PUBLISHED = Recipe()


@dataclass(frozen=True)
class Defaults:
    """Defaults of the command-line tools that are not part of the recipe."""
    eval_attack: str = "pgd"                # --eval's attack: the paper's targeted PGD (PGD-10 by default)
    attack_epsilon: float = 16.0            # every attack's default L-inf budget, 0..255 scale (paper Sec. 6.1)
    image_size: int = 224                   # the network input, the training crop
    max_workers: int = 32                   # image decoding: the CPU count, at most this many
    data_server_hwm: int = 50               # ZMQ high-water mark of the data server, in batches
    data_server_timeout: float = 600.0      # seconds a trainer waits for a batch before it fails
    hang_timeout: float = 1800.0            # seconds without a training or evaluation step: stacks, then exit 3
    # Training skips unreadable images (logged, counted in stats.json) up to this fraction of a
    # rank's images (ImageNet: 1281 of 1.28 M), and fails beyond it (on a small set: at the first).
    max_unreadable_fraction: float = 0.001

    def workers(self):
        """Image decoding processes/threads per rank when --workers is not given."""
        return max(1, min(self.max_workers, os.cpu_count() or 1))


DEFAULTS = Defaults()

# Named evaluation protocols (`main.py --eval --preset NAME`): the flags each one sets where the
# command line does not. RobustBench's ImageNet L-inf leaderboard: untargeted AutoAttack at
# epsilon 4/255 (4 on the 0..255 scale) on a fixed 5000-image subset of val, clean accuracy beside.
PRESETS = {
    "robustbench-imagenet": dict(attack="autoattack", attack_epsilon=4.0, eval_images=5000),
}
