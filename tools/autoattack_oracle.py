"""The standard AutoAttack, ours against its authors' implementation, on the same network and the same images.

    bash scripts/autoattack_oracle.sh            (installs the oracle's packages, trains the demo model if needed)
    python -m tools.autoattack_oracle --load W --data DIR --images 120 --epsilon 32 [model flags] --out DIR

The authors' code (fra31/auto-attack, packaged on PyPI as pyautoattack 0.2.0, whose attack modules are the
repository's) is PyTorch; it runs this project's TensorFlow network with no port: a torch.autograd.Function whose
forward runs the TF graph and whose backward runs TF's vector-Jacobian product (images 0..1 RGB-ordered NCHW on their
side, the same pixels 0..255 NHWC on ours). Both run the standard version (APGD-CE, APGD-T, FAB-T, Square; seed 0)
on the same fixed subset of validation images; robust accuracy after each stage must agree within --tolerance
(default 3 points). Also timed: each stage per image attacked, both implementations, and this project's untargeted
PGD-100 (the cost AutoAttack is usually compared with). Writes DIR/autoattack_oracle.json and .md; exit 1 when a
stage disagrees."""
import argparse
import logging
import os
import re
import sys
import time

import numpy as np

import tf_environment  # noqa: F401,E402  (before TensorFlow)

STAGES = ("clean", "APGD-CE", "APGD-T", "FAB-T", "Square")


def build_parser():
    from flags import add_model_arguments
    parser = argparse.ArgumentParser(prog="python -m tools.autoattack_oracle", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="ImageNet-layout root whose val/ is attacked")
    parser.add_argument("--images", type=int, default=120, help="a fixed subset of this many validation images")
    parser.add_argument("--epsilon", type=float, default=32.0, help="L-inf budget on the 0..255 scale")
    parser.add_argument("--seed", type=int, default=0, help="both implementations' seed (and the subset's)")
    parser.add_argument("--batch", type=int, default=120)
    parser.add_argument("--tolerance", type=float, default=0.03, help="largest allowed gap per stage")
    parser.add_argument("--out", default="autoattack_oracle_out", help="folder for the JSON and Markdown results")
    add_model_arguments(parser)
    return parser


class TensorFlowNetwork:
    """The project's network (float32, BN in inference mode) in a session: logits and their vector-Jacobian
    product for float32 NHWC images on the 0..255 scale."""

    def __init__(self, spec, options, weights):
        import tensorflow as tf
        from engine.graphs import attacked_classifier
        from nets.checkpoint import load_weights, read_weights
        from nets.layout import layout_scope
        tf1 = tf.compat.v1
        self.graph = tf.Graph()
        with self.graph.as_default(), layout_scope(options.layout):
            size = spec.image_size
            self.images = tf1.placeholder(tf.float32, [None, size, size, 3])
            self.logits = attacked_classifier(spec, options).logits(self.images)
            self.upstream = tf1.placeholder(tf.float32, [None, spec.num_classes])
            self.vjp, = tf.gradients(self.logits, self.images, grad_ys=self.upstream)
            self.session = tf1.Session()
            self.session.run(tf1.global_variables_initializer())
            if weights is not None:         # None: the initial weights (a smoke test of the bridge)
                load_weights(self.session, read_weights(weights), source=weights)

    def forward(self, images):
        return self.session.run(self.logits, {self.images: images})

    def backward(self, images, upstream):
        return self.session.run(self.vjp, {self.images: images, self.upstream: upstream})


def torch_module(network):
    """A torch.nn.Module computing `network`'s logits for [N, 3, H, W] images in [0, 1]; gradients through TF."""
    import torch

    def to_tf(x):
        return x.detach().cpu().numpy().transpose(0, 2, 3, 1).astype(np.float32) * 255.0

    class Logits(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.from_numpy(network.forward(to_tf(x)))

        @staticmethod
        def backward(ctx, upstream):
            x, = ctx.saved_tensors
            grad = network.backward(to_tf(x), upstream.detach().cpu().numpy().astype(np.float32))
            return torch.from_numpy(np.ascontiguousarray(grad.transpose(0, 3, 1, 2)) * 255.0)

    class Network(torch.nn.Module):
        def forward(self, x):
            return Logits.apply(x)
    return Network().eval()


class StageLog(logging.Handler):
    """Robust accuracy and cumulative seconds after each attack, from the authors' log lines."""
    PATTERN = re.compile(r"robust accuracy after (\S+): ([\d.]+)% \(total time ([\d.]+) s\)")

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.stages = {}

    def emit(self, record):
        found = self.PATTERN.search(record.getMessage())
        if found:
            self.stages[found.group(1)] = (float(found.group(2)) / 100.0, float(found.group(3)))


def authors_run(network, images, labels, epsilon, seed):
    """{stage: (robust accuracy, seconds)} of the authors' standard AutoAttack on our network."""
    import torch
    from pyautoattack import AutoAttack as AuthorsAutoAttack
    torch.set_num_threads(1)                 # the work is in TF; torch only glues
    log = StageLog()
    logger = logging.getLogger("auto-attack")
    logger.addHandler(log)
    logger.setLevel(logging.DEBUG)
    model = torch_module(network)
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)).astype(np.float32) / 255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    started = time.time()
    attack = AuthorsAutoAttack(model, norm="Linf", eps=epsilon / 255.0, seed=seed, version="standard", device="cpu")
    clean = float(np.mean(network.forward(images.astype(np.float32)).argmax(1) == labels))
    attack.run_standard_evaluation(x, y, batch_size=len(labels))
    seconds = time.time() - started
    result, accuracy, previous = {"clean": (clean, 0.0)}, clean, 0.0
    for stage in STAGES[1:]:                 # a stage after the last robust image is gone is skipped, not logged
        accuracy, total = log.stages.get(stage.upper(), (accuracy, previous))
        result[stage], previous = (accuracy, total - previous), total
    result["total seconds"] = seconds
    return result


