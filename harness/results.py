"""The results folder's format: file names, columns, sentinels, the run record, and the one reader and
the atomic writers of its files (docs/results-format.md). TensorFlow-free: the report imports it too.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

# Written into run.json; bumped when a column or a record field changes meaning.
FORMAT_VERSION = 2

SCORES = "scores.csv"
SUMMARY = "summary.csv"
VERDICTS = "verdicts.csv"  # harness.verdicts: pass / fail / inconclusive / undefined per method and test
MAPS = "maps.npz"
RECORD = "run.json"        # written last: a folder with it holds a complete run
PARTS = "parts"            # the runner's finished units, before assembly
SKIPPED = "skipped.json"   # an optional experiment that could not run, and why

# `method` is the family (conf/method/<method>.yaml), `variant` the entry of the run's method list
# (its label: the family's name unless two entries share it). `target_class` is the class a row's
# map explains, `reference_class` the class of the map it is compared with (NO_CLASS: none).
SCORE_COLUMNS = ["model", "method", "variant", "schedule", "step", "block", "image_id", "target_class",
                 "reference_class", "metric", "value", "degenerate", "reason", "seed"]
GROUP_COLUMNS = ["model", "method", "variant", "schedule", "step", "block", "metric"]
# n_degenerate: undefined (NaN) scores, left out of the mean; n_flagged: finite degenerate scores
# (the test's real outcome, e.g. eMPRT's -1 for a collapsed map), counted in the mean and in n.
SUMMARY_COLUMNS = GROUP_COLUMNS + ["n", "mean", "sd", "se", "ci_low", "ci_high", "n_degenerate", "n_flagged"]
# Read as text whatever they hold: a block may be called "NA", an image id may look like a number.
TEXT_COLUMNS = ("model", "method", "variant", "schedule", "block", "image_id", "metric", "reason")

ORIGINAL = "original"              # block of step 0: the trained model
RANDOM_LABELS = "random_labels"    # block of the data randomization test's one step
CONTROL_SCHEDULE = "control"       # schedule of control rows: they sit beside the schedule, not on it
CONTROL_STEP = -1                  # step of control rows
NO_CLASS = -1                      # target_class of a map that explains no class (noise)


def maps_key(label: str, step: int) -> str:
    """Key of a method's maps at a step in maps.npz: `gradient/003`."""
    return f"{label}/{step:03d}"


def split_maps_key(key: str) -> tuple[str, int] | None:
    """(label, step) of a maps.npz key; None for the archive's other arrays (images, ids, steps)."""
    label, _, step = key.rpartition("/")
    return (label, int(step)) if label and step.isdigit() else None


def read_table(path: Path) -> pd.DataFrame:
    """scores.csv, summary.csv or a part: only empty cells are missing, text columns stay text."""
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""],
                        dtype={c: str for c in TEXT_COLUMNS})
    if "reason" in frame.columns:
        frame["reason"] = frame["reason"].fillna("")
    return frame


@dataclass
class RunRecord:
    """run.json: what a run computed and how. Reading tolerates records of older format versions
    (missing fields take their defaults); unknown fields are kept in `extra`."""
    format_version: int = FORMAT_VERSION
    config: dict[str, Any] = field(default_factory=dict)
    config_key: str = ""
    contents: dict[str, str] = field(default_factory=dict)       # digests: model, images, donor
    versions: dict[str, str] = field(default_factory=dict)       # packages of the first computation
    seed: int = 0
    model: dict[str, Any] = field(default_factory=dict)          # name, identity, input, blocks, ...
    schedule: dict[str, Any] = field(default_factory=dict)       # name, steps, reinit
    metrics: dict[str, Any] = field(default_factory=dict)        # MetricSettings.to_record()
    images: dict[str, Any] = field(default_factory=dict)         # count, ids, digest
    controls: list[str] = field(default_factory=list)
    methods: list[dict[str, Any]] = field(default_factory=list)  # name, label, params
    target: str = ""
    timings: dict[str, Any] = field(default_factory=dict)
    trace_counts: dict[str, int] = field(default_factory=dict)
    computations: list[dict[str, Any]] = field(default_factory=list)  # each invocation, oldest first
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunRecord":
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known and v is not None}
        values.setdefault("format_version", 1)
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    @classmethod
    def read(cls, folder: Path) -> "RunRecord":
        return cls.from_json(json.loads((Path(folder) / RECORD).read_text()))

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return data.pop("extra") | data

    def write(self, folder: Path) -> Path:
        return write_json(Path(folder) / RECORD, self.to_json())

    @property
    def model_name(self) -> str:
        return str(self.model.get("name", ""))

    @property
    def schedule_name(self) -> str:
        return str(self.schedule.get("name", ""))

    @property
    def experiment(self) -> str | None:
        """The experiment preset the run was started with, if any."""
        experiment = self.config.get("experiment")
        if isinstance(experiment, dict):  # a Hydra preset node rather than a bare name
            experiment = experiment.get("name")
        return str(experiment) if experiment else None

    @property
    def experiment_name(self) -> str:
        """The experiment the run belongs to (its preset's experiment_name), or ""."""
        return str(self.config.get("experiment_name") or self.experiment or "")

    def method_labels(self) -> list[str]:
        return [str(m.get("label") or m.get("name")) for m in self.methods]


def atomic_write(path: Path, write: Callable[[Path], None], durable: bool = True) -> Path:
    """Write `path` through a temporary file renamed into place: readers see the old file or the new
    one, whole. `durable`: bytes and name synced to disk before returning; without it, the bytes may
    be lost to a power loss, which the reader must detect (runner._readable_part)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600; results are meant to be shared
        if durable:
            _fsync(tmp)  # the bytes reach the disk before the name does: a file that exists is whole
        os.replace(tmp, path)
        if durable:
            _fsync(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _fsync(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def write_json(path: Path, data: Any, durable: bool = True) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str)),
                        durable)


def write_npz(path: Path, arrays: dict[str, np.ndarray], durable: bool = True, compressed: bool = True) -> Path:
    """`arrays` as an .npz file (atomic_write); `compressed=False` stores them as they are (dense
    float32 maps barely compress, and slowly)."""
    save = np.savez_compressed if compressed else np.savez

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a file handle: np.savez would append ".npz" to a bare path
            save(handle, **arrays)
    return atomic_write(path, write, durable)
