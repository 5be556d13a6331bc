"""One table of a model's errors under today's attacks, each beside an independent library's.

    python -m tools.attack_table --data DIR --load W [--load W2 ...] [model flags] [--epsilon 32]

For each model: clean error, the paper's targeted PGD-10, untargeted PGD-100, APGD-CE, APGD-T,
FAB-T, Square and the standard AutoAttack, run by this project on the validation
images; beside them the adversarial-robustness-toolbox's (ART, a test-only dependency) attack
of the same kind, with the same settings, on the same images and the same model (its graph
wrapped with tf.compat.v1.wrap_function, the variables loaded by name). ART has no APGD-T;
its untargeted APGD with the DLR loss stands beside it. The targeted PGD-10 column gives ART
the targets this project drew. Prints a Markdown table and writes it as JSON with --out.
"""
import argparse
import sys
import time

import numpy as np

import tf_environment  # noqa: F401,E402  (before TensorFlow)

ROWS = (("clean", "clean", {}),
        ("targeted PGD-10 (paper)", "pgd", dict(iterations=10)),
        ("untargeted PGD-100", "pgd", dict(iterations=100, targeted=False)),
        ("APGD-CE", "apgd-ce", {}),
        ("APGD-T", "apgd-t", {}),
        ("FAB-T", "fab-t", {}),
        ("Square", "square", {}),
        ("AutoAttack (standard)", "autoattack", {}))


