"""Saliency methods, one family per file, registered by name; the registry is the only list of methods.

Contract: `method(model, images, targets, rng, params) -> maps`: images in the model's input space,
explicit target classes, a seeded numpy Generator as the only randomness, float32 maps [batch, H, W, C]
(Grad-CAM, CAM and XRAI repeat their 2-D map in every channel). `params` is the method's config minus
`name`, plus the runner's keys (`RUNNER_KEYS`); unknown settings are errors.

Adding a method: a module here with a function decorated `@register("name", ...)` and
`conf/method/name.yaml`, the one place its defaults live. A setting's rule is `setting_rules()`'s, by
name; a new setting name declares its rule in `register(..., rules={...})` (tests/test_config_checks.py).
"""
from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.rules import FLAG, NULL, TEXT, Rule, check, number, one_of, whole
from harness.errors import HarnessError
from harness.batching import rows_per_call  # noqa: F401  (the methods call it as methods.rows_per_call)

Method = Callable[..., np.ndarray]
# reference(pair, x, call_model_function, call_model_args, s) -> PAIR's [H, W, C] map of the one image x.
Reference = Callable[..., np.ndarray]
# rows(s, image_shape) -> (forward+backward rows, forward-only rows) the method costs per image.
Rows = Callable[[Mapping[str, Any], tuple[int, ...]], tuple[int, int]]
OUTPUTS = ("logit", "probability")
RUNNER_KEYS = ("gradcam_endpoint",)  # added by the runner to every method's parameters


def one_gradient_row(s: Mapping[str, Any], image_shape: tuple[int, ...]) -> tuple[int, int]:
    return 1, 0


@dataclass(frozen=True)
class MethodSpec:
    """A registered method and what the benchmark and the tests need to know of it."""
    name: str
    method: Method                       # the registered callable (the contract above)
    defaults: Mapping[str, Any]          # conf/method/<name>.yaml without `name`
    reference: Reference | None = None   # PAIR's map of one image; None: PAIR has no such method
    rows: Rows = one_gradient_row        # model rows per image (the raw-TF limit's work in the bench)
    quick: Mapping[str, Any] = field(default_factory=dict)  # cheap settings: tests, `bench --quick`
    stochastic: bool = False             # draws noise from rng (PAIR draws its own: no map equality)
    sequential: bool = False             # each path step needs the last one's gradients
    rules: Mapping[str, Rule] = field(default_factory=dict)  # its own settings' rules (setting_rules())


_REGISTRY: dict[str, Method] = {}
_SPECS: dict[str, MethodSpec] = {}


def register(name: str, **spec: Any) -> Callable[[Method], Method]:
    """Register `fn(model, x, targets, rng, s)` as method `name`, with conf/method/<name>.yaml's defaults and
    `spec` (MethodSpec's fields from `reference` on): the registered callable checks `params` into `s`,
    resolves `max_batch` and converts to float32 / int32."""
    defaults = config_defaults(name)

    def add(fn: Method) -> Method:
        @functools.wraps(fn)
        def method(model, images, targets, rng, params) -> np.ndarray:
            s = settings(name, params, defaults)
            x, t = np.asarray(images, np.float32), np.asarray(targets, np.int32)
            if "max_batch" in s:
                s["max_batch"] = rows_per_call(s["max_batch"], x.shape[1:])
            return np.asarray(fn(model, x, t, rng, s), np.float32)
        _REGISTRY[name] = method
        _SPECS[name] = MethodSpec(name, method, defaults, **spec)
        return method
    return add


def config_defaults(name: str) -> dict[str, Any]:
    """The settings in conf/method/<name>.yaml (without `name`): method `name`'s defaults."""
    from harness.config import CONFIG_DIR, group_defaults

    if not (CONFIG_DIR / "method" / f"{name}.yaml").is_file():
        raise HarnessError(f"method {name} has no config: add {CONFIG_DIR / 'method' / name}.yaml "
                           "with its default settings")
    config = group_defaults("method", name)
    if config.pop("name", name) != name:
        raise HarnessError(f"{CONFIG_DIR / 'method' / name}.yaml names another method")
    return config


