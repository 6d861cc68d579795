"""Where the harness keeps what it can rebuild: trained built-in models, and the original maps of runs.

The map cache holds a run's step-0 maps, one `.npy` file per method entry, named by a hash of all they
depend on (`map_key`), so runs and sweep jobs on the same model, images, settings and seed share them.
Files are written to a temporary name and renamed into place (harness.results.atomic_write): a reader
sees a whole file or none, and two jobs writing the same maps write the same bytes. docs/sweeps.md.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np


def cache_dir() -> Path:
    """`$HARNESS_CACHE_DIR`, else `$XDG_CACHE_HOME/saliency-harness`, else `~/.cache/saliency-harness`."""
    explicit = os.environ.get("HARNESS_CACHE_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "saliency-harness"


def built_once(path: Path, name: str, build: Callable[[Path], None]) -> Path:
    """The cached SavedModel folder `path`, built by `build(path)` first if it is missing. One
    builder per model: a second process waits for the first (an fcntl lock beside the folder)."""
    if not (path / "saved_model.pb").is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / f".{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (path / "saved_model.pb").is_file():
                build(path)
    return path


def map_cache_dir() -> Path:
    """`$HARNESS_MAP_CACHE_DIR`, else `<cache_dir()>/maps`."""
    explicit = os.environ.get("HARNESS_MAP_CACHE_DIR")
    return Path(explicit) if explicit else cache_dir() / "maps"


def array_digest(array: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype}|{array.shape}|".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


@lru_cache(maxsize=1)
def code_digest() -> str:
    """Every source file of the `harness` package (the runner picks targets and seeds, the segmentation
    reduction decides what a map explains, not only the kernels) and TensorFlow's and Keras's versions:
    edited code or another TensorFlow never reads maps computed by the old one."""
    from importlib.metadata import version

    root = Path(__file__).parent
    digest = hashlib.sha256(f"tensorflow {version('tensorflow')}|keras {version('keras')}|".encode())
    for path in sorted(root.rglob("*.py")):
        digest.update(f"{path.relative_to(root)}|".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def structure_digest(model) -> str:
    """What a model computes besides its weights, stable across loads: a Keras model's config (JSON),
    else its traced forward graph without load-specific names (`graph_digest`). In the run key and the
    map key, so the same weights in another graph are another run. Computed once per model."""
    return model.compiled("structure_digest", lambda: _structure_digest(model))


def _structure_digest(model) -> str:
    if model.keras_model is not None:
        try:
            config = json.loads(model.keras_model.to_json())
            config.pop("compile_config", None)  # the optimizer and loss: training, not what the model computes
            return hashlib.sha256(f"keras|{json.dumps(config, sort_keys=True)}".encode()).hexdigest()
        except (NotImplementedError, TypeError, ValueError):  # a subclassed model without a config
            pass
    import tensorflow as tf

    return graph_digest(tf.function(model.logits).get_concrete_function(model.tensor_spec()).graph.as_graph_def())


def graph_digest(graph_def) -> str:
    """SHA-256 of a GraphDef and the library functions it calls, without what changes from one load
    (or trace) of the same model to the next: the outer graph's node names, function names, and
    TensorFlow's `_`-prefixed annotations. Names become positions: the outer graph's nodes in order,
    functions in the order they are first called."""
    import tensorflow as tf

    library = {f.signature.name: f for f in graph_def.library.function}
    order: list[str] = []

    def visit(nodes) -> None:
        for node in nodes:
            for value in node.attr.values():  # the functions a node calls (a call's `f`, a loop's `body`)
                for name in [value.func.name] if value.HasField("func") else [f.name for f in value.list.func]:
                    if name in library and name not in order:
                        order.append(name)
                        visit(library[name].node_def)
    visit(graph_def.node)
    functions = {name: f"f{i}" for i, name in enumerate(order)}
    nodes = {node.name: f"n{i}" for i, node in enumerate(graph_def.node)}
    canonical = tf.compat.v1.GraphDef()
    for node in graph_def.node:
        copy = canonical.node.add()
        copy.CopyFrom(node)
        copy.name = nodes[node.name]
        copy.input[:] = [_renamed_input(name, nodes) for name in node.input]
        _canonical_attrs(copy, functions)
    for name in order:
        copy = canonical.library.function.add()
        copy.CopyFrom(library[name])
        copy.signature.name = functions[name]
        _drop_private(copy.attr)
        for attrs in copy.arg_attr.values():
            _drop_private(attrs.attr)
        for node in copy.node_def:
            _canonical_attrs(node, functions)
    return hashlib.sha256(canonical.SerializeToString(deterministic=True)).hexdigest()


def _renamed_input(name: str, nodes: dict[str, str]) -> str:
    control, bare = ("^", name[1:]) if name.startswith("^") else ("", name)
    node, colon, port = bare.partition(":")
    return f"{control}{nodes.get(node, node)}{colon}{port}"


def _canonical_attrs(node, functions: dict[str, str]) -> None:
    _drop_private(node.attr)
    for value in node.attr.values():
        if value.HasField("func"):
            value.func.name = functions.get(value.func.name, value.func.name)
        for f in value.list.func:
            f.name = functions.get(f.name, f.name)


def _drop_private(attrs) -> None:
    for key in [key for key in attrs if key.startswith("_")]:
        del attrs[key]


def hardware() -> dict[str, Any]:
    """What a map's last bits depend on besides the code and the inputs: the CPU, the GPUs and the
    intra-op threads (their number changes how sums are split). In the key, so a cache that several
    machines share never hands one machine's bits to another."""
    import tensorflow as tf

    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    except OSError:
        cpu = platform.processor()
    gpus = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
            for gpu in tf.config.list_physical_devices("GPU")]
    threads = tf.config.threading.get_intra_op_parallelism_threads() or len(os.sched_getaffinity(0))
    return {"machine": platform.machine(), "cpu": cpu, "gpus": gpus, "intra_op_threads": threads}


