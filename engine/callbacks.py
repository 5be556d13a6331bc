"""Callbacks for training: white-box evaluation on the paper's schedule, on every rank.

SPEC Sec. 5: "distributed evaluation (each rank a shard of the val set, counts summed with
Horovod): clean and PGD-10 every epoch, PGD-50 every 20 epochs, PGD-100 every 10 and in
the last epochs".
"""
import tensorflow as tf
from tensorpack.callbacks import Callback

from .evaluate import attack_name, evaluate
from .model import attack_graph

tf1 = tf.compat.v1


class GraphAttack:
    """`attack(images, labels)` on tensors built in a graph whose session is given later."""

    def __init__(self, images, labels, result):
        self.images, self.labels, self.result = images, labels, result
        self.session = None

    def attack(self, images, labels):
        return self.session.run(self.result, {self.images: images, self.labels: labels})


class AttackEvaluation(Callback):
    """After each epoch, evaluates the attack lengths `recipe.evals_at(epoch)` asks for."""
    _chief_only = False     # every rank evaluates its shard; the counts are summed

    def __init__(self, spec, layout, attackers, recipe, dataflow, sum_across_ranks, is_chief):
        self.spec, self.layout, self.attackers, self.recipe = spec, layout, attackers, recipe
        self.dataflow, self.sum_across_ranks, self.is_chief = dataflow, sum_across_ranks, is_chief

    def _setup_graph(self):
        self.graph_attacks = {iterations: GraphAttack(*attack_graph(self.spec, self.layout, attacker))
                              for iterations, attacker in self.attackers.items()}

    def _before_train(self):
        self.dataflow.reset_state()

    def evaluate(self, iterations):
        graph_attack = self.graph_attacks[iterations]
        graph_attack.session = self.trainer.sess
        return evaluate(graph_attack, self.dataflow, self.sum_across_ranks, show_progress=self.is_chief,
                        description="val " + attack_name(iterations))

    def _trigger_epoch(self):
        for iterations in self.recipe.evals_at(self.epoch_num):
            if iterations not in self.graph_attacks:
                continue
            counts = self.evaluate(iterations)
            if self.is_chief:
                name = "val-clean" if iterations == 0 else "val-pgd{}".format(iterations)
                self.trainer.monitors.put_scalar(name + "/top1_error", counts.top1_error)
                self.trainer.monitors.put_scalar(name + "/top5_error", counts.top5_error)
                if iterations:
                    self.trainer.monitors.put_scalar(name + "/attack_success_rate", counts.attack_success_rate)
