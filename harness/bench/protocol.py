"""Scenario `protocol`: the paper's Inception protocol end to end, through the real runner.

The cascading test of Adebayo et al. 2018 (docs/protocol.md):
a random-weight Keras InceptionV3 at 299 x 299 (conf/model/inception_v3.yaml), its variables grouped
into the paper's 17 blocks (the names of conf/model/inception_v3_hub.yaml, found in the Keras graph:
each Inception module is the layers up to its `mixedN` concatenation), top-down randomization, the 8
methods of the protocol at their conf/method/ defaults (the paper's settings: SmoothGrad 50 samples,
IG 50 steps, IG-SmoothGrad 50 x 50), the paper preset's metrics, no controls (the paper ran none).
One run is the original maps plus one state per block: 18 model states x 8 methods.

What is measured and what is projected (stated in the row's note):
- `paper` settings (default on a GPU): the methods as the paper ran them, on `images` images over
  `steps` cascade steps (`all`: every block). With every step measured nothing is projected but the
  200 images, from the seconds per image.
- `scaled` settings (default on a CPU, where one model state of one image at the paper's settings
  takes minutes): the sampled methods with fewer rows (SCALED: each fills at least one compiled call
  of `max_batch` rows at 299 px), the original maps and `steps` cascade steps. The projection scales
  each method's measured kernel seconds per row to the paper's rows, and every state's non-kernel
  time (scoring, randomizing, writing) from the states measured, with the re-initialization of the
  whole model (the last step's) timed apart and added to every step as an upper bound.
Tracing (each method's compiled functions, once per model and process) is done before the timed run
and reported apart: a run of 200 images pays it once.
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from harness.bench.common import WARM_UP, Options

METHODS = ("gradient", "smoothgrad", "gradient_x_input", "integrated_gradients", "ig_smoothgrad",
           "guided_backprop", "gradcam", "guided_gradcam")
# Fewer noise samples / path steps on a CPU: each still fills one compiled call (15 rows at 299 px).
SCALED = {"smoothgrad": {"samples": 15}, "integrated_gradients": {"steps": 15},
          "ig_smoothgrad": {"samples": 3, "steps": 5}}
PAPER_IMAGES = 200
AUTHORS_SECONDS_PER_IMAGE = 1.5 * 3600  # the authors' notebook: ~1.5 h per image for the cascade, unaccelerated
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
MODEL = "inception_v3_protocol"


def device() -> str:
    """The accelerator TensorFlow places ops on: a GPU's name when one is visible, else the CPU."""
    import os

    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU: {details.get('device_name', gpus[0].name)}" + (f" (+{len(gpus) - 1} more)" if len(gpus) > 1 else "")
    return f"CPU ({os.cpu_count()} cores)"


def defaults() -> tuple[str, int | None]:
    """(settings, steps) when not given: the paper's, every step, on a GPU; scaled, one step, on a CPU."""
    return ("paper", None) if device().startswith("GPU") else ("scaled", 1)


def paper_blocks(model) -> list:
    """The model's variables in the paper's 17 blocks, input to output. Keras orders the layers of
    InceptionV3 by depth, so each block is a run of them: the stem's five convolutions (each with its
    batch norm) up to the second max pooling are Conv2d_1a_3x3 .. Conv2d_4a_3x3; each Inception
    module's layers up to its `mixedN` concatenation are Mixed_5b .. Mixed_7c; the classifier Logits."""
    from harness.config import group_defaults
    from harness.models.wrapper import Block

    names = group_defaults("model", "inception_v3_hub")["blocks"]["names"]
    owner: dict[str, str] = {}
    convolutions, poolings, module = 0, 0, 0
    for layer in model.keras_model.layers:
        kind = type(layer).__name__
        poolings += kind == "MaxPooling2D"
        if layer.name == f"mixed{module}":
            module += 1
        if not layer.weights:
            continue
        if kind == "Dense":
            owner[layer.name] = names[-1]
        elif poolings < 2:  # the stem
            convolutions += kind == "Conv2D"
            owner[layer.name] = names[convolutions - 1]
        else:
            owner[layer.name] = names[5 + module]
    blocks: dict[str, list] = {name: [] for name in names}
    for v in model.variables:
        blocks[owner[v.name.rsplit("/", 1)[0]]].append(v)
    empty = [name for name, members in blocks.items() if not members]
    if convolutions != 5 or module != 11 or empty:
        raise RuntimeError(f"InceptionV3's layers are not as expected: {convolutions} stem convolutions, "
                           f"{module} modules, blocks without variables: {empty}")
    return [Block(name, tuple(members)) for name, members in blocks.items()]


