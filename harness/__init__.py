"""Sanity checks for saliency maps: a benchmarking harness (Adebayo et al., NeurIPS 2018 and successors)."""
__version__ = "0.1.0"

# The Python API (harness.api, docs/api.md), imported on first use: `import harness` stays cheap
# (no TensorFlow, no Hydra) and changes nothing process-wide.
_API = ("sanity_check", "explain", "load", "Result", "HarnessError")


def __getattr__(name: str):
    if name in _API:
        from harness import api

        return getattr(api, name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
