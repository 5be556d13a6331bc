"""Evaluation metrics: top-1 / top-5 error (the defender's) and attack success rate (the attacker's).

docs/FACTS.md Sec. 4: both metrics are reported, top-1 (and top-5) error and attack success
rate. Counts, not rates, are accumulated, so batches and Horovod ranks sum exactly.
"""
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Counts:
    images: int = 0
    wrong_top1: int = 0
    wrong_top5: int = 0
    hits: int = 0

    @classmethod
    def from_batch(cls, correct_top1, correct_top5, hit):
        correct_top1, correct_top5, hit = (np.asarray(a, bool) for a in (correct_top1, correct_top5, hit))
        return cls(len(correct_top1), int((~correct_top1).sum()), int((~correct_top5).sum()), int(hit.sum()))

    def __add__(self, other):
        return Counts.from_array(self.as_array() + other.as_array())

    def as_array(self):
        return np.array([self.images, self.wrong_top1, self.wrong_top5, self.hits], np.int64)

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
        return self._rate(self.hits)

    def summary(self):
        return dict(asdict(self), top1_error=self.top1_error, top5_error=self.top5_error,
                    attack_success_rate=self.attack_success_rate)
