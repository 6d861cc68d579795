"""The `harness` command: a thin Hydra entry point.

    harness model=mnist_cnn method=gradient schedule=cascading     # one run
    harness -m method=gradient,guided_backprop schedule=independent # a sweep
    harness layers model=mnist_cnn                                  # the model's blocks
    harness cache [clear]                                           # the map cache: where, or empty it
    harness --help / harness --cfg job                              # options / resolved config

A user mistake ends with one line on stderr (`harness: error: ...`) and exit status 2.
"""
from __future__ import annotations

import os
import sys

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from omegaconf import DictConfig, OmegaConf

from harness import cache, sweeps, verdicts
from harness.checks import check_config
from harness.config import CONFIG_DIR, composed, group_options
from harness.errors import HarnessError
from harness.tf_logging import import_tensorflow_quietly

GROUPS = ("model", "data", "method", "schedule", "metrics", "experiment")
COMMANDS = ("run", "layers")

# The harness's own --help (Hydra's would list the configs' building blocks as choices).
HELP = """\
harness: sanity checks for saliency maps (Adebayo et al. 2018) on a TensorFlow image model

  harness model=mnist_cnn method=gradient     one run: the maps as the model's blocks are randomized,
                                              scored against the trained model's (results/runs/...)
  harness layers model=vgg16                  a model's blocks: what each randomization step re-initializes
  harness experiment=cascading_cnn            one of the paper's experiments (all of them: make reproduce)

More: harness -m method=gradient,smoothgrad (a sweep: one run per combination; hydra/launcher=joblib runs
jobs in parallel, hydra/launcher=submitit_slurm on a cluster: docs/sweeps.md), harness --cfg job ...
(the resolved config), harness-report <folder> (tables and figures), harness verdicts <folder> [--csv]
(pass / fail / inconclusive per method and test), harness cache [clear] (the shared
cache of original maps), harness --hydra-help (Hydra's options).

== Options: choose one per group (group=option); files under conf/<group>/ ==
{groups}
== Config: override any key (data.count=5, model.input.size=[224,224], "methods=[gradient,smoothgrad]") ==
{config}"""


def help_text(overrides: list[str]) -> str:
    """The help page, with the config the given overrides compose."""
    groups = "".join(f"{g}: {', '.join(group_options(g))}\n" for g in GROUPS)
    return HELP.format(groups=groups, config=OmegaConf.to_yaml(composed(overrides)))


def main() -> None:
    argv = sys.argv[1:]
    if argv and argv[0] in COMMANDS:
        argv = [*argv[1:], f"command={argv[0]}"]
    try:
        check_group_choices(argv)
    except HarnessError as error:
        fail(error)
    if "--help" in argv or "-h" in argv:
        print(help_text([a for a in argv if not a.startswith("-") and "=" in a]), end="")
        return
    if argv[:1] == ["verdicts"]:  # the verdict matrix of a results folder: no Hydra, no TensorFlow
        sys.exit(verdicts.main(argv[1:]))
    if argv[:1] == ["cache"]:  # the map cache's place and size, or `harness cache clear`: no Hydra
        sys.exit(cache.main(argv[1:]))
    sys.argv = [sys.argv[0], *argv]
    # ${pid:} in the sweep folder's name: two sweeps started in the same second never share it. Cached
    # like ${now:}, so the value travels with the config to the launcher's workers.
    OmegaConf.register_new_resolver("pid", os.getpid, replace=True, use_cache=True)
    try:
        _hydra_main()
    finally:
        sweeps.finish_pending()  # a launcher that raised (a killed worker) skipped the sweep's merge


def fail(error: BaseException) -> None:
    print(f"harness: error: {error}", file=sys.stderr)
    sys.exit(2)


def check_group_choices(argv: list[str]) -> None:
    """Catch `method=nonsense` before Hydra does: Hydra's own message spans a dozen lines."""
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, _, value = arg.lstrip("+~").partition("=")
        if key not in (*GROUPS, "hydra/launcher") or value in ("", "null"):
            continue
        valid = launchers() if key == "hydra/launcher" else group_options(key)
        for choice in value.split(","):
            if choice not in valid:
                raise HarnessError(f"unknown {key} {choice!r}; valid: {', '.join(valid)}")


def launchers() -> list[str]:
    """Hydra's launchers installed here: its own `basic` and the plugins' (joblib, submitit_*)."""
    Plugins.instance()  # discovers the plugins, which register their launcher configs
    return sorted(name.removesuffix(".yaml") for name in ConfigStore.instance().list("hydra/launcher"))


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    import_tensorflow_quietly()  # after Hydra: `--help` and bad choices answer without TensorFlow
    if sweeps.in_multirun():  # a failed job is recorded for the sweep's merge; the others go on
        sweeps.run_job(lambda: command(cfg))
        return
    try:
        command(cfg)
    except HarnessError as error:
        fail(error)


def command(cfg: DictConfig):
    """The command of one run or sweep job; returns the run folder it wrote (None for `layers`)."""
    check_config(cfg)  # every value, before a model is loaded or a folder made
    configure_tensorflow(sweeps.tf_threads(cfg.threads), share_gpus=sweeps.jobs_at_once() > 1)
    if cfg.command == "layers":
        print_layers(cfg)
        return None
    from harness import runner

    run_dir = runner.run(cfg)
    print(f"results: {run_dir}")
    return run_dir


def configure_tensorflow(threads: int | None, share_gpus: bool) -> None:
    """Before TensorFlow's first op: its intra-op pool size, and GPU memory growth when several jobs
    share this machine (TensorFlow's default takes nearly all of every GPU in the first process). A
    joblib worker's later jobs keep what its first set: the same sweep sized them the same way."""
    import tensorflow as tf

    try:
        if threads is not None:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        if share_gpus:
            for gpu in tf.config.list_physical_devices("GPU"):
                tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:  # "cannot be modified after initialization" / "... already initialized"
        pass


def print_layers(cfg: DictConfig) -> None:
    from harness.models import load_model

    model = load_model(cfg.model)
    print(f"{model.name} ({model.source_kind}: {model.identity}); input {model.input_spec}; "
          f"{model.num_classes} classes")
    print(f"{len(model.blocks)} blocks, input -> output:")
    in_block = set()
    for i, block in enumerate(model.blocks):
        print(f"  {i:2d} {block.name:<24} {block.parameter_count:>12,d} parameters")
        for v in block.variables:
            in_block.add(v.name)
            print(f"       {v.name:<48} {str(list(v.shape)):<22} {'' if v.trainable else '(non-trainable)'}")
    rest = [v for v in model.variables if v.name not in in_block]
    if rest:
        print(f"  not in any block (never randomized): {', '.join(v.name for v in rest)}")
