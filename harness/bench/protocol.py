"""Scenario `protocol`: the paper's Inception protocol end to end, through the real runner.

The cascading test of Adebayo et al. 2018 (docs/protocol.md) on a random-weight Keras InceptionV3 at
299 x 299 in the paper's 17 blocks, top-down, the protocol's 8 methods at the paper's settings
(SmoothGrad 50 samples, IG 50 steps, IG-SmoothGrad 50 x 50), its metrics, no controls: 18 model
states x 8 methods. `paper` settings (default on a GPU) run the methods as the paper did over
`--protocol-steps` steps (all: nothing projected but the 200 images). `scaled` settings (default on
a CPU) run fewer samples / steps on the original maps and one step, and project each method's kernel
seconds per row to the paper's rows, plus each state's non-kernel seconds and a whole-model
re-initialization (an upper bound), to all 18 states. Tracing, once per run, is reported apart.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from harness import methods
from harness.bench.common import WARM_UP, Options, markdown, quick_settings
from harness.config import group_defaults
from harness.data import ImageSet, load_images
from harness.reproduce import compose_run

METHODS = ("gradient", "smoothgrad", "gradient_x_input", "integrated_gradients", "ig_smoothgrad",
           "guided_backprop", "gradcam", "guided_gradcam")
# Fewer noise samples / path steps on a CPU: each still fills one compiled call (15 rows at 299 px).
SCALED = {"smoothgrad": {"samples": 15}, "integrated_gradients": {"steps": 15},
          "ig_smoothgrad": {"samples": 3, "steps": 5}}
PAPER_IMAGES = 200
AUTHORS_SECONDS_PER_IMAGE = 1.5 * 3600  # the authors' notebook: ~1.5 h per image, unaccelerated
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
MODEL = "inception_v3_protocol"


def device() -> str:
    """The accelerator TensorFlow places ops on: a GPU's name when one is visible, else the CPU."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        more = f" (+{len(gpus) - 1} more)" if len(gpus) > 1 else ""
        return f"GPU: {details.get('device_name', gpus[0].name)}{more}"
    return f"CPU ({os.cpu_count()} cores)"


def defaults() -> tuple[str, int | None]:
    """(settings, steps) when not given: the paper's, every step, on a GPU; scaled, one step, on a CPU."""
    return ("paper", None) if device().startswith("GPU") else ("scaled", 1)


def paper_blocks(model) -> list:
    """The model's variables in the paper's 17 blocks, input to output. Keras orders the layers of
    InceptionV3 by depth, so each block is a run of them: the stem's five convolutions (each with its
    batch norm) up to the second max pooling are Conv2d_1a_3x3 .. Conv2d_4a_3x3; each Inception
    module's layers up to its `mixedN` concatenation are Mixed_5b .. Mixed_7c; the classifier Logits."""
    from harness.models.wrapper import Block

    names = group_defaults("model", "inception_v3_hub")["blocks"]["names"]
    owner: dict[str, str] = {}
    convolutions, poolings, module = 0, 0, 0
    for layer in model.keras_model.layers:
        kind = type(layer).__name__
        poolings += kind == "MaxPooling2D"
        module += layer.name == f"mixed{module}"
        if layer.weights:
            convolutions += kind == "Conv2D" and poolings < 2  # the stem's
            owner[layer.name] = names[-1 if kind == "Dense" else convolutions - 1 if poolings < 2 else 5 + module]
    blocks: dict[str, list] = {name: [] for name in names}
    for v in model.variables:
        blocks[owner[v.name.rsplit("/", 1)[0]]].append(v)
    empty = [name for name, members in blocks.items() if not members]
    if convolutions != 5 or module != 11 or empty:
        raise RuntimeError(f"InceptionV3's layers are not as expected: {convolutions} stem convolutions, "
                           f"{module} modules, blocks without variables: {empty}")
    return [Block(name, tuple(members)) for name, members in blocks.items()]


def method_entries(settings: str) -> list[dict]:
    """The 8 methods at `settings`: paper (conf/method/ defaults), scaled (SCALED) or quick (each
    method's registered quick settings)."""
    chosen = {"paper": {}, "scaled": SCALED, "quick": quick_settings()}[settings]
    return [{"name": m, **chosen.get(m, {})} for m in METHODS]


