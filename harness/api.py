"""The harness from Python (docs/api.md): `sanity_check` a model object or source, get a `Result`.

One code path: the config the `harness` command composes, the same check and `harness.runner.run`.
"""
from __future__ import annotations

import html
import shutil
import sys
import tempfile
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from harness import verdicts
from harness.checks import check_config
from harness.config import composed, group_options
from harness.data import load_images, register_images
from harness.errors import HarnessError
from harness.results import (MAPS, RECORD, SCORES, SUMMARY, VERDICTS, RunRecord, maps_key, read_table,
                             split_maps_key)


def sanity_check(model, images, *, methods: Iterable[Any] | str = ("gradient",), schedule: str = "cascading",
                 metrics: str = "paper", labels=None, target: str = "predicted", blocks=None, seed: int = 0,
                 results_dir=None, value_range=None, log=print, **overrides) -> "Result":
    """Run a sanity check as `harness model=... method=...` would and return its `Result`.

    model: a model object or source (MODEL_KINDS); images: an array [N, H, W(, C)] in `value_range`
    (default: the model config's), a data config name or a folder / glob of image files; methods: names
    or {"name": ..., **settings}; blocks: a model.blocks mapping; overrides: any other config key
    (`data__count=2` for data.count).
    With results_dir=None the run goes to a temporary folder kept until the Result is closed or saved.
    """
    from harness import runner

    with _as_source(model, overrides) as (model, overrides):
        cfg = compose_config(model, images, methods=methods, schedule=schedule, metrics=metrics, labels=labels,
                             target=target, blocks=blocks, seed=seed, results_dir=results_dir,
                             value_range=value_range, overrides=overrides)
        check_config(cfg)  # before a model is loaded or a folder made (as the CLI)
        temporary = results_dir is None
        if temporary:
            cfg.results_dir = tempfile.mkdtemp(prefix="harness-")
        try:
            folder = runner.run(cfg, log=log)
        except BaseException:
            if temporary:  # a refused call leaves nothing behind
                shutil.rmtree(cfg.results_dir, ignore_errors=True)
            raise
    return Result(folder, temporary=Path(cfg.results_dir) if temporary else None)


# What a model argument may be, for the one line that refuses anything else.
MODEL_KINDS = ("a Keras 3 or tf-keras model, a tf.Module or loaded SavedModel (tf.saved_model.load) with a "
               "serving_default signature or a __call__ traced for one input, or a source string (a model "
               "config name, builtin:NAME, a .keras/.h5 file, a SavedModel folder, a TF-Hub handle)")


