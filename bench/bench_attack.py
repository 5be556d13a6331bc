"""Evaluation under PGD: the float32 attack against the fast path (half precision where the
hardware has it, BN folded into the conv weights, XLA), images/s and the ratio, on the same
model and images; --profile breaks the op time of each configuration down by kind of work
(matrix products, convolutions, elementwise), which shows where a speed-up is capped.

The graph is the one evaluation uses (engine.predictor.Predictor: PGD-k from a random start
to a random target, then the final classification), with random weights (speed does not
depend on them; robustness is measured on a trained model, see BENCHMARKS.md). All
configurations are timed in alternation.

    .venv/bin/python -m bench.bench_attack                                 # ResNetDenoise-50, 224, PGD-2
    .venv/bin/python -m bench.bench_attack --arch ResNet --attack-iter 10
    .venv/bin/python -m bench.bench_attack --no-xla --profile 3            # where the time goes

With --load and --data it evaluates a trained model instead, every configuration over the
same validation images with the same targets and starts (--attack-seed): robustness (top-1
error, attack success) and images/s side by side. --demo selects the architecture of
tools/demo.py (the digits demo: ResNetDenoise, blocks 1,1,1,1, 32x32, 10 classes):

    .venv/bin/python -m bench.bench_attack --demo --load /tmp/bench_demo/run --data /tmp/bench_demo/data \
        --attack-iter 10 --epsilon 32 --batch 120
"""
import argparse
import collections
import sys
from dataclasses import dataclass

from bench import common
from bench.flops import model_flops


@dataclass(frozen=True)
class Config:
    dtype: str = "float32"
    xla: bool = False
    fold: bool = False          # BN folded into the conv weights (AttackExecution.fold_batch_norm)

    @property
    def label(self):
        return self.dtype + (" + folded BN" if self.fold else "") + (" + XLA" if self.xla else "")

    def execution(self):
        from engine.graphs import AttackExecution
        return AttackExecution(compute_dtype=self.dtype, fold_batch_norm=self.fold, xla=self.xla)


REFERENCE = Config()
# the reference first; "bfloat16 + folded BN" is the CPU's fast path
CONFIGS = (REFERENCE, Config(fold=True), Config(xla=True), Config("bfloat16"), Config("bfloat16", fold=True),
           Config("bfloat16", xla=True), Config("float16"), Config("float16", fold=True), Config("float16", xla=True))

# op types of a TF CPU trace, by kind of work (anything else: OTHER_WORK)
OP_KINDS = {"matrix products (non-local)": ("Einsum", "BatchMatMul", "MatMul"),
            "convolutions, forward": ("Conv2D",),
            "convolutions, input gradient": ("Conv2DBackpropInput",)}
OTHER_WORK = "elementwise and other"
KINDS_OF_WORK = tuple(OP_KINDS) + (OTHER_WORK,)


def half_precision_in_hardware():
    """{dtype: True if this CPU has native arithmetic for it} (a GPU: assume both)."""
    import tensorflow as tf
    if tf.config.list_physical_devices("GPU"):
        return {"bfloat16": True, "float16": True}
    flags = common.cpu_flags()
    return {"bfloat16": bool({"avx512_bf16", "amx_bf16"} & flags), "float16": bool({"avx512_fp16", "amx_fp16"} & flags)}


DEMO_SPEC = dict(blocks=(1, 1, 1, 1), widths=(16, 32, 64, 128), stem="small", stem_width=16, num_classes=10,
                 image_size=32)


def predictor_for(args, spec, config):
    """The evaluation graph (PGD from the flags, then the final classification) of one
    configuration, with --load's weights if given."""
    from attacker import PGD
    from engine.predictor import Predictor
    from nets import BuildOptions
    attack = PGD(args.attack_iter, epsilon=args.epsilon, seed=args.attack_seed)
    return Predictor(spec, BuildOptions(), args.load, attack=attack, execution=config.execution())


