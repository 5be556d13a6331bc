"""Attackers: (image, label, model_fn) -> adversarial image. Nothing here knows the network."""
from .base import AttackResult, NoOpAttacker, outcome
from .pgd import PGDAttacker, attack_loss, random_wrong_target, step_size_for


def build_attacker(iterations, **settings):
    """`--attack-iter 0` means clean images; otherwise PGD with the given settings."""
    return NoOpAttacker() if iterations == 0 else PGDAttacker(iterations, **settings)


__all__ = ["AttackResult", "NoOpAttacker", "PGDAttacker", "attack_loss", "build_attacker", "outcome",
           "random_wrong_target", "step_size_for"]
