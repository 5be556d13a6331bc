"""Run under horovodrun (or alone) by tests/test_horovod.py and tests/test_distributed.py: a
few training steps on fixed batches, then every rank writes its weights to OUT/rank<k>.npz.

Rank r of n trains on rows [r*b, (r+1)*b) of each fixed batch of n*b images; one process
(n = 1) with --total-batch trains on all rows, with BN statistics per group of b images.
"""
import argparse
import dataclasses
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tensorpack.callbacks import Callback  # noqa: E402
from tensorpack.dataflow import DataFromList, ProxyDataFlow  # noqa: E402

from attacker import build_attack  # noqa: E402
from config import PUBLISHED  # noqa: E402
from engine.distributed import init_world  # noqa: E402
from engine.train import TrainJob, train  # noqa: E402
from nets import BuildOptions, build_spec  # noqa: E402
from nets.checkpoint import save_npz  # noqa: E402

SIZE, CLASSES, PER_RANK = 16, 5, 4
SPEC = build_spec("ResNetDenoise", 50, blocks=(1, 1), widths=(4, 8), stem="small", stem_width=8,
                  num_classes=CLASSES, image_size=SIZE)


def fixed_batches(steps, total):
    rng = np.random.RandomState(0)
    return [[rng.randint(0, 256, [total, SIZE, SIZE, 3]).astype(np.uint8),
             rng.randint(0, CLASSES, total).astype(np.int32)] for _ in range(steps)]


class EpochsOf(ProxyDataFlow):
    """All the batches in order, with an epoch of `steps` of them."""

    def __init__(self, ds, steps):
        super().__init__(ds)
        self.steps = steps

    def __len__(self):
        return self.steps


class SaveWeightsAtEnd(Callback):
    _chief_only = False

    def __init__(self, path):
        self.path = path

    def _after_train(self):
        save_npz(self.trainer.sess, self.path)


def write_initial_weights(path):
    """The model's own initialisation, seeded (random weights with BN gammas near zero would make
    a few steps chaotic enough to amplify float rounding, hiding what the tests are about)."""
    import tensorflow as tf
    from nets import logits
    tf1 = tf.compat.v1
    with tf.Graph().as_default():
        tf1.set_random_seed(0)
        logits(tf1.placeholder(tf.float32, [None, SIZE, SIZE, 3]), SPEC, training=False)
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            save_npz(session, path)
    return path


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--init", required=True, help="initial weights (.npz)")
    parser.add_argument("--steps", type=int, default=3, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--attack-iter", type=int, default=0)
    parser.add_argument("--ranks", type=int, default=2, help="the batch is ranks x 4 images")
    args = parser.parse_args()
    world = init_world()
    total = PER_RANK * args.ranks
    rows = slice(world.rank * PER_RANK, (world.rank + 1) * PER_RANK) if world.size > 1 else slice(0, total)
    batches = [[images[rows], labels[rows]] for images, labels in fixed_batches(args.steps * args.epochs, total)]
    recipe = dataclasses.replace(PUBLISHED, batch_per_gpu=len(batches[0][1]), epochs=args.epochs, base_lr_per_256=6.4,
                                 warmup_epochs=0, attack_iterations=args.attack_iter, eval_schedule=())
    attack = (build_attack("pgd", dict(iterations=args.attack_iter, seed=0)) if args.attack_iter
              else build_attack("clean"))
    job = TrainJob(data=None, logdir=os.path.join(args.out, "log"), attack=attack,
                   options=BuildOptions(bn_group_size=PER_RANK), load=args.init, workers=0)
    train(SPEC, recipe, job, world, dataflow=EpochsOf(DataFromList(batches, shuffle=False), args.steps),
          extra_callbacks=[SaveWeightsAtEnd(os.path.join(args.out, "rank{}.npz".format(world.rank)))])


if __name__ == "__main__":
    main()