def evaluate_trained(args, spec, configs):
    """Robustness and speed of each configuration on the same trained model and images."""
    from attacker.metrics import Counts
    from data import build_eval_dataflow
    flow = build_eval_dataflow(args.data, args.batch, image_size=spec.image_size, workers=1)
    flow.reset_state()
    batches = list(flow)
    predictors = {c: predictor_for(args, spec, c) for c in configs}
    for predictor in predictors.values():
        predictor.attack(*batches[0])                  # build, compile, warm up

    def one_pass(predictor):
        counts = Counts()
        for images, labels, indices in batches:
            result = predictor.attack(images, labels, indices)
            counts = counts + Counts.from_result(result)
        return counts
    counts = {c: Counts() for c in configs}            # summed over the rounds: each pass draws new targets and starts

    def count_pass(c):
        counts[c] = counts[c] + one_pass(predictors[c])
    timing = common.interleaved({c: (lambda c=c: count_pass(c)) for c in configs}, warmup=0, rounds=args.rounds)
    for p in predictors.values():
        p.close()
    images = sum(len(labels) for _, labels in batches)
    base, ref = timing[REFERENCE], counts[REFERENCE]
    rows = []
    for c in configs:
        t, n = timing[c], counts[c]
        rows.append([c.label, "{:.2f}".format(100 * n.top1_error),
                     "{:+.2f}".format(100 * (n.top1_error - ref.top1_error)),
                     "{:.2f}".format(100 * n.attack_success_rate),
                     "{:+.2f}".format(100 * (n.attack_success_rate - ref.attack_success_rate)),
                     "{:.1f}".format(images / t.median), "x{:.2f}".format(base.median / t.median),
                     "x{:.2f}".format(min(base.seconds) / min(t.seconds))])
    common.table(["attack compute", "top-1 error %", "vs float32", "attack success %", "vs float32", "images/s",
                  "speedup (median)", "speedup (best)"], rows)
    attacked = images * args.rounds
    print("{} validation images of {} attacked once per round: {} attacks per configuration (one attack is {:.2f} "
          "points); PGD-{}, epsilon {:g}, seed {}: each round draws new targets and random starts, the same in every "
          "configuration (per-image outcomes differ only through the compute)".format(
              images, args.data, attacked, 100.0 / attacked, args.attack_iter, args.epsilon, args.attack_seed))


def main(argv=None):
    import numpy as np
    from nets import build_spec
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ResNetDenoise")
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--attack-iter", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--all-dtypes", action="store_true",
                        help="also the half types this hardware has no arithmetic for (emulated: slow)")
    parser.add_argument("--load", help="a trained model (checkpoint directory or file): measure robustness too")
    parser.add_argument("--data", help="with --load: the ImageNet-layout root whose val/ is evaluated")
    parser.add_argument("--demo", action="store_true", help="the digits demo architecture (tools/demo.py)")
    parser.add_argument("--epsilon", type=float, default=16.0)
    parser.add_argument("--attack-seed", type=int, default=0)
    parser.add_argument("--no-xla", action="store_true", help="leave out the XLA configurations (slow on a CPU)")
    parser.add_argument("--profile", type=int, default=0, metavar="RUNS",
                        help="also trace RUNS runs of each configuration and break the op time down by kind of work")
    args = parser.parse_args(argv)
    if args.demo:
        spec = build_spec("ResNetDenoise", 50, **DEMO_SPEC)
        args.arch, args.image_size = "ResNetDenoise (demo: blocks 1,1,1,1, widths 16..128)", spec.image_size
    else:
        spec = build_spec(args.arch, args.depth, image_size=args.image_size)
    native = half_precision_in_hardware()
    configs = [c for c in CONFIGS if (c.dtype == "float32" or native[c.dtype] or args.all_dtypes)
               and not (c.xla and args.no_xla)]
    if args.load:
        if not args.data:
            parser.error("--load needs --data")
        common.header("PGD-{} robustness and speed of a trained model, {}, batch {}".format(
            args.attack_iter, args.arch, args.batch), notes=[
            "model {}; each configuration evaluates the whole val set once per round ({} rounds, alternating) "
            "after building and warming up on one batch; errors and success rates over all rounds; images/s from the "
            "median pass".format(args.load, args.rounds),
            "half precision in this machine's hardware: " + ", ".join(
                "{} {}".format(d, "yes" if v else "no") for d, v in native.items())])
        evaluate_trained(args, spec, configs)
        return 0
    common.header("PGD-{} evaluation, {}-{} at {}x{}, batch {}, NHWC".format(
        args.attack_iter, args.arch, args.depth, args.image_size, args.image_size, args.batch), notes=[
        "one run = PGD-{} on a batch plus the final classification (engine.predictor.Predictor.attack)".format(
            args.attack_iter),
        "time: median of {} alternating rounds after {} warm-up run(s)".format(args.rounds, args.warmup),
        "speedup = float32 time / this time, in this run, from the medians and from the best (minimum) times",
        "half precision in this machine's hardware: {}".format(
            ", ".join("{} {}".format(d, "yes" if v else "no (emulated, left out unless --all-dtypes)")
                      for d, v in native.items())),
    ])
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, [args.batch, args.image_size, args.image_size, 3]).astype(np.uint8)
    labels = rng.randint(0, spec.num_classes, [args.batch]).astype(np.int32)
    predictors = {c: predictor_for(args, spec, c) for c in configs}
    timing = common.interleaved({c: (lambda p=p: p.attack(images, labels)) for c, p in predictors.items()},
                                warmup=args.warmup, rounds=args.rounds)
    flops = model_flops(spec).evaluation(args.attack_iter)
    base = timing[REFERENCE]
    rows = []
    for c in configs:
        t = timing[c]
        rows.append([c.label, "{} ({})".format(common.fmt_seconds(t.median), t.spread()),
                     common.fmt_seconds(min(t.seconds)), "{:.2f}".format(args.batch / t.median),
                     "{:.0f}".format(flops * args.batch / min(t.seconds) / 1e9),
                     "x{:.2f}".format(base.median / t.median), "x{:.2f}".format(min(base.seconds) / min(t.seconds))])
    common.table(["attack compute", "time per batch (median)", "best", "images/s", "GFLOP/s (best)",
                  "speedup (median)", "speedup (best)"], rows)
    print("computed: {:.1f} GFLOPs per image for PGD-{} evaluation of {}-{} ({:.2f} forward)".format(
        flops / 1e9, args.attack_iter, args.arch, args.depth, model_flops(spec).forward / 1e9))
    if args.profile:
        profile_table([c for c in configs if not c.xla], predictors, images, labels, args.profile)
    for p in predictors.values():
        p.close()
    return 0