@dataclasses.dataclass
class Measured:
    """One timed run of the protocol: its run.json timings and each unit's kernel seconds."""
    images: int
    settings: str
    states: int                                  # model states run: the original and the steps measured
    all_states: int                              # the full cascade's: 1 + blocks
    total_s: float                               # run.json total_seconds
    overhead_s: float                            # run.json overhead_seconds
    unit_s: dict[str, list[float]]               # method -> its units' kernel seconds, one per state
    rows: dict[str, int]                         # method -> model rows per image at the measured settings
    paper_rows: dict[str, int]                   # ... at the paper's settings
    reinit_s: float                              # re-initializing the whole model and restoring it


def project(m: Measured) -> tuple[float, str]:
    """(seconds per image for the full protocol at the paper's settings, what was measured and how
    it was projected). Every state costs the same work: all 8 methods' maps recomputed and scored."""
    if m.settings == "paper" and m.states == m.all_states:
        return m.total_s / m.images, (f"measured: all {m.all_states} model states at the paper's settings, "
                                      f"{m.images} image(s), {m.total_s:.4g} s; projected: nothing but x200 images")
    kernel_state = sum(np.mean(seconds) / m.rows[name] * m.paper_rows[name] for name, seconds in m.unit_s.items())
    other_state = m.overhead_s / m.states + m.reinit_s
    per_image = m.all_states * (kernel_state + other_state) / m.images
    scaled = ", ".join(f"{name} {m.rows[name]} of {m.paper_rows[name]} rows" for name in m.rows
                       if m.rows[name] != m.paper_rows[name])
    return per_image, (
        f"measured: the original maps and {m.states - 1} cascade step(s) ({m.states} of {m.all_states} states), "
        f"{m.images} image(s), {m.total_s:.4g} s at {m.settings} settings ({scaled or 'as the paper'}); projected: "
        f"each method's kernel s per model row x the paper's rows ({sum(m.paper_rows.values()):,} per image and "
        f"state) = {kernel_state / m.images:.4g} s per image and state, plus the measured non-kernel s per state "
        f"({m.overhead_s / m.states:.3g} s) and a whole-model re-initialization ({m.reinit_s:.3g} s, an upper "
        f"bound for any step), x {m.all_states} states, then x{PAPER_IMAGES} images")


