"""Every denoising operation, forward + backward, fast formulation against the definition
("plain" in the tables: the paper's einsums).

For each operation and each stage shape of a 224x224 ResNet (C = 256, 512, 1024, 2048 at
56, 28, 14, 7 squared), batch 8: one step computes the operation's output and the gradients
of sum(output * r) (r fixed random) w.r.t. the input and the operation's own weights
(the theta/phi embeddings). The plain and the fast graphs are timed in alternation in the
same process (rounds of A, B, A, B, ...), so load on the machine hits both alike.
Peak memory is measured in a second process with TensorFlow's BFC CPU allocator
(see bench/common.py): the transient bytes of one step beyond the inputs and weights.

    .venv/bin/python -m bench.bench_ops                         # everything (about 15 min on 2 cores)
    .venv/bin/python -m bench.bench_ops --ops nonlocal_gaussian --stages 56 --memory
"""
import argparse
import json
import sys

from bench import common
from bench.flops import STAGE_SHAPES, op_train_flops

FORMULATIONS = ("definition", "fast")


def build_step(op_name, channels, size, batch, formulation, data_format="NHWC", xla=False, seed=0,
               block_bytes=None):
    """(graph, fetches) of one forward + backward step of `op_name` in `formulation`."""
    import tensorflow as tf
    from nets import BuildOptions
    from nets.denoise import DENOISE_OPS
    tf1 = tf.compat.v1
    settings = {"softmax_block_bytes": block_bytes} if block_bytes else {}
    options = BuildOptions(data_format=data_format, formulation=formulation, **settings)
    layout = options.layout
    shape = [batch, size, size, channels] if layout.channels_last else [batch, channels, size, size]
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(seed)
        x = tf1.get_variable("x", initializer=tf.random.normal(shape), trainable=False)
        r = tf1.get_variable("r", initializer=tf.random.normal(shape), trainable=False)

        def step():
            with tf1.variable_scope("op"):
                y = DENOISE_OPS.get(op_name)(x, 3, options)
            weights = tf1.trainable_variables()
            grads = tf.gradients(tf.reduce_sum(y * r), [x] + weights)
            # reduce everything that a network would consume: the output and every gradient
            return [tf.reduce_sum(y)] + [tf.reduce_sum(g) for g in grads]

        # XLA (or NCHW on a CPU, which only XLA runs): the whole step as one XLA computation
        fetches = tf1.xla.experimental.compile(step) if xla or not layout.channels_last else step()
        init = tf1.global_variables_initializer()
    return graph, fetches, init


def open_step(op_name, channels, size, batch, formulation, **kw):
    import tensorflow as tf
    graph, fetches, init = build_step(op_name, channels, size, batch, formulation, **kw)
    session = tf.compat.v1.Session(graph=graph)
    session.run(init)
    return session, fetches


def measure_memory(ops, stages, batch, block_bytes=None):
    """{key: transient peak bytes of one step} for every configuration (BFC allocator on)."""
    results = {}
    for op_name in ops:
        for channels, size in stages:
            for formulation in FORMULATIONS:
                session, fetches = open_step(op_name, channels, size, batch, formulation, block_bytes=block_bytes)
                session.run(fetches)
                baseline = common.reset_peak()
                session.run(fetches)
                results[key(op_name, size, formulation)] = common.peak_since(baseline)
                session.close()
    return results


def key(op_name, size, formulation):
    return "{}@{}:{}".format(op_name, size, formulation)


