"""Research tools: evaluation at several attack lengths, robustness curves, feature-map
grids and the ablation runner, on tiny shapes."""
import json
import os
import time

import cv2
import numpy as np
import pytest

import flags
import main
from tests.cli import ARCH
from tools import ablation, feature_maps, plot_curves

ARCH = [str(a) for a in ARCH]
BLOCKS = ["group0_denoise", "group1_denoise"]             # the denoising blocks of tests.cli.ARCH


def run(module_main, argv, capsys):
    """(exit code, stdout, stderr) of a command's main(argv), argparse exits included."""
    try:
        code = module_main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def png_size(path):
    """(width, height) of an image file."""
    image = cv2.imread(str(path))
    assert image is not None, "{} is not a readable image".format(path)
    return image.shape[1], image.shape[0]


def write_json(path, record):
    path.write_text(json.dumps(record))
    return str(path)


# ---------------------------------------------------------------- main.py --eval at several attack lengths

@pytest.mark.full
def test_eval_at_several_attack_lengths_writes_one_curve(tmp_path, random_weights, data, capsys):
    result = tmp_path / "curve.json"
    code, out, err = run(main.main, ["--eval", "--data", data, "--load", random_weights, "--attack-iter", "2,0,1",
                                     "--batch", 5, "--workers", 1, "--attack-seed", 0, "--result-file", result]
                         + ARCH, capsys)
    assert code == 0, err[-3000:]
    record = json.loads(result.read_text())
    assert [p["attack"] for p in record["points"]] == ["PGD-2", "clean", "PGD-1"]      # in the order asked
    assert [p["attack_iterations"] for p in record["points"]] == [2, 0, 1]
    assert all(p["images"] == 12 for p in record["points"])
    assert record["points"][1]["attack_success_rate"] == 0           # clean images: no attack
    assert record["model"]["load"] == random_weights and record["points"][0]["attack_settings"]["epsilon"] == 16
    assert out.count("Top1 Error:") == 3 and "== PGD-2 ==" in out

    picture = tmp_path / "curve.png"
    code, _, err = run(plot_curves.main, [result, "--out", picture], capsys)
    assert code == 0, err
    assert png_size(picture) == (plot_curves.FIGURE_INCHES[0] * plot_curves.DPI,
                                 plot_curves.FIGURE_INCHES[1] * plot_curves.DPI)


def test_training_refuses_several_attack_lengths(capsys):
    code, _, err = run(main.main, ["--train", "--data", "/tmp", "--attack-iter", "0,3"] + ARCH, capsys)
    assert code == 2
    assert "--train takes one --attack-iter value, got 0,3" in err


@pytest.mark.parametrize("value", ["-1", "1,x", ""])
def test_bad_attack_lengths_are_refused(value, capsys):
    code, _, err = run(main.main, ["--eval", "--data", "/tmp", "--load", "w.npz", "--attack-iter", value], capsys)
    assert code == 2 and "--attack-iter" in err


# ---------------------------------------------------------------- plot_curves

CURVE = {"points": [{"attack_iterations": 0, "top1_error": 0.1, "attack_success_rate": 0.0, "images": 10},
                    {"attack_iterations": 10, "top1_error": 0.4, "attack_success_rate": 0.2, "images": 10},
                    {"attack_iterations": 100, "top1_error": 0.6, "attack_success_rate": 0.5, "images": 10}]}
SINGLE = {"attack_iterations": 10, "top1_error": 0.3, "attack_success_rate": 0.1, "images": 10}


def test_plot_of_a_curve_and_a_single_result_has_the_expected_size(tmp_path, capsys):
    files = [write_json(tmp_path / "a.json", CURVE), write_json(tmp_path / "b.json", SINGLE)]
    picture = tmp_path / "out" / "curves.png"
    code, out, err = run(plot_curves.main, files + ["--out", picture, "--labels", "denoise,baseline"], capsys)
    assert code == 0, err
    assert png_size(picture) == (1000, 400) and "2 models" in out


