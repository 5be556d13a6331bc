#!/usr/bin/env python3
"""Feature denoising for adversarial robustness: train, evaluate, classify.

    python main.py --eval-directory DIR --load W.npz --arch ResNetDenoise -d 152 --prediction-file P
"""
import argparse
import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build_parser():
    from engine.flags import add_model_arguments
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--eval-directory", metavar="DIR",
                      help="black-box mode: classify every image in DIR, write filename,label lines")
    add_model_arguments(parser)
    blackbox = parser.add_argument_group("black-box mode")
    blackbox.add_argument("--prediction-file", default="predictions.txt")
    blackbox.add_argument("--logits-file", help="also write the logits, float32 [images, classes] (.npy)")
    blackbox.add_argument("--batch", type=int, default=32, help="images per batch")
    return parser


def run_eval_directory(args, parser):
    from engine.blackbox import classify_files, list_image_files, write_predictions
    from engine.flags import data_format_from_args, spec_from_args
    from engine.predictor import Predictor
    if not args.load:
        parser.error("--eval-directory needs --load W.npz (the weights to classify with)")
    names = list_image_files(args.eval_directory)
    spec = spec_from_args(args)
    predictor = Predictor(spec, data_format_from_args(args), args.load, ignore_mismatch=args.ignore_mismatch)
    if predictor.load_message:
        logging.warning("loaded with --ignore-mismatch: %s", predictor.load_message)
    logits = classify_files(predictor, args.eval_directory, names, args.batch)
    write_predictions(names, logits, args.prediction_file, args.logits_file)
    print("wrote {} predictions to {}{}".format(
        len(names), args.prediction_file, " and logits to " + args.logits_file if args.logits_file else ""))


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.eval_directory:
            run_eval_directory(args, parser)
    except (ValueError, KeyError, FileNotFoundError) as error:
        print("error: {}".format(error.args[0] if error.args else error), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
