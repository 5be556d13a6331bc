"""The collapse guard's accuracies scripted, so that a test decides when a run collapses (engine/guard.py; the guard
attack still runs, its result is replaced). In a test's own process, `install(monkeypatch.setattr, ...)`; in ranks
that a test starts, `main.py --import tests.scripted_guard` with SCRIPTED_GUARD="0.5,0.6,0.1,..." and
SCRIPTED_GUARD_STEPS (steps per epoch) in the environment."""
import os

from engine import guard


class ScriptedAccuracies:
    """Each epoch's accuracy taken in turn from `accuracies`; the best of a resumed run from the epochs scripted so
    far (what stats.json would hold, had these been the accuracies)."""

    def __init__(self, accuracies, steps_per_epoch):
        self.accuracies, self.steps_per_epoch, self.history = list(accuracies), steps_per_epoch, {}

    def epoch_accuracy(self, epoch):
        self.history[epoch] = self.accuracies.pop(0)
        return self.history[epoch]

    def best_recorded(self, logdir, key, before_epoch):
        kept = {epoch: accuracy for epoch, accuracy in self.history.items() if epoch < before_epoch}
        if not kept:
            return None
        best = max(kept, key=lambda epoch: (kept[epoch], -epoch))
        return dict(epoch=best, global_step=best * self.steps_per_epoch, accuracy=kept[best])


def install(set_attribute, accuracies, steps_per_epoch):
    script = ScriptedAccuracies(accuracies, steps_per_epoch)
    set_attribute(guard.CollapseGuard, "epoch_accuracy", lambda self, epoch: script.epoch_accuracy(epoch))
    set_attribute(guard, "best_recorded", script.best_recorded)
    return script


if os.environ.get("SCRIPTED_GUARD"):
    install(setattr, map(float, os.environ["SCRIPTED_GUARD"].split(",")), int(os.environ["SCRIPTED_GUARD_STEPS"]))
