"""Where a model comes from. Every source ends in the same `ModelUnderTest`.

`model.source` is one of
- `builtin:NAME`: a built-in model (trained here, cached; loaded as a SavedModel)
- `http(s)://...`: a TF-Hub handle, resolved by `tensorflow_hub` (download, cache, `TFHUB_CACHE_DIR`)
- a folder with `saved_model.pb`: a TF2 SavedModel (callable, as TF-Hub models are)
- a `.keras` / `.h5` file: a Keras model
- `keras_applications:NAME`: `keras.applications.NAME` (weights: null or a local file)
- `deeplabv3plus:BACKBONE`: DeepLab v3+ on a keras.applications ResNet (harness.zoo.deeplab; weights:
  null or a local file; a segmentation model)
- `memory:DIGEST`: a Keras model object of this process (`register_model`; harness.sanity_check, docs/api.md)
"""
from __future__ import annotations

import hashlib
import weakref
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from harness.errors import HarnessError
from harness.models.backends import KerasBackend, SavedModelBackend
from harness.models.blocks import clean_name
from harness.models.export import initializer_spec, read_metadata
from harness.models.wrapper import (InputSpec, ModelUnderTest, ModelVariable, build_blocks,
                                    check_logit_output, execution_order, first_line)

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def classify(source: str) -> str:
    if not source:
        raise HarnessError("model.source is empty; give a built-in name (builtin:mnist_cnn), a TF-Hub "
                           "handle (http(s)://...), a SavedModel folder, a .keras/.h5 file or "
                           "keras_applications:NAME")
    for prefix in ("builtin", "keras_applications", "deeplabv3plus", "memory"):
        if source.startswith(f"{prefix}:"):
            return prefix
    if source.startswith(("http://", "https://")):
        return "hub"
    path = Path(source).expanduser()
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return "saved_model"
    if path.suffix in KERAS_SUFFIXES and path.is_file():
        return "keras_file"
    if path.is_dir():
        raise HarnessError(f"model source {source!r} is a folder without saved_model.pb, not a SavedModel")
    if path.suffix in KERAS_SUFFIXES:
        raise HarnessError(f"model source {source!r}: no such Keras file")
    raise HarnessError(f"model source {source!r} does not resolve: expected builtin:NAME, an http(s) TF-Hub "
                       "handle, an existing SavedModel folder, a .keras/.h5 file, keras_applications:NAME or "
                       "deeplabv3plus:BACKBONE")


def load_model(cfg: Mapping[str, Any], log=print) -> ModelUnderTest:
    """Build the ModelUnderTest a `model` config describes."""
    source = str(cfg.get("source") or "")
    kind = classify(source)
    loader = {"keras_file": _load_keras_file, "keras_applications": _load_keras_applications,
              "deeplabv3plus": _load_deeplab, "memory": _load_memory}.get(kind)
    from harness import segmentation

    model = loader(source, cfg, log) if loader else _load_saved_model(source, cfg, log, kind)
    model = segmentation.from_config(model, cfg)  # per-pixel logits -> one reduced score per class
    model.num_classes = check_logit_output(model)
    return model


def _load_saved_model(source: str, cfg, log, kind: str) -> ModelUnderTest:
    """A built-in model, a TF-Hub handle or a SavedModel folder (kind builtin, hub, saved_model)."""
    import tensorflow_hub as hub

    path, identity, name = source, source, None
    if kind == "builtin":
        from harness import zoo

        name = source.split(":", 1)[1]
        built = zoo.model_path(name, log=log)
        path, identity = str(built), f"builtin:{built.name}"
    elif kind == "hub":
        try:
            path = hub.resolve(source)
        except Exception as error:  # noqa: BLE001 - hub raises many types for an unreachable handle
            raise HarnessError(f"TF-Hub handle {source!r} could not be resolved: {first_line(error)}") from error
    else:
        identity = f"{source}#{_digest(Path(source) / 'saved_model.pb')}"
    try:
        loaded = hub.load(path)
    except Exception as error:  # noqa: BLE001
        raise HarnessError(f"{path!r} is not a loadable SavedModel: {first_line(error)}") from error
    metadata = read_metadata(path)
    call = _callable_of(loaded, path)
    try:
        shape = list(loaded.__call__.concrete_functions[0].structured_input_signature[0][0].shape)
    except (AttributeError, IndexError, TypeError):  # no traced `__call__`: a serving signature
        shape = None
    spec = _input_spec(cfg, metadata, shape)
    raw = list(getattr(loaded, "variables", []))
    if not raw:
        raise HarnessError(f"SavedModel {path!r} exposes no variables; nothing to randomize")
    initializers = metadata.get("initializers", {})
    variables = [ModelVariable(clean_name(v.name), v, bool(v.trainable), initializers.get(clean_name(v.name)))
                 for v in execution_order(call, spec, raw)]
    name = cfg.get("name") or name or metadata.get("name") or Path(path.rstrip("/")).name
    return _model(name, identity, kind, call, spec, variables, cfg, log, SavedModelBackend(loaded), metadata)