def map_key(parts: dict[str, Any]) -> str:
    """The cache key of a set of maps: a hash of `parts` (JSON, keys sorted) and of the code."""
    text = json.dumps(parts | {"code": code_digest()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _path(key: str) -> Path:
    return map_cache_dir() / key[:2] / f"{key}.npy"


def load_maps(key: str) -> np.ndarray | None:
    """The cached maps of `key`, or None (never cached, or unreadable: then they are recomputed)."""
    try:
        return np.load(_path(key), allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None


def store_maps(key: str, maps: np.ndarray) -> None:
    """Write maps under `key` atomically. A failed write (a full disk, a cache cleared meanwhile) is
    no error: the cache only saves time."""
    from harness.results import atomic_write

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a handle: np.save would append ".npy" to a bare path
            np.save(handle, np.ascontiguousarray(maps), allow_pickle=False)

    try:
        atomic_write(_path(key), write)
    except OSError:
        pass


def main(argv: list[str]) -> int:
    """`harness cache` (where the map cache is and its size) and `harness cache clear` (the trained
    models stay)."""
    folder = map_cache_dir()
    if argv not in ([], ["clear"]):
        print(f"harness: error: unknown cache command {' '.join(argv)!r}; valid: `harness cache` "
              "(where and how big), `harness cache clear`", file=sys.stderr)
        return 2
    files = [p for p in folder.rglob("*" if argv else "*.npy") if p.is_file()] if folder.is_dir() else []
    size = sum(p.stat().st_size for p in files) / 2**20
    if argv:
        shutil.rmtree(folder, ignore_errors=True)
        print(f"map cache {folder}: removed {len(files)} files ({size:.1f} MiB)")
    else:
        print(f"map cache {folder}: {len(files)} files ({size:.1f} MiB); "
              f"trained models under {cache_dir()}; `harness cache clear` empties the map cache")
    return 0
