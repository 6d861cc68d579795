"""Where the harness keeps what it can rebuild: trained built-in models, and the original maps of runs.

The map cache (`map_cache_dir()`) holds a run's step-0 maps (the trained model's, which every later
step is compared with), one `.npy` file per method entry, named by a hash of everything the maps
depend on (`map_key`). Runs and sweep jobs on the same model, images, method settings, target classes
and seed share them: the first computes and writes, the others read. Safe under concurrent jobs:
a file is written to a temporary name in the same folder and renamed into place (the writers of
`harness.results`), so a reader sees a whole file or none; two jobs that compute the same maps at
once both write identical bytes and the last rename wins. `harness cache clear` empties it.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np

MAPS = "maps"


def cache_dir() -> Path:
    """`$HARNESS_CACHE_DIR`, else `$XDG_CACHE_HOME/saliency-harness`, else `~/.cache/saliency-harness`."""
    explicit = os.environ.get("HARNESS_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "saliency-harness"


def built_once(path: Path, name: str, build: Callable[[Path], None]) -> Path:
    """The cached SavedModel folder `path`, built by `build(path)` first if it is missing. One
    builder per model: a second process waits for the first (an fcntl lock beside the folder) and
    then uses its result."""
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
    return Path(explicit) if explicit else cache_dir() / MAPS


def array_digest(array: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype}|{array.shape}|".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


@lru_cache(maxsize=1)
def code_digest() -> str:
    """The code that computes a map: the method kernels and the model wrappers (their sources) and
    TensorFlow's version. In the key, so an edited kernel or another TensorFlow never reads maps
    computed by the old one."""
    from importlib.metadata import version

    root = Path(__file__).parent
    digest = hashlib.sha256(f"tensorflow {version('tensorflow')}|".encode())
    for package in ("methods", "models"):
        for path in sorted((root / package).rglob("*.py")):
            digest.update(f"{path.relative_to(root)}|".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def hardware() -> dict[str, Any]:
    """What a map's last bits depend on besides the code and the inputs: the CPU model, the GPUs
    TensorFlow sees and its intra-op threads (their number changes how sums are split: on the MNIST
    CNN, SmoothGrad's scores with one and with two threads differ by up to 2e-5). In the key, so a
    cache on a filesystem that several machines share never hands one machine's bits to another."""
    import platform

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


def _path(key: str, folder: Path | None = None) -> Path:
    return (folder or map_cache_dir()) / key[:2] / f"{key}.npy"


def load_maps(key: str) -> np.ndarray | None:
    """The cached maps of `key`, or None (never cached, or unreadable: then they are recomputed)."""
    path = _path(key)
    try:
        return np.load(path, allow_pickle=False)
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


def clear_maps(folder: Path | None = None) -> tuple[int, int]:
    """Remove every cached map file; returns (files, bytes) removed. The trained models stay."""
    folder = folder or map_cache_dir()
    files = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
    size = sum(p.stat().st_size for p in files)
    shutil.rmtree(folder, ignore_errors=True)
    return len(files), size


def main(argv: list[str]) -> int:
    """`harness cache` (where the map cache is and its size) and `harness cache clear`."""
    folder = map_cache_dir()
    if argv == ["clear"]:
        files, size = clear_maps(folder)
        print(f"map cache {folder}: removed {files} files ({size / 2**20:.1f} MiB)")
        return 0
    if argv:
        print(f"harness: error: unknown cache command {' '.join(argv)!r}; valid: `harness cache` "
              "(where and how big), `harness cache clear`", file=sys.stderr)
        return 2
    files = [p for p in folder.rglob("*.npy")] if folder.is_dir() else []
    size = sum(p.stat().st_size for p in files)
    print(f"map cache {folder}: {len(files)} files ({size / 2**20:.1f} MiB); "
          f"trained models under {cache_dir()}; `harness cache clear` empties the map cache")
    return 0