def _callable_of(loaded, path: str):
    """The SavedModel's forward pass: its `__call__` (TF2 hub style) or its single serving signature."""
    if callable(loaded):
        return lambda x: loaded(x)
    signature = getattr(loaded, "signatures", {}).get("serving_default")
    if signature is not None:
        outputs = list(signature.structured_outputs)
        if len(outputs) != 1:
            raise HarnessError(f"SavedModel {path!r}: serving signature has outputs {outputs}; "
                               "expected one logit output")
        key = outputs[0]
        input_key = list(signature.structured_input_signature[1])[0]
        return lambda x: signature(**{input_key: x})[key]
    raise HarnessError(f"SavedModel {path!r} is neither callable nor has a serving_default signature")


def _load_keras_file(path: str, cfg, log) -> ModelUnderTest:
    import keras

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001
        raise HarnessError(f"{path!r} is not a loadable Keras model: {first_line(error)}") from error
    return _from_keras(model, cfg, kind="keras_file", identity=f"{path}#{_digest(Path(path))}", log=log)


def _load_keras_applications(source: str, cfg, log) -> ModelUnderTest:
    import keras

    name = source.split(":", 1)[1]
    builder = getattr(keras.applications, name, None)
    if builder is None or not callable(builder):
        valid = [n for n in dir(keras.applications) if n[0].isupper()]
        raise HarnessError(f"unknown keras.applications model {name!r}; valid: {', '.join(valid)}")
    weights = cfg.get("weights")
    if weights and not Path(weights).is_file():
        raise HarnessError(f"keras.applications weights file {weights!r} does not exist (no downloads here: "
                           "use weights: null or a local file)")
    kwargs = {"weights": weights or None}
    if cfg.get("input", {}).get("size"):
        kwargs["input_shape"] = (*cfg["input"]["size"], cfg["input"].get("channels", 3))
    model = builder(**kwargs, classifier_activation=None)
    return _from_keras(model, cfg, kind="keras_applications", identity=f"{source}#{weights or 'random'}", log=log)


def _load_deeplab(source: str, cfg, log) -> ModelUnderTest:
    import keras

    from harness.zoo.deeplab import deeplabv3plus

    names = (cfg.get("segmentation") or {}).get("class_names")
    if not names:
        raise HarnessError(f"model source {source!r} needs segmentation.class_names (its number of classes)")
    size = (cfg.get("input") or {}).get("size") or [256, 256]
    keras.utils.set_random_seed(0)  # random weights: the same ones on every load
    model = deeplabv3plus(len(names), (*size, 3), backbone=source.split(":", 1)[1], weights=cfg.get("weights"))
    return _from_keras(model, cfg, kind="deeplabv3plus", identity=f"{source}#{cfg.get('weights') or 'random'}", log=log)


def _from_keras(model, cfg, kind: str, identity: str, log=print) -> ModelUnderTest:
    spec = _input_spec(cfg, {}, list(model.inputs[0].shape))
    call = lambda x: model(x, training=False)  # noqa: E731 - inference mode always (BN statistics)
    keras_of = {id(v.value.handle): v for v in model.variables}
    variables = []
    for t in execution_order(call, spec, [v.value for v in model.variables]):
        v = keras_of[id(t.handle)]
        variables.append(ModelVariable(v.path, t, bool(v.trainable), _keras_initializer(model, v.path)))
    return _model(cfg.get("name") or model.name, identity, kind, call, spec, variables, cfg, log, KerasBackend(model))