def our_run(args, spec, weights, images, labels, indices):
    """{stage: (robust accuracy, seconds)} of this project's standard AutoAttack, and PGD-100's seconds."""
    from attacker import build_attack
    from engine.evaluate import attack_batch
    from engine.predictor import Predictor
    from flags import build_options_from_args
    attack = build_attack("autoattack", dict(epsilon=args.epsilon, seed=args.seed))
    predictor = Predictor(spec, build_options_from_args(args), weights, attack=attack)
    tallies = 0
    for start in range(0, len(labels), args.batch):
        part = slice(start, start + args.batch)
        tallies = tallies + attack_batch(predictor, images[part], labels[part], indices[part])[1]
    predictor.close()
    result = {stage: (float(robust) / len(labels), float(seconds))
              for stage, robust, seconds in zip(STAGES, tallies[1], tallies[2])}
    pgd = Predictor(spec, build_options_from_args(args), weights, attack=build_attack(
        "pgd", dict(iterations=100, epsilon=args.epsilon, targeted=False, seed=args.seed)))
    started = time.time()
    for start in range(0, len(labels), args.batch):
        part = slice(start, start + args.batch)
        pgd.attack(images[part], labels[part], indices[part])
    pgd.close()
    return result, tallies[0], time.time() - started


def per_image(seconds, count):
    return "{:.3f}".format(seconds / count) if count else "-"


def report(ours, attacked, theirs, pgd_seconds, args):
    """The Markdown table and the stages that disagree beyond the tolerance."""
    lines = ["| after | robust accuracy (ours) | robust accuracy (authors' code) | gap | s/image attacked (ours) | "
             "s/image attacked (authors') |", "|---|---|---|---|---|---|"]
    failed = []
    for stage, count in zip(STAGES, attacked):
        (mine, my_seconds), (their, their_seconds) = ours[stage], theirs.get(stage, (float("nan"), 0.0))
        gap = abs(mine - their)
        if not gap <= args.tolerance:
            failed.append(stage)
        lines.append("| {} | {:.1%} | {:.1%} | {:.1%} | {} | {} |".format(
            stage, mine, their, gap, per_image(my_seconds, count), per_image(their_seconds, count)))
    total = sum(s for _, s in ours.values())
    lines.append("\nWhole standard AutoAttack: {:.0f} s ours, {:.0f} s the authors' code; untargeted PGD-100 on the "
                 "same images: {:.0f} s ({:.1f}x cheaper than ours).".format(
                     total, theirs["total seconds"], pgd_seconds, total / max(pgd_seconds, 1e-9)))
    return "\n".join(lines), failed


def main(argv=None):
    from flags import spec_from_args
    from tools.attack_table import validation_images
    args = build_parser().parse_args(argv)
    if not args.load:
        print("error: --load is required (the trained model to attack)", file=sys.stderr)
        return 2
    try:
        import pyautoattack  # noqa: F401
    except ImportError:
        print("error: the authors' AutoAttack is not installed: .venv/bin/pip install -r requirements-oracle.txt "
              "(or run bash scripts/autoattack_oracle.sh)", file=sys.stderr)
        return 2
    spec = spec_from_args(args)
    images, labels, indices = validation_images(args, spec)
    print("== {} images, epsilon {:g}/255, standard AutoAttack, seed {} ==".format(len(labels), args.epsilon,
                                                                               args.seed), flush=True)
    ours, attacked, pgd_seconds = our_run(args, spec, args.load, images, labels, indices)
    print("ours: " + ", ".join("{} {:.1%}".format(k, v[0]) for k, v in ours.items()), flush=True)
    from flags import build_options_from_args
    theirs = authors_run(TensorFlowNetwork(spec, build_options_from_args(args), args.load), images, labels,
                         args.epsilon, args.seed)
    text, failed = report(ours, attacked, theirs, pgd_seconds, args)
    print(text)
    from engine.evaluate import write_json
    os.makedirs(args.out, exist_ok=True)
    write_json(dict(ours=ours, authors=theirs, images_attacked=[int(a) for a in attacked], images=len(labels),
                    epsilon=args.epsilon, seed=args.seed, pgd100_seconds=pgd_seconds, table=text, disagree=failed),
               os.path.join(args.out, "autoattack_oracle.json"))
    with open(os.path.join(args.out, "autoattack_oracle.md"), "w") as f:
        f.write(text + "\n")
    if failed:
        print("error: robust accuracy differs by more than {:.0%} after {}".format(args.tolerance, ", ".join(failed)),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