@contextmanager
def _as_source(model, overrides: Mapping[str, Any]):
    """(model, overrides) for `compose_config`: a source string or a Keras 3 model as given; anything
    else written to a temporary SavedModel folder (harness.models.export) that the run loads as the
    CLI loads any, named after the object, removed after the call."""
    keras = sys.modules.get("keras")  # a Keras model object means Keras is imported
    if isinstance(model, (str, Path)) or (keras is not None and isinstance(model, getattr(keras, "Model", ()))):
        yield model, overrides
        return
    tf = sys.modules.get("tensorflow")
    if tf is None or not (isinstance(model, tf.Module) or hasattr(model, "signatures")):
        raise HarnessError(f"model of type {type(model).__module__}.{type(model).__qualname__} is not one the "
                           f"harness takes; give {MODEL_KINDS}")
    from harness.models.export import export_hub_style

    folder = Path(tempfile.mkdtemp(prefix="harness-model-"))
    try:
        keras_like = getattr(model, "inputs", None) and hasattr(model, "get_config")  # a built tf-keras model
        path = export_hub_style(model if keras_like else _Forward(model), folder / "model")
        name = getattr(model, "name", None)  # a tf-keras model's or tf.Module's; a loaded SavedModel has none
        name = {"model.name": name if isinstance(name, str) and name else "saved_model"}
        yield str(path), {**name, **{k.replace("__", "."): v for k, v in (overrides or {}).items()}}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class _Forward:
    """What export_hub_style reads of a Keras model (inputs, variables, a call) for a tf.Module or a
    loaded SavedModel: its `__call__` traced for one image batch, else its serving_default signature."""

    def __init__(self, module):
        call = getattr(module, "__call__", None)
        concrete = None
        try:
            concrete = call.get_concrete_function()  # a tf.function with an input signature, or one trace
            self._call, spec = call, concrete.structured_input_signature[0][0]
        except (AttributeError, TypeError, ValueError, IndexError):
            signature = (getattr(module, "signatures", None) or {}).get("serving_default")
            if signature is None:
                raise HarnessError(f"model of type {type(module).__qualname__} has neither a serving_default "
                                   f"signature nor a __call__ traced for one input; give {MODEL_KINDS}") from None
            inputs, outputs = signature.structured_input_signature[1], list(signature.structured_outputs)
            if len(inputs) != 1 or len(outputs) != 1:
                raise HarnessError(f"the model's serving_default signature takes {sorted(inputs)} and gives "
                                   f"{outputs}; the harness needs one image input and one logit output")
            (key, spec), = inputs.items()
            self._call, concrete = (lambda x: signature(**{key: x})[outputs[0]]), signature
        if spec.shape.rank != 4:
            raise HarnessError(f"the model takes inputs of shape {spec.shape}; the harness needs [batch, H, W, C]")
        self.inputs = [spec]
        self.variables = list(getattr(module, "variables", None) or concrete.variables)
        self.trainable_variables = [v for v in self.variables if v.trainable]

    def __call__(self, x, training=False):
        return self._call(x)


def compose_config(model, images, *, methods=("gradient",), schedule="cascading", metrics="paper", labels=None,
                   target="predicted", blocks=None, seed=0, results_dir=None, value_range=None,
                   overrides: Mapping[str, Any] | None = None):
    """The DictConfig the CLI composes for these arguments."""
    from omegaconf import OmegaConf, open_dict

    from harness.cli import check_group_choices

    labels = None if labels is None else [int(v) for v in np.asarray(labels).ravel()]
    pixels = None if isinstance(images, (str, Path)) else _as_pixels(images, labels)
    methods = [methods] if isinstance(methods, (str, Mapping)) else list(methods)
    if not methods:
        raise HarnessError("methods is empty; give at least one method name")
    names = [m if isinstance(m, str) else None for m in methods]
    choices = [*_model_choice(model), *_data_choice(images), f"schedule={schedule}", f"metrics={metrics}"]
    if len(methods) == 1 and names[0]:  # one method by name: the CLI's `method=NAME`, the same run key
        choices.append(f"method={names[0]}")
    check_group_choices(choices)  # an unknown choice: the CLI's one line
    given = {"results_dir": str(results_dir) if results_dir else None,
             "model.input.value_range": None if value_range is None else [float(v) for v in value_range],
             "data.labels": labels, "model.blocks": None if blocks is None else dict(blocks),
             "methods": [m if isinstance(m, str) else dict(m) for m in methods] if len(methods) > 1 or not names[0]
             else None}
    settings = {"target": target, "seed": seed, **{k: v for k, v in given.items() if v is not None}}
    settings |= {key.replace("__", "."): value for key, value in (overrides or {}).items()}
    cfg = composed([c for c in choices if not c.startswith("+")])
    with open_dict(cfg):
        for key, value in settings.items():
            if OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT and not key.startswith(("data.", "methods")):
                raise HarnessError(f"unknown setting {key!r}; see `harness --help` for the config's keys")
            OmegaConf.update(cfg, key, value, merge=False, force_add=True)
        for choice in choices:
            if choice.startswith("+"):
                key, _, value = choice[1:].partition("=")
                OmegaConf.update(cfg, key, value, force_add=True)
        if pixels is not None:  # mapped from the model's input range to [0, 1], as image files are
            low, high = cfg.model.input.value_range
            cfg.data.array = register_images((pixels - low) / (high - low))
    return cfg


_ABSENT = object()


