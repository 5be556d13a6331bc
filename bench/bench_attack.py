"""Evaluation under PGD: the float32 attack against the fast path (XLA, and half precision
where the hardware has it), images/s and the ratio, on the same model and images.

The graph is the one evaluation uses (engine.predictor.Predictor: PGD-k from a random start
to a random target, then the final classification), with random weights (speed does not
depend on them; robustness is measured on a trained model, see BENCHMARKS.md). All
configurations are timed in alternation.

    .venv/bin/python -m bench.bench_attack                                 # ResNetDenoise-50, 224, PGD-2
    .venv/bin/python -m bench.bench_attack --arch ResNet --attack-iter 10

With --load and --data it evaluates a trained model instead, every configuration over the
same validation images with the same targets and starts (--attack-seed): robustness (top-1
error, attack success) and images/s side by side. --demo selects the architecture of
tools/demo.py (the digits demo: ResNetDenoise, blocks 1,1,1,1, 32x32, 10 classes):

    .venv/bin/python -m bench.bench_attack --demo --load /tmp/bench_demo/run --data /tmp/bench_demo/data \
        --attack-iter 10 --epsilon 32 --batch 120
"""
import argparse
import sys

from bench import common
from bench.flops import model_flops

# (compute dtype, XLA): the reference first
CONFIGS = (("float32", False), ("float32", True), ("bfloat16", False), ("bfloat16", True),
           ("float16", False), ("float16", True))


def half_precision_in_hardware():
    """{dtype: True if this CPU has native arithmetic for it} (a GPU: assume both)."""
    import tensorflow as tf
    if tf.config.list_physical_devices("GPU"):
        return {"bfloat16": True, "float16": True}
    flags = common.cpu_flags()
    return {"bfloat16": bool({"avx512_bf16", "amx_bf16"} & flags), "float16": bool({"avx512_fp16", "amx_fp16"} & flags)}


DEMO_SPEC = dict(blocks=(1, 1, 1, 1), widths=(16, 32, 64, 128), stem="small", stem_width=16, num_classes=10,
                 image_size=32)


def evaluate_trained(args, spec, configs):
    """Robustness and speed of each configuration on the same trained model and images."""
    from attacker import PGDAttacker
    from attacker.metrics import Counts
    from data import build_eval_dataflow
    from engine.predictor import Predictor
    flow = build_eval_dataflow(args.data, args.batch, image_size=spec.image_size, workers=1)
    flow.reset_state()
    batches = [(images, labels) for images, labels in flow]
    predictors = {}
    for dtype, xla in configs:
        attacker = PGDAttacker(args.attack_iter, epsilon=args.epsilon, num_classes=spec.num_classes,
                               seed=args.attack_seed, compute_dtype=dtype, use_xla=xla)
        predictors[(dtype, xla)] = Predictor(spec, "NHWC", args.load, attacker=attacker)
        predictors[(dtype, xla)].attack(*batches[0])                  # build, compile, warm up

    def one_pass(predictor):
        counts = Counts()
        for images, labels in batches:
            result = predictor.attack(images, labels)
            counts = counts + Counts.from_batch(result.correct_top1, result.correct_top5, result.hit)
        return counts
    counts = {}
    timing = common.interleaved({c: (lambda p=p, c=c: counts.__setitem__(c, one_pass(p)))
                                 for c, p in predictors.items()}, warmup=0, rounds=args.rounds)
    for p in predictors.values():
        p.close()
    images = sum(len(labels) for _, labels in batches)
    base, ref = timing[("float32", False)], counts[("float32", False)]
    rows = []
    for c in configs:
        t, n = timing[c], counts[c]
        rows.append([c[0] + (" + XLA" if c[1] else ""), "{:.2f}".format(100 * n.top1_error),
                     "{:+.2f}".format(100 * (n.top1_error - ref.top1_error)),
                     "{:.2f}".format(100 * n.attack_success_rate),
                     "{:+.2f}".format(100 * (n.attack_success_rate - ref.attack_success_rate)),
                     "{:.1f}".format(images / t.median), "x{:.2f}".format(base.median / t.median),
                     "x{:.2f}".format(min(base.seconds) / min(t.seconds))])
    common.table(["attack compute", "top-1 error %", "vs float32", "attack success %", "vs float32", "images/s",
                  "speedup (median)", "speedup (best)"], rows)
    print("{} validation images of {}; PGD-{}, epsilon {:g}, seed {}: the same targets and random starts in every "
          "configuration (per-image outcomes differ only through the compute precision)".format(
              images, args.data, args.attack_iter, args.epsilon, args.attack_seed))


def main(argv=None):
    import numpy as np
    from attacker import PGDAttacker
    from engine.predictor import Predictor
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
    args = parser.parse_args(argv)
    if args.demo:
        spec = build_spec("ResNetDenoise", 50, **DEMO_SPEC)
        args.arch, args.image_size = "ResNetDenoise (demo: blocks 1,1,1,1, widths 16..128)", spec.image_size
    else:
        spec = build_spec(args.arch, args.depth, image_size=args.image_size)
    native = half_precision_in_hardware()
    configs = [(d, x) for d, x in CONFIGS if d == "float32" or native[d] or args.all_dtypes]
    if args.load:
        if not args.data:
            parser.error("--load needs --data")
        common.header("PGD-{} robustness and speed of a trained model, {}, batch {}".format(
            args.attack_iter, args.arch, args.batch), notes=[
            "model {}; each configuration evaluates the whole val set once per round ({} rounds, alternating) "
            "after building and warming up on one batch; images/s from the median pass".format(args.load, args.rounds),
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
    runs, predictors = {}, []
    for dtype, xla in configs:
        attacker = PGDAttacker(args.attack_iter, epsilon=args.epsilon, num_classes=spec.num_classes,
                               seed=args.attack_seed, compute_dtype=dtype, use_xla=xla)
        predictor = Predictor(spec, "NHWC", attacker=attacker)
        predictors.append(predictor)
        runs[(dtype, xla)] = (lambda p=predictor: p.attack(images, labels))
    timing = common.interleaved(runs, warmup=args.warmup, rounds=args.rounds)
    for p in predictors:
        p.close()
    flops = model_flops(spec).evaluation(args.attack_iter)
    base = timing[("float32", False)]
    rows = []
    for dtype, xla in configs:
        t = timing[(dtype, xla)]
        rows.append([dtype + (" + XLA" if xla else ""), "{} ({})".format(common.fmt_seconds(t.median), t.spread()),
                     common.fmt_seconds(min(t.seconds)), "{:.2f}".format(args.batch / t.median),
                     "{:.0f}".format(flops * args.batch / min(t.seconds) / 1e9),
                     "x{:.2f}".format(base.median / t.median), "x{:.2f}".format(min(base.seconds) / min(t.seconds))])
    common.table(["attack compute", "time per batch (median)", "best", "images/s", "GFLOP/s (best)",
                  "speedup (median)", "speedup (best)"], rows)
    print("computed: {:.1f} GFLOPs per image for PGD-{} evaluation of {}-{} ({:.2f} forward)".format(
        flops / 1e9, args.attack_iter, args.arch, args.depth, model_flops(spec).forward / 1e9))
    return 0


if __name__ == "__main__":
    sys.exit(main())
