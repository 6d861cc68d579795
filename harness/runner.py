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
import os
import re
import time
import uuid
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import methods as method_registry
from harness.data import ImageSet, load_images, parse_count
from harness.checks import TARGETS
from harness.errors import HarnessError
from harness.controls import CONTROLS
from harness.schedules import SCHEDULES, Randomizer, Reinit, Smoothing, Step, schedule_steps, stable_hash
from harness.results import (CONTROL_SCHEDULE, CONTROL_STEP, FORMAT_VERSION, MAPS, PARTS, RECORD,
                             SCORE_COLUMNS, SCORES, SUMMARY, VERDICTS, RunRecord, maps_key, read_table, write_csv,
                             write_json, write_npz)
from harness.metrics import MetricSettings, PreparedMap, compare_batch, prepare_stack
from harness.summary import summarize
from harness.verdicts import experiment_name, verdict_table

# Settings that say how a run is executed, never what it computes: taken out of the run's config, so
# they are in neither its key nor run.json (a run resumed with other values is the same run).
# `map_cache`: read / write the trained model's maps in the shared cache (harness.cache);
# `threads`: TensorFlow's intra-op threads (harness.sweeps.tf_threads, applied by the CLI).
EXECUTION = ("map_cache", "threads")
KERNEL = "kernel"  # the Clock phase of the method calls: what runner overhead is measured against
METRIC_PHASE = "score:"  # Clock phases inside "score", one per metric: run.json's score_by_metric
LABEL_PATTERN = re.compile(r"[A-Za-z0-9_.=,\[\]-]+")  # labels name files in parts/


@dataclass(frozen=True)
class MethodSpec:
    """One entry of a run's method list: the method family (`name`), its settings, and the `label`
    that tells the entry apart from others of the same family (parts, tables, maps, report)."""
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    def __post_init__(self):
        if not self.label:
            object.__setattr__(self, "label", self.name)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "MethodSpec":
        params = {k: v for k, v in _plain(cfg).items() if k not in ("name", "label")}
        method_registry.get(cfg["name"])  # unknown name -> one clear line
        return cls(str(cfg["name"]), params, str(cfg.get("label") or ""))


def labelled(specs: list[MethodSpec]) -> list[MethodSpec]:
    """Give entries of the same family without an explicit `label` one derived from the settings
    that differ from the family's defaults (`integrated_gradients[steps=5]`); every label unique."""
    from harness.config import group_defaults

    explicit = [bool(s.label) and s.label != s.name for s in specs]
    names = [s.name for s in specs]
    out = []
    for spec, given in zip(specs, explicit):
        label = spec.label
        if not given and names.count(spec.name) > 1:
            defaults = group_defaults("method", spec.name)
            changed = {k: v for k, v in sorted(spec.params.items()) if defaults.get(k) != v}
            label = f"{spec.name}[{','.join(f'{k}={v}' for k, v in changed.items())}]" if changed else spec.name
        if not LABEL_PATTERN.fullmatch(label):
            raise HarnessError(f"method label {label!r} is not valid: use letters, digits and _ . = , [ ] - only")
        out.append(dataclasses.replace(spec, label=label))
    labels = [s.label for s in out]
    for label in labels:
        if labels.count(label) > 1:
            raise HarnessError(f"two method entries are both labelled {label!r}; give each a distinct "
                               f"`label:` (e.g. {{name: {label.split('[')[0]}, label: {label.split('[')[0]}_fast, ...}})")
    return out