def _model_choice(model) -> list[str]:
    if not isinstance(model, (str, Path)):
        from harness.models.sources import register_model

        return ["model=keras_file", f"+model.source={register_model(model)}"]
    source = str(model)
    if source in group_options("model"):
        return [f"model={source}"]
    base = source.removeprefix("builtin:").split("@")[0]
    if source.startswith("builtin:") and base in group_options("model"):  # the CLI's model=NAME model.source=...
        return [f"model={base}", f"+model.source={source}"]
    return ["model=keras_file", f"+model.source={source}"]


def _data_choice(images) -> list[str]:
    if not isinstance(images, (str, Path)):
        return ["data=folder", "+data.source=array", "+data.path=array"]
    if str(images) in group_options("data"):
        return [f"data={images}"]
    return ["data=folder", f"+data.path={images}"]


def _as_pixels(images, labels) -> np.ndarray:
    """[N, H, W, C] ([N, H, W]: one channel) as float32, checked before anything runs."""
    pixels = np.asarray(images, dtype=np.float32)
    if pixels.ndim == 3:
        pixels = pixels[..., None]
    if pixels.ndim != 4 or not pixels.shape[0]:
        raise HarnessError(f"images of shape {list(np.shape(images))}: give an array [N, H, W, C] with N >= 1")
    if not np.all(np.isfinite(pixels)):
        raise HarnessError("images hold NaN or inf pixels")
    if labels is not None and len(labels) != len(pixels):
        raise HarnessError(f"data.labels has {len(labels)} entries for {len(pixels)} images")
    return pixels


def explain(model, images, method: str, *, target: str = "predicted", labels=None, seed: int = 0,
            value_range=None, **settings) -> np.ndarray:
    """One method's maps of the trained model, as the runner computes a run's original maps."""
    from harness.models import load_model
    from harness.runner import Plan, Runner

    execution = {"controls": None, "map_cache": False, "progress": False}
    with _as_source(model, execution) as (model, overrides):
        cfg = compose_config(model, images, methods=[{"name": method, **settings}], labels=labels, target=target,
                             seed=seed, value_range=value_range, overrides=overrides)
        plan = Plan.from_config(cfg)  # checks every value first
        loaded = load_model(plan.config["model"], log=lambda _: None)
    image_set = load_images(plan.config["data"], loaded.input_spec.size, loaded.input_spec.channels)
    if plan.target == "label" and image_set.labels is None:
        raise HarnessError("target 'label' needs labels")
    run = Runner(plan, loaded, image_set, Path(tempfile.gettempdir()) / "unused", log=lambda _: None)
    step0 = run.steps[0]
    run.trained_argmax = run._argmax(loaded.predict(run.x), step0)
    return run.maps(plan.methods[0], step0, run.targets(step0))