_FAMILY_RULES: dict[str, Rule] = {}


def shared_settings(**rules: Rule) -> None:
    """Declare the rules of settings a family's methods share (so this registry imports no family by name)."""
    _FAMILY_RULES.update(rules)


@functools.cache
def setting_rules() -> dict[str, Rule]:
    """What a method setting may be, by its name: one rule for every method that takes it."""
    from harness.models.backends import GRAPH_MODES

    _load_families()
    return _FAMILY_RULES | {
        "output": one_of(*OUTPUTS),
        "max_batch": one_of("auto") | whole(1),
        "samples": whole(1),                     # noisy copies (SmoothGrad, VarGrad, IG-SmoothGrad)
        "spread": number(0),                     # noise sigma / the image's value range
        "squared": FLAG,
        "steps": whole(1),                       # path points (integrated.path: trapezoid needs 2)
        "baseline_value": number(),
        "blur_sigma": number(0),
        "max_sigma": number(above=0),
        "grad_step": number(above=0),
        "sqrt": FLAG,
        "fraction": number(above=0, high=1),     # Guided IG: features moved per step
        "max_dist": number(0),
        "size": whole(1),                        # occlusion window (at most the image side: at run time)
        "stride": whole(1),
        "value": number(),
        "endpoint": NULL | TEXT,
        "normalize": FLAG,
        "graph_mode": one_of(*GRAPH_MODES),
        "gradcam_endpoint": NULL | TEXT,         # RUNNER_KEYS
    }


def rules(name: str) -> dict[str, Rule]:
    """The rules of method `name`'s settings: setting_rules()' for its settings, overridden by its own."""
    shared = setting_rules()
    spec = _SPECS[name]
    return {key: shared[key] for key in (*spec.defaults, *RUNNER_KEYS) if key in shared} | dict(spec.rules)


def _unknown(params: Mapping[str, Any], defaults: Mapping[str, Any]) -> list[str]:
    return sorted(set(params) - set(defaults) - set(RUNNER_KEYS))


def settings(method: str, params: Mapping[str, Any] | None, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The method's defaults overridden by `params`; unknown keys and values its rules refuse are errors."""
    params = dict(params or {})
    if unknown := _unknown(params, defaults):
        raise HarnessError(f"unknown setting(s) {', '.join(unknown)} for method {method}; "
                           f"valid: {', '.join(sorted(defaults))}")
    merged = {**defaults, **params}
    check(merged, rules(method), where=f"method {method}: ")
    return merged


def check_entry(entry: Mapping[str, Any], prefix: str) -> None:
    """Check a run config's method entry (`name`, optional `label`, settings); `prefix`: `method.` or `methods[2].`."""
    name = entry["name"]
    valid = spec(name).defaults
    params = {k: v for k, v in entry.items() if k not in ("name", "label")}
    if unknown := _unknown(params, valid):
        raise HarnessError(f"unknown setting {prefix}{unknown[0]} of method {name}; valid: {', '.join(sorted(valid))}")
    check(entry, {"label": NULL | TEXT}, prefix=prefix)
    check(params, rules(name), prefix=prefix)


def get(name: str) -> Method:
    _load_families()
    if name not in _REGISTRY:
        raise HarnessError(f"unknown saliency method {name!r}; valid: {', '.join(names())}")
    return _REGISTRY[name]


def spec(name: str) -> MethodSpec:
    """Method `name` with what the benchmark and the tests need to know of it."""
    get(name)
    return _SPECS[name]


def defaults(name: str) -> dict[str, Any]:
    """The settings method `name` runs with when its config gives none."""
    return dict(spec(name).defaults)


def names() -> list[str]:
    _load_families()
    return sorted(_REGISTRY)


def _load_families() -> None:
    """Import every family module of this package, which registers its methods."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