def run_protocol(images: int, steps: int | None, settings: str, log: Callable[[str], None]) -> tuple[Measured, dict]:
    """One timed run of the protocol through the runner (after tracing); the one-off costs apart."""
    import keras
    from omegaconf import open_dict

    from harness.models import load_model
    from harness.runner import Plan, Runner, _stem
    from harness.schedules import Randomizer, schedule_steps

    began = time.perf_counter()
    keras.utils.set_random_seed(0)
    cfg = group_defaults("model", "inception_v3") | {"name": MODEL}
    model = load_model(cfg, log=lambda _: None)
    model.blocks = paper_blocks(model)
    names = [PHOTOS[i % len(PHOTOS)] for i in range(images)]
    image_set = load_images({"source": "skimage", "names": names[:len(PHOTOS)]}, model.input_spec.size,
                            model.input_spec.channels)
    if images > len(PHOTOS):  # the photos again, under new ids
        image_set = ImageSet(np.concatenate([image_set.images] * -(-images // len(PHOTOS)))[:images],
                             [f"{i}-{name}" for i, name in enumerate(names)])
    built_s = time.perf_counter() - began
    entries = method_entries(settings)
    x = model.input_spec.to_model_space(image_set.images)
    targets = np.argmax(model.predict(x[:1]), 1).astype(np.int32)
    began = time.perf_counter()
    for entry in entries:  # trace every kernel once, as the methods scenario's warm-up does
        params = {k: v for k, v in entry.items() if k != "name"} | {"gradcam_endpoint": cfg["gradcam_endpoint"]}
        warm = {k: v for k, v in WARM_UP.items() if k in methods.defaults(entry["name"])}
        methods.get(entry["name"])(model, x[:1], targets, np.random.default_rng(0), params | warm)
    traced_s = time.perf_counter() - began
    with tempfile.TemporaryDirectory(prefix="bench-protocol-") as folder:
        # as `harness model=inception_v3 data=photos schedule=cascading controls=[]` composes it
        run_cfg, _ = compose_run(["model=inception_v3", "data=photos", "schedule=cascading", "controls=[]",
                                  "progress=false", "maps_to_keep=1", "map_cache=false", f"model.name={MODEL}"],
                                 Path(folder), quick=False)
        with open_dict(run_cfg):
            run_cfg.methods = entries
            run_cfg.data.names = names[:len(PHOTOS)]
        plan = Plan.from_config(run_cfg).with_contents(model, image_set, log)
        runner = Runner(plan, model, image_set, Path(folder) / "run", log)
        all_states = len(runner.steps)
        runner.steps = runner.steps[:all_states if steps is None else min(steps + 1, all_states)]
        runner.execute()
        timings = json.loads((Path(folder) / "run" / "run.json").read_text())["timings"]
    full = schedule_steps("cascading", [b.name for b in model.blocks])[-1]  # every block re-initialized
    began = time.perf_counter()
    with Randomizer(model, plan.reinit).step(full):
        pass
    reinit_s = time.perf_counter() - began

    def rows(entry: dict) -> int:  # model rows per image, forward+backward and forward-only
        return sum(methods.spec(entry["name"]).rows(methods.defaults(entry["name"]) | entry, x.shape[1:]))

    measured = Measured(
        images=images, settings=settings, states=len(runner.steps), all_states=all_states,
        total_s=timings["total_seconds"], overhead_s=timings["overhead_seconds"],
        unit_s={m.label: [timings["method_seconds"][_stem(step, m)] for step in runner.steps] for m in plan.methods},
        rows={e["name"]: rows(e) for e in entries}, paper_rows={e["name"]: rows(e) for e in method_entries("paper")},
        reinit_s=reinit_s)
    return measured, {"built_s": built_s, "traced_s": traced_s, "kernel_s": timings["kernel_seconds"]}


def measure(images: int, steps: int | None, settings: str, log: Callable[[str], None] = print) -> dict:
    """The protocol's bench row: seconds per image (projected as `project` says), the 200 images."""
    measured, once = run_protocol(images, steps, settings, log)
    per_image, what = project(measured)
    where = device()
    return {
        "model": MODEL, "method": f"cascading: {len(METHODS)} methods x {measured.all_states - 1} blocks",
        "images": images, "settings": settings, "harness_s": per_image, "reference_s": AUTHORS_SECONDS_PER_IMAGE,
        "speedup": AUTHORS_SECONDS_PER_IMAGE / per_image,
        "rows": sum(measured.paper_rows.values()) * measured.all_states,
        "reference": "the authors' notebook: about 1.5 h per image for the cascade, unaccelerated",
        "note": (f"{what}. Device: {where}. Not in the figures: building the model {once['built_s']:.3g} s and "
                 f"tracing the 8 methods {once['traced_s']:.3g} s, once per run; the measured run's kernels "
                 f"took {once['kernel_s'] / measured.total_s:.1%} of it"),
        "device": where, "measured_s": measured.total_s, "measured_states": measured.states,
        "projected_200_s": per_image * PAPER_IMAGES,
    }


def measure_all(options: Options, log: Callable[[str], None] = print) -> list[dict]:
    """The scenario's row at `options.protocol`'s `images`, `steps` (None: every block) and
    `settings`, those not given the device's (`defaults`); `quick`: quick settings, one step."""
    given = options.protocol
    auto_settings, auto_steps = defaults()
    settings, steps = ("quick", 1) if options.quick else (given.get("settings") or auto_settings,
                                                           given["steps"] if "steps" in given else auto_steps)
    return [measure(given.get("images", 1), steps, settings, log)]


def section(frame) -> list[str]:
    return markdown(
        "## The paper's Inception protocol", " ".join(__doc__.split("\n\n", 1)[1].split()),
        "device | images: | settings | measured s: | states measured: | s per image: | 200 images: | "
        "authors' s per image: | note",
        [[r.device, r.images, r.settings, f"{r.measured_s:.4g}", r.measured_states, f"{r.harness_s:.4g}",
          f"{r.projected_200_s / 3600:.3g} h", f"{r.reference_s:.0f} (~1.5 h)", r.note] for r in frame.itertuples()])