def test_a_composite_attack_shows_the_robust_accuracy_after_each_of_its_attacks(tmp_path, capsys):
    stages = [dict(attack="clean", robust_accuracy=0.9), dict(attack="APGD-CE-100", robust_accuracy=0.5),
              dict(attack="Square-5000", robust_accuracy=0.45)]
    composite = dict(SINGLE, attack_iterations=100, top1_error=0.55, stages=stages)
    assert plot_curves.stage_marks([CURVE["points"][0], composite]) == [
        (100, 90.0, "clean"), (100, 50.0, "APGD-CE-100"), (100, 45.0, "Square-5000")]
    picture = tmp_path / "composite.png"
    code, _, err = run(plot_curves.main, [write_json(tmp_path / "c.json", composite), "--out", picture], capsys)
    assert code == 0 and png_size(picture) == (1000, 400), err


@pytest.mark.parametrize("content,message", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "expected an object"),
    (json.dumps({"points": []}), "must be a non-empty list"),
    (json.dumps({"points": [{"attack_iterations": 0, "top1_error": 0.1}]}), "lacks attack_success_rate"),
])
def test_plot_refuses_malformed_results_naming_the_file(tmp_path, capsys, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    code, _, err = run(plot_curves.main, [path, "--out", tmp_path / "x.png"], capsys)
    assert code == 2
    assert message in err and str(path) in err
    assert not (tmp_path / "x.png").exists()


def test_plot_refuses_a_wrong_number_of_labels(tmp_path, capsys):
    files = [write_json(tmp_path / "a.json", CURVE)]
    code, _, err = run(plot_curves.main, files + ["--out", tmp_path / "x.png", "--labels", "a,b"], capsys)
    assert code == 2 and "--labels gives 2 names for 1 result files" in err


# ---------------------------------------------------------------- feature_maps

@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("image") / "digit.png")
    rng = np.random.RandomState(1)
    cv2.imwrite(path, rng.randint(0, 256, [24, 24, 3]).astype(np.uint8))
    return path


@pytest.mark.parametrize("extra,blocks", [
    ([], BLOCKS),
    (["--block-names", "group1_denoise,group0_denoise", "--mode", "top", "--label", 1], ["group1_denoise",
                                                                                         "group0_denoise"]),
])
def test_feature_map_grid_has_one_row_per_block(tmp_path, random_weights, image, capsys, extra, blocks):
    picture = tmp_path / "fm.png"
    code, out, err = run(feature_maps.main, ["--load", random_weights, "--image", image, "--out", picture,
                                             "--attack-iter", 2] + ARCH + extra, capsys)
    assert code == 0, err
    assert png_size(picture) == feature_maps.figure_pixels(len(blocks)) == (800, 200 * (1 + len(blocks)))
    assert [line.split(":")[0] for line in out.splitlines() if "relative difference" in line] == blocks


@pytest.mark.parametrize("placement,known", [
    ("group", BLOCKS),
    ("block", ["group0/block0/non_local", "group1/block0/non_local"]),
])
def test_feature_maps_refuse_an_unknown_block_listing_the_known_ones(tmp_path, random_weights, image, capsys, placement,
                                                                     known):
    code, _, err = run(feature_maps.main, ["--load", random_weights, "--ignore-mismatch", "--image", image,
                                           "--out", tmp_path / "fm.png", "--block-names", "group1_denoise,res3"]
                       + ARCH + ["--denoise-placement", placement], capsys)
    assert code == 2
    assert "unknown denoising block {}; this model has: {}".format(
        "'res3'" if placement == "group" else "'group1_denoise', 'res3'", ", ".join(known)) in err
    assert not (tmp_path / "fm.png").exists()


def test_feature_maps_refuse_a_model_without_denoising_blocks(tmp_path, random_weights, image, capsys):
    code, _, err = run(feature_maps.main, ["--load", random_weights, "--ignore-mismatch", "--image", image,
                                           "--out", tmp_path / "fm.png"] + ARCH + ["--denoise-placement", "none"],
                       capsys)
    assert code == 2 and "no denoising blocks" in err


