"""Computed (not measured) floating-point work of the models and the denoising operations.

FLOPs = 2 x multiply-adds of the convolutions, the classifier and the matrix products of
the non-local operations; batch norm, ReLU, softmax and additions are left out (a few % of
the total). Backward costs follow from the layer type:

- a layer with weights (conv, FC): forward F, gradient w.r.t. its input F, w.r.t. its
  weights F;
- a product of two activations (the non-local matmuls): forward F, backward 2F (both
  operands need a gradient), no weights.

A training step with PGD-k is k attack iterations (forward + input gradient, BN in
inference mode) followed by one training forward and backward (input and weight
gradients; the image needs none). Evaluation with PGD-k is k attack iterations and one
forward pass.

    .venv/bin/python -m bench.flops          # prints the tables
"""
import argparse
from dataclasses import dataclass, field

if __package__ in (None, ""):
    import os
    import sys
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nets.architectures import build_spec  # noqa: E402

STAGE_SHAPES = ((256, 56), (512, 28), (1024, 14), (2048, 7))   # (C, H = W) after res2..res5 at 224x224


@dataclass
class Count:
    """Forward FLOPs per image by kind: weight layers, the first conv (no input gradient in
    training), activation x activation products."""
    weights: float = 0.0
    first: float = 0.0
    products: float = 0.0
    parts: dict = field(default_factory=dict)

    def add(self, part, weights=0.0, products=0.0):
        self.weights += weights
        self.products += products
        self.parts[part] = self.parts.get(part, 0.0) + weights + products

    @property
    def forward(self):
        return self.weights + self.products

    def attack_iteration(self):
        """Forward plus the gradient w.r.t. the input image."""
        return 2 * self.weights + 3 * self.products

    def train_step(self, attack_iterations):
        training = 3 * self.weights - self.first + 3 * self.products
        return attack_iterations * self.attack_iteration() + training

    def evaluation(self, attack_iterations):
        return attack_iterations * self.attack_iteration() + self.forward


