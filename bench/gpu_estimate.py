"""Computed, not measured: what the non-local operations should cost on a V100 and an H100
at the paper's shapes (224x224 ImageNet, 32 images per GPU), from FLOPs and memory traffic.

Model (a roofline): time = max(FLOPs / peak FLOP rate, bytes / memory bandwidth) for each
kernel class, summed. Peak rates are the vendors' dense figures; real kernels reach maybe
60-80% of them, which moves all columns alike.

Memory traffic of one image's forward + backward, counted in N x N elements (N = H * W)
read or written to device memory:
- plain (the definition, as TF runs it): S = q k^T written (1); softmax reads it twice and
  writes P (3); P v reads P (1); backward: dP = dO v^T written (1); TF's softmax gradient is
  four kernels, sum(dP * P), subtract, multiply (about 7 reads/writes); dV = P^T dO, dQ and
  dK read P and dS (3): about 16 accesses of N^2 elements.
- fused (a FlashAttention-style kernel, one launch per pass, blocks in on-chip memory):
  no N x N traffic, only the O(N C) inputs and outputs, at 20/18 of the FLOPs (q k^T is
  recomputed in the backward pass).
- blocked (this repository's fast formulation run by TF on a GPU): every block is still a
  separate matmul / softmax / exp kernel writing its [rows, N] block to device memory, so
  its N x N traffic is about the plain one's (a little less: the softmax gradient is two
  kernels, exp and a multiply, and the forward keeps no P): about 13 accesses; what it
  saves is peak memory, not traffic.

    .venv/bin/python -m bench.gpu_estimate
"""
import argparse

if __package__ in (None, ""):
    import os
    import sys
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.flops import STAGE_SHAPES, build_spec, model_flops  # noqa: E402

GPUS = {
    # name: (fp32 FLOP/s, half-precision tensor-core FLOP/s, memory bytes/s)
    "V100 (SXM2, 16 GB)": (15.7e12, 125e12, 900e9),
    "H100 (SXM5, 80 GB)": (67e12, 989e12, 3.35e12),
}
NN_ACCESSES = {"plain": 16, "blocked": 13, "fused": 0}


def gaussian_costs(channels, size, batch, bytes_per_element, formulation):
    """(FLOPs, bytes) of a batch's forward + backward of the embedded non-local Gaussian
    (without its embeddings and 1x1 conv, which are ordinary convolutions)."""
    n, d, c = size * size, channels // 2, channels
    flops = 2.0 * n * n * (d + c) * 3                        # fwd q k^T + P v, backward twice that
    if formulation != "plain":
        flops += 2.0 * n * n * d                              # recomputed q k^T
    nc_bytes = 12.0 * n * c * bytes_per_element              # q, k, v, O, dO, dq, dk, dv and re-reads
    nn_bytes = NN_ACCESSES[formulation] * float(n) * n * bytes_per_element
    return flops * batch, (nc_bytes + nn_bytes) * batch


def dot_costs(channels, size, batch, bytes_per_element):
    """(FLOPs, bytes) of the non-embedded dot product in the cheaper order, forward + backward."""
    n, c = size * size, channels
    flops = 3 * min(4.0 * n * c * c, 4.0 * n * n * c)
    return flops * batch, 10.0 * n * c * bytes_per_element * batch


