"""Every attack and training setting is range-checked, with the valid range and the flag in the
message; a preset's name is recorded only when its settings were kept; Tensorpack's gaps."""
import argparse
import logging

import pytest

import flags
import main
from attacker import ATTACKS, build_attack
from config import PUBLISHED, Recipe
from ranges import Range, SettingError, check_settings


def run(capsys, *argv):
    """main.main(argv) -> (exit code, stderr), argparse's exits included."""
    try:
        code = main.main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("flags,message", [
    (["--attack", "apgd-t", "--attack-option", "target_classes=0"],
     "attack apgd-t: target_classes must be an integer >= 1, got 0 (--attack-option target_classes=..)"),
    (["--attack", "apgd-ce", "--attack-option", "rho=5"],
     "attack apgd-ce: rho must be a number in [0, 1], got 5.0 (--attack-option rho=..)"),
    (["--attack-epsilon", "300"], "attack pgd: epsilon must be a number in (0, 255] on the 0..255 scale, got 300.0 "
                                  "(--attack-epsilon)"),
    (["--attack-epsilon", "nan"], "epsilon must be a number in (0, 255]"),
    (["--attack-epsilon", "-1"], "epsilon must be a number in (0, 255]"),
    (["--attack-step-size", "0"], "attack pgd: step_size must be a number in (0, 255]"),
    (["--attack-restarts", "0"], "attack pgd: restarts must be an integer >= 1, got 0 (--attack-restarts)"),
    (["--attack-target-offset", "0"], "attack pgd: target_offset must be an integer >= 1, got 0"),
    (["--attack-seed", "-3"], "attack pgd: seed must be an integer in [0, 2.14748e+09], got -3 (--attack-seed)"),
    (["--attack", "square", "--attack-option", "p_init=0"], "attack square: p_init must be a number in (0, 1]"),
    (["--attack", "square", "--attack-option", "queries=0"], "attack square: queries must be an integer >= 1"),
    (["--attack", "autoattack", "--attack-option", "target_classes=0"], "attack autoattack: target_classes must be"),
    (["--attack", "apgd-t", "--attack-option", "loss=hinge"],
     "attack apgd-t: loss must be one of ce, cw, dlr, got 'hinge'"),
    (["--attack", "apgd-ce", "--attack-option", "iterations=0"], "iterations must be an integer >= 1"),
])
def test_attack_settings_out_of_range_are_refused_with_the_range(capsys, flags, message):
    code, err = run(capsys, "--eval", "--data", "/tmp", "--load", "w.npz", *flags)
    assert code == 2 and message in err, err


@pytest.mark.parametrize("attack", ["apgd-ce", "fab-t", "square", "autoattack"])
@pytest.mark.parametrize("fast", [["--attack-dtype", "bfloat16"], ["--attack-fold-bn"]])
def test_attacks_that_decide_on_the_logits_refuse_a_faster_model(capsys, attack, fast):
    """APGD, FAB and Square decide on the logits (which point to keep, when an image is broken): on the float32 model
    only, as in the authors' code; PGD's signed steps may run faster."""
    code, err = run(capsys, "--eval", "--data", "/nonexistent", "--load", "w.npz", "--attack", attack, *fast)
    assert code == 2 and "speed up PGD's steps only" in err and "decide(s) on the logits" in err, err
    deciding = build_attack(attack).deciding_stages()
    assert deciding and all(name in err for name in deciding) and not any(n.startswith("PGD") for n in deciding)
    code, err = run(capsys, "--eval", "--data", "/nonexistent", "--load", "w.npz", "--attack", "pgd", *fast)
    assert code == 2 and "speed up" not in err and "/nonexistent" in err


@pytest.mark.parametrize("flags,message", [
    (["--epochs", "0"], "training recipe: epochs must be an integer >= 1, got 0 (--epochs)"),
    (["--epochs", "-1"], "training recipe: epochs must be an integer >= 1, got -1 (--epochs)"),
    (["--lr-per-256", "0"], "training recipe: base_lr_per_256 must be a number > 0, got 0.0 (--lr-per-256)"),
    (["--warmup-epochs", "-2"], "training recipe: warmup_epochs must be an integer >= 0, got -2 (--warmup-epochs)"),
    (["--lr-decay-epochs", "70,35"], "training recipe: lr_decay_epochs must increase, got 70,35 (--lr-decay-epochs)"),
    (["--lr-decay-epochs", "0,35"], "lr_decay_epochs must be an integer >= 1, got 0"),
    (["--attack-iter", "1", "--attack-option", "prob_start_from_clean=2"],
     "attack pgd: prob_start_from_clean must be a number in [0, 1], got 2.0"),
    (["--batch", "0"], "argument --batch: expected an integer >= 1, got '0'"),
    (["--workers", "-1"], "argument --workers: expected an integer >= 0, got '-1'"),
    (["--hang-timeout", "-5"], "argument --hang-timeout: expected a number of seconds >= 0, got '-5'"),
    (["--starting-epoch", "0"], "argument --starting-epoch: expected an integer >= 1, got '0'"),
    (["--max-unreadable-fraction", "1"], "argument --max-unreadable-fraction: expected a fraction in [0, 1), got '1'"),
    (["--blocks", "1,0,1,1"], "architecture: blocks must be an integer >= 1, got 0 (--blocks)"),
    (["--stem-width", "0"], "architecture: stem_width must be an integer >= 1, got 0 (--stem-width)"),
    (["--cardinality", "3"], "cardinality 3 groups, which does not divide 64"),
    (["--bn-group-size", "-1"], "BN group size must be >= 0"),
])
def test_training_settings_out_of_range_are_refused_with_the_range(capsys, tmp_path, flags, message):
    code, err = run(capsys, "--train", "--data", tmp_path, "--logdir", tmp_path / "run", *flags)
    assert code == 2 and message in err, err
    assert not (tmp_path / "run").exists()                  # refused before anything is written