@dataclass(frozen=True)
class Plan:
    """Everything a run needs, validated once, before any model is loaded or any file written; the
    contents it points at (digests, a donor's weights) are added with `with_contents`."""
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
    smoothing: Smoothing | None = None  # sMPRT: every map averaged over noisy copies of its image
    map_cache: bool = True  # the trained model's maps through the on-disk cache (harness.cache)
    donor: dict[str, Any] | None = None  # the model scheme `donor` copies its weights from (run.json)
    # Digests of what the config only names: the model's weights, the images' ids and pixels, the
    # donor's weights. Part of the key, so a changed model file or image folder is a new run folder.
    contents: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "Plan":
        from harness.checks import check_config

        check_config(cfg)  # every caller (the CLI, the API, reproduce, sweeps) checked before anything is loaded
        config = _plain(cfg)
        execution = {k: config.pop(k) for k in EXECUTION if k in config}
        schedule = config["schedule"]["name"]
        if schedule not in SCHEDULES:
            raise HarnessError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
        if config["target"] not in TARGETS:
            raise HarnessError(f"unknown target {config['target']!r}; valid: {', '.join(TARGETS)}")
        controls = tuple(config.get("controls") or ())
        for control in controls:
            if control not in CONTROLS:
                raise HarnessError(f"unknown control {control!r}; valid: {', '.join(CONTROLS)}")
        parse_count(config["data"].get("count"))  # a bad count fails before any folder is made
        method_cfgs = [_method_config(m) for m in config.get("methods") or []] or [config["method"]]
        return cls(
            config=config, methods=labelled([MethodSpec.from_config(m) for m in method_cfgs]), schedule=schedule,
            reinit=Reinit.from_config(config["schedule"], seed=int(config["seed"])),
            metrics=MetricSettings.from_config(config["metrics"]), seed=int(config["seed"]),
            target=config["target"], maps_to_keep=int(config.get("maps_to_keep", 8)),
            results_dir=Path(config.get("results_dir", "results")), controls=controls,
            smoothing=Smoothing.from_config(config["schedule"]),
            map_cache=bool(execution.get("map_cache", True)),
        )

    def with_contents(self, model, images: ImageSet, log) -> "Plan":
        """This plan with the digests of what it points at, and scheme `donor`'s weights."""
        from harness.cache import structure_digest

        contents = {"model": weights_digest(model), "structure": structure_digest(model),
                    "images": images_digest(images)}
        if self.reinit.scheme != "donor":
            return dataclasses.replace(self, contents=contents)
        donor = _donor_model(self.config["schedule"], log)
        record = _model_record(donor) | {"weights_digest": weights_digest(donor)}
        return dataclasses.replace(self, reinit=self.reinit.with_donor(model, donor), donor=record,
                                   contents=contents | {"donor": record["weights_digest"]})

    def key(self) -> str:
        """Hash of everything that changes the results (not where they go, nor the progress bar):
        the config and the contents it points at (model weights, images)."""
        relevant = {k: v for k, v in self.config.items() if k not in ("results_dir", "progress", "command")}
        # The model by its contents (weights and structure digests), not by where it was read from: a
        # model object and its .keras file, or a moved SavedModel, are the same run (docs/api.md).
        relevant["model"] = {k: v for k, v in (relevant.get("model") or {}).items() if k != "source"}
        relevant["methods"] = [vars(m) for m in self.methods]  # the `method` group is moot when `methods` is set
        relevant.pop("method", None)
        relevant["contents"] = self.contents
        return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:10]


def run(cfg: Mapping[str, Any], log=print) -> Path:
    """Run one sanity check as configured; returns the run folder."""
    from harness.models import load_model

    plan = Plan.from_config(cfg)
    _check_writable(plan.results_dir)
    began = time.perf_counter()
    model = load_model(plan.config["model"], log=log)
    images = load_images(plan.config["data"], model.input_spec.size, model.input_spec.channels)
    if plan.target == "label" and images.labels is None:
        raise HarnessError(f"target 'label' needs labelled images; data source {plan.config['data']['source']!r} "
                           "has none (use target=predicted or give data.labels)")
    plan = plan.with_contents(model, images, log)
    names = "+".join(m.label for m in plan.methods)
    run_dir = plan.results_dir / "runs" / f"{model.name}-{names}-{plan.schedule}-{plan.key()}"
    load_seconds = time.perf_counter() - began
    with _exclusive(run_dir):
        Runner(plan, model, images, run_dir, log, load_seconds).execute()
    return run_dir


