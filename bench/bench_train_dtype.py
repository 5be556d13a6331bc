"""Mixed-precision training (`main.py --train --train-dtype`) against what the machine's reduced-precision matmuls
allow, measured in one run: the training step of ResNetDenoise-50 at 224 with a PGD-2 training attack
(bench_train_step.build_train_step, the graph training uses) in float32 and in each reduced type, and a large matmul
in the same types, all timed in alternation. The figure of merit: step speed-up / matmul speed-up (issue target:
at least 0.7 of the matmul's ratio for bfloat16). A CPU without native bfloat16 (no AVX512_BF16 / AMX) runs
bfloat16 emulated, slower than float32: then both ratios are below 1 and the quotient says how much of even that
the step keeps.

    .venv/bin/python -m bench.bench_train_dtype                 # batch 8, 3 rounds, bfloat16
    .venv/bin/python -m bench.bench_train_dtype --dtypes bfloat16 float16 --image-size 112
"""
import argparse
import sys

from bench import common
from bench.bench_train_step import build_train_step


def matmul_runs(size, dtypes):
    """{dtype: run} of a [size, size] x [size, size] matmul chain held in variables (no feed)."""
    import numpy as np
    import tensorflow as tf
    tf1 = tf.compat.v1
    runs, graph = {}, tf.Graph()
    with graph.as_default():
        a = tf1.get_variable("a", initializer=np.random.RandomState(0).randn(size, size).astype(np.float32) / size)
        fetches = {}
        for dtype in dtypes:
            x = tf.cast(a, dtype)
            for _ in range(4):
                x = tf.matmul(x, tf.cast(a, dtype))
            fetches[dtype] = tf.reduce_sum(tf.cast(x, tf.float32))
        session = tf1.Session(graph=graph)
        session.run(tf1.global_variables_initializer())
    for dtype, fetch in fetches.items():
        runs[("matmul", dtype)] = (lambda f=fetch: session.run(f))
    return runs, session


def main(argv=None):
    import tensorflow as tf
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtypes", nargs="*", default=["bfloat16"], choices=["bfloat16", "float16"])
    parser.add_argument("--arch", default="ResNetDenoise")
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--attack-iter", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    dtypes = ["float32"] + list(args.dtypes)
    title = "Training step in reduced precision vs the matmul ratio: {0}-{1} at {2}x{2}, PGD-{3}, batch {4}".format(
        args.arch, args.depth, args.image_size, args.attack_iter, args.batch)
    common.header(title, notes=[
        "median of {} rounds, every configuration once per round in turn, after 1 warm-up".format(args.rounds),
        "speed-up = float32 time / this type's time (above 1: faster); merit = step speed-up / matmul speed-up",
        "matmul: 4 chained {0}x{0} products in the type (casts included)".format(args.matmul_size)])
    runs, session = matmul_runs(args.matmul_size, dtypes)
    sessions = [session]
    for dtype in dtypes:
        graph, fetch, init, _ = build_train_step(args.arch, args.depth, args.batch, args.attack_iter,
                                                 image_size=args.image_size, compute_dtype=dtype)
        step = tf.compat.v1.Session(graph=graph)
        step.run(init)
        sessions.append(step)
        runs[("step", dtype)] = (lambda s=step, f=fetch: s.run(f))
    timing = common.interleaved(runs, warmup=1, rounds=args.rounds)
    for s in sessions:
        s.close()
    rows = []
    for dtype in args.dtypes:
        matmul = timing[("matmul", "float32")].median / timing[("matmul", dtype)].median
        step = timing[("step", "float32")].median / timing[("step", dtype)].median
        rows.append([dtype, common.fmt_seconds(timing[("matmul", dtype)].median),
                     common.fmt_seconds(timing[("step", dtype)].median), "x{:.2f}".format(matmul),
                     "x{:.2f}".format(step), "{:.2f}".format(step / matmul)])
    rows.insert(0, ["float32", common.fmt_seconds(timing[("matmul", "float32")].median),
                    common.fmt_seconds(timing[("step", "float32")].median), "x1.00", "x1.00", "-"])
    common.table(["dtype", "matmul", "training step", "matmul speed-up", "step speed-up", "merit"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
