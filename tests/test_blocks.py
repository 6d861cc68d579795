"""Block grouping and ordering (pure Python), on the real variable names of TF-slim's InceptionV3."""
from pathlib import Path

import pytest
import yaml

from harness.errors import HarnessError
from harness.models import blocks

# TF-slim's inception_v3 (tensorflow/models research/slim/nets/inception_v3.py, the names of the
# paper's inception_v3_2016_08_28 checkpoint): the conv scopes of every endpoint, in creation order.
# Every conv has `weights` and batch norm (`BatchNorm/beta`, `moving_mean`, `moving_variance`; slim's
# inception arg scope has no gamma) except the two classifier convs (`weights`, `biases`).
_B = "Branch_"
SLIM_CONVS = {
    "Conv2d_1a_3x3": [""], "Conv2d_2a_3x3": [""], "Conv2d_2b_3x3": [""], "Conv2d_3b_1x1": [""],
    "Conv2d_4a_3x3": [""],
    "Mixed_5b": [f"{_B}0/Conv2d_0a_1x1", f"{_B}1/Conv2d_0a_1x1", f"{_B}1/Conv2d_0b_5x5", f"{_B}2/Conv2d_0a_1x1",
                 f"{_B}2/Conv2d_0b_3x3", f"{_B}2/Conv2d_0c_3x3", f"{_B}3/Conv2d_0b_1x1"],
    "Mixed_5c": [f"{_B}0/Conv2d_0a_1x1", f"{_B}1/Conv2d_0b_1x1", f"{_B}1/Conv_1_0c_5x5", f"{_B}2/Conv2d_0a_1x1",
                 f"{_B}2/Conv2d_0b_3x3", f"{_B}2/Conv2d_0c_3x3", f"{_B}3/Conv2d_0b_1x1"],
    "Mixed_5d": [f"{_B}0/Conv2d_0a_1x1", f"{_B}1/Conv2d_0a_1x1", f"{_B}1/Conv2d_0b_5x5", f"{_B}2/Conv2d_0a_1x1",
                 f"{_B}2/Conv2d_0b_3x3", f"{_B}2/Conv2d_0c_3x3", f"{_B}3/Conv2d_0b_1x1"],
    "Mixed_6a": [f"{_B}0/Conv2d_1a_1x1", f"{_B}1/Conv2d_0a_1x1", f"{_B}1/Conv2d_0b_3x3", f"{_B}1/Conv2d_1a_1x1"],
    **{block: [f"{_B}0/Conv2d_0a_1x1", f"{_B}1/Conv2d_0a_1x1", f"{_B}1/Conv2d_0b_1x7", f"{_B}1/Conv2d_0c_7x1",
               f"{_B}2/Conv2d_0a_1x1", f"{_B}2/Conv2d_0b_7x1", f"{_B}2/Conv2d_0c_1x7", f"{_B}2/Conv2d_0d_7x1",
               f"{_B}2/Conv2d_0e_1x7", f"{_B}3/Conv2d_0b_1x1"]
       for block in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e")},
    "Mixed_7a": [f"{_B}0/Conv2d_0a_1x1", f"{_B}0/Conv2d_1a_3x3", f"{_B}1/Conv2d_0a_1x1", f"{_B}1/Conv2d_0b_1x7",
                 f"{_B}1/Conv2d_0c_7x1", f"{_B}1/Conv2d_1a_3x3"],
    "Mixed_7b": [f"{_B}0/Conv2d_0a_1x1", f"{_B}1/Conv2d_0a_1x1", f"{_B}1/Conv2d_0b_1x3", f"{_B}1/Conv2d_0b_3x1",
                 f"{_B}2/Conv2d_0a_1x1", f"{_B}2/Conv2d_0b_3x3", f"{_B}2/Conv2d_0c_1x3", f"{_B}2/Conv2d_0d_3x1",
                 f"{_B}3/Conv2d_0b_1x1"],
    "Mixed_7c": [f"{_B}0/Conv2d_0a_1x1", f"{_B}1/Conv2d_0a_1x1", f"{_B}1/Conv2d_0b_1x3", f"{_B}1/Conv2d_0c_3x1",
                 f"{_B}2/Conv2d_0a_1x1", f"{_B}2/Conv2d_0b_3x3", f"{_B}2/Conv2d_0c_1x3", f"{_B}2/Conv2d_0d_3x1",
                 f"{_B}3/Conv2d_0b_1x1"],
    "AuxLogits": ["Conv2d_1b_1x1", "Conv2d_2a_5x5", "Conv2d_2b_1x1"],
    "Logits": ["Conv2d_1c_1x1"],
}
CLASSIFIERS = {"AuxLogits/Conv2d_2b_1x1", "Logits/Conv2d_1c_1x1"}


def _slim_names() -> list[str]:
    names = []
    for block, convs in SLIM_CONVS.items():
        for conv in convs:
            scope = "/".join(part for part in ("InceptionV3", block, conv) if part)
            leaves = (["weights", "biases"] if f"{block}/{conv}" in CLASSIFIERS else
                      ["weights", "BatchNorm/beta", "BatchNorm/moving_mean", "BatchNorm/moving_variance"])
            names += [f"{scope}/{leaf}:0" for leaf in leaves]
    return names


SLIM = _slim_names()
PAPER_BLOCKS = yaml.safe_load((Path(__file__).parents[1] / "conf/model/inception_v3_hub.yaml").read_text()
                              )["blocks"]["names"]


def _names(groups, block):
    return {SLIM[i] for i in dict(groups)[block]}


def test_slim_fixture_is_the_real_network():
    assert len(SLIM_CONVS) == 18 and len(PAPER_BLOCKS) == 17 and set(PAPER_BLOCKS) == set(SLIM_CONVS) - {"AuxLogits"}
    assert sum(len(convs) for convs in SLIM_CONVS.values()) == 98  # 94 in the base network, 3 aux, 1 logits
    # The collisions the matching must survive: the stem's name reused inside Mixed_7a's branches,
    # Mixed_6a's two branches sharing one name.
    assert "InceptionV3/Mixed_7a/Branch_0/Conv2d_1a_3x3/weights:0" in SLIM
    assert "InceptionV3/Mixed_7a/Branch_1/Conv2d_1a_3x3/weights:0" in SLIM
    assert "InceptionV3/Mixed_6a/Branch_1/Conv2d_1a_1x1/weights:0" in SLIM


def test_paper_blocks_get_exactly_their_own_variables():
    """Each of the 17 blocks of conf/model/inception_v3_hub.yaml holds exactly InceptionV3/<block>/...:
    the stem Conv2d_1a_3x3 does not take Mixed_7a's Branch_*/Conv2d_1a_3x3 (the authors' anchored
    prefix `InceptionV3/Conv2d_1a_3x3`), and AuxLogits is in no block."""
    groups = blocks.group_by_names(SLIM, PAPER_BLOCKS, "inception_v3")
    for block in PAPER_BLOCKS:
        assert _names(groups, block) == {n for n in SLIM if n.startswith(f"InceptionV3/{block}/")}, block
    assert _names(groups, "Conv2d_1a_3x3") == {
        "InceptionV3/Conv2d_1a_3x3/weights:0", "InceptionV3/Conv2d_1a_3x3/BatchNorm/beta:0",
        "InceptionV3/Conv2d_1a_3x3/BatchNorm/moving_mean:0", "InceptionV3/Conv2d_1a_3x3/BatchNorm/moving_variance:0"}
    assert "InceptionV3/Mixed_7a/Branch_0/Conv2d_1a_3x3/weights:0" in _names(groups, "Mixed_7a")
    assert "InceptionV3/Mixed_7a/Branch_1/Conv2d_1a_3x3/weights:0" in _names(groups, "Mixed_7a")
    grouped = {i for _, indices in groups for i in indices}
    assert {SLIM[i] for i in set(range(len(SLIM))) - grouped} == {n for n in SLIM if "/AuxLogits/" in n}
    # Execution order (slim's creation order), whatever order the config lists them in.
    assert [block for block, _ in groups] == [b for b in SLIM_CONVS if b != "AuxLogits"]


def test_block_list_order_does_not_decide_membership():
    """The first listed block used to win: listing Mixed_7a first must give the same blocks."""
    forward = dict(blocks.group_by_names(SLIM, PAPER_BLOCKS))
    backward = dict(blocks.group_by_names(SLIM, PAPER_BLOCKS[::-1]))
    assert forward == backward


def test_logits_never_catches_auxlogits():
    groups = blocks.group_by_names(SLIM, ["Logits", "Mixed_7c", "Conv2d_1a_3x3"])
    assert _names(groups, "Logits") == {"InceptionV3/Logits/Conv2d_1c_1x1/weights:0",
                                        "InceptionV3/Logits/Conv2d_1c_1x1/biases:0"}
    assert [block for block, _ in groups] == ["Conv2d_1a_3x3", "Mixed_7c", "Logits"]


def test_auxlogits_can_be_a_block_of_its_own():
    groups = blocks.group_by_names(SLIM, ["Logits", "AuxLogits"])
    assert _names(groups, "AuxLogits") == {n for n in SLIM if n.startswith("InceptionV3/AuxLogits/")}


@pytest.mark.parametrize("name, candidates", [
    ("Conv2d_1a_1x1", ["Mixed_6a/Branch_0/Conv2d_1a_1x1", "Mixed_6a/Branch_1/Conv2d_1a_1x1"]),
    ("Branch_0/Conv2d_1a_3x3", ["Mixed_7a/Branch_0/Conv2d_1a_3x3"]),  # unique: see below
    ("Conv2d_0b_1x7", ["Mixed_6b/Branch_1/Conv2d_0b_1x7", "Mixed_6c/Branch_1/Conv2d_0b_1x7"]),
])
def test_a_name_that_is_no_root_scope_and_names_several_scopes_is_ambiguous(name, candidates):
    if len(candidates) == 1:
        groups = blocks.group_by_names(SLIM, [name])
        assert _names(groups, name) == {n for n in SLIM if f"/{candidates[0]}/" in n}
        return
    with pytest.raises(HarnessError, match=f"block '{name}' of inception_v3 is ambiguous") as error:
        blocks.group_by_names(SLIM, [name], "inception_v3")
    assert all(candidate in str(error.value) for candidate in candidates)
    assert "\n" not in str(error.value)


def test_a_nested_name_may_not_overlap_a_listed_block():
    with pytest.raises(HarnessError, match="blocks 'Mixed_7a' and 'Mixed_7a/Branch_1' of m both match"):
        blocks.group_by_names(SLIM, ["Mixed_7a", "Mixed_7a/Branch_1"], "m")


def test_unmatched_block_name_lists_nearest():
    with pytest.raises(HarnessError, match=r"block 'Mixed_7x' matches no variable.*Mixed_7c"):
        blocks.group_by_names(SLIM, ["Mixed_7x"])


def test_partial_component_does_not_match():
    with pytest.raises(HarnessError, match="'Logit'"):
        blocks.group_by_names(SLIM, ["Logit"])


def test_name_with_the_root_spelled_out():
    groups = blocks.group_by_names(SLIM, ["InceptionV3/Logits", "InceptionV3/Conv2d_1a_3x3"])
    assert _names(groups, "InceptionV3/Logits") == _names(blocks.group_by_names(SLIM, ["Logits"]), "Logits")
    assert len(_names(groups, "InceptionV3/Conv2d_1a_3x3")) == 4


# -- grouping by depth: a shared root scope is not a block ---------------------------------------------
def test_group_by_depth_keeps_first_appearance_order():
    names = ["conv1/kernel", "conv1/bias", "conv2/kernel", "fc1/kernel", "logits/kernel", "logits/bias"]
    assert blocks.group_by_depth(names, 1) == [
        ("conv1", [0, 1]), ("conv2", [2]), ("fc1", [3]), ("logits", [4, 5])]


def test_group_by_depth_one_skips_the_shared_root():
    groups = blocks.group_by_depth(SLIM, 1)
    assert [block for block, _ in groups] == list(SLIM_CONVS)  # 17 blocks + AuxLogits, not "InceptionV3"
    depth2 = [block for block, _ in blocks.group_by_depth(SLIM, 2)]
    assert depth2[:2] == ["Conv2d_1a_3x3", "Conv2d_1a_3x3/BatchNorm"]
    assert "Mixed_7a/Branch_0" in depth2 and not any(block.startswith("InceptionV3") for block in depth2)


@pytest.mark.parametrize("names, expected", [
    # slim-converted TF-Hub models: everything under one scope
    (["MobilenetV2/Conv/weights:0", "MobilenetV2/Conv/BatchNorm/gamma:0",
      "MobilenetV2/expanded_conv/depthwise/depthwise_weights:0", "MobilenetV2/expanded_conv/project/weights:0",
      "MobilenetV2/expanded_conv_1/expand/weights:0", "MobilenetV2/Conv_1/weights:0",
      "MobilenetV2/Logits/Conv2d_1c_1x1/weights:0", "MobilenetV2/Logits/Conv2d_1c_1x1/biases:0"],
     ["Conv", "expanded_conv", "expanded_conv_1", "Conv_1", "Logits"]),
    (["resnet_v2_50/conv1/weights:0", "resnet_v2_50/block1/unit_1/bottleneck_v2/conv1/weights:0",
      "resnet_v2_50/block2/unit_1/bottleneck_v2/conv1/weights:0", "resnet_v2_50/postnorm/gamma:0",
      "resnet_v2_50/logits/weights:0", "resnet_v2_50/logits/biases:0"],
     ["conv1", "block1", "block2", "postnorm", "logits"]),
    # a TF1 hub module's global_step sits outside the root (and is state, not a block: see roles)
    (["InceptionV3/Conv2d_1a_3x3/weights:0", "InceptionV3/Logits/Conv2d_1c_1x1/weights:0", "global_step:0"],
     ["Conv2d_1a_3x3", "Logits", "global_step"]),
    # a root two components deep
    (["model/backbone/a/w", "model/backbone/b/w", "model/backbone/c/w"], ["a", "b", "c"]),
    # one layer: its scope is not a root (something must remain to group by)
    (["dense/kernel", "dense/bias"], ["dense"]),
    (["kernel", "bias"], ["kernel", "bias"]),
])
def test_shared_root_is_not_a_block(names, expected):
    assert [block for block, _ in blocks.group_by_depth(names, 1)] == expected


@pytest.mark.parametrize("name, shape, floating, expected", [
    ("conv1/kernel", (3, 3, 1, 4), True, "kernel"),
    ("InceptionV3/Conv2d_1a_3x3/weights:0", (3, 3, 3, 32), True, "kernel"),
    ("fc1/bias", (12,), True, "bias"),
    ("InceptionV3/Conv2d_1a_3x3/BatchNorm/beta:0", (32,), True, "bias"),
    ("bn1/gamma", (4,), True, "gamma"),
    ("bn1/moving_mean", (4,), True, "moving_stat"),
    ("InceptionV3/Conv2d_1a_3x3/BatchNorm/moving_variance:0", (32,), True, "moving_stat"),
    ("seed_generator/seed_generator_state", (2,), False, "other"),
    ("dropout/seed_generator_state", (2,), True, "other"),
    ("global_step", (), True, "other"),
])
def test_variable_role_by_name_shape_and_dtype(name, shape, floating, expected):
    assert blocks.variable_role(name, shape, floating) == expected
