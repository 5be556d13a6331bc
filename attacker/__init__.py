"""Attacks: (images, labels, Classifier) -> adversarial images and outcomes. Nothing here knows which network it
attacks. Importing the package registers every attack module below."""
from . import apgd, autoattack, fab, fgsm, pgd, square  # noqa: F401  (registration)
from .base import (ATTACKS, Attack, AttackResult, Classifier, build_attack, canonical_attack, monitor_key, outcome,
                   parse_attack, register_attack, setting_names, targeted_result, untargeted_result)
from .losses import LOSS_ALIASES, LOSSES
from .pgd import PGD, random_wrong_target, step_size_for

__all__ = ["ATTACKS", "Attack", "AttackResult", "Classifier", "LOSSES", "LOSS_ALIASES", "PGD", "build_attack",
           "canonical_attack", "monitor_key", "outcome", "parse_attack", "random_wrong_target", "register_attack",
           "setting_names", "step_size_for", "targeted_result", "untargeted_result"]
