"""Listing ImageNet-layout folders: class ids, counts, both val layouts, shards, bad input."""
import os
import shutil

import numpy as np
import pytest

from data.errors import DataError
from data.imagenet import list_classes, list_images, shard, val_layout
from data.pipelines import train_shard
from tests.data_tree import CLASSES, make_tree, random_image, write_image


@pytest.fixture(params=["folders", "flat"])
def tree(request, tmp_path):
    root = str(tmp_path / "imagenet")
    val = make_tree(root, val_layout=request.param)
    return root, val, request.param


def test_classes_are_sorted_folder_names(tree):
    root, _, _ = tree
    assert list_classes(root) == list(CLASSES)
    assert list_classes(root, "train") == sorted(list_classes(root, "train"))


def test_train_listing_counts_and_labels(tree):
    root, _, _ = tree
    items = list_images(root, "train")
    labels = [label for _, label in items]
    assert len(items) == 15
    assert [labels.count(k) for k in range(3)] == [5, 4, 6]
    for path, label in items:
        assert os.path.basename(os.path.dirname(path)) == CLASSES[label]
    assert items == list_images(root, "train")          # a fixed order


def test_val_listing_both_layouts(tree):
    root, val, layout = tree
    assert val_layout(root) == layout
    items = list_images(root, "val")
    assert [(os.path.basename(p), label) for p, label in items] == [(name, label) for name, label, _ in val]
    assert all(os.path.isfile(path) for path, _ in items)


def test_both_val_layouts_give_the_same_images(tmp_path):
    make_tree(str(tmp_path / "a"), val_layout="folders")
    make_tree(str(tmp_path / "b"), val_layout="flat")
    folders = list_images(str(tmp_path / "a"), "val")
    flat = list_images(str(tmp_path / "b"), "val")
    as_set = lambda items: sorted((os.path.basename(p), label) for p, label in items)   # noqa: E731
    assert as_set(folders) == as_set(flat)


def test_extensions_case_insensitive_and_other_files_ignored(tmp_path):
    root = str(tmp_path)
    rng = np.random.RandomState(1)
    for name in ("a.jpeg", "b.JPG", "c.Png", "d.bmp", "e.JPEG"):
        write_image(os.path.join(root, "train", "cat", name), random_image(rng))
    for name in ("notes.txt", ".hidden.JPEG"):
        open(os.path.join(root, "train", "cat", name), "w").close()
    os.makedirs(os.path.join(root, "train", ".cache"))
    assert list_classes(root) == ["cat"]
    assert [os.path.basename(p) for p, _ in list_images(root, "train")] == ["a.jpeg", "b.JPG", "c.Png", "d.bmp",
                                                                             "e.JPEG"]


def check_shards(items, count, shards):
    assert len(shards) == count
    flat = [item for part in shards for item in part]
    assert sorted(flat) == sorted(items)                     # union = all, each exactly once
    assert len(set(flat)) == len(flat) == len(items)         # pairwise disjoint
    sizes = [len(part) for part in shards]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5])
def test_val_shards_cover_everything_once(tree, count):
    root, _, _ = tree
    items = list_images(root, "val")
    shards = [shard(items, index, count) for index in range(count)]
    check_shards(items, count, shards)
    assert [item for part in shards for item in part] == items      # contiguous, in order


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5])
def test_train_rank_shards_cover_everything_once(tree, count):
    root, _, _ = tree
    items = list_images(root, "train")
    check_shards(items, count, [train_shard(items, rank, count) for rank in range(count)])


def test_shard_remainder_and_more_shards_than_items():
    items = list(range(7))
    assert [len(shard(items, k, 3)) for k in range(3)] == [2, 2, 3]
    check_shards(items, 10, [shard(items, k, 10) for k in range(10)])
    with pytest.raises(ValueError):
        shard(items, 3, 3)
    with pytest.raises(ValueError):
        shard(items, 0, 0)


def test_any_number_of_classes(tmp_path):
    root = str(tmp_path)
    rng = np.random.RandomState(2)
    names = ["class{:02d}".format(k) for k in range(12)]
    for name in names:
        write_image(os.path.join(root, "train", name, "x.jpg"), random_image(rng))
    assert list_classes(root) == names
    assert [label for _, label in list_images(root, "train")] == list(range(12))


def test_flat_val_without_train_needs_classes(tmp_path):
    root = str(tmp_path)
    make_tree(root, val_layout="flat")
    shutil.rmtree(os.path.join(root, "train"))
    with pytest.raises(DataError, match="pass classes"):
        list_images(root, "val")
    assert len(list_images(root, "val", classes=3)) == 9
    assert len(list_images(root, "val", classes=list(CLASSES))) == 9


