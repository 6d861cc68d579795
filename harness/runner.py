"""The loop: model states x methods x images -> score rows, maps, and the run's record.

Work is ordered so each model state is visited once (every method at a step, then the next step)
and the original maps are computed once. Each (step, method) unit is committed to `parts/` as soon
as it is done, so a killed run started again with the same config skips what is finished and ends
with the same `scores.csv` as an uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import time
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import methods as method_registry
from harness.data import ImageSet, load_images
from harness.errors import HarnessError
from harness.randomization import ORIGINAL, SCHEDULES, Randomizer, Reinit, Step, schedule_steps
from harness.results import write_csv, write_json, write_npz
from harness.similarity import MetricSettings, PreparedMap, compare_batch, random_mask
from harness.tables import SCORE_COLUMNS, summarize

TARGETS = ("predicted", "original", "label")
CONTROLS = ("ceiling", "random_model", "random_mask")
CONTROL_STEP = -1  # the `step` of control rows: they sit beside the schedule, not on it
RANDOM_MODEL_DRAWS = (10_001, 10_002)  # draw indices of the random_model control's two models


@dataclass(frozen=True)
class MethodSpec:
    name: str
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "MethodSpec":
        params = {k: v for k, v in _plain(cfg).items() if k != "name"}
        method_registry.get(cfg["name"])  # unknown name -> one clear line
        return cls(str(cfg["name"]), params)


@dataclass
class Plan:
    """Everything a run needs, validated before any model is loaded or any file written."""
    config: dict[str, Any]
    methods: list[MethodSpec]
    schedule: str
    reinit: Reinit
    metrics: MetricSettings
    seed: int
    target: str
    maps_to_keep: int
    results_dir: Path
    controls: tuple[str, ...] = ()
    donor: dict[str, Any] | None = None  # the model scheme `donor` copies its weights from (run.json)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "Plan":
        config = _plain(cfg)
        schedule = config["schedule"]["name"]
        if schedule not in SCHEDULES:
            raise HarnessError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
        if config["target"] not in TARGETS:
            raise HarnessError(f"unknown target {config['target']!r}; valid: {', '.join(TARGETS)}")
        controls = tuple(config.get("controls") or ())
        for control in controls:
            if control not in CONTROLS:
                raise HarnessError(f"unknown control {control!r}; valid: {', '.join(CONTROLS)}")
        method_cfgs = [_method_config(m) for m in config.get("methods") or []] or [config["method"]]
        return cls(
            config=config, methods=[MethodSpec.from_config(m) for m in method_cfgs], schedule=schedule,
            reinit=Reinit.from_config(config["schedule"], seed=int(config["seed"])),
            metrics=MetricSettings.from_config(config["metrics"]), seed=int(config["seed"]),
            target=config["target"], maps_to_keep=int(config.get("maps_to_keep", 8)),
            results_dir=Path(config.get("results_dir", "results")), controls=controls,
        )

    def key(self) -> str:
        """Hash of everything that changes the results (not where they go, nor the progress bar)."""
        relevant = {k: v for k, v in self.config.items() if k not in ("results_dir", "progress", "command")}
        relevant["methods"] = [vars(m) for m in self.methods]  # the `method` group is moot when `methods` is set
        relevant.pop("method", None)
        return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:10]


def run(cfg: Mapping[str, Any], log=print) -> Path:
    """Run one sanity check as configured; returns the run folder."""
    from harness.models import load_model

    plan = Plan.from_config(cfg)
    _check_writable(plan.results_dir)
    model = load_model(plan.config["model"], log=log)
    images = load_images(plan.config["data"], model.input_spec.size, model.input_spec.channels)
    if plan.target == "label" and images.labels is None:
        raise HarnessError(f"target 'label' needs labelled images; data source {plan.config['data']['source']!r} "
                           "has none (use target=predicted or give data.labels)")
    if plan.reinit.scheme == "donor":
        donor = _donor_model(plan.config["schedule"], log)
        plan.reinit = plan.reinit.with_donor(model, donor)
        plan.donor = _model_record(donor)
    names = "+".join(m.name for m in plan.methods)
    run_dir = plan.results_dir / "runs" / f"{model.name}-{names}-{plan.schedule}-{plan.key()}"
    with _exclusive(run_dir):
        Runner(plan, model, images, run_dir, log).execute()
    return run_dir


class Runner:
    def __init__(self, plan: Plan, model, images: ImageSet, run_dir: Path, log):
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()  # same config, same bytes
        self.plan, self.model, self.images, self.run_dir, self.log = plan, model, images, run_dir, log
        self.parts = run_dir / "parts"
        self.x = model.input_spec.to_model_space(images.images)
        self.steps = schedule_steps(plan.schedule, [b.name for b in model.blocks])
        self.prepared: dict[str, list[PreparedMap]] = {}  # original maps, post-processed once per method

    def execute(self) -> None:
        self.parts.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        if all(self._done(s, m) for s in self._all_steps() for m in self.plan.methods):
            self._assemble(time.perf_counter() - start)  # finished before: only the tables are rebuilt
            return
        randomizer = Randomizer(self.model, self.plan.reinit)
        self.original_targets = self._argmax(self.model.predict(self.x), self.steps[0])
        self.original_maps, self.original_seconds = {}, {}
        for method in self.plan.methods:
            began = time.perf_counter()
            self.original_maps[method.name] = self._maps(method, self.steps[0], self.original_targets)
            self.original_seconds[method.name] = time.perf_counter() - began
        with self._progress() as bar:
            for step in self.steps:
                todo = [m for m in self.plan.methods if not self._done(step, m)]
                bar.update(len(self.images) * (len(self.plan.methods) - len(todo)))
                if not todo:
                    continue
                with randomizer.step(step):
                    targets = self._targets(step)
                    for method in todo:
                        self._unit(step, method, targets)
                        bar.update(len(self.images))
            for control in self.plan.controls:
                self._control(control)
                bar.update(len(self.images) * len(self.plan.methods))
        self._assemble(time.perf_counter() - start)

    # -- one unit of work: a method at a step --------------------------------------------------------
    def _unit(self, step: Step, method: MethodSpec, targets: np.ndarray) -> None:
        began = time.perf_counter()
        if step.index == 0:  # computed up front: every later step is compared with these maps
            maps, seconds = self.original_maps[method.name], self.original_seconds[method.name]
        else:
            maps = self._maps(method, step, targets)
            seconds = time.perf_counter() - began
        self._commit(_stem(step, method), self._score(step, method, targets, maps), maps, seconds)

    def _commit(self, stem: str, rows: pd.DataFrame, maps: np.ndarray, seconds: float) -> None:
        path = self.parts / stem
        write_npz(path.with_suffix(".npz"), {"maps": maps[: self.plan.maps_to_keep]})
        write_json(path.with_suffix(".json"), {"seconds": seconds})
        write_csv(path.with_suffix(".csv"), rows)  # written last: its presence marks the unit done

    def _done(self, step: Step, method: MethodSpec) -> bool:
        return (self.parts / f"{_stem(step, method)}.csv").is_file()

    # -- controls: how low is "low", how high can a stochastic method get --------------------------------
    def _control(self, control: str) -> None:
        """ceiling: a second, independent noise draw on the trained model; random_model: two fully
        randomized models (different draws) against each other; random_mask: a map against noise."""
        step = Step(CONTROL_STEP, control, ())
        todo = [m for m in self.plan.methods if not self._done(step, m)]
        if not todo:
            return
        randomized = self._random_model_maps(todo) if control == "random_model" else {}
        for method in todo:
            began = time.perf_counter()
            reference = None  # the original maps
            if control == "random_model":
                reference, maps, seconds = randomized[method.name]
            else:
                if control == "ceiling":
                    maps = self._maps(method, Step(CONTROL_STEP, "ceiling", ()), self.original_targets)
                else:
                    rng = np.random.default_rng([self.plan.seed, _stable(method.name), _stable(control)])
                    maps = np.stack([random_mask(m.shape, rng) for m in self.original_maps[method.name]])
                seconds = time.perf_counter() - began
            rows = self._score(step, method, self.original_targets, maps, reference)
            self._commit(_stem(step, method), rows, maps, seconds)

    def _random_model_maps(self, methods: list[MethodSpec]):
        """Maps of every method on two differently drawn, fully randomized models: each of the two
        model states is visited once. Returns {method: [maps A, maps B, kernel seconds]}."""
        # Fresh draws per step index even when the schedule nests its draws: two different models.
        reinit = self.plan.reinit
        scheme = "auto" if reinit.scheme == "donor" else reinit.scheme  # a donor is one model, not random ones
        randomizer = Randomizer(self.model, dataclasses.replace(reinit, draws="per_step", scheme=scheme, donor=None))
        every_block = tuple(b.name for b in self.model.blocks)
        out = {m.name: [None, None, 0.0] for m in methods}
        for slot, index in enumerate(RANDOM_MODEL_DRAWS):
            step = Step(index, f"random_model_{index}", every_block)
            with randomizer.step(step):
                targets = self._argmax(self.model.predict(self.x), step)
                for method in methods:
                    began = time.perf_counter()
                    out[method.name][slot] = self._maps(method, step, targets)
                    out[method.name][2] += time.perf_counter() - began
        return out

    def _maps(self, method: MethodSpec, step: Step, targets: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng([self.plan.seed, _stable(method.name), _stable(step.block), step.index % 2**32])
        params = dict(method.params) | {"gradcam_endpoint": self.plan.config["model"].get("gradcam_endpoint")}
        maps = method_registry.get(method.name)(self.model, self.x, targets, rng, params)
        return np.asarray(maps, np.float32)

    def _score(self, step: Step, method: MethodSpec, targets: np.ndarray, maps: np.ndarray,
               reference: np.ndarray | None = None) -> pd.DataFrame:
        reference = self._prepared_original(method) if reference is None else reference
        schedule = "control" if step.index == CONTROL_STEP else self.plan.schedule
        rows = []
        scores = compare_batch(reference, maps, self.plan.metrics, images=self.x)
        for i, image_id in enumerate(self.images.ids):
            for score in scores[i]:
                rows.append({
                    "model": self.model.name, "method": method.name, "schedule": schedule,
                    "step": step.index, "block": step.block, "image_id": image_id,
                    "target_class": int(targets[i]), "metric": score.metric, "value": score.value,
                    "degenerate": score.degenerate, "reason": score.reason, "seed": self.plan.seed,
                })
        return pd.DataFrame.from_records(rows, columns=SCORE_COLUMNS)

    def _prepared_original(self, method: MethodSpec) -> list[PreparedMap]:
        if method.name not in self.prepared:
            self.prepared[method.name] = [PreparedMap(m, self.plan.metrics, image)
                                          for m, image in zip(self.original_maps[method.name], self.x)]
        return self.prepared[method.name]

    # -- targets -------------------------------------------------------------------------------------
    def _targets(self, step: Step) -> np.ndarray:
        if self.plan.target == "original":
            return self.original_targets
        if self.plan.target == "label":
            return self.images.labels.astype(np.int32)
        return self._argmax(self.model.predict(self.x), step)

    def _argmax(self, logits: np.ndarray, step: Step) -> np.ndarray:
        if not np.all(np.isfinite(logits)):
            raise HarnessError(f"model {self.model.name} produced NaN/inf logits at step {step.index} "
                               f"({step.block}); check the input value range and the re-initialization scheme")
        return np.argmax(logits, axis=1).astype(np.int32)

    # -- the run's files -------------------------------------------------------------------------------
    def _all_steps(self) -> list[Step]:
        return [*self.steps, *(Step(CONTROL_STEP, c, ()) for c in self.plan.controls)]

    def _assemble(self, seconds: float) -> None:
        units = [(s, m) for s in self._all_steps() for m in self.plan.methods]
        scores = pd.concat([pd.read_csv(self.parts / f"{_stem(s, m)}.csv", keep_default_na=False,
                                        na_values=[""]) for s, m in units], ignore_index=True)
        scores["reason"] = scores["reason"].fillna("")
        write_csv(self.run_dir / "scores.csv", scores)
        write_csv(self.run_dir / "summary.csv", summarize(scores, self.plan.seed))
        write_npz(self.run_dir / "maps.npz", self._maps_archive(units))
        write_json(self.run_dir / "run.json", self._record(units, seconds))

    def _maps_archive(self, units) -> dict[str, np.ndarray]:
        k = self.plan.maps_to_keep
        arrays = {"images": self.images.images[:k], "image_ids": np.array(self.images.ids[:k]),
                  "steps": np.array([s.index for s in self.steps]), "blocks": np.array([s.block for s in self.steps])}
        for s, m in units:
            if s.index != CONTROL_STEP:
                with np.load(self.parts / f"{_stem(s, m)}.npz") as part:
                    arrays[f"{m.name}/{s.index:03d}"] = part["maps"]
        return arrays

    def _record(self, units, seconds: float) -> dict[str, Any]:
        timings = {_stem(s, m): json.loads((self.parts / f"{_stem(s, m)}.json").read_text())["seconds"]
                   for s, m in units}
        return {
            "config": self.plan.config, "config_key": self.plan.key(), "versions": _versions(),
            "seed": self.plan.seed,
            "model": _model_record(self.model) | {"donor": self.plan.donor},
            "schedule": {"name": self.plan.schedule, "steps": [{"index": s.index, "block": s.block,
                                                                  "randomized": list(s.randomized)} for s in self.steps],
                         "reinit": {k: v for k, v in vars(self.plan.reinit).items() if k != "donor"}},
            "metrics": self.plan.metrics.to_record(),
            "images": {"count": len(self.images), "ids": self.images.ids},
            "controls": list(self.plan.controls),
            "methods": [vars(m) for m in self.plan.methods],
            "target": self.plan.target,
            "timings": {"total_seconds": seconds, "method_seconds": timings,
                        "overhead_share": max(0.0, 1.0 - sum(timings.values()) / seconds) if seconds else None},
            "trace_counts": dict(self.model.trace_counts),
        }

    @contextmanager
    def _progress(self):
        from tqdm import tqdm

        total = (len(self.steps) + len(self.plan.controls)) * len(self.plan.methods) * len(self.images)
        with tqdm(total=total, desc=f"{self.model.name} {self.plan.schedule}", unit="map",
                  disable=not self.plan.config.get("progress", True)) as bar:
            yield bar


# -- helpers ----------------------------------------------------------------------------------------
def _stem(step: Step, method: MethodSpec) -> str:
    """File stem of a unit in parts/: s003-gradient, or control-ceiling-gradient."""
    where = f"control-{step.block}" if step.index == CONTROL_STEP else f"s{step.index:03d}"
    return f"{where}-{method.name}"


def _model_record(model) -> dict[str, Any]:
    return {"name": model.name, "identity": model.identity, "source_kind": model.source_kind,
            "input": {"size": model.input_spec.size, "channels": model.input_spec.channels,
                      "value_range": model.input_spec.value_range},
            "num_classes": model.num_classes, "metrics": model.metadata.get("metrics", {}),
            "blocks": [{"name": b.name, "parameters": b.parameter_count} for b in model.blocks]}


def _donor_model(schedule: Mapping[str, Any], log):
    """The model whose weights scheme `donor` copies in: `schedule.donor_model` names a model config."""
    from harness.config import group_defaults
    from harness.models import load_model

    name = schedule.get("donor_model")
    if not name:
        raise HarnessError("scheme 'donor' needs schedule.donor_model (a model config name, e.g. mnist_cnn_randlabels)")
    return load_model(group_defaults("model", name), log=log)


def _method_config(entry: Any) -> dict[str, Any]:
    """`methods: [gradient, {name: smoothgrad, samples: 10}]`: a name takes conf/method/<name>.yaml."""
    from harness.config import group_defaults

    if isinstance(entry, str):
        return group_defaults("method", entry)
    return group_defaults("method", entry["name"]) | dict(entry)


def _plain(cfg: Mapping[str, Any]) -> dict[str, Any]:
    try:
        from omegaconf import DictConfig, OmegaConf
        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return json.loads(json.dumps(dict(cfg), default=str))


def _stable(text: str) -> int:
    import zlib
    return zlib.crc32(text.encode())


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for package in ("tensorflow", "keras", "tensorflow-hub", "saliency", "numpy", "scipy", "scikit-image",
                    "pandas", "hydra-core"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "missing"
    return out


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{time.time_ns()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise HarnessError(f"results folder {str(folder)!r} is not writable: {error.strerror or error}") from error


@contextmanager
def _exclusive(run_dir: Path):
    """One job per run folder at a time (a second job with the same config would race on parts/)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise HarnessError(f"another job is running the same config in {run_dir}") from error
        yield