def build_parser():
    from flags import add_model_arguments
    parser = argparse.ArgumentParser(prog="python -m tools.attack_table", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="ImageNet-layout root whose val/ is attacked")
    parser.add_argument("--epsilon", type=float, default=16.0, help="L-inf budget on the 0..255 scale")
    parser.add_argument("--queries", type=int, default=5000, help="Square's queries (AutoAttack: 5000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=120)
    parser.add_argument("--images", type=int, help="a fixed subset of this many validation images (default: all)")
    parser.add_argument("--names", help="comma-separated model names for the table (default: the --load paths)")
    parser.add_argument("--no-art", action="store_true", help="only this project's attacks")
    parser.add_argument("--out", help="write the rows as JSON")
    add_model_arguments(parser)
    parser.set_defaults(load=None)
    parser._option_string_actions["--load"].nargs = "+"
    return parser


def project_errors(args, spec, weights, images, labels, indices):
    """{row: (error, seconds)} of this project's attacks, and the targets of the targeted PGD."""
    from attacker import build_attack
    from engine.evaluate import attack_batch
    from flags import build_options_from_args
    from engine.predictor import Predictor
    errors, targets = {}, None
    for name, attack_name, settings in ROWS:
        shared = dict(epsilon=args.epsilon, seed=args.seed) if attack_name != "clean" else {}
        if attack_name in ("square", "autoattack"):
            shared["queries"] = args.queries
        predictor = Predictor(spec, build_options_from_args(args), weights, attack=build_attack(
            attack_name, dict(shared, **settings)))
        started, wrong = time.time(), 0
        for start in range(0, len(labels), args.batch):
            part = slice(start, start + args.batch)
            result, _ = attack_batch(predictor, images[part], labels[part], indices[part])
            wrong += int(np.sum(~result.correct_top1))
            if name.startswith("targeted"):
                targets = result.target if targets is None else np.concatenate([targets, result.target])
        predictor.close()
        errors[name] = (wrong / len(labels), time.time() - started)
    return errors, targets


def art_errors(args, spec, weights, images, labels, targets):
    """{row: error} of ART's attack of the same kind (None where ART has none)."""
    import tensorflow as tf
    from art.attacks.evasion import AutoProjectedGradientDescent, ProjectedGradientDescent, SquareAttack
    from art.estimators.classification import TensorFlowV2Classifier
    from nets import logits
    from nets.checkpoint import read_weights
    values = read_weights(weights)
    size = spec.image_size
    wrapped = tf.compat.v1.wrap_function(lambda t: logits(t, spec, training=False),
                                         [tf.TensorSpec([None, size, size, 3])])
    for variable in wrapped.variables:
        variable.assign(values[variable.name.split(":")[0]])
    classifier = TensorFlowV2Classifier(lambda t, training=False: wrapped(tf.cast(t, tf.float32)),
                                        nb_classes=spec.num_classes, input_shape=(size, size, 3),
                                        clip_values=(0.0, 255.0),
                                        loss_object=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    eps = args.epsilon
    attacks = {
        "targeted PGD-10 (paper)": (ProjectedGradientDescent(classifier, eps=eps, eps_step=max(1.0, eps / 10), max_iter=10,
                                                             targeted=True, num_random_init=1, verbose=False), targets),
        "untargeted PGD-100": (ProjectedGradientDescent(classifier, eps=eps, eps_step=1.0, max_iter=100,
                                                        num_random_init=1, verbose=False), labels),
        "APGD-CE": (AutoProjectedGradientDescent(classifier, eps=eps, eps_step=2 * eps, max_iter=100, nb_random_init=1,
                                                 loss_type="cross_entropy", verbose=False), labels),
        "APGD-T": (AutoProjectedGradientDescent(classifier, eps=eps, eps_step=2 * eps, max_iter=100, nb_random_init=1,
                                                loss_type="difference_logits_ratio", verbose=False), labels),
        "Square": (SquareAttack(classifier, eps=eps, max_iter=args.queries, p_init=0.8, verbose=False), labels),
    }
    errors = {"clean": float(np.mean(classifier.predict(images).argmax(1) != labels))}
    for name, (attack, goal) in attacks.items():
        np.random.seed(args.seed)
        adversarial = attack.generate(images.astype(np.float32), goal)
        errors[name] = float(np.mean(classifier.predict(adversarial).argmax(1) != labels))
    return errors


def validation_images(args, spec):
    """(images, labels, indices) of val, or of the fixed subset of --images of them."""
    import os
    from data import build_eval_dataflow, evaluation_subset, list_images, model_classes
    classes = model_classes(args.data, spec.num_classes)
    subset = evaluation_subset(list_images(args.data, "val", classes), os.path.join(args.data, "val"), args.images,
                               args.seed)
    flow = build_eval_dataflow(args.data, args.batch, image_size=spec.image_size, workers=1, classes=classes,
                               subset=subset)
    flow.reset_state()
    batches = list(flow)
    return [np.concatenate([b[k] for b in batches]) for k in range(3)]


def table(models):
    names = list(models)
    lines = ["| attack | " + " | ".join("{0} | {0} (ART)".format(n) for n in names) + " |",
             "|---|" + "---|---|" * len(names)]
    for row, _, _ in ROWS:
        cells = []
        for name in names:
            ours, art = models[name]["project"][row][0], models[name]["art"].get(row)
            cells += ["{:.1%}".format(ours), "-" if art is None else "{:.1%}".format(art)]
        lines.append("| {} | {} |".format(row, " | ".join(cells)))
    return "\n".join(lines)


def main(argv=None):
    from flags import spec_from_args
    args = build_parser().parse_args(argv)
    if not args.load:
        print("error: --load is required (one or more trained models)", file=sys.stderr)
        return 2
    spec = spec_from_args(args)
    names = args.names.split(",") if args.names else args.load
    images, labels, indices = validation_images(args, spec)
    models = {}
    for name, weights in zip(names, args.load):
        print("== {} ({} images, epsilon {:g}) ==".format(name, len(labels), args.epsilon), flush=True)
        project, targets = project_errors(args, spec, weights, images.astype(np.float32).astype(np.uint8), labels,
                                          indices)
        models[name] = dict(project=project, art={} if args.no_art else art_errors(
            args, spec, weights, images.astype(np.float32), labels, targets))
    text = table(models)
    print(text)
    if args.out:
        from engine.evaluate import write_json
        write_json(dict(models=models, epsilon=args.epsilon, queries=args.queries, images=len(labels), table=text),
                   args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
