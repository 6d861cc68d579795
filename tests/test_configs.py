"""Every config composes, and configs extend instead of copy (conf/, experiments/)."""
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from harness import reproduce
from harness.config import CONFIG_DIR, PARTIAL_PREFIX, _composed, group_defaults, group_options
from harness.errors import HarnessError

GROUPS = ("model", "data", "method", "schedule", "metrics")
PRESET_META = "experiment"  # the block of a preset that describes it (title, optional, how_to_provide)


def composed(*overrides):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def own(path: Path) -> dict:
    """A config file's own content: what it sets itself, without its defaults list."""
    content = yaml.safe_load(path.read_text()) or {}
    content.pop("defaults", None)
    return content


def leaves(node, prefix=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip("."), node


CHOICES = [(g, name) for g in GROUPS for name in group_options(g)]


@pytest.mark.parametrize("group, name", CHOICES, ids=[f"{g}={n}" for g, n in CHOICES])
def test_every_choice_composes_as_group_defaults_reads_it(group, name):
    """`harness group=name` composes, and group_defaults (method lists, the donor model) reads the
    same node, key order included: the files a choice extends are merged the way Hydra merges them."""
    node = OmegaConf.to_container(composed(f"{group}={name}")[group], resolve=True)
    assert node == group_defaults(group, name)
    assert list(leaves(node)) == list(leaves(group_defaults(group, name)))


def test_building_blocks_are_no_choice():
    partials = sorted(p.relative_to(CONFIG_DIR).as_posix() for p in CONFIG_DIR.glob(f"*/{PARTIAL_PREFIX}*.yaml"))
    assert partials, "no base or shared piece found"
    for partial in partials:
        group, name = partial.removesuffix(".yaml").split("/")
        assert name not in group_options(group)
        with pytest.raises(HarnessError, match="unknown"):
            group_defaults(group, name)


@pytest.mark.parametrize("group", [*GROUPS, "experiment"])
def test_no_file_repeats_what_it_extends(group):
    """A file that extends another sets only what differs: a setting equal to the inherited one is a copy."""
    for path in sorted((CONFIG_DIR / group).glob("*.yaml")):
        parents = [d for d in (yaml.safe_load(path.read_text()) or {}).get("defaults") or []
                   if isinstance(d, str) and d != "_self_"]
        for parent in parents:
            inherited = dict(leaves(OmegaConf.to_container(_composed(group, parent, ()))))
            copies = [k for k, v in leaves(own(path)) if k in inherited and inherited[k] == v]
            assert not copies, f"{path.name} repeats {copies} from {parent}"


def test_schedules_that_differ_only_in_name_extend_one_base():
    base = group_defaults("schedule", "cascading")
    for name in ("cascading", "bottom_up", "independent"):
        assert own(CONFIG_DIR / "schedule" / f"{name}.yaml") == {"name": name}
        assert group_defaults("schedule", name) == base | {"name": name}


@pytest.mark.parametrize("model", ["mnist_cnn", "mnist_mlp"])
def test_random_label_models_extend_their_true_label_model(model):
    assert own(CONFIG_DIR / "model" / f"{model}_randlabels.yaml") == {
        "name": f"{model}_randlabels", "source": f"builtin:{model}_randlabels"}
    assert group_defaults("model", f"{model}_randlabels") == group_defaults("model", model) | {
        "name": f"{model}_randlabels", "source": f"builtin:{model}_randlabels"}


def test_a_method_list_is_written_once():
    """The paper's MNIST method list lives in one shared file; no two experiment configs spell out
    the same list themselves."""
    lists = {}
    for path in sorted((CONFIG_DIR / "experiment").glob("*.yaml")):
        methods = own(path).get("methods")
        if methods:
            key = yaml.safe_dump(methods)
            assert key not in lists, f"{path.name} repeats the method list of {lists.get(key)}"
            lists[key] = path.name
    nine = composed("experiment=cascading_cnn").methods
    for preset in ("independent_cnn", "data_randomization_cnn"):
        assert composed(f"experiment={preset}").methods == nine


PRESETS = group_options("experiment")


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_into_a_valid_plan(preset, tmp_path):
    from harness.runner import Plan

    cfg = composed(f"experiment={preset}", f"results_dir={tmp_path}")
    assert cfg.experiment_name == preset
    assert cfg[PRESET_META].title, f"preset {preset} has no title"
    plan = Plan.from_config(cfg)
    assert plan.methods and plan.schedule == cfg.schedule.name


DEFINITIONS = reproduce.definitions()
ONLY_EXPERIMENTS_HOLD = {"runs", "kind", "pairs", "title", "default",  # default: false -> only when named
                         "segmentation_figures"}  # harness.reproduce: explained.npz for the report


@pytest.mark.parametrize("name", sorted(DEFINITIONS))
def test_every_experiment_composes(name, tmp_path):
    """Each run of each experiments/ file composes (full and --quick) into a plan the runner accepts,
    without the preset's description in it; the title comes from the preset unless the file must
    give one (several presets in one experiment, or no preset at all)."""
    from harness.runner import Plan

    definition = DEFINITIONS[name]
    assert set(definition) <= ONLY_EXPERIMENTS_HOLD, f"{name}: {set(definition) - ONLY_EXPERIMENTS_HOLD}"
    runs = definition.get("runs") or []
    assert runs or definition.get("kind") == "calibration"
    assert ("title" in definition) == (len(runs) != 1), f"{name}: title belongs in the preset"
    assert reproduce.about(definition)["title"]
    for overrides in runs:
        for quick in (False, True):
            cfg, preset = reproduce.compose_run(list(overrides), tmp_path, quick)
            assert PRESET_META not in cfg and preset.get("title")
            Plan.from_config(cfg)


def test_the_inception_experiment_is_optional_and_says_how_to_provide_it():
    described = reproduce.about(DEFINITIONS["inception_cascading"])
    assert described["optional"] is True and "TFHUB_CACHE_DIR" in described["how_to_provide"]
    assert not reproduce.about(DEFINITIONS["cascading_cnn"]).get("optional")


def test_keras_applications_models_declare_what_a_run_needs():
    expected = {"vgg16": ("VGG16", [224, 224], [0.0, 255.0], "block5_conv3"),
                "resnet50": ("ResNet50", [224, 224], [0.0, 255.0], "conv5_block3_out"),
                "inception_v3": ("InceptionV3", [299, 299], [-1.0, 1.0], "mixed10")}
    for name, (builder, size, value_range, endpoint) in expected.items():
        cfg = group_defaults("model", name)
        assert cfg["source"] == f"keras_applications:{builder}" and cfg["weights"] is None
        assert cfg["input"] == {"size": size, "channels": 3, "value_range": value_range}
        assert cfg["gradcam_endpoint"] == endpoint
    names = [group_defaults("model", n)["name"] for n in group_options("model")]
    named = [n for n in names if n]
    assert len(named) == len(set(named)), f"two model configs give the same model name: {names}"


@pytest.mark.slow  # about 45 s on 2 cores: three ImageNet-size models built with random weights
@pytest.mark.parametrize("name, blocks, ends", [
    ("vgg16", 16, ("block1_conv1", "predictions")),
    ("resnet50", 107, ("conv1_conv", "predictions")),
    ("inception_v3", 189, ("conv2d", "predictions")),
])
def test_keras_applications_models_load_with_random_weights(name, blocks, ends):
    import keras

    from harness.models import load_model

    # Keras numbers unnamed layers per process (conv2d, conv2d_1, ...): after other tests built
    # models, InceptionV3's first block would be conv2d_94. Start the numbering afresh.
    keras.backend.clear_session()
    cfg = group_defaults("model", name)
    model = load_model(cfg, log=lambda line: None)
    assert model.identity.endswith("#random") and model.num_classes == 1000
    assert model.input_spec.size == tuple(cfg["input"]["size"]) and model.input_spec.channels == 3
    assert (model.blocks[0].name, model.blocks[-1].name) == ends and len(model.blocks) == blocks
    features = model.keras_model.get_layer(cfg["gradcam_endpoint"]).output
    assert len(features.shape) == 4 and features.shape[1] > 1  # a spatial feature map for Grad-CAM