def _keras_initializer(model, path: str) -> dict | None:
    """The construction-time initializer of a Keras variable, as the harness's spec dict."""
    layer_name, _, attribute = path.rpartition("/")
    try:
        layer = model.get_layer(layer_name.split("/")[-1])
    except ValueError:
        return None
    initializer = getattr(layer, f"{attribute}_initializer", None)
    return initializer_spec(initializer) if initializer is not None else None


# -- in memory ------------------------------------------------------------------------------------
# Model objects handed to harness.sanity_check / harness.explain, by source string. Weakly held: the
# caller's variable keeps a model alive, the registry never does.
_MEMORY: "weakref.WeakValueDictionary[str, Any]" = weakref.WeakValueDictionary()


def register_model(model) -> str:
    """The source string (`memory:DIGEST`) under which `model`, a Keras 3 model object, loads. The
    digest covers its structure (config JSON) and every weight's path, dtype, shape and bytes: the
    same model gives the same source, so the same run key, on every call."""
    import keras

    if not isinstance(model, keras.Model):
        raise HarnessError(f"model {type(model).__name__!r} is not a Keras 3 model; give a keras.Model or a source "
                           "string (builtin:NAME, a .keras/.h5 file, a SavedModel folder, a TF-Hub handle)")
    digest = hashlib.sha256(model.to_json().encode())
    for v in model.variables:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(v.value))
        digest.update(f"{v.path}|{value.dtype}|{value.shape}|".encode())
        digest.update(value.tobytes())
    source = f"memory:{digest.hexdigest()[:16]}"
    _MEMORY[source] = model
    return source


def _load_memory(source: str, cfg, log) -> ModelUnderTest:
    model = _MEMORY.get(source)
    if model is None:
        raise HarnessError(f"model source {source!r}: no model object of this process has that digest "
                           "(memory: sources come from harness.sanity_check)")
    return _from_keras(model, cfg, kind="memory", identity=source, log=log)


def _input_spec(cfg, metadata: dict, shape: list | None) -> InputSpec:
    """Config first, then the model's own metadata, then what its input signature says."""
    given, meta = dict(cfg.get("input") or {}), metadata.get("input", {})
    shape = shape if shape and len(shape) == 4 else [None] * 4
    size = given.get("size") or meta.get("size") or (shape[1] and shape[2] and [int(shape[1]), int(shape[2])])
    channels = given.get("channels") or meta.get("channels") or int(shape[3] or 3)
    value_range = given.get("value_range") or meta.get("value_range") or [0.0, 1.0]
    return InputSpec(tuple(int(s) for s in size) if size else None, int(channels),
                     (float(value_range[0]), float(value_range[1])))


MIN_CASCADE_BLOCKS = 3


def _model(name, identity, kind, call, spec, variables, cfg, log, backend, metadata=None) -> ModelUnderTest:
    """The ModelUnderTest, its blocks per the config; warns when there are too few for a cascade to say
    anything (depth 1 over a model whose layers sit one scope deeper)."""
    blocks_cfg = dict(cfg.get("blocks") or {})
    blocks = build_blocks(variables, depth=int(blocks_cfg.get("depth") or 1), names=blocks_cfg.get("names"), model=name)
    if len(blocks) < MIN_CASCADE_BLOCKS:
        log(f"warning: model {name} has only {len(blocks)} block{'s' * (len(blocks) != 1)} "
            f"({', '.join(b.name for b in blocks)}): a schedule over fewer than {MIN_CASCADE_BLOCKS} is no cascade; "
            "raise model.blocks.depth or list model.blocks.names")
    return ModelUnderTest(name=name, identity=identity, source_kind=kind, call=call, input_spec=spec,
                          variables=variables, blocks=blocks, metadata=metadata or {}, backend=backend)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]

