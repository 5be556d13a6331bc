#!/usr/bin/env python3
"""Feature denoising for adversarial robustness: train, evaluate, classify.

    horovodrun -np 8 python main.py --train --data IMAGENET --arch ResNetDenoise -d 152
    python main.py --eval --data IMAGENET --load R152-Denoise.npz --arch ResNetDenoise -d 152 --attack-iter 100
    python main.py --eval-directory DIR --load W.npz --arch ResNetDenoise -d 152 --prediction-file P

`--import MODULE` (repeatable) imports a module first, so that the denoising operations,
attacks and architectures it registers can be named like the built-in ones.
"""
import dataclasses
import logging
import os
import sys
import time
import traceback

import tf_environment  # noqa: F401,E402  (before TensorFlow)


def run_train(args, parser):
    from engine.distributed import init_world
    from flags import (collapse_check_from_args, free_training_from_args, recipe_from_args, schedule_attacks,
                       spec_from_args, training_attack_from_args, training_build_from_args)
    from engine.train import TrainJob, default_logdir, train
    if not args.data:
        parser.error("--train needs --data (the root holding train/ and val/; with --data-server it still "
                     "sets the epoch length and the validation data)")
    world = init_world()
    spec = spec_from_args(args)
    recipe = recipe_from_args(args, args.batch)
    if args.free_replays:
        recipe, attack = free_training_from_args(args, recipe)
    else:
        attack = training_attack_from_args(args, recipe)
    logdir = args.logdir or default_logdir(spec, args.arch, args.depth, recipe, attack,
                                           recipe.batch_per_gpu * world.size)
    options, execution = training_build_from_args(args)
    job = TrainJob(data=args.data, logdir=logdir, options=options, attack=attack,
                   eval_attacks=schedule_attacks(recipe, args), execution=execution,
                   collapse_check=collapse_check_from_args(recipe, args, attack),
                   workers=args.workers, load=args.load, ignore_mismatch=args.ignore_mismatch,
                   starting_epoch=args.starting_epoch, resume=args.resume, data_server=args.data_server,
                   hang_timeout=args.hang_timeout, max_unreadable_fraction=args.max_unreadable_fraction)
    train(spec, recipe, job, world)


def run_eval(args, parser):
    """White-box evaluation under each attack (--attack at each --attack-iter length: one pass
    each over the same images; paper Fig. 6 plots error against PGD iterations)."""
    if not args.load:
        parser.error("--eval needs --load (a .npz file or a checkpoint to evaluate)")
    if not args.data:
        parser.error("--eval needs --data (the root holding val/)")
    from engine.distributed import init_world
    from engine.evaluate import point_record, print_result, print_stages, print_table, result_record, write_json
    from engine.graphs import check_exact_decisions
    from flags import eval_attacks_from_args, execution_from_args, preset_flags, spec_from_args
    from data import evaluation_subset, list_images, model_classes
    world = init_world()
    if args.preset and world.is_chief:
        print("preset {}: {}".format(args.preset, preset_flags(args.preset)), flush=True)
        if args.preset_changes:
            print("not the preset's protocol: {} given instead; results are not labelled {}".format(
                ", ".join("{} {}".format(flag, change["used"]) for flag, change in args.preset_changes.items()),
                args.preset), flush=True)
    spec = spec_from_args(args)
    attacks = eval_attacks_from_args(args)
    for attack in attacks:                  # before any data is read
        check_exact_decisions(attack, execution_from_args(args))
    classes = model_classes(args.data, spec.num_classes)
    subset = evaluation_subset(list_images(args.data, "val", classes), os.path.join(args.data, "val"),
                               args.eval_images, args.eval_subset_seed, args.eval_list)
    points = []
    for attack in attacks:
        if world.is_chief and len(attacks) > 1:
            print("== {} ==".format(attack.label), flush=True)
        start = time.time()
        counts, stages = evaluate_attack(args, spec, world, attack, classes, subset)
        if world.is_chief:
            if stages:
                print_stages(stages)
            print_result(counts)
        points.append(point_record(counts, attack, time.time() - start, stages))
    if not world.is_chief:
        return
    if len(points) > 1:
        print_table(points)
    if args.result_file:
        write_json(result_record(points, evaluated_model(args, spec, subset)), args.result_file)
        print("wrote {}".format(args.result_file))


