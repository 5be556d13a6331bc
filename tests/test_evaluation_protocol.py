"""`main.py --eval` with a composite attack (AutoAttack's protocol, a report per stage), the
fixed validation subsets and the RobustBench preset, and what attack success rate means."""
import importlib.util
import json
import os
from dataclasses import dataclass

import numpy as np
import pytest

from attacker import Attack, build_attack
from attacker.autoattack import AutoAttack
from data import build_eval_dataflow, evaluation_subset, list_images
from data.errors import DataError
from engine.evaluate import attack_batch, evaluate
from engine.predictor import Predictor
from nets import BuildOptions
from tests.cli import ARCH, HOROVODRUN, arch_spec, main_py, run_main

SMALL_AUTOATTACK = ["--attack", "autoattack", "--attack-option", "iterations=4", "--attack-option", "target_classes=2",
                    "--attack-option", "queries=30", "--attack-seed", 3, "--attack-epsilon", 32]


def evaluate_json(tmp_path, eval_data, trained_weights, *args, name="result", ranks=1):
    path = str(tmp_path / (name + ".json"))
    argv = ["--eval", "--data", eval_data, "--load", trained_weights, "--workers", 0, "--result-file", path,
            *args, *ARCH]
    code, out = main_py(*argv, ranks=ranks) if ranks > 1 else run_main(*argv)[:2]
    assert code == 0, out[-3000:]
    with open(path) as f:
        return json.load(f), out


def test_the_composite_reports_each_stage_on_the_images_still_robust(tmp_path, eval_data, trained_weights):
    record, out = evaluate_json(tmp_path, eval_data, trained_weights, "--batch", 7, *SMALL_AUTOATTACK)
    stages = record["stages"]
    assert [s["attack"] for s in stages] == ["clean", "APGD-CE-4", "APGD-T-4", "FAB-T-4", "Square-30"]
    assert record["attack"] == "AutoAttack (standard)"
    robust = [round(s["robust_accuracy"] * 20) for s in stages]
    assert robust == sorted(robust, reverse=True) and robust[0] > robust[-1]      # the attacks do something
    assert [s["images_attacked"] for s in stages] == [20] + robust[:-1]            # only the images still robust
    assert record["wrong_top1"] == 20 - robust[-1] == record["successes"]               # success = misclassified
    assert "images attacked" in out and "APGD-T-4" in out
    again, _ = evaluate_json(tmp_path, eval_data, trained_weights, "--batch", 20, *SMALL_AUTOATTACK, name="again")
    assert again["stages"] == [dict(s, seconds=t["seconds"]) for s, t in zip(stages, again["stages"])]


@pytest.mark.full
@pytest.mark.horovod
@pytest.mark.skipif(importlib.util.find_spec("horovod") is None or not os.path.exists(HOROVODRUN),
                    reason="horovod is not installed (bash scripts/setup.sh builds it)")
def test_two_ranks_count_every_stage_like_one_process(tmp_path, eval_data, trained_weights):
    one, _ = evaluate_json(tmp_path, eval_data, trained_weights, "--batch", 20, *SMALL_AUTOATTACK, name="one")
    two, _ = evaluate_json(tmp_path, eval_data, trained_weights, "--batch", 3, *SMALL_AUTOATTACK, name="two", ranks=2)
    for key in ("images", "wrong_top1", "wrong_top5", "successes"):
        assert one[key] == two[key]
    assert [(s["images_attacked"], s["robust_accuracy"]) for s in one["stages"]] == \
        [(s["images_attacked"], s["robust_accuracy"]) for s in two["stages"]]
    assert one["stages"][0]["robust_accuracy"] > one["stages"][-1]["robust_accuracy"]


@dataclass(frozen=True)
class OneGraph(Attack):
    """An attack run as one graph, without stages (as training-time evaluation runs it)."""
    inner: Attack = None

    def attack(self, image, label, classifier, index=None):
        return self.inner.attack(image, label, classifier, index)


@pytest.mark.full        # the default tier runs the staged composite through main.py (next test)
def test_stages_give_what_the_one_graph_protocol_gives(eval_data, trained_weights):
    settings = dict(epsilon=24.0, iterations=4, target_classes=2, queries=30, seed=3)
    outcomes, announced = [], []
    for attack in (AutoAttack(**settings), OneGraph(inner=AutoAttack(**settings))):
        predictor = Predictor(arch_spec(), BuildOptions(), trained_weights, attack=attack)
        flow = build_eval_dataflow(eval_data, 6, image_size=16, workers=0)
        flow.reset_state()
        outcomes.append(evaluate(predictor, flow)[0])
        images, labels, indices = next(iter(_whole(eval_data)))
        stages = []
        outcomes.append(attack_batch(predictor, images, labels, indices, stages.append)[0].correct_top1.tolist())
        announced.append(stages)            # each stage announced as it starts (the progress bar shows it)
        predictor.close()
    assert announced == [[0, 1, 2, 3, 4], []]       # clean, APGD-CE, APGD-T, FAB-T, Square
    assert outcomes[0] == outcomes[2] and 0 < outcomes[0].wrong_top1 < 20
    assert outcomes[1] == outcomes[3] and sum(outcomes[1]) == 20 - outcomes[0].wrong_top1