def load(images: int):
    """The random-weight InceptionV3 in the paper's blocks, and `images` photos."""
    import keras

    from harness.config import group_defaults
    from harness.data import load_images
    from harness.models import load_model

    keras.utils.set_random_seed(0)
    cfg = group_defaults("model", "inception_v3") | {"name": MODEL}
    model = load_model(cfg, log=lambda _: None)
    model.blocks = paper_blocks(model)
    names = [PHOTOS[i % len(PHOTOS)] for i in range(images)]
    data = {"source": "skimage", "names": names[:len(PHOTOS)]}
    x = load_images(data, model.input_spec.size, model.input_spec.channels)
    if images > len(PHOTOS):  # more images than photos: the photos again, under new ids
        from harness.data import ImageSet

        reps = -(-images // len(PHOTOS))
        x = ImageSet(np.concatenate([x.images] * reps)[:images],
                     [f"{i}-{name}" for i, name in enumerate(names)])
    return cfg, model, x, data


def run_config(methods: list[dict], data: dict, results_dir: Path):
    """The run's config as `harness model=inception_v3 data=photos schedule=cascading controls=[]`
    composes it, with the method list and the images given."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from harness.config import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "model=inception_v3", "data=photos", "schedule=cascading", "controls=[]", "progress=false",
            "maps_to_keep=1", "map_cache=false", f"results_dir={results_dir}", f"model.name={MODEL}"])
    with open_dict(cfg):
        cfg.methods = methods
        cfg.data.names = data["names"]
    return cfg


def method_entries(settings: str) -> list[dict]:
    """The 8 methods at `settings`: paper (conf/method/ defaults), scaled (SCALED) or quick (each
    method's registered quick settings: `python -m harness.bench --quick`)."""
    from harness import methods

    chosen = {"paper": {}, "scaled": SCALED, "quick": {m: dict(methods.spec(m).quick) for m in METHODS}}[settings]
    return [{"name": m, **chosen.get(m, {})} for m in METHODS]


def rows_per_image(entry: dict, shape) -> int:
    """Model rows (forward+backward, and forward-only) per image of a method entry at its settings."""
    from harness import methods

    return sum(methods.spec(entry["name"]).rows(methods.defaults(entry["name"]) | entry, shape))


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
    import json

    from harness import methods
    from harness.runner import Plan, Runner, _stem
    from harness.schedules import Randomizer, schedule_steps

    began = time.perf_counter()
    _, model, image_set, data = load(images)
    built_s = time.perf_counter() - began
    entries = method_entries(settings)
    x = model.input_spec.to_model_space(image_set.images)
    targets = np.argmax(model.predict(x[:1]), 1).astype(np.int32)
    began = time.perf_counter()
    for entry in entries:  # trace every kernel once, as bench.measure's warm-up does
        params = {k: v for k, v in entry.items() if k != "name"} | {"gradcam_endpoint": model_endpoint()}
        warm = {k: v for k, v in WARM_UP.items() if k in methods.defaults(entry["name"])}
        methods.get(entry["name"])(model, x[:1], targets, np.random.default_rng(0), params | warm)
    traced_s = time.perf_counter() - began
    with tempfile.TemporaryDirectory(prefix="bench-protocol-") as folder:
        plan = Plan.from_config(run_config(entries, data, Path(folder))).with_contents(model, image_set, log)
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
    shape = x.shape[1:]
    measured = Measured(
        images=images, settings=settings, states=len(runner.steps), all_states=all_states,
        total_s=timings["total_seconds"], overhead_s=timings["overhead_seconds"],
        unit_s={m.label: [timings["method_seconds"][_stem(step, m)] for step in runner.steps] for m in plan.methods},
        rows={e["name"]: rows_per_image(e, shape) for e in entries},
        paper_rows={e["name"]: rows_per_image(e, shape) for e in method_entries("paper")}, reinit_s=reinit_s)
    return measured, {"built_s": built_s, "traced_s": traced_s, "kernel_s": timings["kernel_seconds"]}


MODEL_ROW = f"cascading: {len(METHODS)} methods"


def measure(images: int, steps: int | None, settings: str, log: Callable[[str], None] = print) -> dict:
    """The protocol's bench row: seconds per image (projected as `project` says), the 200 images."""
    measured, once = run_protocol(images, steps, settings, log)
    per_image, what = project(measured)
    where = device()
    return {
        "model": MODEL, "method": f"{MODEL_ROW} x {measured.all_states - 1} blocks", "images": images,
        "settings": settings, "harness_s": per_image, "reference_s": AUTHORS_SECONDS_PER_IMAGE,
        "speedup": AUTHORS_SECONDS_PER_IMAGE / per_image, "rows": sum(measured.paper_rows.values()) * measured.all_states,
        "reference": "the authors' notebook: about 1.5 h per image for the cascade, unaccelerated",
        "note": (f"{what}. Device: {where}. Not in the figures: building the model {once['built_s']:.3g} s and "
                 f"tracing the 8 methods {once['traced_s']:.3g} s, once per run; the measured run's kernels "
                 f"took {once['kernel_s'] / measured.total_s:.1%} of it"),
        "device": where, "measured_s": measured.total_s, "measured_states": measured.states,
        "projected_200_s": per_image * PAPER_IMAGES,
    }


def measure_all(options: Options, log: Callable[[str], None] = print) -> list[dict]:
    """The scenario's row, at `options.protocol`'s `images`, `steps` (a number, None: every block)
    and `settings`; those not given are the device's (`defaults`: every step at the paper's settings
    on a GPU); `quick`: the methods' quick settings and one step (a smoke run)."""
    given = options.protocol
    auto_settings, auto_steps = defaults()
    settings, steps = ("quick", 1) if options.quick else (given.get("settings") or auto_settings,
                                                           given["steps"] if "steps" in given else auto_steps)
    return [measure(given.get("images", 1), steps, settings, log)]


def section(frame) -> list[str]:
    """bench.md's section of the protocol row."""
    lines = ["## The paper's Inception protocol", "", __doc__.split("\n\n")[1].replace("\n", " "), "",
             "| device | images | settings | measured s | states measured | s per image | 200 images | "
             "authors' s per image | note |", "|---|---:|---|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {r.device} | {r.images} | {r.settings} | {r.measured_s:.4g} | {r.measured_states} | "
              f"{r.harness_s:.4g} | {r.projected_200_s / 3600:.3g} h | {r.reference_s:.0f} (~1.5 h) | {r.note} |"
              for r in frame.itertuples()]
    return [*lines, ""]


def model_endpoint() -> str:
    from harness.config import group_defaults

    return group_defaults("model", "inception_v3")["gradcam_endpoint"]
