"""Feature maps at each denoising block, clean vs adversarial, before and after the block.

Feature Denoising, Sec. 3 and Fig. 1-2: a perturbation too small to see in the image
becomes strong noise in the feature maps of a network; a denoising block (Sec. 4) is
meant to remove that noise while keeping the signal.

    python -m tools.feature_maps --load W --arch ResNetDenoise -d 152 --image cat.jpg \\
        --out fm.png [--attack-iter 10] [--label K] [--block-names group2_denoise,...] [--mode mean|top]

The PNG has one row per denoising block: its input and output on the clean image, then on
the adversarial image (targeted PGD from the attack flags, the same as `main.py --eval`),
all four on one colour scale; the first row shows the images and the perturbation. `mean`
averages the channels, `top` shows the block input's strongest channel (largest mean
absolute activation) in all four panels. The attacked label is --label, or the model's
clean prediction without it. The relative difference ||adv - clean|| / ||clean|| at the
block input and output is printed and written beside each row.
"""
import argparse
import os
import sys

import numpy as np

import tf_environment  # noqa: F401,E402  (before TensorFlow)

PANEL_INCHES = 2.0
DPI = 100
COLUMNS = ("clean: block input", "clean: block output", "adversarial: block input", "adversarial: block output")
MODES = ("mean", "top")


# ---------------------------------------------------------------- the model's denoising blocks

class BlockTaps:
    """The model once more in the predictor's graph (sharing its weights), on float images,
    with its logits and every denoising block's input and output (NHWC), from the
    backbone's named outputs."""

    def __init__(self, predictor, options):
        import tensorflow as tf
        from nets.layout import layout_scope
        from nets import network
        size = predictor.spec.image_size
        layout = options.layout
        self.session = predictor.session
        with predictor.graph.as_default(), layout_scope(layout):
            self.images = tf.compat.v1.placeholder(tf.float32, [None, size, size, 3], name="feature_map_images")
            outputs = network(self.images, predictor.spec, training=False, options=options.exact)
            self.logits = outputs.logits
            self.blocks = {name: (layout.to_nhwc(x), layout.to_nhwc(y))
                           for name, (x, y) in outputs.denoising_blocks.items()}

    def run(self, images, names):
        """(logits, {name: (input, output)}) as numpy for float images [B, S, S, 3] in [0, 255]."""
        return self.session.run((self.logits, {n: self.blocks[n] for n in names}), {self.images: images})


def select_blocks(available, requested):
    """The requested block names (all in model order when None); an unknown name is an error
    listing the model's blocks."""
    if not available:
        raise ValueError("this model has no denoising blocks (--denoise-placement none); choose an --arch or "
                         "--denoise-op with denoising blocks")
    if requested is None:
        return list(available)
    unknown = [name for name in requested if name not in available]
    if unknown:
        raise ValueError("unknown denoising block {}; this model has: {}".format(
            ", ".join(repr(n) for n in unknown), ", ".join(available)))
    return list(requested)


# ---------------------------------------------------------------- feature maps as pictures

def channel_map(features, mode, channel=None):
    """[H, W, C] -> [H, W]: the channel mean, or one channel."""
    if mode == "mean":
        return features.mean(axis=-1)
    return features[..., channel]


def strongest_channel(features):
    """The channel of [H, W, C] with the largest mean absolute activation."""
    return int(np.abs(features).reshape(-1, features.shape[-1]).mean(axis=0).argmax())


def relative_difference(adversarial, clean):
    """||adversarial - clean|| / ||clean||: how much the attack changed a feature map."""
    return float(np.linalg.norm(adversarial - clean) / max(np.linalg.norm(clean), 1e-12))


def block_row(clean_io, adversarial_io, mode):
    """The four maps of one block (COLUMNS order), the chosen channel (None for the mean),
    and the relative difference at the block input and output."""
    channel = strongest_channel(clean_io[0]) if mode == "top" else None
    maps = [channel_map(f, mode, channel) for f in (clean_io[0], clean_io[1], adversarial_io[0], adversarial_io[1])]
    noise = (relative_difference(adversarial_io[0], clean_io[0]), relative_difference(adversarial_io[1], clean_io[1]))
    return maps, channel, noise


def bgr_to_rgb(image):
    return np.clip(image[..., ::-1], 0, 255).astype(np.uint8)


def draw_image_row(axes, clean, adversarial, caption):
    perturbation = adversarial - clean
    scale = max(np.abs(perturbation).max(), 1e-6)
    axes[0].imshow(bgr_to_rgb(clean))
    axes[0].set_title("clean image", fontsize=8)
    axes[1].imshow(bgr_to_rgb(adversarial))
    axes[1].set_title("adversarial image", fontsize=8)
    axes[2].imshow(bgr_to_rgb(127.5 + perturbation * (127.5 / scale)))
    axes[2].set_title("perturbation (max {:.1f}, stretched)".format(scale), fontsize=8)
    axes[3].text(0.0, 0.5, caption, fontsize=8, va="center", ha="left", transform=axes[3].transAxes)