def test_every_registered_attack_and_the_recipe_accept_their_defaults_and_declare_ranges():
    for name in ATTACKS.names():
        attack = build_attack(name)
        check_settings(attack, name)
    assert Recipe() == PUBLISHED
    assert Range(0, 255, exclusive_minimum=True, unit="on the 0..255 scale").describe() == \
        "a number in (0, 255] on the 0..255 scale"
    assert Range(minimum=1, integer=True).describe() == "an integer >= 1"
    assert not Range(minimum=1, integer=True).admits(True) and not Range(minimum=0).admits(float("inf"))
    with pytest.raises(SettingError) as error:
        build_attack("pgd", {"iterations": 0})
    assert error.value.setting == "iterations"


# ---------------------------------------------------------------- presets in the result record

def parsed(*argv):
    from flags import apply_preset
    args = flags.build_parser().parse_args([str(a) for a in argv])
    flags.check_eval_subset(args, None)
    args.preset_changes = apply_preset(args)
    return args


def model_record(*argv):
    from flags import spec_from_args
    args = parsed("--eval", "--data", "d", "--load", "w.npz", *argv)
    return main.evaluated_model(args, spec_from_args(args), subset=list(range(5000)))


def test_the_result_names_the_preset_only_when_its_settings_were_kept():
    kept = model_record("--preset", "robustbench-imagenet", "--attack-seed", 3)      # a seed is no change
    assert kept["preset"] == "robustbench-imagenet" and "preset_changed" not in kept
    assert kept["attack_execution"] == dict(compute_dtype="float32", fold_batch_norm=False, xla=False)
    assert kept["build"]["formulation"] == "fast" and kept["build"]["data_format"] == "NHWC"
    for argv, changes in [
        (["--attack-epsilon", 8], {"--attack-epsilon": dict(preset=4.0, used=8.0)}),
        (["--eval-images", 8], {"--eval-images": dict(preset=5000, used=8)}),
        (["--attack-option", "queries=5"], {"--attack-option queries": dict(preset=5000, used=5)}),
        (["--eval-list", "list.txt"], {"--eval-images": dict(preset=5000, used="the images of --eval-list list.txt")}),
    ]:
        record = model_record("--preset", "robustbench-imagenet", *argv)
        assert record["preset"] is None, argv
        assert record["preset_changed"] == dict(preset="robustbench-imagenet", changes=changes), argv


# ---------------------------------------------------------------- the Tensorpack compatibility module

def test_tensorpack_compat_supplies_tf1_names_and_mends_its_logging(tmp_path, capsys):
    import tensorflow as tf
    from tensorpack.utils import logger
    from engine import tensorpack_compat
    tensorpack_compat.install()
    assert tf.global_variables is tf.compat.v1.global_variables
    assert tensorpack_compat.install() == []                        # idempotent
    record = logging.LogRecord("tensorpack", logging.ERROR, __file__, 1, "Training failed at global_step=", (10,),
                               None)
    assert tensorpack_compat.JoinArgumentsWithoutPlaceholder().filter(record)
    assert record.getMessage() == "Training failed at global_step= 10"
    tensorpack_logger = logging.getLogger("tensorpack")
    console = list(tensorpack_logger.handlers)          # bound to an earlier test's captured stdout
    for handler in console:
        tensorpack_logger.removeHandler(handler)
    logger.set_logger_dir(str(tmp_path / "log"), action="k")
    try:
        tensorpack_compat.log_file_errors_once()
        handler = logger._FILE_HANDLER
        handler.stream.close()                                      # as a full disk: every write fails
        logger.info("one")
        logger.info("two")
        err = capsys.readouterr().err
        assert err.count("warning: cannot write {} any more".format(handler.baseFilename)) == 1
        assert "Logging error" not in err, err
        assert handler not in tensorpack_logger.handlers
    finally:
        logger._FILE_HANDLER = None
        logger.LOG_DIR = None
        for handler in console:
            tensorpack_logger.addHandler(handler)


def test_argparse_types_name_the_bad_value():
    from flags import at_least, fraction, seconds
    assert at_least(1)("3") == 3 and seconds("0") == 0.0 and fraction("0.5") == 0.5
    for parse, text in ((at_least(1), "0"), (at_least(0), "x"), (seconds, "inf"), (fraction, "-0.1")):
        with pytest.raises(argparse.ArgumentTypeError, match=repr(text)):
            parse(text)


@pytest.mark.parametrize("argv", [["--attack-loss", "xent"], ["--attack-option", "loss=xent"],
                                  ["--attack", "apgd-ce", "--attack-option", "loss=xent"]])
def test_the_earlier_loss_spelling_still_works_and_names_the_new_one(caplog, argv):
    with caplog.at_level(logging.WARNING):
        _, args = flags.parse(["--eval", "--data", "/tmp", "--load", "w.npz", *argv])
        attack, = flags.eval_attacks_from_args(args)
    assert attack.loss == "ce"
    assert "the loss is now called ce" in caplog.text


def test_an_unknown_attack_loss_flag_is_refused_with_the_names(capsys):
    code, err = run(capsys, "--eval", "--data", "/tmp", "--load", "w.npz", "--attack-loss", "hinge")
    assert code == 2 and "unknown loss 'hinge'; the losses are: ce, cw, dlr" in err