def main(argv=None):
    from nets.denoise import DENOISE_OPS
    from nets.options import DEFAULT_SOFTMAX_BLOCK_BYTES
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", nargs="*", default=DENOISE_OPS.names(), help="operations (default all)")
    parser.add_argument("--stages", nargs="*", type=int, default=[s for _, s in STAGE_SHAPES],
                        help="spatial sizes among 56 28 14 7")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5, help="timed runs of each formulation (alternating)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--xla", action="store_true", help="also time the fast formulation compiled with XLA")
    parser.add_argument("--memory", action="store_true", help="also measure peak memory (a second process)")
    parser.add_argument("--block-bytes", type=int, default=16 << 20,
                        help="the fast Gaussian's affinity bytes per image and query block (default 16 MiB: the "
                             "56x56 stage is blocked; the library default, nets.options.DEFAULT_SOFTMAX_BLOCK_BYTES, "
                             "blocks only larger maps)")
    parser.add_argument("--memory-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    stages = [(c, s) for c, s in STAGE_SHAPES if s in args.stages]
    if args.memory_worker:
        print(json.dumps(measure_memory(args.ops, stages, args.batch, args.block_bytes)))
        return 0
    memory = {}
    if args.memory:
        worker = ["--memory-worker", "--batch", str(args.batch), "--block-bytes", str(args.block_bytes), "--ops"] + \
            args.ops + \
            ["--stages"] + [str(s) for _, s in stages]
        memory = common.measure_in_subprocess("bench.bench_ops", worker)
    common.header("Denoising operations: forward + backward, batch {}, NHWC, float32".format(args.batch), notes=[
        "time: median of {} alternating rounds after {} warm-up run(s), min..max in brackets".format(
            args.rounds, args.warmup),
        "speedup = plain time / fast time (> 1: the fast formulation is faster), of the medians and of the best "
        "(minimum) times; under load from other processes the best times are the steadier estimate",
        "GFLOP/s (non-local operations): computed FLOPs (bench/flops.py) of the formulation / its median time; "
        "the fast Gaussian counts its recomputed q k^T, the plain dot product its N x N order",
        "fast Gaussian here: query blocks of at most {:g} MiB of affinity per image (--block-bytes), images in "
        "turn; an image whose whole affinity fits runs the plain graph (so only 56x56 is blocked); the library "
        "default (nets.options.DEFAULT_SOFTMAX_BLOCK_BYTES = {:g} MiB) blocks none of these shapes".format(
            args.block_bytes / 2 ** 20, DEFAULT_SOFTMAX_BLOCK_BYTES / 2 ** 20),
    ] + (["peak: transient bytes of one step, TF BFC CPU allocator statistics (separate process)"] if memory else []))
    columns = ["operation", "C x H x W", "plain", "fast", "speedup (median)", "speedup (best)", "plain GFLOP/s",
               "fast GFLOP/s"]
    if args.xla:
        columns += ["fast+XLA", "speedup XLA"]
    if memory:
        columns += ["peak plain", "peak fast", "memory ratio"]
    common.table(columns, [], end=False)
    for op_name in args.ops:
        for channels, size in stages:
            runs, sessions = {}, []
            configs = [(f, False) for f in FORMULATIONS] + ([("fast", True)] if args.xla else [])
            for formulation, xla in configs:
                session, fetches = open_step(op_name, channels, size, args.batch, formulation, xla=xla,
                                             block_bytes=args.block_bytes)
                sessions.append(session)
                runs[(formulation, xla)] = (lambda s=session, f=fetches: s.run(f))
            timing = common.interleaved(runs, warmup=args.warmup, rounds=args.rounds)
            for session in sessions:
                session.close()
            plain, fast = timing[("definition", False)], timing[("fast", False)]
            n = size * size
            rates = [op_train_flops(op_name, channels, n, f) * args.batch / timing[(f, False)].median / 1e9
                     for f in FORMULATIONS]
            cells = [op_name, "{} x {} x {}".format(channels, size, size),
                     "{} ({})".format(common.fmt_seconds(plain.median), plain.spread()),
                     "{} ({})".format(common.fmt_seconds(fast.median), fast.spread()),
                     "x{:.2f}".format(plain.median / fast.median),
                     "x{:.2f}".format(min(plain.seconds) / min(fast.seconds))] + \
                    (["{:.0f}".format(r) for r in rates] if op_name.startswith("nonlocal") else ["-", "-"])
            if args.xla:
                xla_time = timing[("fast", True)]
                cells += [common.fmt_seconds(xla_time.median), "x{:.2f}".format(plain.median / xla_time.median)]
            if memory:
                mp, mf = memory[key(op_name, size, "definition")], memory[key(op_name, size, "fast")]
                cells += [common.fmt_bytes(mp), common.fmt_bytes(mf), "x{:.1f}".format(mp / max(mf, 1))]
            common.start_row(cells)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