def draw_block_row(axes, name, maps, channel, noise):
    low, high = min(m.min() for m in maps), max(m.max() for m in maps)
    for axis, feature_map, title in zip(axes, maps, COLUMNS):
        axis.imshow(feature_map, cmap="viridis", vmin=low, vmax=high, interpolation="nearest")
        axis.set_title(title, fontsize=8)
    what = "channel mean" if channel is None else "channel {}".format(channel)
    axes[0].set_ylabel("{}\n{}\nnoise {:.2f} -> {:.2f}".format(name, what, *noise), fontsize=8)


def figure_pixels(block_count):
    """(width, height) of the PNG for this many blocks."""
    return int(len(COLUMNS) * PANEL_INCHES * DPI), int((1 + block_count) * PANEL_INCHES * DPI)


def save_grid(out_path, clean, adversarial, caption, rows):
    """rows: [(name, maps, channel, noise)]; one figure row for the images, one per block."""
    from tools.figures import pyplot, save_figure
    plt = pyplot()
    width, height = figure_pixels(len(rows))
    figure, axes = plt.subplots(1 + len(rows), len(COLUMNS), figsize=(width / DPI, height / DPI), dpi=DPI,
                                squeeze=False)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    axes[0, 3].axis("off")
    draw_image_row(axes[0], clean, adversarial, caption)
    for row_axes, row in zip(axes[1:], rows):
        draw_block_row(row_axes, *row)
    save_figure(figure, out_path, DPI)


# ---------------------------------------------------------------- the command

def build_parser():
    from flags import add_attack_arguments, add_model_arguments
    parser = argparse.ArgumentParser(prog="python -m tools.feature_maps", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", required=True, help="an image file (read with OpenCV, resized to --image-size)")
    parser.add_argument("--out", required=True, metavar="PNG", help="the picture to write")
    parser.add_argument("--label", type=int, help="the true class of the image (default: the clean prediction)")
    parser.add_argument("--block-names", type=lambda text: [n for n in text.split(",") if n],
                        help="comma-separated denoising block names (default: all); an unknown name lists them")
    parser.add_argument("--mode", default="mean", choices=MODES,
                        help="mean: channel mean; top: the block input's strongest channel (default mean)")
    add_model_arguments(parser)
    add_attack_arguments(parser)
    return parser


def load_model(args):
    """(predictor with the attack of the flags, its BlockTaps, the attack): --eval's attack."""
    from flags import build_options_from_args, eval_attacks_from_args, spec_from_args
    from engine.predictor import Predictor
    attacks = eval_attacks_from_args(args)
    if len(attacks) != 1:
        raise ValueError("tools.feature_maps takes one --attack-iter value, got {}".format(len(attacks)))
    options = build_options_from_args(args)
    predictor = Predictor(spec_from_args(args), options, args.load, args.ignore_mismatch, attack=attacks[0])
    return predictor, BlockTaps(predictor, options), attacks[0]


def attack_label(taps, image, label, num_classes):
    """--label, or the model's clean prediction without it."""
    if label is None:
        logits, _ = taps.run(image[None].astype(np.float32), [])
        return int(logits[0].argmax())
    if not 0 <= label < num_classes:
        raise ValueError("--label must be a class index in 0..{}, got {}".format(num_classes - 1, label))
    return label


def attacked_pair(predictor, image, label):
    """(clean float image, adversarial float image, target) for one uint8 image."""
    result = predictor.attack(image[None], np.array([label], np.int32))
    return image.astype(np.float32), np.asarray(result.adversarial[0], np.float32), int(result.target[0])


def feature_map_figure(args):
    """Builds the model and the attack, draws the grid; returns the summary lines to print."""
    from engine.classify_folder import read_resized
    if not os.path.isfile(args.image):
        raise FileNotFoundError("--image: no such file: {}".format(args.image))
    predictor, taps, attack = load_model(args)
    try:
        names = select_blocks(list(taps.blocks), args.block_names)
        image = read_resized(args.image, predictor.spec.image_size)
        label = attack_label(taps, image, args.label, predictor.spec.num_classes)
        clean, adversarial, target = attacked_pair(predictor, image, label)
        logits, features = taps.run(np.stack([clean, adversarial]), names)
    finally:
        predictor.close()
    predictions = logits.argmax(axis=1)
    caption = "label {}   target {}\nattack {}, epsilon {:g}\nclean prediction {}\nadversarial prediction {}".format(
        label, target, attack.label, getattr(attack, "epsilon", 0), predictions[0], predictions[1])
    rows = [(name,) + block_row([f[0] for f in features[name]], [f[1] for f in features[name]], args.mode)
            for name in names]
    save_grid(args.out, clean, adversarial, caption, rows)
    return [caption.replace("\n", ", ")] + [
        "{}: relative difference adversarial vs clean, block input {:.3f} -> block output {:.3f}".format(name, *noise)
        for name, _, _, noise in rows]


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not args.load:
        print("error: --load is required (the weights whose feature maps to draw)", file=sys.stderr)
        return 2
    try:
        lines = feature_map_figure(args)
    except (ValueError, KeyError, FileNotFoundError) as error:
        print("error: {}".format(error.args[0] if error.args else error), file=sys.stderr)
        return 2
    print("\n".join(lines))
    print("wrote {}".format(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
