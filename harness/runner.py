"""The loop: model states x methods x images -> score rows, maps, and the run's record.

Each model state is visited once (every method at a step, then the next step) and the original maps
are computed once. Each (step, method) unit is committed to `parts/` when it is done, so a killed run
started again with the same config skips what is finished and ends with the same `scores.csv`.
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import re
import tempfile
import time
import uuid
import zipfile
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import methods as method_registry
from harness.data import ImageSet, load_images
from harness.errors import HarnessError
from harness.controls import CONTROLS
from harness.schedules import Randomizer, Reinit, Smoothing, Step, schedule_steps, stable_hash
from harness.results import (CONTROL_SCHEDULE, CONTROL_STEP, FORMAT_VERSION, MAPS, PARTS, RECORD,
                             SCORE_COLUMNS, SCORES, SUMMARY, VERDICTS, RunRecord, maps_key, read_table, write_csv,
                             write_json, write_npz)
from harness.metrics import MetricSettings, PreparedMap, compare_batch, prepare_stack
from harness.summary import summarize
from harness.verdicts import experiment_name, verdict_table

# How a run is executed, never what it computes: in neither its key nor run.json (a run resumed with
# other values is the same run). `map_cache`: harness.cache; `threads`: applied by the CLI.
EXECUTION = ("map_cache", "threads")
KERNEL = "kernel"  # the timed phase of the method calls: what runner overhead is measured against
METRIC_PHASE = "score:"  # timed phases inside "score", one per metric: run.json's score_by_metric
LABEL_PATTERN = re.compile(r"[A-Za-z0-9_.=,\[\]-]+")  # labels name files in parts/


@dataclass(frozen=True)
class MethodSpec:
    """One entry of a run's method list: the method family (`name`), its settings, and the `label`
    that tells the entry apart from others of the same family (parts, tables, maps, report)."""
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "MethodSpec":
        params = {k: v for k, v in _plain(cfg).items() if k not in ("name", "label")}
        return cls(str(cfg["name"]), params, str(cfg.get("label") or cfg["name"]))


def labelled(specs: list[MethodSpec]) -> list[MethodSpec]:
    """Give entries of the same family without an explicit `label` one derived from the settings
    that differ from the family's defaults (`integrated_gradients[steps=5]`); every label unique."""
    from harness.config import group_defaults

    names = [s.name for s in specs]
    out = []
    for spec in specs:
        label = spec.label
        if label == spec.name and names.count(spec.name) > 1:
            defaults = group_defaults("method", spec.name)
            changed = {k: v for k, v in sorted(spec.params.items()) if defaults.get(k) != v}
            label = f"{spec.name}[{','.join(f'{k}={v}' for k, v in changed.items())}]" if changed else spec.name
        if not LABEL_PATTERN.fullmatch(label):
            raise HarnessError(f"method label {label!r} is not valid: use letters, digits and _ . = , [ ] - only")
        out.append(dataclasses.replace(spec, label=label))
    labels = [s.label for s in out]
    for label in labels:
        if labels.count(label) > 1:
            family = label.split("[")[0]
            raise HarnessError(f"two method entries are both labelled {label!r}; give each a distinct "
                               f"`label:` (e.g. {{name: {family}, label: {family}_fast, ...}})")
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

        check_config(cfg)  # every value, for every caller (the CLI, the API, reproduce, sweeps)
        config = _plain(cfg)
        execution = {k: config.pop(k) for k in EXECUTION if k in config}
        method_cfgs = [_method_config(m) for m in config.get("methods") or []] or [config["method"]]
        seed = int(config["seed"])
        return cls(
            config=config, methods=labelled([MethodSpec.from_config(m) for m in method_cfgs]),
            schedule=config["schedule"]["name"], reinit=Reinit.from_config(config["schedule"], seed=seed),
            metrics=MetricSettings.from_config(config["metrics"]), seed=seed,
            target=config["target"], maps_to_keep=int(config.get("maps_to_keep", 8)),
            results_dir=Path(config.get("results_dir", "results")), controls=tuple(config.get("controls") or ()),
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
        # The model by its contents, not by where it was read from: a model object and its .keras
        # file, or a moved SavedModel, are the same run (docs/api.md).
        relevant["model"] = {k: v for k, v in (relevant.get("model") or {}).items() if k != "source"}
        relevant["methods"] = [vars(m) for m in self.methods]  # the `method` group is moot when `methods` is set
        relevant.pop("method", None)
        relevant["contents"] = self.contents
        return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:10]