def test_val_txt_accepts_class_names(tmp_path):
    root = str(tmp_path)
    make_tree(root, val_layout="flat")
    label_file = os.path.join(root, "val", "val.txt")
    lines = open(label_file).read().split("\n")
    name, _ = lines[0].split()
    lines[0] = "{} {}".format(name, CLASSES[2])
    open(label_file, "w").write("\n".join(lines))
    assert list_images(root, "val")[0][1] == 2


# ------------------------------------------------------------------ bad input, clear errors

def test_missing_root(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(DataError, match="nowhere"):
        list_classes(missing)


def test_missing_split_folder(tmp_path):
    root = str(tmp_path)
    make_tree(root)
    shutil.rmtree(os.path.join(root, "val"))
    with pytest.raises(DataError, match=r"missing folder: .*val"):
        list_images(root, "val")
    os.makedirs(os.path.join(root, "other", "train"))
    with pytest.raises(DataError, match="no class folders"):
        list_classes(os.path.join(root, "other"))


def test_empty_class_folder(tmp_path):
    root = str(tmp_path)
    make_tree(root)
    empty = os.path.join(root, "train", "n99999999")
    os.makedirs(empty)
    open(os.path.join(empty, "readme.txt"), "w").close()
    with pytest.raises(DataError, match="empty class folder: .*n99999999"):
        list_images(root, "train")


@pytest.mark.parametrize("line, message", [
    ("{name} 3", r"val\.txt line 1: label 3 names no class"),
    ("{name} -1", r"val\.txt line 1: label -1 names no class"),
    ("{name} n99999999", r"val\.txt line 1: unknown class 'n99999999'"),
    ("{name}", r"val\.txt line 1: expected `name label`"),
    ("{name} 1 extra", r"val\.txt line 1: expected `name label`"),
    ("missing.JPEG 0", r"val\.txt line 1: image not found: .*missing\.JPEG"),
])
def test_bad_val_txt_line(tmp_path, line, message):
    root = str(tmp_path)
    val = make_tree(root, val_layout="flat")
    label_file = os.path.join(root, "val", "val.txt")
    rest = open(label_file).read().split("\n")[1:]
    open(label_file, "w").write("\n".join([line.format(name=val[0][0])] + rest))
    with pytest.raises(DataError, match=message) as error:
        list_images(root, "val")
    assert label_file in str(error.value)


def test_val_txt_duplicate_and_empty(tmp_path):
    root = str(tmp_path)
    val = make_tree(root, val_layout="flat")
    label_file = os.path.join(root, "val", "val.txt")
    open(label_file, "a").write("{} 0\n".format(val[0][0]))
    with pytest.raises(DataError, match="listed twice"):
        list_images(root, "val")
    open(label_file, "w").write("\n")
    with pytest.raises(DataError, match="lists no images"):
        list_images(root, "val")


def test_val_folder_with_unknown_class(tmp_path):
    root = str(tmp_path)
    make_tree(root)
    write_image(os.path.join(root, "val", "n99999999", "x.JPEG"), random_image(np.random.RandomState(0)))
    with pytest.raises(DataError, match="not training classes: n99999999"):
        list_images(root, "val")


def test_ambiguous_and_empty_val(tmp_path):
    root = str(tmp_path)
    make_tree(root)
    open(os.path.join(root, "val", "val.txt"), "w").close()
    with pytest.raises(DataError, match="ambiguous"):
        list_images(root, "val")
    other = str(tmp_path / "other")
    make_tree(other)
    shutil.rmtree(os.path.join(other, "val"))
    os.makedirs(os.path.join(other, "val"))
    with pytest.raises(DataError, match="no validation data"):
        list_images(other, "val")


@pytest.mark.parametrize("layout", ["folders", "flat"])
def test_classes_absent_from_val_are_named_in_a_warning(tmp_path, layout, caplog):
    root = str(tmp_path / "imagenet")
    make_tree(root, val_counts=(3, 0, 2), val_layout=layout)
    with caplog.at_level("WARNING"):
        items = list_images(root, "val")
        list_images(root, "val")
    assert len(items) == 5
    message = "1 of the 3 classes have no image in {}: {}; the evaluation does not measure them".format(
        os.path.join(root, "val"), CLASSES[1])
    assert caplog.text.count(message) == 1                   # said once, however often the folder is listed
    caplog.clear()
    make_tree(str(tmp_path / "whole"), val_layout=layout)
    with caplog.at_level("WARNING"):
        list_images(str(tmp_path / "whole"), "val")
    assert "have no image" not in caplog.text