class Runner:
    def __init__(self, plan: Plan, model, images: ImageSet, run_dir: Path, log, load_seconds: float = 0.0):
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()  # same config, same bytes
        self.plan, self.model, self.images, self.run_dir, self.log = plan, model, images, run_dir, log
        self.parts = run_dir / PARTS
        self.x = model.input_spec.to_model_space(images.images)
        self.steps = schedule_steps(plan.schedule, [b.name for b in model.blocks])
        self.prepared: dict[str, list[PreparedMap]] = {}  # original maps, post-processed once per method
        self.finished: set[str] = set()  # stems of the units whose part files are all readable
        # What this invocation committed, kept for assembling: re-reading a cascading_mlp run's 56 parts
        # took ~0.2 s of its 40 s. Units of an earlier invocation are read from parts/.
        self.committed: dict[str, tuple[pd.DataFrame, np.ndarray]] = {}
        self.session: Session | None = None  # this invocation's record, opened with its first unit
        self.load_seconds = load_seconds  # loading the model and the images, digesting them (run())
        self.clock = Clock()  # where this invocation's time goes (see _timings)

    def execute(self) -> None:
        self.parts.mkdir(parents=True, exist_ok=True)
        self.finished = {_stem(s, m) for s, m in self._units() if _readable_part(self.parts / _stem(s, m))}
        if len(self.finished) == len(self._units()):
            if not (self.run_dir / RECORD).is_file():  # killed while assembling: only the files are rebuilt
                self._assemble()
            return
        self.session = Session.open(self.parts)
        self.session.record["load_seconds"] = self.load_seconds
        randomizer = Randomizer(self.model, self.plan.reinit)
        step0 = self.steps[0]
        with self.clock("targets"):
            self.trained_argmax = self._argmax(self.model.predict(self.x), step0)
        # The reference maps explain the class that every later step's rule picks for step 0.
        self.reference_targets = self.targets(step0)
        self.original_maps, self.original_seconds = {}, {}
        for method in self.plan.methods:
            began = time.perf_counter()
            self.original_maps[method.label] = self._original_maps(method, step0)
            self.original_seconds[method.label] = time.perf_counter() - began
        with self._progress() as bar:
            for step in self.steps:
                todo = [m for m in self.plan.methods if not self._done(step, m)]
                bar.update(len(self.images) * (len(self.plan.methods) - len(todo)))
                if not todo:
                    continue
                with self.at_step(randomizer, step) as targets:
                    for method in todo:
                        self._unit(step, method, targets)
                        bar.update(len(self.images))
            for control in self.plan.controls:
                self._control(control)
                bar.update(len(self.images) * len(self.plan.methods))
        self.session.close(dict(self.model.trace_counts), self.clock.seconds)
        self._assemble()

    @contextmanager
    def at_step(self, randomizer: Randomizer, step: Step) -> Iterator[np.ndarray]:
        """The model with the step's blocks re-initialized (Randomizer.step: self-checked, restored
        after), yielding the classes the target rule explains there. Drawing, checking and restoring
        the weights is the run's "randomize" time, the forward pass its "targets" (see _timings)."""
        began = time.perf_counter()
        with randomizer.step(step):
            self.clock.add("randomize", time.perf_counter() - began)
            with self.clock("targets"):
                targets = self.targets(step)
            yield targets
            began = time.perf_counter()
        self.clock.add("randomize", time.perf_counter() - began)

    # -- one unit of work: a method at a step --------------------------------------------------------
    def _unit(self, step: Step, method: MethodSpec, targets: np.ndarray) -> None:
        began = time.perf_counter()
        if step.index == 0:  # computed up front: every later step is compared with these maps
            maps, seconds = self.original_maps[method.label], self.original_seconds[method.label]
            scored = self._prepared_original(method)  # compared with themselves: their forms serve both sides
        else:
            maps = scored = self.maps(method, step, targets)
            seconds = time.perf_counter() - began
        self._commit(_stem(step, method), self._score(step, method, targets, scored), maps, seconds)

    def _commit(self, stem: str, rows: pd.DataFrame, maps: np.ndarray, seconds: float) -> None:
        path = self.parts / stem
        with self.clock("write"):
            # Not synced one by one: the scores, written last and synced, mark the unit done and
            # sync the folder; a maps or seconds file a power loss emptied makes the part unreadable.
            # Stored, not compressed (as maps.npz): compressing an InceptionV3 unit's kept maps cost
            # ~0.4 s (results.write_npz)
            write_npz(path.with_suffix(".npz"), {"maps": maps[: self.plan.maps_to_keep]}, durable=False,
                      compressed=False)
            write_json(path.with_suffix(".json"), {"seconds": seconds, "session": self.session.id}, durable=False)
            write_csv(path.with_suffix(".csv"), rows)  # written last: its presence marks the unit done
        self.finished.add(stem)
        self.committed[stem] = (rows, maps[: self.plan.maps_to_keep].copy())  # not a view of all the maps

    def _done(self, step: Step, method: MethodSpec) -> bool:
        return _stem(step, method) in self.finished

    # -- controls: how low is "low", how high can a stochastic method get --------------------------------
    def _control(self, name: str) -> None:
        """A registered control (harness.controls) for the method entries that still lack it."""
        step = Step(CONTROL_STEP, name, ())
        todo = [m for m in self.plan.methods if not self._done(step, m)]
        if not todo:
            return
        computed = CONTROLS[name](self, todo)
        for method in todo:
            c = computed[method.label]
            rows = self._score(step, method, c.targets, c.maps, c.reference, c.reference_targets)
            self._commit(_stem(step, method), rows, c.maps, c.seconds)

    def _original_maps(self, method: MethodSpec, step0: Step) -> np.ndarray:
        """The trained model's maps of a method entry, from the map cache when a run with the same
        model weights, inputs, method settings, target classes and seed computed them (harness.cache)."""
        from harness import cache

        if not self.plan.map_cache:
            return self.maps(method, step0, self.reference_targets)
        key = cache.map_key({
            "model": self.plan.contents["model"], "source_kind": self.model.source_kind,
            "structure": cache.structure_digest(self.model),  # same weights, another graph: other maps
            "image_ids": list(self.images.ids), "inputs": cache.array_digest(self.x),
            "method": method.name, "label": method.label, "params": self._params(method),
            "target_rule": self.plan.target, "targets": self.reference_targets.tolist(),
            "rng": self._rng_seed(method, step0), "smoothing": vars(self.plan.smoothing) if self.plan.smoothing else None,
            "hardware": cache.hardware(),
            # a segmentation model explains its reduction's scalar: same weights, other maps
            **({"reduction": self.model.reduction.key()} if hasattr(self.model, "reduction") else {}),
        })
        with self.clock("map_cache"):
            maps = cache.load_maps(key)
        if maps is None:
            maps = self.maps(method, step0, self.reference_targets)
            with self.clock("map_cache"):
                cache.store_maps(key, maps)
        else:
            self.session.record.setdefault("cached_original_maps", []).append(method.label)
        return maps

    def _rng_seed(self, method: MethodSpec, step: Step) -> list[int]:
        return [self.plan.seed, stable_hash(method.label), stable_hash(step.block), step.index % 2**32]

    def _params(self, method: MethodSpec) -> dict[str, Any]:
        return dict(method.params) | {"gradcam_endpoint": self.plan.config["model"].get("gradcam_endpoint")}

    def maps(self, method: MethodSpec, step: Step, targets: np.ndarray) -> np.ndarray:
        """The maps of a method entry for the model as it is now, seeded by entry and step."""
        rng = np.random.default_rng(self._rng_seed(method, step))
        params = self._params(method)
        explain = method_registry.get(method.name)
        if self.plan.smoothing:
            from harness.methods.smoothgrad import denoised

            # The same noisy copies at every step and in every control: two maps differ by the model,
            # not by the draw (a model-free map stays identical, as in the plain schedules).
            noise_rng = np.random.default_rng([self.plan.seed, stable_hash(method.label), stable_hash("smoothing")])
            explain = denoised(explain, self.plan.smoothing.samples, self.plan.smoothing.spread, noise_rng)
        with self.clock(KERNEL):
            return np.asarray(explain(self.model, self.x, targets, rng, params), np.float32)

    def _score(self, step: Step, method: MethodSpec, targets: np.ndarray, maps: np.ndarray | list[PreparedMap],
               reference: np.ndarray | None = None, reference_targets: np.ndarray | None = None) -> pd.DataFrame:
        """Rows of one unit: `target_class` is the class `maps` explain, `reference_class` the class
        of the maps they are compared with (the original maps unless `reference` is given)."""
        with self.clock("score"):
            reference = self._prepared_original(method) if reference is None else reference
            reference_targets = self.reference_targets if reference_targets is None else reference_targets
            schedule = CONTROL_SCHEDULE if step.index == CONTROL_STEP else self.plan.schedule
            scores = compare_batch(reference, maps, self.plan.metrics, images=self.x,
                                   timer=lambda metric: self.clock(METRIC_PHASE + metric))
            flat = [score for image_scores in scores for score in image_scores]
            per_image = [len(image_scores) for image_scores in scores]

            def each(values) -> list:  # an image's value on each of its rows
                return [value for value, n in zip(values, per_image) for _ in range(n)]

            # Column by column: a dict per row and DataFrame.from_records cost ~10 ms a unit of 100 images.
            return pd.DataFrame({
                "model": self.model.name, "method": method.name, "variant": method.label, "schedule": schedule,
                "step": step.index, "block": step.block, "image_id": each(self.images.ids),
                "target_class": each(int(t) for t in targets), "reference_class": each(int(t) for t in reference_targets),
                "metric": [s.metric for s in flat], "value": [s.value for s in flat],
                "degenerate": [s.degenerate for s in flat], "reason": [s.reason for s in flat], "seed": self.plan.seed,
            }, index=pd.RangeIndex(len(flat)), columns=SCORE_COLUMNS)

    def _prepared_original(self, method: MethodSpec) -> list[PreparedMap]:
        if method.label not in self.prepared:
            self.prepared[method.label] = prepare_stack(self.original_maps[method.label], self.plan.metrics, self.x)
        return self.prepared[method.label]

    # -- targets -------------------------------------------------------------------------------------
    def targets(self, step: Step) -> np.ndarray:
        """The classes the run's target rule explains for the model as it is now (at `step`)."""
        if self.plan.target == "label":
            return self.images.labels.astype(np.int32)
        if self.plan.target == "original" or step.index == 0:
            return self.trained_argmax
        return self._argmax(self.model.predict(self.x), step)

    def _argmax(self, logits: np.ndarray, step: Step) -> np.ndarray:
        if not np.all(np.isfinite(logits)):
            raise HarnessError(f"model {self.model.name} produced NaN/inf logits at step {step.index} "
                               f"({step.block}); check the input value range and the re-initialization scheme")
        background = getattr(self.model, "background", None)  # a segmentation model explains its largest
        if background is not None:                             # predicted class other than background
            logits = np.where(np.arange(logits.shape[1]) == background, -np.inf, logits)
        return np.argmax(logits, axis=1).astype(np.int32)

    # -- the run's files -------------------------------------------------------------------------------
    def _units(self) -> list[tuple[Step, MethodSpec]]:
        steps = [*self.steps, *(Step(CONTROL_STEP, c, ()) for c in self.plan.controls)]
        return [(s, m) for s in steps for m in self.plan.methods]

    def _assemble(self) -> None:
        """The run's files from its parts; run.json last: its presence marks the run complete."""
        began = time.perf_counter()
        units = self._units()
        scores = pd.concat([self._rows(_stem(s, m)) for s, m in units], ignore_index=True)
        write_csv(self.run_dir / SCORES, scores)
        summary = summarize(scores, self.plan.seed)
        write_csv(self.run_dir / SUMMARY, summary)
        write_csv(self.run_dir / VERDICTS, verdict_table(summary, experiment_name(self.plan.config)))
        # Stored, not compressed: dense float32 maps barely compress (~7 %; a cascading_mlp run's
        # sparse Gradient x Input maps ~27 %), and compressing 18 states x 8 methods of InceptionV3
        # maps would take about a minute (results.write_npz)
        write_npz(self.run_dir / MAPS, self._maps_archive(units), compressed=False)
        self._record(units, time.perf_counter() - began).write(self.run_dir)

    def _maps_archive(self, units) -> dict[str, np.ndarray]:
        k = self.plan.maps_to_keep
        arrays = {"images": self.images.images[:k], "image_ids": np.array(self.images.ids[:k]),
                  "steps": np.array([s.index for s in self.steps]), "blocks": np.array([s.block for s in self.steps])}
        for s, m in units:
            if s.index != CONTROL_STEP:
                arrays[maps_key(m.label, s.index)] = self._kept_maps(_stem(s, m))
        return arrays

    def _rows(self, stem: str) -> pd.DataFrame:
        """A unit's score rows: as committed, or read back from its part (tests/test_runner.py: a
        resumed run's files equal an uninterrupted one's, byte for byte)."""
        return self.committed[stem][0] if stem in self.committed else read_table(self.parts / f"{stem}.csv")

    def _kept_maps(self, stem: str) -> np.ndarray:
        if stem in self.committed:
            return self.committed[stem][1]
        with np.load(self.parts / f"{stem}.npz") as part:
            return part["maps"]

    def _record(self, units, assemble_seconds: float) -> RunRecord:
        parts = {_stem(s, m): json.loads((self.parts / f"{_stem(s, m)}.json").read_text()) for s, m in units}
        computations = Session.history(self.parts, parts)
        first = computations[0] if computations else {}
        return RunRecord(
            format_version=FORMAT_VERSION, config=self.plan.config, config_key=self.plan.key(),
            contents=self.plan.contents, versions=first.get("versions") or _versions(), seed=self.plan.seed,
            model=_model_record(self.model) | {"donor": self.plan.donor, "weights_digest": self.plan.contents.get("model")},
            schedule={"name": self.plan.schedule,
                      "steps": [{"index": s.index, "block": s.block, "randomized": list(s.randomized)} for s in self.steps],
                      "reinit": {k: v for k, v in vars(self.plan.reinit).items() if k != "donor"}},
            metrics=self.plan.metrics.to_record(),
            images={"count": len(self.images), "ids": self.images.ids, "digest": self.plan.contents.get("images")},
            controls=list(self.plan.controls), methods=[vars(m) for m in self.plan.methods], target=self.plan.target,
            timings=_timings(computations, {stem: part["seconds"] for stem, part in parts.items()}, assemble_seconds),
            trace_counts=first.get("trace_counts") or {}, computations=computations,
        )

    @contextmanager
    def _progress(self):
        from harness.progress import progress_bar

        total = (len(self.steps) + len(self.plan.controls)) * len(self.plan.methods) * len(self.images)
        with progress_bar(total=total, desc=f"{self.model.name} {self.plan.schedule}", unit="map",
                          disable=not self.plan.config.get("progress", True)) as bar:
            yield bar