class Result:
    """A run folder's tables, maps and report (harness.results' format, docs/results-format.md)."""

    def __init__(self, folder, temporary: Path | None = None):
        self.folder = Path(folder)
        if not (self.folder / SUMMARY).is_file() or not (self.folder / RECORD).is_file():
            raise HarnessError(f"{str(self.folder)!r} is not a finished run folder (no summary.csv and run.json)")
        # The temporary folder goes when the Result does (or at exit), unless saved first.
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(temporary), True) if temporary else None

    @property
    def scores(self):
        return read_table(self.folder / SCORES)

    @property
    def summary(self):
        return read_table(self.folder / SUMMARY)

    @property
    def verdicts(self):
        path = self.folder / VERDICTS
        if not path.is_file():  # a folder from before verdicts.csv: computed as `harness verdicts` does
            return verdicts.folder_verdicts(self.folder)
        table = read_table(path)
        text = [c for c in ("experiment", "test", "direction", "rule", "verdict", "reason", "calibration")
                if c in table.columns]
        table[text] = table[text].fillna("").astype(str)  # empty cells are "", as verdict_table makes them
        return table

    @property
    def record(self):
        return RunRecord.read(self.folder)

    def maps(self, method: str, step: int) -> np.ndarray:
        """The kept maps (the first maps_to_keep images) of a method label at a schedule step."""
        with np.load(self.folder / MAPS) as archive:
            key = maps_key(method, int(step))
            if key not in archive.files:
                valid = sorted({f"{k[0]}@{k[1]}" for k in map(split_maps_key, archive.files) if k})
                raise HarnessError(f"no maps for method {method!r} at step {step}; valid (method@step): "
                                   f"{', '.join(valid)}")
            return archive[key]

    def plot_curves(self):
        """The HTML report's similarity curves of a cascading or bottom-up run: a matplotlib Figure."""
        from harness.report.figures import curves_figure
        from harness.report.gallery import CURVE_SCHEDULES
        from harness.report.labels import model_label

        run, schedule = self._report_run()
        if schedule not in CURVE_SCHEDULES:
            raise HarnessError(f"plot_curves draws the schedules {', '.join(CURVE_SCHEDULES)}; this run's is "
                               f"{schedule!r} (its scores: result.scores; its maps: result.plot_maps())")
        return curves_figure(run.summary, schedule, f"{model_label(run.model)}: {schedule} randomization")

    def plot_maps(self, image: int = 0, kind: str = "absolute"):
        """The HTML report's map grid of one kept image, `kind` "absolute" or "signed": a matplotlib Figure."""
        from harness.report import grids
        from harness.report.labels import model_label

        if kind not in grids.KINDS:
            raise HarnessError(f"unknown map kind {kind!r}; valid: {', '.join(grids.KINDS)}")
        run, schedule = self._report_run()
        maps = grids.load_maps([run], max_images=max(int(image), 0) + 1)
        kept = len(maps.image_ids) if maps else 0
        if not 0 <= int(image) < kept:
            raise HarnessError(f"image {image} has no kept maps; valid: 0 to {kept - 1} (maps_to_keep, at most "
                               f"one image past {grids.MAX_STEPS_FOR_SEVERAL_IMAGES} steps)" if kept else
                               f"no maps kept in {str(self.folder)!r} (maps_to_keep=0)")
        title = f"{model_label(run.model)}, {schedule}: {kind} maps, image {maps.image_ids[int(image)]}"
        return grids.grid_figure(maps, int(image), kind, title)

    def _report_run(self):
        """The run folder as the report reads it, and its schedule (not the controls')."""
        from harness.report.labels import CONTROL_SCHEDULE
        from harness.report.load import Run

        run = Run(self.folder)
        schedules = [s for s in dict.fromkeys(run.summary["schedule"]) if s != CONTROL_SCHEDULE]
        return run, (schedules[0] if schedules else CONTROL_SCHEDULE)

    def report(self, path=None) -> Path:
        """The HTML report (harness-report's); with `path`, the report folder is copied there."""
        from harness.report import build_report

        page = Path(build_report(self.folder))
        if path is None:
            return page
        shutil.copytree(page.parent, path, dirs_exist_ok=True)
        return Path(path) / page.name

    def save(self, path) -> "Result":
        """Copy the run folder to `path` (which must not exist); the Result reads from there after."""
        path = Path(path)
        if path.exists():
            raise HarnessError(f"{str(path)!r} exists; save to a new folder")
        shutil.copytree(self.folder, path, ignore=shutil.ignore_patterns(".lock"))
        self.close()
        self.folder = path
        return self

    def close(self) -> None:
        """Remove the temporary folder of an unsaved run (nothing for a folder given or saved)."""
        if self._cleanup is not None:
            self._cleanup()
            self._cleanup = None

    def __enter__(self) -> "Result":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Result({str(self.folder)!r})\n{verdicts.matrix(self.verdicts)}"

    def _repr_html_(self) -> str:
        return (f"<p><code>{html.escape(str(self.folder))}</code></p>"
                f"<pre>{html.escape(verdicts.matrix(self.verdicts))}</pre>")


def load(path) -> Result:
    """A run folder written by the CLI or by `sanity_check`, as a Result."""
    return Result(path)