def evaluated_model(args, spec, subset):
    """The result file's "model": the weights, architecture, images and every execution setting;
    the preset's name only when all its settings were kept (else what changed)."""
    from flags import build_options_from_args, execution_from_args
    images = "all of val" if subset is None else dict(
        subset_size=len(subset), subset_seed=None if args.eval_list else args.eval_subset_seed, list=args.eval_list)
    model = dict(arch=args.arch, depth=args.depth, load=args.load, spec=dataclasses.asdict(spec), images=images,
                 preset=None if args.preset_changes else args.preset,
                 build=dataclasses.asdict(build_options_from_args(args)),
                 attack_execution=dataclasses.asdict(execution_from_args(args)))
    if args.preset_changes:
        model["preset_changed"] = dict(preset=args.preset, changes=args.preset_changes)
    return model


def evaluate_attack(args, spec, world, attack, classes, subset):
    """(Counts, stage records) of one pass over this rank's validation shard, summed over
    ranks, under `attack`; a fresh dataflow and predictor, so passes do not share state. Each
    image's random draws depend only on the seed and its index in val/, so the counts are the
    same at any batch size and rank count."""
    from data import build_eval_dataflow
    from engine.evaluate import evaluate
    from flags import build_options_from_args, execution_from_args
    from engine.predictor import Predictor
    dataflow = build_eval_dataflow(args.data, args.batch, image_size=spec.image_size, workers=args.workers,
                                   shard_index=world.rank, num_shards=world.size, classes=classes, subset=subset)
    predictor = Predictor(spec, build_options_from_args(args), args.load, args.ignore_mismatch, attack=attack,
                          gpu_index=world.local_rank, execution=execution_from_args(args))
    if predictor.load_message:
        logging.warning("loaded with --ignore-mismatch: %s", predictor.load_message)
    dataflow.reset_state()
    try:
        return evaluate(predictor, dataflow, world.sum, show_progress=world.is_chief,
                        description=attack.label)
    finally:
        predictor.close()


def run_eval_directory(args, parser):
    from engine.classify_folder import classify_files, list_image_files, write_predictions
    from flags import build_options_from_args, spec_from_args
    from engine.predictor import Predictor
    if not args.load:
        parser.error("--eval-directory needs --load W.npz (the weights to classify with)")
    names = list_image_files(args.eval_directory)
    spec = spec_from_args(args)
    predictor = Predictor(spec, build_options_from_args(args), args.load, ignore_mismatch=args.ignore_mismatch)
    if predictor.load_message:
        logging.warning("loaded with --ignore-mismatch: %s", predictor.load_message)
    logits = classify_files(predictor, args.eval_directory, names, args.batch)
    write_predictions(names, logits, args.prediction_file, args.logits_file)
    print("wrote {} predictions to {}{}".format(
        len(names), args.prediction_file, " and logits to " + args.logits_file if args.logits_file else ""))


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    argv = sys.argv[1:] if argv is None else list(argv)
    from data.errors import DataError
    from flags import parse
    try:
        parser, args = parse(argv, __doc__)
        if args.train:
            run_train(args, parser)         # its watchdog runs from the first training step
        else:
            from engine.watchdog import watching
            with watching(args.hang_timeout, "evaluation" if args.eval else "black-box classification"):
                (run_eval if args.eval else run_eval_directory)(args, parser)
    except (ValueError, KeyError, RuntimeError, DataError, ImportError) as error:
        print("error: {}".format(error.args[0] if error.args else error), file=sys.stderr)
        return 2
    except OSError as error:            # a file the run needs cannot be read or written
        print("error: {}".format(error), file=sys.stderr)
        return 2
    return 0


def exit_now(code):
    """Leave with `code` once the work is done: logs flushed, Horovod shut down, but no interpreter teardown. The
    finalizer of Tensorpack's multiprocess dataflow was seen to block it forever (ZMQ's Context.term, after
    "Training has finished!"), which held a test, and would hold a scheduler, until killed."""
    logging.shutdown()
    hvd = sys.modules.get("horovod.tensorflow")
    if hvd is not None:
        try:
            if hvd.is_initialized():
                hvd.shutdown()
        except Exception as error:          # the exit code stands; say why the shutdown failed
            print("warning: Horovod shutdown: {}".format(error), file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_as_program():
    """main() as a process: no child process (image decoding) outlives it, and it ends, whatever happened."""
    from engine.watchdog import end_child_processes
    try:
        code = main()
    except SystemExit as done:              # argparse's refusals (their message printed), an explicit exit
        if isinstance(done.code, str):
            print(done.code, file=sys.stderr)
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 130
    except BaseException:                   # an unexpected error: its traceback, a non-zero exit
        traceback.print_exc()
        code = 1
    end_child_processes()
    exit_now(code)


if __name__ == "__main__":
    run_as_program()