def test_block_taps_reuse_the_predictors_weights(random_weights):
    import tensorflow as tf
    from flags import spec_from_args
    from engine.predictor import Predictor
    from nets import BuildOptions
    spec = spec_from_args(flags.build_parser().parse_args(["--eval"] + ARCH))
    predictor = Predictor(spec, BuildOptions(), random_weights)
    with predictor.graph.as_default():
        variables_before = len(tf.compat.v1.global_variables())
        taps = feature_maps.BlockTaps(predictor, BuildOptions())
        assert len(tf.compat.v1.global_variables()) == variables_before
    images = np.random.RandomState(2).randint(0, 256, [2, 16, 16, 3]).astype(np.uint8)
    logits, blocks = taps.run(images.astype(np.float32), BLOCKS[:1])
    np.testing.assert_allclose(logits, predictor(images), rtol=1e-5, atol=1e-5)
    block_input, block_output = blocks[BLOCKS[0]]
    assert block_input.shape == block_output.shape == (2, 16, 16, 16)
    assert not np.allclose(block_input, block_output)            # gamma 0.5: the block changes its input
    predictor.close()


def test_block_channel_choice_and_noise_measure():
    clean = np.zeros([3, 3, 2], np.float32)
    clean[..., 1] = 2.0
    assert feature_maps.strongest_channel(clean) == 1
    assert feature_maps.channel_map(clean, "mean").tolist() == [[1.0] * 3] * 3
    assert feature_maps.relative_difference(clean * 1.5, clean) == pytest.approx(0.5)


# ---------------------------------------------------------------- ablation

def test_ablation_refuses_an_unknown_operation(capsys):
    code, _, err = run(ablation.main, ["--ops", "mean,gaussian_blur"], capsys)
    assert code == 2
    assert "unknown operation 'gaussian_blur'" in err and "nonlocal_gaussian" in err and "none" in err


@pytest.mark.full
def test_tiny_ablation_runs_end_to_end(tmp_path, capsys):
    ops = ["none", "null", "median"]
    out = tmp_path / "ablation"
    code, printed, err = run(ablation.main, ["--out", out, "--tiny", "--ops", ",".join(ops)], capsys)
    assert code == 0, (printed + err)[-3000:]
    table = [line for line in (out / "ablation.md").read_text().splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(ops)                           # header + one row per operation
    assert [line.split("|")[1].strip() for line in table[1:]] == ops
    record = json.loads((out / "ablation.json").read_text())
    assert [row["operation"] for row in record["rows"]] == ops
    assert all(0.0 <= row["pgd_top1_error"] <= 1.0 and row["images"] == 360 for row in record["rows"])
    assert png_size(out / "ablation.png")[0] == 800

    mtimes = {op: os.path.getmtime(out / "results" / (op + ".json")) for op in ops}
    code, printed, err = run(ablation.main, ["--out", out, "--tiny", "--ops", ",".join(ops)], capsys)
    assert code == 0, (printed + err)[-3000:]
    assert "$ " not in printed                                 # a re-run reuses every model and result
    assert mtimes == {op: os.path.getmtime(out / "results" / (op + ".json")) for op in ops}

    code, _, err = run(ablation.main, ["--out", out, "--tiny", "--ops", "none", "--epsilon", 16], capsys)
    assert code == 2 and "was trained with other settings" in err


def test_a_demo_step_past_its_time_limit_is_stopped_and_a_failed_one_shows_its_log(tmp_path):
    """tools.demo.run_main: a step's main.py is killed at its limit (never waited for forever), nothing of it left
    running, and a failing step exits with its log's end."""
    from tools import demo
    started = time.time()
    with pytest.raises(SystemExit, match="stopped after 1 s"):
        demo.run_main(["--train", "--data", str(tmp_path)], str(tmp_path / "slow.log"), timeout=1)
    assert time.time() - started < 30 and not demo.RUNNING
    with pytest.raises(SystemExit, match=r"(?s)demo step failed \(exit 2\).*--arch"):
        demo.run_main(["--eval", "--arch", "NoSuchNet"], str(tmp_path / "bad.log"))
