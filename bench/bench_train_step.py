"""A full adversarial training step: PGD-k attack (BN in inference mode), then SGD on the
adversarial images, for ResNet-50, ResNetDenoise-50 and ResNeXtDenoiseAll-50 at 224x224.

The graph is the one training uses (engine.graphs.AdversarialTraining: attack, label-smoothed
loss, weight decay, Nesterov momentum, BN statistics updated), on one process, NHWC,
float32, inputs held in variables (no data pipeline: see bench_data). Every configuration
is timed in alternation with the others (rounds of A, B, C, ...), so the denoise overhead
(time / ResNet-50's time at the same k) is a ratio measured under the same load.

    .venv/bin/python -m bench.bench_train_step                   # k = 0 and 2, batch 8
    .venv/bin/python -m bench.bench_train_step --definition      # also the denoising definitions (no fast kernels)
"""
import argparse
import sys

from bench import common
from bench.flops import model_flops

MODELS = ("ResNet", "ResNetDenoise", "ResNeXt", "ResNeXtDenoiseAll")
BASELINE = {"ResNet": "ResNet", "ResNetDenoise": "ResNet", "ResNeXt": "ResNeXt", "ResNeXtDenoiseAll": "ResNeXt"}


def model_spec(arch, depth, image_size):
    """The named architecture; "ResNeXt" is ResNeXtDenoiseAll's backbone without its blocks."""
    import dataclasses
    from nets import build_spec
    if arch == "ResNeXt":
        spec = build_spec("ResNeXtDenoiseAll", depth, image_size=image_size)
        return dataclasses.replace(spec, denoise_op=None, denoise_placement="none")
    return build_spec(arch, depth, image_size=image_size)


BLOCKED = {"softmax_block_bytes": 16 << 20}     # "blocked": the fast formulation with 56x56 Gaussians blocked


def build_train_step(arch, depth, batch, iterations, formulation="fast", image_size=224, seed=0,
                     compute_dtype="float32"):
    """(graph, train fetches, init op) of one training step; `compute_dtype` as main.py --train-dtype sets it (the
    training pass and the attack's steps)."""
    import numpy as np
    import tensorflow as tf
    from tensorpack.tfutils.tower import TowerContext
    from attacker import build_attack
    from config import PUBLISHED
    from engine.graphs import AdversarialTraining, AttackExecution
    from nets import BuildOptions
    tf1 = tf.compat.v1
    spec = model_spec(arch, depth, image_size)
    rng = np.random.RandomState(seed)
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(seed)
        images = tf1.get_variable("bench_images", initializer=rng.randint(0, 256, [batch, image_size, image_size, 3])
                                  .astype(np.uint8), trainable=False)
        labels = tf1.get_variable("bench_labels", initializer=rng.randint(0, spec.num_classes, [batch])
                                  .astype(np.int32), trainable=False)
        attack = build_attack("pgd", dict(iterations=iterations)) if iterations else build_attack("clean")
        settings = BLOCKED if formulation == "blocked" else {}
        options = BuildOptions(formulation="fast" if formulation == "blocked" else formulation,
                               compute_dtype=compute_dtype, **settings)
        model = AdversarialTraining(spec, options, attack, PUBLISHED, learning_rate=0.01,
                                    execution=AttackExecution(compute_dtype=compute_dtype))
        with TowerContext("", is_training=True):
            cost = model.build_graph(tf.identity(images), tf.identity(labels))
        train_op = model.optimizer().minimize(cost)
        with tf.control_dependencies([train_op]):
            fetch = tf.identity(cost)
        init = tf1.global_variables_initializer()
    return graph, fetch, init, spec


def main(argv=None):
    import tensorflow as tf
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--attack-iter", type=int, nargs="*", default=[0, 2])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--definition", action="store_true", help="also the denoising models built from the definitions")
    parser.add_argument("--blocked", action="store_true",
                        help="also ResNetDenoise with the 56x56 Gaussian blocked (16 MiB per image and block)")
    args = parser.parse_args(argv)
    configs = []
    for k in args.attack_iter:
        for arch in args.models:
            configs.append((arch, k, "fast"))
            if args.definition and BASELINE[arch] != arch:
                configs.append((arch, k, "definition"))
            if args.blocked and arch == "ResNetDenoise":
                configs.append((arch, k, "blocked"))
    common.header("Adversarial training step at {0}x{0}, batch {1}, NHWC, float32".format(
        args.image_size, args.batch), notes=[
        "time per step: median of {} rounds (every configuration once per round, in turn) after {} warm-up "
        "step(s); min..max in brackets".format(args.rounds, args.warmup),
        "time vs baseline = step time / the baseline's step time at the same k, in this run (baseline: ResNet-{0} "
        "for ResNetDenoise, ResNeXt-{0} 32x8d without blocks for ResNeXtDenoiseAll), from the medians and from "
        "the best (minimum) times; under bursty load from other processes the best times are the steadier "
        "estimate; FLOP ratio = the same for the computed FLOPs (bench/flops.py)".format(args.depth),
        "denoising formulation: the default (nets.denoise 'fast'; at 224 the Gaussian runs unblocked), plain = "
        "the einsum definition, blocked = the default with the 56x56 Gaussian in query blocks of 16 MiB per image",
    ])
    runs, sessions, specs = {}, [], {}
    for arch, k, formulation in configs:
        graph, fetch, init, spec = build_train_step(arch, args.depth, args.batch, k, formulation, args.image_size)
        session = tf.compat.v1.Session(graph=graph)
        session.run(init)
        sessions.append(session)
        specs[arch] = spec
        runs[(arch, k, formulation)] = (lambda s=session, f=fetch: s.run(f))
    timing = common.interleaved(runs, warmup=args.warmup, rounds=args.rounds)
    for session in sessions:
        session.close()
    rows = []
    for arch, k, formulation in configs:
        t = timing[(arch, k, formulation)]
        base = timing.get((BASELINE[arch], k, "fast"))
        flops = model_flops(specs[arch]).train_step(k)
        base_flops = model_flops(specs[BASELINE[arch]]).train_step(k) if BASELINE[arch] in specs else None
        name = "{}-{}".format(arch, args.depth) + (" 32x8d" if arch == "ResNeXt" else "")
        rows.append([
            name + ("" if formulation == "fast" else " ({})".format(formulation)), k,
            "{} ({})".format(common.fmt_seconds(t.median), t.spread()), common.fmt_seconds(min(t.seconds)),
            "{:.2f}".format(args.batch / t.median), "{:.1f}".format(flops / 1e9),
            "{:.0f}".format(flops * args.batch / min(t.seconds) / 1e9),
            "x{:.2f}".format(t.median / base.median) if base else "-",
            "x{:.2f}".format(min(t.seconds) / min(base.seconds)) if base else "-",
            "x{:.2f}".format(flops / base_flops) if base_flops else "-",
        ])
    common.table(["model", "PGD k", "step (median)", "step (best)", "images/s", "GFLOPs/image (computed)",
                  "GFLOP/s (best)", "time vs baseline (median)", "time vs baseline (best)", "FLOP ratio"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
