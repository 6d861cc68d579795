"""Every config value is checked before anything runs (harness.checks.check_config): a value of the
wrong type or out of range is one `harness: error:` line naming its key and what is valid, exit 2,
nothing written; the rules live beside the pieces that read the values."""
import dataclasses
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from harness import cli, methods
from harness.checks import check_config
from harness.config import CONFIG_DIR, group_options
from harness.errors import HarnessError
from harness.metrics import settings as metric_settings
from conftest import CHEAP_CNN

HARNESS = [sys.executable, "-c", "from harness.cli import main; main()"]


def composed(*overrides):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


# (overrides, the message's start: the key, then what is valid). Those marked `was_traceback` ended
# in a Python traceback (int(), NumPy, a KeyError) before the check existed.
BAD = [
    (["seed=-1"], "seed must be an integer >= 0, got -1"),
    (["seed=abc"], "seed must be an integer >= 0, got 'abc'"),
    (["seed=1.5"], "seed must be an integer >= 0, got 1.5"),
    (["maps_to_keep=-1"], "maps_to_keep must be an integer >= 0"),
    (["progress=maybe"], "progress must be true or false, got 'maybe'"),
    (["threads=0"], "threads must be 'auto' or an integer >= 1, got 0"),
    (["controls=[nope]"], "controls must be null or a list of values, each one of "),
    (["schedule.std=-0.1"], "schedule.std must be a number > 0, got -0.1"),
    (["schedule.std=abc"], "schedule.std must be a number > 0, got 'abc'"),
    (["schedule.low=1", "schedule.high=0"], "schedule.low must be below schedule.high, got low 1, high 0"),
    (["schedule.low=abc"], "schedule.low must be a finite number, got 'abc'"),
    (["schedule.bn_stats=5"], "unknown schedule.bn_stats 5; valid: keep, reset"),
    (["schedule=smprt", "schedule.samples=abc"], "schedule.samples must be an integer >= 1, got 'abc'"),
    (["method=smoothgrad", "method.samples=0"], "method.samples must be an integer >= 1, got 0"),
    (["method=smoothgrad", "method.samples=abc"], "method.samples must be an integer >= 1, got 'abc'"),
    (["method=smoothgrad", "method.samples=1.5"], "method.samples must be an integer >= 1, got 1.5"),
    (["method=smoothgrad", "method.spread=-1"], "method.spread must be a number >= 0, got -1"),
    (["method=smoothgrad", "method.spread=nan"], "method.spread must be a number >= 0, got nan"),
    (["method=smoothgrad", "method.spread=inf"], "method.spread must be a number >= 0, got inf"),  # was NaN maps
    (["method=smoothgrad", "method.squared=maybe"], "method.squared must be true or false, got 'maybe'"),
    (["method=integrated_gradients", "method.steps=0"], "method.steps must be an integer >= 1, got 0"),
    (["method=integrated_gradients", "method.baseline=nope"], "unknown method.baseline 'nope'; valid: zeros, black"),
    (["method.max_batch=abc"], "method.max_batch must be 'auto' or an integer >= 1, got 'abc'"),
    (["method=occlusion", "method.stride=abc"], "method.stride must be an integer >= 1, got 'abc'"),
    (["method=occlusion", "method.size=0"], "method.size must be an integer >= 1, got 0"),
    (["method=blur_ig", "method.max_sigma=-1"], "method.max_sigma must be a number > 0, got -1"),
    (["method=guided_ig", "method.fraction=2"], "method.fraction must be a number > 0 and <= 1, got 2"),
    (["method=guided_ig", "method.max_dist=abc"], "method.max_dist must be a number >= 0, got 'abc'"),
    (["method=xrai", "method.steps=0"], "method.steps must be an integer >= 1, got 0"),
    (["method=random_attribution", "method.distribution=cauchy"],
     "unknown method.distribution 'cauchy'; valid: normal, uniform"),
    (["methods=[gradient,{name:smoothgrad,samples:0}]"], "methods[1].samples must be an integer >= 1, got 0"),
    (["methods=[{samples:3}]"], "methods[0] must be a method name or a mapping with `name`"),
    (["methods=[{name:smoothgrad,sampels:3}]"], "unknown setting methods[0].sampels of method smoothgrad"),
    (["data.count=abc"], "data.count must be a whole number of images >= 1 (or null for all of them), got 'abc'"),
    (["data.count=1.5"], "data.count must be a whole number of images >= 1"),
    (["data=folder", "data.path=images", "data.sample_seed=-1"], "data.sample_seed must be null (the first data.count images in sorted order) or"),
    (["metrics.ssim_window=4"], "metrics.ssim_window must be an odd integer >= 3, got 4"),
    (["metrics.ssim_window=abc"], "metrics.ssim_window must be an odd integer >= 3, got 'abc'"),
    (["metrics.hog_orientations=abc"], "metrics.hog_orientations must be an integer >= 1, got 'abc'"),
    (["metrics.ssim_sigma=abc"], "metrics.ssim_sigma must be a number > 0, got 'abc'"),
    (["metrics.hog_cell_px=abc"], "metrics.hog_cell_px must be null or an integer >= 1, got 'abc'"),
    (["metrics.ssim_gaussian=maybe"], "metrics.ssim_gaussian must be true or false, got 'maybe'"),
    (["metrics.metrics=5"], "metrics.metrics must be a metric name or a list of metric names, got 5"),
    (["data=folder"], "data.path must be a folder of images or a glob, got '???'"),
    (["metrics=repairs", "metrics.emprt_bins=0"], "metrics.emprt_bins must be an integer >= 1 or one of auto, fd"),
    (["model.input.size=[0,0]"], "model.input.size must be null or a list of 2 values, each an integer >= 1"),
    (["model.input.value_range=[1,0]"], "model.input.value_range must be [low, high] with low < high"),
    (["model.input.channels=abc"], "model.input.channels must be null or an integer >= 1, got 'abc'"),
    (["model.blocks.depth=0"], "model.blocks.depth must be an integer >= 1, got 0"),
]
IDS = [" ".join(overrides) for overrides, _ in BAD]


