"""Export a Keras model as a TF-Hub-style callable SavedModel, with the harness's metadata beside it:
the built-in models are, so that the offline default takes TF-Hub models' loading path (docs/protocol.md §8.1).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import tensorflow as tf

METADATA_FILE = "harness.json"


class _HubStyle(tf.__internal__.tracking.AutoTrackable):
    # Not tf.Module: its read-only `variables` property cannot hold the plain lists TF-Hub expects.
    def __init__(self, model, input_shape):
        super().__init__()
        self.model = model
        self.variables = list(model.variables)
        self.trainable_variables = list(model.trainable_variables)
        self.__call__ = tf.function(lambda x: model(x, training=False),
                                    input_signature=[tf.TensorSpec([None, *input_shape], tf.float32)])


def export_hub_style(model, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Save `model` as a callable SavedModel at `path`; `metadata` goes to `harness.json` inside it."""
    path = Path(path)
    input_shape = tuple(model.inputs[0].shape[1:])
    tf.saved_model.save(_HubStyle(model, input_shape), str(path))
    if metadata is not None:
        write_metadata(path, metadata)
    return path


def write_metadata(path: Path, metadata: dict[str, Any]) -> None:
    (Path(path) / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True))


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The sidecar written by `export_hub_style`, or {} for a SavedModel the harness did not make."""
    file = Path(path) / METADATA_FILE
    return json.loads(file.read_text()) if file.is_file() else {}


def initializer_spec(initializer) -> dict | None:
    """Translate a Keras initializer into the spec dicts `harness.schedules` draws from (stored with
    an exported model, read back by harness.models.sources)."""
    config = initializer.get_config()
    kind = type(initializer).__name__
    if kind in ("TruncatedNormal", "RandomNormal"):
        return {"kind": "truncated_normal" if kind == "TruncatedNormal" else "normal", "std": config["stddev"],
                "mean": config.get("mean", 0.0)}
    if kind == "RandomUniform":
        return {"kind": "uniform", "low": config["minval"], "high": config["maxval"]}
    if kind in ("Zeros", "Ones", "Constant"):
        return {"kind": "constant", "value": {"Zeros": 0.0, "Ones": 1.0}.get(kind, config.get("value"))}
    if kind in ("GlorotUniform", "HeNormal", "HeUniform", "GlorotNormal", "LecunNormal", "LecunUniform"):
        return {"kind": "variance_scaling", "scale": {"He": 2.0}.get(kind[:2], 1.0),
                "mode": "fan_avg" if kind.startswith("Glorot") else "fan_in",
                "distribution": "uniform" if kind.endswith("Uniform") else "truncated_normal"}
    if kind == "VarianceScaling":
        return {"kind": "variance_scaling", "scale": config["scale"], "mode": config["mode"],
                "distribution": config["distribution"]}
    return None
