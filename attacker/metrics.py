"""Evaluation metrics: top-1 / top-5 error (the defender's) and attack success rate (the attacker's), both reported
(docs/FACTS.md Sec. 4). Counts, not rates, are accumulated, so batches and Horovod ranks sum exactly."""
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Counts:
    images: int = 0
    wrong_top1: int = 0
    wrong_top5: int = 0
    successes: int = 0          # the attack's: reached its target (targeted) or misclassified (untargeted)

    @classmethod
    def from_batch(cls, correct_top1, correct_top5, success):
        correct_top1, correct_top5, success = (np.asarray(a, bool) for a in (correct_top1, correct_top5, success))
        return cls(len(correct_top1), int((~correct_top1).sum()), int((~correct_top5).sum()), int(success.sum()))

    @classmethod
    def from_result(cls, result):
        """The counts of an AttackResult (numpy) of one batch."""
        return cls.from_batch(result.correct_top1, result.correct_top5, result.success)

    def __add__(self, other):
        return Counts.from_array(self.as_array() + other.as_array())

    def as_array(self):
        return np.array([self.images, self.wrong_top1, self.wrong_top5, self.successes], np.int64)

    @classmethod
    def from_array(cls, values):
        return cls(*(int(v) for v in values))

    def _rate(self, count):
        return count / self.images if self.images else float("nan")

    @property
    def top1_error(self):
        return self._rate(self.wrong_top1)

    @property
    def top5_error(self):
        return self._rate(self.wrong_top5)

    @property
    def attack_success_rate(self):
        return self._rate(self.successes)

    def summary(self):
        return dict(asdict(self), top1_error=self.top1_error, top5_error=self.top5_error,
                    attack_success_rate=self.attack_success_rate)