def roofline(flops, nbytes, flop_rate, bandwidth):
    return max(flops / flop_rate, nbytes / bandwidth)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args(argv)
    print("## Computed GPU estimates (not measured), batch {} per GPU, forward + backward\n".format(args.batch))
    print("    .venv/bin/python -m bench.gpu_estimate\n")
    for gpu, (fp32, half, bandwidth) in GPUS.items():
        print("### {}: {:.1f} TFLOP/s fp32, {:.0f} TFLOP/s fp16/bf16 tensor cores, {:.0f} GB/s\n".format(
            gpu, fp32 / 1e12, half / 1e12, bandwidth / 1e9))
        print("| operation | C x H x W | GFLOPs | N x N per image | traffic plain / blocked / fused (GB) | "
              "fp32 plain / blocked / fused (ms) | fp16 plain / blocked / fused (ms) |")
        print("|---|---|---|---|---|---|---|")
        for channels, size in STAGE_SHAPES:
            n = size * size
            cells = []
            times32, times16, traffic = [], [], []
            for formulation in ("plain", "blocked", "fused"):
                f32, b32 = gaussian_costs(channels, size, args.batch, 4, formulation)
                f16, b16 = gaussian_costs(channels, size, args.batch, 2, formulation)
                traffic.append(b32 / 1e9)
                times32.append(roofline(f32, b32, fp32, bandwidth) * 1e3)
                times16.append(roofline(f16, b16, half, bandwidth) * 1e3)
            plain_flops = gaussian_costs(channels, size, args.batch, 4, "plain")[0]
            cells = ["nonlocal_gaussian", "{} x {} x {}".format(channels, size, size), "{:.0f}".format(plain_flops / 1e9),
                     "{:.1f} MB".format(n * n * 4 / 2 ** 20), " / ".join("{:.2f}".format(t) for t in traffic),
                     " / ".join("{:.1f}".format(t) for t in times32), " / ".join("{:.2f}".format(t) for t in times16)]
            print("| " + " | ".join(cells) + " |")
        for channels, size in STAGE_SHAPES:
            f32, b32 = dot_costs(channels, size, args.batch, 4)
            f16, b16 = dot_costs(channels, size, args.batch, 2)
            print("| nonlocal_dot (cheaper order) | {0} x {1} x {1} | {2:.0f} | none | {3:.2f} | {4:.2f} | {5:.2f} |".format(
                channels, size, f32 / 1e9, b32 / 1e9, roofline(f32, b32, fp32, bandwidth) * 1e3,
                roofline(f16, b16, half, bandwidth) * 1e3))
        print()
    print("### Whole models: computed FLOPs of a PGD-30 training step per image\n")
    print("| pair | forward FLOP ratio | PGD-30 training-step FLOP ratio |")
    print("|---|---|---|")
    for denoise, base in (("ResNetDenoise", "ResNet"), ("ResNeXtDenoiseAll", None)):
        for depth in ((50, 152) if base else (50, 101)):
            spec = build_spec(denoise, depth)
            import dataclasses
            base_spec = build_spec(base, depth) if base else dataclasses.replace(
                spec, denoise_op=None, denoise_placement="none")
            a, b = model_flops(spec), model_flops(base_spec)
            print("| {}-{} / {} | x{:.2f} | x{:.2f} |".format(denoise, depth, "{}-{}".format(base, depth) if base
                                                           else "same ResNeXt without blocks",
                                                           a.forward / b.forward, a.train_step(30) / b.train_step(30)))
    print()
    print("### The original's recorded training times, against these FLOPs\n")
    print("docs/FACTS.md Sec. 5: ResNet-152 about 52 h, ResNet-152 Denoise about 90 h on 128 V100s with PGD-30, "
          "110 epochs of the 1,281,167 ImageNet training images, 32 images per GPU.\n")
    print("| model | GFLOPs per image and step | steps | seconds per step | TFLOP/s per GPU | % of V100 fp32 peak |")
    print("|---|---|---|---|---|---|")
    steps = 1281167 * 110 / (128 * 32)
    fp32 = GPUS["V100 (SXM2, 16 GB)"][0]
    for arch, hours in (("ResNet", 52), ("ResNetDenoise", 90)):
        flops = model_flops(build_spec(arch, 152)).train_step(30)
        seconds = hours * 3600 / steps
        rate = flops * 32 / seconds
        print("| {}-152 | {:.0f} | {:.0f} | {:.2f} | {:.1f} | {:.0f}% |".format(
            arch, flops / 1e9, steps, seconds, rate / 1e12, 100 * rate / fp32))
    print()


if __name__ == "__main__":
    main()
