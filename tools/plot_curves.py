"""Robustness curves: top-1 accuracy and attack success rate against PGD iterations.

Feature Denoising, Fig. 6: "Defense against white-box attacks ... x-axis: number of
attack iterations", one line per model, accuracy falling as the attacker gets more steps.

    python main.py --eval --data D --load W --arch ... --attack-iter 0,10,100 --result-file A.json
    python -m tools.plot_curves A.json B.json --out curves.png [--labels R152,R152-Denoise]

Each JSON is one model: a curve written by `--eval` with a comma list of `--attack-iter`
values, or a single-length result (one point). A composite attack (`--attack autoattack`)
also shows the robust accuracy after each of its attacks, as labelled ticks above its point. The x axis is symmetric-log, so 0 (clean
images) sits left of 1, 10, 100, ...
"""
import argparse
import json
import os
import sys

from tools.figures import pyplot, save_figure

FIGURE_INCHES = (10.0, 4.0)
DPI = 100
POINT_KEYS = ("attack_iterations", "top1_error", "attack_success_rate")


class CurveFileError(ValueError):
    """A result file that cannot be plotted; the message names the file and the fix."""


def read_record(path):
    """The JSON object in `path`."""
    try:
        with open(path) as f:
            record = json.load(f)
    except FileNotFoundError:
        raise CurveFileError("no such result file: {}".format(path)) from None
    except json.JSONDecodeError as error:
        raise CurveFileError("{} is not valid JSON ({}); pass a file written by "
                             "main.py --eval --result-file".format(path, error)) from None
    if not isinstance(record, dict):
        raise CurveFileError("{} holds a JSON {}, expected an object written by main.py --eval "
                             "--result-file".format(path, type(record).__name__))
    return record


def curve_points(record, path):
    """The points of a record sorted by attack length: its "points", or the record itself
    when it is a single-length result."""
    points = record["points"] if "points" in record else [record]
    if not isinstance(points, list) or not points:
        raise CurveFileError("{}: \"points\" must be a non-empty list".format(path))
    for index, point in enumerate(points):
        missing = [key for key in POINT_KEYS if not isinstance(point, dict) or key not in point]
        if missing:
            raise CurveFileError("{}: point {} lacks {}; pass a file written by main.py --eval "
                                 "--result-file".format(path, index, ", ".join(missing)))
    return sorted(points, key=lambda p: p["attack_iterations"])


def curve_label(path):
    """The default legend entry: the file name without its extension."""
    return os.path.splitext(os.path.basename(path))[0]


def load_curves(paths, labels=None):
    """[(label, points)] for each result file."""
    if labels is not None and len(labels) != len(paths):
        raise CurveFileError("--labels gives {} names for {} result files; give one per file".format(
            len(labels), len(paths)))
    labels = labels or [curve_label(p) for p in paths]
    return [(label, curve_points(read_record(path), path)) for label, path in zip(labels, paths)]


def attack_tick_label(iterations):
    return "clean" if iterations == 0 else str(iterations)


def draw_panel(axis, curves, value, ylabel):
    """One line per model of `value(point)` in percent against the attack length."""
    lengths = sorted({p["attack_iterations"] for _, points in curves for p in points})
    for label, points in curves:
        axis.plot([p["attack_iterations"] for p in points], [100.0 * value(p) for p in points],
                  marker="o", label=label)
    axis.set_xscale("symlog", linthresh=1.0, linscale=0.5)
    axis.set_xticks(lengths)
    axis.set_xticklabels([attack_tick_label(k) for k in lengths])
    axis.tick_params(axis="x", which="minor", bottom=False)
    axis.set_xlabel("PGD attack iterations")
    axis.set_ylabel(ylabel)
    axis.set_ylim(0, 100)
    axis.grid(True, alpha=0.3)


def stage_marks(points):
    """[(x, robust accuracy in %, stage label)] of the points of a composite attack (their
    "stages": AutoAttack's robust accuracy after each attack), drawn as labelled ticks above
    the composite's point."""
    return [(p["attack_iterations"], 100.0 * stage["robust_accuracy"], stage["attack"])
            for p in points for stage in p.get("stages", ())]


def draw_stages(axis, curves):
    for line, (_, points) in zip(axis.get_lines(), curves):
        for x, y, label in stage_marks(points):
            axis.plot([x], [y], marker="_", markersize=14, color=line.get_color())
            axis.annotate(label, (x, y), xytext=(6, 0), textcoords="offset points", fontsize="x-small",
                          va="center")


def plot_curves(curves, out_path):
    """Two panels, top-1 accuracy (the defender's metric) and attack success rate (the
    attacker's), written as a PNG of FIGURE_INCHES x DPI pixels."""
    plt = pyplot()
    figure, (accuracy_axis, success_axis) = plt.subplots(1, 2, figsize=FIGURE_INCHES, dpi=DPI)
    draw_panel(accuracy_axis, curves, lambda p: 1.0 - p["top1_error"], "top-1 accuracy (%)")
    draw_stages(accuracy_axis, curves)
    draw_panel(success_axis, curves, lambda p: p["attack_success_rate"], "attack success rate (%)")
    accuracy_axis.legend(loc="best", fontsize="small")
    save_figure(figure, out_path, DPI)


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m tools.plot_curves", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", metavar="RESULT.json", help="files from main.py --eval --result-file")
    parser.add_argument("--out", required=True, metavar="PNG", help="the picture to write")
    parser.add_argument("--labels", type=lambda text: text.split(","),
                        help="comma-separated legend names, one per file (default: the file names)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        curves = load_curves(args.results, args.labels)
    except CurveFileError as error:
        print("error: {}".format(error), file=sys.stderr)
        return 2
    plot_curves(curves, args.out)
    print("wrote {} ({} model{})".format(args.out, len(curves), "s" if len(curves) > 1 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
