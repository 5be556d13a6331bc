"""Data server: decode and augment training batches in this process, send them over ZMQ.

    python -m tools.serve_data --data DIR --batch 32 [--image-size 224] [--workers N]
                         [--addr ENDPOINT | --port P]

Like the original's `serve-data.py`: run one per machine beside training, whose processes
read with `data.transport.receive_dataflow(addr)` (by default both sides use
`default_address(batch, image_size)`, an abstract IPC socket on this machine). `--port P`
serves on tcp://127.0.0.1:P; `--addr tcp://0.0.0.0:P` would serve every network interface.
The decoding throughput is measured by `python -m bench.bench_data`.
"""
import argparse
import logging
import sys

from config import DEFAULTS, PUBLISHED

from data.errors import DataError


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m tools.serve_data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", metavar="DIR", required=True, help="data directory with train/<class>/ folders")
    parser.add_argument("--batch", type=int, default=PUBLISHED.batch_per_gpu,
                        help="images per batch (per GPU), as main.py --batch (default %(default)s)")
    parser.add_argument("--image-size", type=int, default=DEFAULTS.image_size,
                        help="training crop size, as main.py --image-size (default %(default)s)")
    parser.add_argument("--workers", type=int, default=DEFAULTS.workers(),
                        help="decoding processes (default: the CPU count, %(default)s)")
    parser.add_argument("--rank", type=int, default=0, help="read shard RANK of --world-size of train/")
    parser.add_argument("--world-size", type=int, default=1)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--addr", help="ZMQ endpoint to bind (default: ipc://@feature-denoising-train-b<B>-s<S>)")
    where.add_argument("--port", type=int, help="serve on tcp://127.0.0.1:PORT")
    parser.add_argument("--hwm", type=int, default=DEFAULTS.data_server_hwm,
                        help="ZMQ high-water mark, in batches (default %(default)s)")
    parser.add_argument("--max-batches", type=int, default=None, help="stop after this many batches")
    return parser


def address_from_args(args):
    from data.transport import default_address
    if args.addr:
        return args.addr
    if args.port:
        return "tcp://127.0.0.1:{}".format(args.port)
    return default_address(args.batch, args.image_size)


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from data.pipelines import build_train_dataflow
        from data.transport import send_batches
        dataflow = build_train_dataflow(args.data, args.batch, args.image_size, workers=args.workers,
                                        rank=args.rank, world_size=args.world_size)
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
