"""Where the harness keeps what it can rebuild: trained built-in models."""
import os
from pathlib import Path


def cache_dir() -> Path:
    """`$HARNESS_CACHE_DIR`, else `$XDG_CACHE_HOME/saliency-harness`, else `~/.cache/saliency-harness`."""
    explicit = os.environ.get("HARNESS_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "saliency-harness"
