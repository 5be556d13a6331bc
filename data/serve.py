"""Data server: decode and augment training batches in this process, send them over ZMQ.

    python -m data.serve --data DIR --batch 32 [--image-size 224] [--workers N]
                         [--addr ENDPOINT | --port P] [--benchmark]

Like the original's `serve-data.py`: run one per machine beside training, whose processes
read with `data.transport.receive_dataflow(addr)` (by default both sides use
`default_address(batch, image_size)`, an abstract IPC socket on this machine). `--port P`
serves on tcp://127.0.0.1:P; `--addr tcp://0.0.0.0:P` would serve every network interface.
`--benchmark` prints images/second instead of serving.
"""
import argparse
import logging
import sys
import time

from .errors import DataError


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m data.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", metavar="DIR", help="data directory with train/<class>/ folders")
    parser.add_argument("--batch", type=int, default=32, help="images per batch (per GPU), default 32")
    parser.add_argument("--image-size", type=int, default=224, help="training crop size, default 224")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: CPU count)")
    parser.add_argument("--rank", type=int, default=0, help="read shard RANK of --world-size of train/")
    parser.add_argument("--world-size", type=int, default=1)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--addr", help="ZMQ endpoint to bind (default: ipc://@feature-denoising-train-b<B>-s<S>)")
    where.add_argument("--port", type=int, help="serve on tcp://127.0.0.1:PORT")
    parser.add_argument("--hwm", type=int, default=50, help="ZMQ high-water mark, in batches")
    parser.add_argument("--max-batches", type=int, default=None, help="stop after this many batches")
    parser.add_argument("--fake", action="store_true", help="random batches instead of --data (no decoding)")
    parser.add_argument("--classes", type=int, default=1000, help="label range of --fake data")
    parser.add_argument("--benchmark", action="store_true", help="print images/second instead of serving")
    parser.add_argument("--benchmark-batches", type=int, default=100, help="batches timed by --benchmark")
    return parser


def address_from_args(args):
    from .transport import default_address
    if args.addr:
        return args.addr
    if args.port:
        return "tcp://127.0.0.1:{}".format(args.port)
    return default_address(args.batch, args.image_size)


def dataflow_from_args(args):
    from .pipelines import build_train_dataflow, fake_dataflow
    if args.fake:
        return fake_dataflow(args.batch, args.image_size, args.classes)
    return build_train_dataflow(args.data, args.batch, args.image_size, workers=args.workers,
                                rank=args.rank, world_size=args.world_size)


def benchmark(dataflow, batches, warmup=5):
    """Time `batches` batches after `warmup` ones; returns images/second."""
    import tqdm
    dataflow.reset_state()
    stream = (batch for _ in iter(int, 1) for batch in dataflow)     # pass after pass
    for _ in range(warmup):
        next(stream)
    images, started = 0, time.time()
    for _ in tqdm.trange(batches, unit="batch", desc="benchmark"):
        images += len(next(stream)[0])
    return images / (time.time() - started)


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.fake and not args.data:
        parser.error("--data DIR is required (or --fake)")
    try:
        dataflow = dataflow_from_args(args)
        if args.benchmark:
            rate = benchmark(dataflow, args.benchmark_batches)
            print("{:.1f} images/s (batch {}, image size {}, {})".format(
                rate, args.batch, args.image_size, "fake data" if args.fake else args.data))
            return 0
        from .transport import send_batches
        sent = send_batches(dataflow, address_from_args(args), hwm=args.hwm, max_batches=args.max_batches)
        print("sent {} batches to {}".format(sent, address_from_args(args)))
    except DataError as error:
        print("error: {}".format(error), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