def conv_flops(positions, c_in, c_out, kernel=1, groups=1):
    return 2.0 * positions * kernel * kernel * (c_in // groups) * c_out


def denoise_op_flops(op, channels, positions, window=3):
    """(weight-layer FLOPs, activation-product FLOPs) of one denoising operation's forward
    pass per image (without the block's 1x1 conv), in its cheapest exact order."""
    n, c = positions, channels
    k = window * window
    if op in ("nonlocal_gaussian", "nonlocal_dot_embedded", "bilateral_gaussian"):
        weights, d = 2 * conv_flops(n, c, c // 2), c // 2
    else:
        weights, d = 0.0, c
    if op in ("nonlocal_gaussian", "nonlocal_gaussian_plain"):
        return weights, 2.0 * n * n * d + 2.0 * n * n * c                  # q k^T, then P v
    if op in ("nonlocal_dot", "nonlocal_dot_embedded"):
        return weights, min(2.0 * n * d * c + 2.0 * n * d * c,             # (phi^T g) first: C x C
                            2.0 * n * n * d + 2.0 * n * n * c)             # the N x N affinity first
    if op.startswith("bilateral"):
        return weights, 2.0 * n * k * d + 2.0 * n * k * c
    if op == "mean":
        return 0.0, 1.0 * n * k * c
    return 0.0, 0.0                                                         # median (comparisons), null


def denoise_op_plain_flops(op, channels, positions, window=3):
    """As `denoise_op_flops`, in the plain (definition) order: the dot product's N x N affinity first."""
    if op in ("nonlocal_dot", "nonlocal_dot_embedded"):
        weights, _ = denoise_op_flops(op, channels, positions, window)
        d = channels // 2 if op == "nonlocal_dot_embedded" else channels
        n = positions
        return weights, 2.0 * n * n * d + 2.0 * n * n * channels
    return denoise_op_flops(op, channels, positions, window)


def op_train_flops(op, channels, positions, formulation="fast", window=3):
    """Forward + backward (input and embedding-weight gradients) per image of one operation.
    The fast Gaussian recomputes q k^T in its backward pass (one more N x N x d product)."""
    count = denoise_op_flops if formulation == "fast" else denoise_op_plain_flops
    weights, products = count(op, channels, positions, window)
    total = 3 * weights + 3 * products
    if formulation == "fast" and op in ("nonlocal_gaussian", "nonlocal_gaussian_plain"):
        d = channels // 2 if op == "nonlocal_gaussian" else channels
        total += 2.0 * positions * positions * d
    return total


def model_flops(spec):
    """Count of one image through `spec` (an ArchSpec)."""
    count = Count()
    size = spec.image_size
    if spec.stem == "imagenet":
        size = -(-size // 2)
        first = conv_flops(size * size, 3, spec.stem_width, 7)
        size = -(-size // 2)
    else:
        first = conv_flops(size * size, 3, spec.stem_width, 3)
    count.add("stem", weights=first)
    count.first = first
    channels = spec.stem_width
    for g, (blocks, width) in enumerate(zip(spec.blocks, spec.widths)):
        out, inner = width * spec.expansion, width * spec.bottleneck_multiplier
        for b in range(blocks):
            stride = spec.group_strides[g] if b == 0 else 1
            n_in = size * size
            size = -(-size // stride)
            n = size * size
            f = conv_flops(n_in, channels, inner) + conv_flops(n, inner, inner, 3, spec.cardinality) \
                + conv_flops(n, inner, out)
            if channels != out or stride != 1:
                f += conv_flops(n, channels, out)
            count.add("group{}".format(g), weights=f)
            channels = out
            if spec.denoise_placement == "block" or (spec.denoise_placement == "group" and b == blocks - 1):
                w, p = denoise_op_flops(spec.denoise_op, channels, n, spec.denoise_window)
                count.add("denoise{}".format(g), weights=w + conv_flops(n, channels, channels), products=p)
    count.add("linear", weights=2.0 * channels * spec.num_classes)
    return count


MODELS = (("ResNet", 50), ("ResNetDenoise", 50), ("ResNeXtDenoiseAll", 50),
          ("ResNet", 152), ("ResNetDenoise", 152), ("ResNeXtDenoiseAll", 101))


def baseline_of(arch, depth):
    """The same backbone without denoising blocks."""
    spec = build_spec(arch, depth)
    if spec.denoise_placement == "none":
        return spec
    import dataclasses
    return dataclasses.replace(spec, denoise_op=None, denoise_placement="none")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attack-iter", type=int, nargs="*", default=[0, 2, 10, 30])
    args = parser.parse_args(argv)
    print("## Computed FLOPs per image (224x224), GFLOPs\n")
    print("    .venv/bin/python -m bench.flops\n")
    print("| model | forward GFLOPs | baseline forward | x baseline | of which denoising | "
          + " | ".join("train step PGD-{}".format(k) for k in args.attack_iter) + " |")
    print("|---|---|---|---|---|" + "---|" * len(args.attack_iter))
    for arch, depth in MODELS:
        count = model_flops(build_spec(arch, depth))
        base = model_flops(baseline_of(arch, depth))
        denoise = sum(v for k, v in count.parts.items() if k.startswith("denoise"))
        print("| {}-{} | {:.2f} | {:.2f} | x{:.2f} | {:.2f} | {} |".format(
            arch, depth, count.forward / 1e9, base.forward / 1e9, count.forward / base.forward, denoise / 1e9,
            " | ".join("{:.1f}".format(count.train_step(k) / 1e9) for k in args.attack_iter)))
    print()
    print("| model | " + " | ".join("evaluation PGD-{}".format(k) for k in args.attack_iter) + " |")
    print("|---|" + "---|" * len(args.attack_iter))
    for arch, depth in MODELS:
        count = model_flops(build_spec(arch, depth))
        print("| {}-{} | {} |".format(arch, depth, " | ".join(
            "{:.1f}".format(count.evaluation(k) / 1e9) for k in args.attack_iter)))
    print()
    print("First-stage detail, ResNetDenoise (forward GFLOPs per image): " + ", ".join(
        "{}: {:.2f}".format(k, v / 1e9) for k, v in model_flops(build_spec("ResNetDenoise", 50)).parts.items()
        if k.startswith("denoise")))


if __name__ == "__main__":
    main()
