"""The data pipeline's throughput: decoded and augmented 224x224 batches per second.

A synthetic ImageNet-layout folder is written once (JPEG, quality 90, ImageNet's typical
500 x 375 size, smooth random content so JPEG decoding does real work) under --root, then
the training flow (random-size crop, colour jitter, lighting, flip; Tensorpack multiprocess
map with --workers decoders) and the evaluation flow (resize 256, centre crop 224; its
default parallel map) are run for --batches batches after a warm-up; plus the no-decoding fake flow the other
benchmarks could use. The model would need these rates per process: compare with the
training step's images/s (bench_train_step).

    .venv/bin/python -m bench.bench_data --workers 2
"""
import argparse
import os
import sys
import time

from bench import common


def write_fake_imagenet(root, classes, per_class, seed=0, size=(375, 500)):
    """ROOT/train/n%08d/*.JPEG and ROOT/val/n%08d/*.JPEG, `per_class` each, once (a marker
    file says it is complete)."""
    import cv2
    import numpy as np
    marker = os.path.join(root, ".complete-{}x{}-v3".format(classes, per_class))
    if os.path.exists(marker):
        return
    rng = np.random.RandomState(seed)
    for split in ("train", "val"):
        for c in range(classes):
            folder = os.path.join(root, split, "n{:08d}".format(c))
            os.makedirs(folder, exist_ok=True)
            for i in range(per_class):
                small = rng.randint(0, 256, (size[0] // 16, size[1] // 16, 3)).astype(np.uint8)
                image = cv2.resize(small, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
                image = np.clip(image.astype(np.int16) + rng.randint(-12, 13, image.shape), 0, 255).astype(np.uint8)
                cv2.imwrite(os.path.join(folder, "{}_{:05d}.JPEG".format(c, i)), image,
                            [cv2.IMWRITE_JPEG_QUALITY, 90])
    open(marker, "w").close()


def rate(flow, batches, warmup):
    """Images per second over `batches` batches after `warmup` batches."""
    flow.reset_state()
    it = iter(flow)
    for _ in range(warmup):
        next(it)
    start, images = time.perf_counter(), 0
    for _ in range(batches):
        images += len(next(it)[0])
    return images / (time.perf_counter() - start)


def main(argv=None):
    from data import build_eval_dataflow, build_train_dataflow, fake_dataflow
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="/tmp/fd_bench_imagenet", help="where the synthetic folder is written")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    args = parser.parse_args(argv)
    write_fake_imagenet(args.root, args.classes, args.per_class)
    common.header("Data pipeline, 224x224 batches of {}".format(args.batch), notes=[
        "synthetic JPEGs of 500 x 375 in {} ({} classes x {} train images)".format(
            args.root, args.classes, args.per_class),
        "train: images/s over {} batches after {} warm-up batches, read-ahead one batch; eval: one whole pass of "
        "the {} val images, start-up included".format(args.batches, args.warmup, args.classes * args.per_class),
        "rate of one process: with Horovod, every rank runs its own pipeline",
    ])
    rows = []
    for workers in args.workers:
        # a read-ahead of one batch, so that prefetched images do not inflate the rate
        flow = build_train_dataflow(args.root, args.batch, 224, workers=workers, parallel="process",
                                    buffer_size=args.batch)
        rows.append(["train (decode + ImageNet augmentation), {} process(es)".format(workers),
                     "{:.1f}".format(rate(flow, args.batches, args.warmup))])
        flow = build_eval_dataflow(args.root, args.batch, 224, workers=workers, buffer_size=args.batch)
        rows.append(["eval (decode, resize 256, crop 224), {} worker(s), one whole pass".format(workers),
                     "{:.1f}".format(rate(flow, len(flow), 0))])
    fake = rate(fake_dataflow(args.batch, 224, length=args.batches + args.warmup), args.batches, args.warmup)
    rows.append(["fake batches (data.fake_dataflow: no decoding)", "> {:.0e} (no work)".format(10 ** int(
        __import__("math").log10(fake)))])
    common.table(["flow", "images/s"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