def run(cfg: Mapping[str, Any], log=print) -> Path:
    """Run one sanity check as configured; returns the run folder."""
    from harness.models import load_model

    plan = Plan.from_config(cfg)
    try:
        plan.results_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=plan.results_dir).close()
    except OSError as error:
        raise HarnessError(f"results folder {str(plan.results_dir)!r} is not writable: "
                           f"{error.strerror or error}") from error
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
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "w") as lock:  # one job per run folder: a second would race on parts/
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise HarnessError(f"another job is running the same config in {run_dir}") from error
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
        # What this invocation committed (rows, kept maps), for assembling; earlier units come from parts/.
        self.committed: dict[str, tuple[pd.DataFrame, np.ndarray]] = {}
        self.session: Session | None = None  # this invocation's record, opened with its first unit
        self.load_seconds = load_seconds  # loading the model and the images, digesting them (run())
        self.phases: defaultdict[str, float] = defaultdict(float)  # seconds per phase (see _timings)

    @contextmanager
    def timed(self, phase: str):
        began = time.perf_counter()
        try:
            yield
        finally:
            self.phases[phase] += time.perf_counter() - began

    def execute(self) -> None:
        from harness.progress import progress_bar

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
        with self.timed("targets"):
            self.trained_argmax = self._argmax(self.model.predict(self.x), step0)
        # The reference maps explain the class that every later step's rule picks for step 0.
        self.reference_targets = self.targets(step0)
        self.original_maps, self.original_seconds = {}, {}
        for method in self.plan.methods:
            began = time.perf_counter()
            self.original_maps[method.label] = self._original_maps(method, step0)
            self.original_seconds[method.label] = time.perf_counter() - began
        per_unit = len(self.images)
        total = (len(self.steps) + len(self.plan.controls)) * len(self.plan.methods) * per_unit
        with progress_bar(total=total, desc=f"{self.model.name} {self.plan.schedule}", unit="map",
                          disable=not self.plan.config.get("progress", True)) as bar:
            for step in self.steps:
                todo = self._todo(step)
                bar.update(per_unit * (len(self.plan.methods) - len(todo)))
                if not todo:
                    continue
                with self.at_step(randomizer, step) as targets:
                    for method in todo:
                        self._unit(step, method, targets)
                        bar.update(per_unit)
            for control in self.plan.controls:
                self._control(control)
                bar.update(per_unit * len(self.plan.methods))
        self.session.close(dict(self.model.trace_counts), dict(self.phases))
        self._assemble()

    @contextmanager
    def at_step(self, randomizer: Randomizer, step: Step) -> Iterator[np.ndarray]:
        """The model with the step's blocks re-initialized (self-checked, restored after), yielding the
        classes the target rule explains there: the weights' change is "randomize" time."""
        began = time.perf_counter()
        with randomizer.step(step):
            self.phases["randomize"] += time.perf_counter() - began
            with self.timed("targets"):
                targets = self.targets(step)
            yield targets
            began = time.perf_counter()
        self.phases["randomize"] += time.perf_counter() - began

    def _todo(self, step: Step) -> list[MethodSpec]:
        return [m for m in self.plan.methods if _stem(step, m) not in self.finished]

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
        kept = maps[: self.plan.maps_to_keep]
        with self.timed("write"):
            # Maps and seconds not synced one by one: the scores, written last and synced, mark the unit
            # done and sync the folder; a file a power loss emptied makes the part unreadable.
            write_npz(path.with_suffix(".npz"), {"maps": kept}, durable=False, compressed=False)
            write_json(path.with_suffix(".json"), {"seconds": seconds, "session": self.session.id}, durable=False)
            write_csv(path.with_suffix(".csv"), rows)
        self.finished.add(stem)
        self.committed[stem] = (rows, kept.copy())  # not a view of all the maps

    def _control(self, name: str) -> None:
        """A registered control (harness.controls) for the method entries that still lack it."""
        step = Step(CONTROL_STEP, name, ())
        todo = self._todo(step)
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
            "rng": self._rng_seed(method, step0), "hardware": cache.hardware(),
            "smoothing": vars(self.plan.smoothing) if self.plan.smoothing else None,
            # a segmentation model explains its reduction's scalar: same weights, other maps
            **({"reduction": self.model.reduction.key()} if hasattr(self.model, "reduction") else {}),
        })
        with self.timed("map_cache"):
            maps = cache.load_maps(key)
        if maps is None:
            maps = self.maps(method, step0, self.reference_targets)
            with self.timed("map_cache"):
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
        with self.timed(KERNEL):
            return np.asarray(explain(self.model, self.x, targets, rng, params), np.float32)

    def _score(self, step: Step, method: MethodSpec, targets: np.ndarray, maps: np.ndarray | list[PreparedMap],
               reference: np.ndarray | None = None, reference_targets: np.ndarray | None = None) -> pd.DataFrame:
        """Rows of one unit: `target_class` is the class `maps` explain, `reference_class` the class
        of the maps they are compared with (the original maps unless `reference` is given)."""
        with self.timed("score"):
            reference = self._prepared_original(method) if reference is None else reference
            reference_targets = self.reference_targets if reference_targets is None else reference_targets
            schedule = CONTROL_SCHEDULE if step.index == CONTROL_STEP else self.plan.schedule
            scores = compare_batch(reference, maps, self.plan.metrics, images=self.x,
                                   timer=lambda metric: self.timed(METRIC_PHASE + metric))
            flat = [score for image_scores in scores for score in image_scores]
            per_image = [len(image_scores) for image_scores in scores]

            def each(values) -> list:  # an image's value on each of its rows
                return [value for value, n in zip(values, per_image) for _ in range(n)]

            return pd.DataFrame({
                "model": self.model.name, "method": method.name, "variant": method.label, "schedule": schedule,
                "step": step.index, "block": step.block, "image_id": each(self.images.ids),
                "target_class": each(int(t) for t in targets),
                "reference_class": each(int(t) for t in reference_targets),
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
        units = {_stem(s, m): (s, m) for s, m in self._units()}
        parts = {stem: self._part(stem) for stem in units}
        scores = pd.concat([rows for rows, _ in parts.values()], ignore_index=True)
        write_csv(self.run_dir / SCORES, scores)
        summary = summarize(scores, self.plan.seed)
        write_csv(self.run_dir / SUMMARY, summary)
        write_csv(self.run_dir / VERDICTS, verdict_table(summary, experiment_name(self.plan.config)))
        k = self.plan.maps_to_keep
        arrays = {"images": self.images.images[:k], "image_ids": np.array(self.images.ids[:k]),
                  "steps": np.array([s.index for s in self.steps]), "blocks": np.array([s.block for s in self.steps])}
        for stem, (s, m) in units.items():
            if s.index != CONTROL_STEP:
                arrays[maps_key(m.label, s.index)] = parts[stem][1]
        # Stored, not compressed: dense float32 maps barely compress, and slowly (results.write_npz)
        write_npz(self.run_dir / MAPS, arrays, compressed=False)
        self._record(list(units), time.perf_counter() - began).write(self.run_dir)

    def _part(self, stem: str) -> tuple[pd.DataFrame, np.ndarray]:
        """A unit's rows and kept maps: as committed, or read back from its part (tests/test_runner.py:
        a resumed run's files equal an uninterrupted one's, byte for byte)."""
        if stem in self.committed:
            return self.committed[stem]
        with np.load(self.parts / f"{stem}.npz") as part:
            return read_table(self.parts / f"{stem}.csv"), part["maps"]

    def _record(self, stems: list[str], assemble_seconds: float) -> RunRecord:
        parts = {stem: json.loads((self.parts / f"{stem}.json").read_text()) for stem in stems}
        # Every session that computed a unit, oldest first, with its units (a killed one has `seconds` null).
        computed: dict[str, list[str]] = {}
        for stem, part in parts.items():
            computed.setdefault(part.get("session", "unknown"), []).append(stem)
        computations = []
        for session_id, units in computed.items():
            file = self.parts / f"session-{session_id}.json"
            record = json.loads(file.read_text()) if file.is_file() else {"session": session_id}
            computations.append(record | {"units": units})
        computations.sort(key=lambda r: r.get("started", ""))
        first = computations[0] if computations else {}
        plan = self.plan
        steps = [{"index": s.index, "block": s.block, "randomized": list(s.randomized)} for s in self.steps]
        return RunRecord(
            format_version=FORMAT_VERSION, config=plan.config, config_key=plan.key(),
            contents=plan.contents, versions=first.get("versions") or _versions(), seed=plan.seed,
            model=_model_record(self.model) | {"donor": plan.donor, "weights_digest": plan.contents.get("model")},
            schedule={"name": plan.schedule, "steps": steps,
                      "reinit": {k: v for k, v in vars(plan.reinit).items() if k != "donor"}},
            metrics=plan.metrics.to_record(),
            images={"count": len(self.images), "ids": self.images.ids, "digest": plan.contents.get("images")},
            controls=list(plan.controls), methods=[vars(m) for m in plan.methods], target=plan.target,
            timings=_timings(computations, {stem: part["seconds"] for stem, part in parts.items()}, assemble_seconds),
            trace_counts=first.get("trace_counts") or {}, computations=computations,
        )


@dataclass
class Session:
    """One invocation that computed units: when it started, with which packages, and (if it was not
    killed) how long it took, what TensorFlow traced and where its time went. run.json lists them in
    order, so a resumed run keeps the first computation's record and says what each later one added."""
    id: str
    path: Path
    record: dict[str, Any]
    began: float

    @classmethod
    def open(cls, parts: Path) -> "Session":
        import tensorflow as tf

        began = datetime.now(timezone.utc)
        # Unique even for two invocations of one process within a second (a resume right after a kill).
        session_id = f"{began:%Y%m%dT%H%M%S}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        record = {"session": session_id, "started": began.isoformat(timespec="microseconds"),
                  "versions": _versions(), "seconds": None, "trace_counts": None,
                  # the CLI's `threads` setting as TensorFlow took it (0: TensorFlow's default)
                  "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads()}
        session = cls(session_id, parts / f"session-{session_id}.json", record, time.perf_counter())
        write_json(session.path, record)
        return session

    def close(self, trace_counts: dict[str, int], phases: dict[str, float]) -> None:
        self.record |= {"seconds": time.perf_counter() - self.began, "trace_counts": trace_counts, "phases": phases}
        write_json(self.path, self.record)


def _timings(computations: list[dict[str, Any]], unit_seconds: dict[str, float],
             assemble_seconds: float) -> dict[str, Any]:
    """Where a run's time went (docs/results-format.md), over the sessions that ran to their end (a
    killed one's wall time is unknown) and the assembling by the invocation that finished the run.
    Runner overhead is everything but the method calls (KERNEL): total = kernel + overhead, and the
    overhead's parts (the sessions' timed phases, `assemble`, and `other`, the rest) add up to it.
    `load_seconds` (the model and images, before a session starts) is in neither total."""
    whole = [c for c in computations if c.get("seconds") is not None]
    if not whole:
        return {"total_seconds": None, "method_seconds": unit_seconds, "kernel_seconds": None,
                "overhead_seconds": None, "overhead_fraction": None, "overhead_parts": {}, "score_by_metric": {},
                "load_seconds": None}
    total = sum(c["seconds"] for c in whole) + assemble_seconds
    parts: dict[str, float] = defaultdict(float)
    by_metric: dict[str, float] = defaultdict(float)
    for c in whole:
        for name, seconds in c["phases"].items():
            if name.startswith(METRIC_PHASE):
                by_metric[name.removeprefix(METRIC_PHASE)] += seconds
            else:
                parts[name] += seconds
    kernel = parts.pop(KERNEL, 0.0)
    parts["assemble"] = assemble_seconds
    overhead = total - kernel
    parts["other"] = overhead - sum(parts.values())
    return {"total_seconds": total, "method_seconds": unit_seconds, "kernel_seconds": kernel,
            "overhead_seconds": overhead, "overhead_fraction": overhead / total if total else None,
            "overhead_parts": dict(parts), "score_by_metric": dict(by_metric),
            "load_seconds": sum(c.get("load_seconds") or 0.0 for c in whole)}


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
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
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