@dataclass
class Session:
    """One invocation that computed units: when it started, with which packages, and (if it was not
    killed) how long it took and what TensorFlow traced. run.json lists them in order, so a resumed
    run keeps the first computation's record and says what each later one added."""
    id: str
    path: Path
    record: dict[str, Any]

    @classmethod
    def open(cls, parts: Path) -> "Session":
        began = datetime.now(timezone.utc)
        # Unique even for two invocations of one process within a second (a resume right after a kill).
        session_id = f"{began:%Y%m%dT%H%M%S}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        import tensorflow as tf

        record = {"session": session_id, "started": began.isoformat(timespec="microseconds"),
                  "versions": _versions(), "seconds": None, "trace_counts": None, "_began": time.perf_counter(),
                  # the CLI's `threads` setting as TensorFlow took it (0: TensorFlow's default)
                  "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads()}
        session = cls(session_id, parts / f"session-{session_id}.json", record)
        session._write()
        return session

    def close(self, trace_counts: dict[str, int], phases: dict[str, float]) -> None:
        """Mark the session finished: its wall time, its traces, and where its time went (Clock)."""
        self.record |= {"seconds": time.perf_counter() - self.record["_began"], "trace_counts": trace_counts,
                        "phases": dict(phases)}
        self._write()

    def _write(self) -> None:
        write_json(self.path, {k: v for k, v in self.record.items() if not k.startswith("_")})

    @staticmethod
    def history(parts: Path, units: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """Every session that computed a unit of this run, oldest first, with the units it computed
        (a session killed before it finished has `seconds` null)."""
        computed: dict[str, list[str]] = {}
        for stem, part in units.items():
            computed.setdefault(part.get("session", "unknown"), []).append(stem)
        out = []
        for session_id, stems in computed.items():
            file = parts / f"session-{session_id}.json"
            record = json.loads(file.read_text()) if file.is_file() else {"session": session_id}
            out.append(record | {"units": stems})
        return sorted(out, key=lambda r: r.get("started", ""))


def _timings(computations: list[dict[str, Any]], unit_seconds: dict[str, float],
             assemble_seconds: float) -> dict[str, Any]:
    """Where a run's time went, over the sessions that ran to their end (a killed session's wall time
    is unknown) and the assembling of the run's files by the invocation that finished it.

    Runner overhead is everything in a run that is not a method kernel:
      total_seconds    = the sessions' wall time (from each session's start, after the model and the
                         images are loaded, to its last unit and control) + assembling scores.csv,
                         summary.csv and maps.npz (run.json itself, written last, is not timed);
      kernel_seconds   = time inside the method calls that computed maps (`Runner.maps`: the
                         registered method on all images of a unit, with its conversion to float32),
                         in the schedule's steps, the original maps and the controls;
      overhead_seconds = total_seconds - kernel_seconds; overhead_fraction = overhead / total.
    `overhead_parts` splits the overhead: scoring (post-processing and metrics), writing the parts,
    re-initializing and restoring blocks (the schedule's steps and the random_model control's two
    models: Runner.at_step), the forward passes that pick each such state's target classes, the map
    cache, assembling, and `other` (the rest: controls' bookkeeping, noise masks, the progress bar).
    `score_by_metric` splits `score` by metric (harness.metrics.compare_batch's `timer`: each metric
    and the forms it is the first to read); the rest of `score` prepares maps and builds the rows.
    `load_seconds` (loading the model and the images and digesting them, before a session starts)
    is reported beside, in neither total. `method_seconds` are the seconds of each unit's maps.
    """
    whole = [c for c in computations if c.get("seconds") is not None]
    if not whole:
        return {"total_seconds": None, "method_seconds": unit_seconds, "kernel_seconds": None,
                "overhead_seconds": None, "overhead_fraction": None, "overhead_parts": {}, "score_by_metric": {},
                "load_seconds": None}
    total = sum(c["seconds"] for c in whole) + assemble_seconds
    parts: dict[str, float] = {}
    by_metric: dict[str, float] = {}
    kernel = 0.0
    for c in whole:
        phases = dict(c.get("phases") or {})
        # a session recorded before phases were: its units' seconds stand for its kernel time
        kernel += phases.pop(KERNEL) if KERNEL in phases else sum(unit_seconds[stem] for stem in c["units"])
        for name, seconds in phases.items():
            into, key = (by_metric, name.removeprefix(METRIC_PHASE)) if name.startswith(METRIC_PHASE) else (parts, name)
            into[key] = into.get(key, 0.0) + seconds
    parts["assemble"] = assemble_seconds
    overhead = total - kernel
    parts["other"] = overhead - sum(parts.values())
    return {"total_seconds": total, "method_seconds": unit_seconds, "kernel_seconds": kernel,
            "overhead_seconds": overhead, "overhead_fraction": overhead / total if total else None,
            "overhead_parts": parts, "score_by_metric": by_metric,
            "load_seconds": sum(c.get("load_seconds") or 0.0 for c in whole)}


class Clock:
    """Seconds per phase of one invocation (scoring, writing, randomizing, ... and KERNEL: the method
    calls), recorded with its session (Session.close) and split into runner overhead by _timings."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    @contextmanager
    def __call__(self, phase: str):
        began = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - began)


def _readable_part(path: Path) -> bool:
    """A unit is done when its three files exist and parse (a power loss can leave an empty file)."""
    try:
        json.loads(path.with_suffix(".json").read_text())
        with np.load(path.with_suffix(".npz")) as part:
            if "maps" not in part.files:
                return False
        return list(pd.read_csv(path.with_suffix(".csv"), nrows=0).columns) == SCORE_COLUMNS
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):  # pandas' parse errors are ValueErrors
        return False


# -- helpers ----------------------------------------------------------------------------------------
def _stem(step: Step, method: MethodSpec) -> str:
    """File stem of a unit in parts/: s003-gradient, or control-ceiling-gradient (by method label)."""
    where = f"control-{step.block}" if step.index == CONTROL_STEP else f"s{step.index:03d}"
    return f"{where}-{method.label}"


def weights_digest(model) -> str:
    """SHA-256 of every variable's name, dtype, shape and bytes: the model's content identity."""
    digest = hashlib.sha256()
    for v in model.variables:
        value = v.read()
        digest.update(f"{v.name}|{value.dtype}|{value.shape}|".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def images_digest(images: ImageSet) -> str:
    """SHA-256 of the image ids, pixels and labels: the image set's content identity."""
    digest = hashlib.sha256(json.dumps(list(images.ids)).encode())
    digest.update(np.ascontiguousarray(images.images, np.float32).tobytes())
    if images.labels is not None:
        digest.update(np.asarray(images.labels, np.int64).tobytes())
    return digest.hexdigest()


def _model_record(model) -> dict[str, Any]:
    return {"name": model.name, "identity": model.identity, "source_kind": model.source_kind,
            "input": {"size": model.input_spec.size, "channels": model.input_spec.channels,
                      "value_range": model.input_spec.value_range},
            "num_classes": model.num_classes, "metrics": model.metadata.get("metrics", {}),
            # How a built-in model was trained (the report's paper comparison explains gaps with it).
            **({"recipe": model.metadata["recipe"]} if model.metadata.get("recipe") else {}),
            "blocks": [{"name": b.name, "parameters": b.parameter_count} for b in model.blocks]}


def _donor_model(schedule: Mapping[str, Any], log):
    """The model whose weights scheme `donor` copies in: `schedule.donor_model` names a model config,
    or a snapshot of a built-in one (`NAME@STEPS`, harness.config.model_defaults)."""
    from harness.config import model_defaults
    from harness.models import load_model

    name = schedule.get("donor_model")
    if not name:
        raise HarnessError("scheme 'donor' needs schedule.donor_model (a model config name, e.g. mnist_cnn_randlabels)")
    return load_model(model_defaults(str(name)), log=log)


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