def op_kind(op_type):
    for kind, names in OP_KINDS.items():
        if any(op_type.endswith(n) or op_type.endswith(n + "V2") for n in names):
            return kind
    return OTHER_WORK


def traced_op_seconds(predictor, images, labels):
    """{kind of work: summed op seconds} of one traced attack run (TF step statistics; with
    two cores two ops can overlap, so the kinds add up to more than the wall time)."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    metadata = tf1.RunMetadata()
    predictor.session.run(predictor.result, {predictor.images: images, predictor.labels: labels},
                          options=tf1.RunOptions(trace_level=tf1.RunOptions.FULL_TRACE), run_metadata=metadata)
    seconds = collections.Counter()
    for device in metadata.step_stats.dev_stats:
        for node in device.node_stats:
            if " = " in node.timeline_label:
                op_type = node.timeline_label.split(" = ", 1)[1].split("(", 1)[0].strip()
                seconds[op_kind(op_type)] += node.all_end_rel_micros / 1e6
    return seconds


def profile_table(configs, predictors, images, labels, rounds):
    """Where the time goes, by kind of work, and each kind's speed-up over float32: the ceiling
    of a precision change is set by the kinds that dominate."""
    traces = {c: [traced_op_seconds(predictors[c], images, labels) for _ in range(rounds)] for c in configs}
    best = {c: {k: min(t[k] for t in runs) for k in KINDS_OF_WORK} for c, runs in traces.items()}
    for times in best.values():
        times["all ops"] = sum(times.values())
    print()
    print("Op time by kind of work (best of {} traced runs; summed over ops, which overlap on two cores), "
          "and the speed-up of each kind over float32:".format(rounds))
    print()
    rows = []
    for kind in KINDS_OF_WORK + ("all ops",):
        ref = best[REFERENCE][kind]
        rows.append([kind] + ["{} ({:.0%}) x{:.2f}".format(common.fmt_seconds(best[c][kind]),
                                                         best[c][kind] / best[c]["all ops"], ref / best[c][kind])
                              for c in configs])
    common.table(["kind of work"] + [c.label for c in configs], rows)


if __name__ == "__main__":
    sys.exit(main())