@pytest.mark.parametrize("overrides, message", BAD, ids=IDS)
def test_a_bad_value_is_one_error_naming_its_key(overrides, message):
    with pytest.raises(HarnessError) as info:
        check_config(composed(*overrides))
    assert str(info.value).startswith(message), str(info.value)


# Group choices and presets: every shipped config passes (a rule that refused a default would stop runs).
CHOICES = [(g, n) for g in ("model", "data", "method", "schedule", "metrics", "experiment") for n in group_options(g)]


@pytest.mark.parametrize("group, name", CHOICES, ids=[f"{g}={n}" for g, n in CHOICES])
def test_every_shipped_config_passes(group, name):
    check_config(composed(f"{group}={name}", *(["data.path=images"] if name == "folder" else [])))


def test_every_setting_has_a_rule():
    """A new method / metric setting declares what it may be (methods.setting_rules or register's
    `rules`; metrics.settings.RULES): otherwise nothing would check it before a run."""
    for name in methods.names():
        assert set(methods.defaults(name)) <= set(methods.rules(name)), name
    fields = {f.name for f in dataclasses.fields(metric_settings.MetricSettings)}
    assert fields == set(metric_settings.RULES)


def test_the_command_checks_before_loading_a_model(monkeypatch):
    """`harness` (cli.command, each run and sweep job) refuses a bad value before it loads a model."""
    from harness import models, runner

    def must_not_run(*_, **__):
        raise AssertionError("reached past the check")

    monkeypatch.setattr(runner, "run", must_not_run)
    monkeypatch.setattr(models, "load_model", must_not_run)
    with pytest.raises(HarnessError, match="method.samples must be an integer >= 1, got 'abc'"):
        cli.command(composed("method=smoothgrad", "method.samples=abc"))


def _cli(tmp_path, *overrides):
    return subprocess.run([*HARNESS, f"model.source={CHEAP_CNN}", "data.count=1", "progress=false",
                           f"results_dir={tmp_path / 'results'}", *overrides],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)


def _one_error(done, message):
    errors = [line for line in done.stderr.splitlines() if line.startswith("harness:")]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert len(errors) == 1 and errors[0].startswith(f"harness: error: {message}"), done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("overrides, message", [
    (["seed=-1"], "seed must be an integer >= 0"),  # was NumPy's ValueError (negative seed), a traceback
    (["method=occlusion", "method.stride=abc"], "method.stride must be an integer >= 1"),  # int('abc')
    (["metrics.ssim_window=abc"], "metrics.ssim_window must be an odd integer >= 3"),  # int('abc')
    (["methods=[{samples:3}]"], "methods[0] must be a method name or a mapping"),  # KeyError: 'name'
    (["schedule.scheme=uniform", "schedule.low=1", "schedule.high=0"], "schedule.low must be below"),
    (["model.input.size=[0,0]"], "model.input.size must be null or a list of 2 values"),
])
def test_cli_refuses_a_bad_value_with_one_line(tmp_path, overrides, message):
    _one_error(_cli(tmp_path, *overrides), message)
    assert not list(tmp_path.iterdir())  # no results folder, no Hydra log


def test_the_console_script_says_one_line(tmp_path):
    """A bad value through the real command line: one line, exit 2, nothing written (it was int('abc')'s
    traceback, after the model was loaded and the run folder made)."""
    _one_error(_cli(tmp_path, "method=smoothgrad", "method.samples=abc"),
               "method.samples must be an integer >= 1, got 'abc'")
    assert not list(tmp_path.iterdir())
