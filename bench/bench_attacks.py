"""Cost of each attack per image against PGD's: the attacks of tools/attack_table.py (the
paper's targeted PGD-10, untargeted PGD-100, APGD-CE, APGD-T, Square and the composite) on
one trained model and the same validation images, in one run, each timed over the whole
set after its graph is built (one pass each: the long attacks cannot be alternated).

Cost depends on the model: APGD-T's later target classes, the composite's later attacks and
Square's queries after a success run only on the images still robust, so a robust model costs
more per image than a weak one. The table gives the gradient and forward passes each attack
may spend per image beside the measured time.

    .venv/bin/python -m bench.bench_attacks --data demo_out/data --load demo_out/runs/adversarial \
        --epsilon 32 --names adversarial [the demo's model flags, tools.demo.DEMO_ARCH]

`--from-table T.json` prints the same table from the timings a `tools.attack_table --out T.json`
run measured (the same attacks, timed the same way), without attacking again.
"""
import argparse
import sys

from bench import common
from tools import attack_table

# (gradient passes, forward passes) per image at most, AutoAttack's settings (100 steps,
# 9 target classes, 5000 queries); the final classification counts as one forward pass.
# APGD, FAB and Square first check which images the model gets right (one forward pass); FAB takes one forward
# pass per step besides its gradient ("misclassified yet?").
PASSES = {"clean": (0, 1), "targeted PGD-10 (paper)": (10, 1), "untargeted PGD-100": (100, 1),
          "APGD-CE": (101, 2), "APGD-T": (9 * 101, 11), "FAB-T": (9 * 100, 9 * 101 + 2), "Square": (0, 5003),
          "AutoAttack (standard)": (101 + 9 * 101 + 9 * 100, 1 + 2 + 11 + 9 * 101 + 2 + 5003)}


def cost_rows(project, images, reference="untargeted PGD-100"):
    """Markdown rows: attack, error, seconds, ms per image, ratio to the reference's time."""
    base = project[reference][1]
    rows = []
    for name, _, _ in attack_table.ROWS:
        error, seconds = project[name]
        gradients, forwards = PASSES[name]
        rows.append([name, "{:.1%}".format(error), "{} / {}".format(gradients, forwards), "{:.1f}".format(seconds),
                     "{:.1f}".format(1000.0 * seconds / images), "{:.2f}".format(seconds / base)])
    return rows


def print_from_table(path):
    import json
    with open(path) as f:
        record = json.load(f)
    common.header("Cost of each attack per image, {} images, epsilon {:g} (timings of {})".format(
        record["images"], record["epsilon"], path))
    for name, model in record["models"].items():
        print("### {}".format(name))
        print()
        common.table(["attack", "error", "passes per image (gradient / forward, at most)", "seconds", "ms per image",
                      "time / untargeted PGD-100"], cost_rows(model["project"], record["images"]))
    return 0


def main(argv=None):
    from flags import spec_from_args
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--from-table", metavar="JSON")
    known, rest = first.parse_known_args(argv)
    if known.from_table:
        return print_from_table(known.from_table)
    args = attack_table.build_parser().parse_args(rest)
    if not args.load:
        print("error: --load is required (a trained model)", file=sys.stderr)
        return 2
    spec = spec_from_args(args)
    images, labels, indices = attack_table.validation_images(args, spec)
    names = args.names.split(",") if args.names else args.load
    common.header("Cost of each attack per image, {} images of {}x{}, epsilon {:g}".format(
        len(labels), spec.image_size, spec.image_size, args.epsilon),
        notes=["each attack timed once over the same images after its graph is built; float32, batch {}".format(
            args.batch)])
    for name, weights in zip(names, args.load):
        project, _ = attack_table.project_errors(args, spec, weights, images, labels, indices)
        print("### {}".format(name))
        print()
        common.table(["attack", "error", "passes per image (gradient / forward, at most)", "seconds", "ms per image",
                      "time / untargeted PGD-100"], cost_rows(project, len(labels)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
