"""Block grouping and ordering (pure Python)."""
import pytest

from harness.errors import HarnessError
from harness.models import blocks

SLIM = [
    "InceptionV3/Conv2d_1a_3x3/weights:0",
    "InceptionV3/Conv2d_1a_3x3/BatchNorm/beta:0",
    "InceptionV3/Mixed_7c/Branch_0/Conv2d_0a_1x1/weights:0",
    "InceptionV3/AuxLogits/Conv2d_1b_1x1/weights:0",
    "InceptionV3/AuxLogits/Conv2d_2a_5x5/weights:0",
    "InceptionV3/Logits/Conv2d_1c_1x1/weights:0",
    "InceptionV3/Logits/Conv2d_1c_1x1/biases:0",
]


def test_group_by_depth_keeps_first_appearance_order():
    names = ["conv1/kernel", "conv1/bias", "conv2/kernel", "fc1/kernel", "logits/kernel", "logits/bias"]
    assert blocks.group_by_depth(names, 1) == [
        ("conv1", [0, 1]), ("conv2", [2]), ("fc1", [3]), ("logits", [4, 5])]


def test_group_by_depth_two_on_slim_names():
    groups = dict(blocks.group_by_depth(SLIM, 2))
    assert list(groups) == ["InceptionV3/Conv2d_1a_3x3", "InceptionV3/Mixed_7c", "InceptionV3/AuxLogits",
                            "InceptionV3/Logits"]


def test_logits_never_catches_auxlogits():
    groups = dict(blocks.group_by_names(SLIM, ["Logits", "Mixed_7c", "Conv2d_1a_3x3"]))
    assert groups["Logits"] == [5, 6]
    assert all("AuxLogits" not in SLIM[i] for i in groups["Logits"])
    # Ordered by execution, not by the order the names were listed in.
    assert list(groups) == ["Conv2d_1a_3x3", "Mixed_7c", "Logits"]


def test_auxlogits_left_out_of_explicit_list_is_untouched():
    groups = dict(blocks.group_by_names(SLIM, ["Logits", "Conv2d_1a_3x3"]))
    grouped = {i for indices in groups.values() for i in indices}
    assert {3, 4}.isdisjoint(grouped)


def test_unmatched_block_name_lists_nearest():
    with pytest.raises(HarnessError, match=r"block 'Mixed_7x' matches no variable.*Mixed_7c"):
        blocks.group_by_names(SLIM, ["Mixed_7x"])


def test_partial_component_does_not_match():
    with pytest.raises(HarnessError, match="'Logit'"):
        blocks.group_by_names(SLIM, ["Logit"])


def test_multi_component_block_name():
    groups = dict(blocks.group_by_names(SLIM, ["InceptionV3/Logits"]))
    assert groups["InceptionV3/Logits"] == [5, 6]
