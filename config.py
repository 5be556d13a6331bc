"""The published training recipe (Feature Denoising, Sec. 5; SPEC Sec. 5), one object.

Flags override these fields; tests and the README read the same object.
"""
from dataclasses import dataclass
from typing import Tuple


@dataclass(frozen=True)
class Recipe:
    batch_per_gpu: int = 32
    base_lr_per_256: float = 0.1            # base LR = 0.1 x total batch / 256
    momentum: float = 0.9                   # Nesterov
    weight_decay: float = 1e-4              # on conv and FC weights only
    weight_decay_pattern: str = r"(^|/)W$"  # variable names ending in W (conv, embedding, linear)
    label_smoothing: float = 0.1
    augmentation: str = "imagenet"          # a name in data.augment.TRAIN_AUGMENTATIONS
    epochs: int = 110
    lr_decay_epochs: Tuple[int, ...] = (35, 70, 95)
    lr_decay_factor: float = 0.1
    warmup_epochs: int = 5                  # linear warm-up from warmup_start_lr, when base LR > it
    warmup_start_lr: float = 0.1
    attack_iterations: int = 30             # PGD-30 in training; 0 = clean training
    attack_prob_start_from_clean: float = 0.2
    # (attack iterations, every k epochs) evaluated during training; all of them also after the last epoch
    eval_schedule: Tuple[Tuple[int, int], ...] = ((0, 1), (10, 1), (50, 20), (100, 10))

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

    def evals_at(self, epoch):
        """Attack lengths to evaluate after `epoch` (1-based): the schedule, or all after the last."""
        if epoch >= self.epochs:
            return [iterations for iterations, _ in self.eval_schedule]
        return [iterations for iterations, every in self.eval_schedule if epoch % every == 0]


PUBLISHED = Recipe()