@pytest.mark.parametrize("targeted", [True, False])
def test_attack_success_rate_means_the_same_in_every_mode(eval_data, trained_weights, targeted):
    """Targeted: prediction == target; untargeted: prediction != label (never 'correct')."""
    attack = build_attack("pgd", dict(iterations=5, epsilon=32.0, targeted=targeted, seed=0))
    predictor = Predictor(arch_spec(), BuildOptions(), trained_weights, attack=attack)
    images, labels, indices = next(iter(_whole(eval_data)))
    result = predictor.attack(images, labels, indices)
    predictor.close()
    if targeted:
        assert np.all(result.target != labels) and not np.any(result.success & result.correct_top1)
        assert 0 < result.success.sum() < (~result.correct_top1).sum() + 1
    else:
        np.testing.assert_array_equal(result.target, labels)
        np.testing.assert_array_equal(result.success, ~result.correct_top1)
        assert 0 < result.success.sum() < 20


def _whole(eval_data):
    flow = build_eval_dataflow(eval_data, 20, image_size=16, workers=0)
    flow.reset_state()
    return flow


def test_a_subset_keeps_each_images_index_and_pixels(eval_data):
    val = os.path.join(eval_data, "val")
    subset = evaluation_subset(list_images(eval_data, "val"), val, count=6, seed=5)
    assert len(subset) == 6 and subset == sorted(subset)
    assert subset == evaluation_subset(list_images(eval_data, "val"), val, count=6, seed=5)          # fixed
    assert subset != evaluation_subset(list_images(eval_data, "val"), val, count=6, seed=6)
    images, labels, indices = next(iter(_whole(eval_data)))
    for shard in range(2):
        flow = build_eval_dataflow(eval_data, 4, image_size=16, workers=0, shard_index=shard, num_shards=2,
                                   subset=subset)
        flow.reset_state()
        for part_images, part_labels, part_indices in flow:
            assert set(part_indices) <= set(subset)
            np.testing.assert_array_equal(part_images, images[part_indices])
            np.testing.assert_array_equal(part_labels, labels[part_indices])


def test_a_list_file_selects_the_same_images_as_their_positions(tmp_path, eval_data):
    items = list_images(eval_data, "val")
    val = os.path.join(eval_data, "val")
    listed = tmp_path / "list.txt"
    listed.write_text("val/class2/1.jpg 2\nclass0/4.jpg\n\n")
    positions = evaluation_subset(items, val, list_file=str(listed))
    assert [os.path.relpath(items[k][0], val) for k in positions] == ["class0/4.jpg", "class2/1.jpg"]
    listed.write_text("class0/4.jpg\nclass9/1.jpg\n")
    with pytest.raises(DataError, match=r"1 of the 2 images in .*list.txt are not in .*val, e.g. class9/1.jpg"):
        evaluation_subset(items, val, list_file=str(listed))
    listed.write_text("class0/4.jpg\nclass0/4.jpg\n")
    with pytest.raises(DataError, match="lists class0/4.jpg more than once"):
        evaluation_subset(items, val, list_file=str(listed))
    with pytest.raises(DataError, match="asks for more images than"):
        evaluation_subset(items, val, count=21)


def test_the_robustbench_preset_sets_its_protocol_and_keeps_given_flags(tmp_path, eval_data, trained_weights):
    record, out = evaluate_json(tmp_path, eval_data, trained_weights, "--preset", "robustbench-imagenet",
                                "--eval-images", 8,
                                "--attack-option", "iterations=2", "--attack-option", "target_classes=1",
                                "--attack-option", "queries=5", "--batch", 8)
    assert "preset robustbench-imagenet: --attack autoattack --attack-epsilon 4 --eval-images 5000" in out
    assert record["attack_settings"]["name"] == "autoattack" and record["attack_settings"]["epsilon"] == 4.0
    assert record["images"] == 8 and record["model"]["images"]["subset_size"] == 8
    assert record["stages"][0]["attack"] == "clean"                   # clean accuracy beside the robust one
    code, _, err = run_main("--eval", "--data", eval_data, "--load", trained_weights,
                            "--preset", "robustbench-imagenet", "--workers", 0, *ARCH)
    assert code == 2 and "--eval-images 5000 asks for more images than {} holds (20)".format(
        os.path.join(eval_data, "val")) in err
    code, _, err = run_main("--train", "--data", eval_data, "--preset", "robustbench-imagenet", *ARCH)
    assert code == 2 and "use it with --eval" in err
