"""The bench's scenarios: the runner's overhead rows, and the paper's Inception protocol (its blocks,
its projection, and one quick run end to end, slow)."""
import re

import numpy as np
import pandas as pd
import pytest

from harness import bench
from harness.bench import overhead as bench_overhead
from harness.bench import protocol as bench_protocol
from harness.bench.common import Options
from harness.config import group_defaults

from conftest import wrap_keras

PAPER_BLOCKS = group_defaults("model", "inception_v3_hub")["blocks"]["names"]


def inception_like():
    """A tiny functional model laid out as keras.applications' InceptionV3: a stem of five conv +
    batch-norm pairs and two max poolings, eleven modules of branches joined by `mixed0`..`mixed10`
    (module 9 with an inner `mixed9_0` concatenation, as Keras names it), a Dense `predictions`."""
    import keras

    keras.utils.set_random_seed(0)

    def conv_bn(x, filters):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        return keras.layers.BatchNormalization(scale=False)(x)

    x = inputs = keras.Input((16, 16, 3))
    for pool_after in (False, False, True, False, True):
        x = conv_bn(x, 2)
        if pool_after:
            x = keras.layers.MaxPooling2D(2)(x)
    for k in range(11):
        a, b = conv_bn(x, 2), conv_bn(conv_bn(x, 2), 2)
        if k == 9:
            b = keras.layers.Concatenate(name="mixed9_0")([b, conv_bn(x, 2)])
        x = keras.layers.Concatenate(name=f"mixed{k}")([a, b])
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(5, name="predictions")(x))


def layer_of(variable) -> str:
    return variable.name.rsplit("/", 1)[0]


def test_inception_layers_fall_into_the_papers_17_blocks():
    model = wrap_keras(inception_like())
    blocks = bench_protocol.paper_blocks(model)
    assert [b.name for b in blocks] == PAPER_BLOCKS
    layers = {b.name: sorted({layer_of(v) for v in b.variables}) for b in blocks}
    assert layers["Conv2d_1a_3x3"] == ["batch_normalization", "conv2d"]  # a stem conv with its batch norm
    assert layers["Conv2d_4a_3x3"] == ["batch_normalization_4", "conv2d_4"]
    assert layers["Mixed_5b"] == ["batch_normalization_5", "batch_normalization_6", "batch_normalization_7",
                                  "conv2d_5", "conv2d_6", "conv2d_7"]  # the first module: three conv + BN
    assert len(layers["Mixed_7b"]) == 8  # module 9: four conv + BN, its inner mixed9_0 no boundary
    assert layers["Logits"] == ["predictions"]
    assigned = [v.name for b in blocks for v in b.variables]
    assert sorted(assigned) == sorted(v.name for v in model.variables)  # each variable in one block


def measured(**changes) -> bench_protocol.Measured:
    values = dict(images=2, settings="scaled", states=2, all_states=18, total_s=30.0, overhead_s=4.0,
                  unit_s={"gradient": [1.0, 3.0], "smoothgrad": [6.0, 6.0]},
                  rows={"gradient": 1, "smoothgrad": 15}, paper_rows={"gradient": 1, "smoothgrad": 50}, reinit_s=0.5)
    return bench_protocol.Measured(**values | changes)


def test_projection_scales_kernel_seconds_per_row_to_the_papers_rows_and_every_state():
    per_image, note = bench_protocol.project(measured())
    kernel_state = 2.0 / 1 * 1 + 6.0 / 15 * 50  # mean seconds of each method's units, per row, x paper rows
    assert per_image == pytest.approx(18 * (kernel_state + 4.0 / 2 + 0.5) / 2)
    assert "2 of 18 states" in note and "smoothgrad 15 of 50 rows" in note
    # every state at the paper's settings: nothing projected but the images
    per_image, note = bench_protocol.project(measured(settings="paper", states=18, rows={"gradient": 1, "smoothgrad": 50}))
    assert per_image == 30.0 / 2 and "projected: nothing but x200 images" in note


def test_cpu_defaults_to_scaled_settings_and_one_step(monkeypatch):
    monkeypatch.setattr(bench_protocol, "device", lambda: "CPU (2 cores)")
    assert bench_protocol.defaults() == ("scaled", 1)
    monkeypatch.setattr(bench_protocol, "device", lambda: "GPU: NVIDIA H200")
    assert bench_protocol.defaults() == ("paper", None)
    called = []
    monkeypatch.setattr(bench_protocol, "measure", lambda *args: called.append(args[:3]) or {})
    for given in ({"images": 3}, {"images": 3, "settings": "scaled", "steps": 2}, {"steps": None, "settings": "scaled"}):
        bench_protocol.measure_all(Options(protocol=given))
    bench_protocol.measure_all(Options(quick=True, protocol={"images": 2, "steps": None}))
    assert called == [(3, None, "paper"), (3, 2, "scaled"), (1, None, "scaled"), (2, 1, "quick")]


def test_overhead_rows_come_from_run_json_and_have_their_section(tmp_path, monkeypatch):
    def in_this_process(*args, **kwargs):
        raise AssertionError("an overhead row measured in the bench's own process")

    monkeypatch.setattr(bench_overhead, "measure", in_this_process)  # each run goes to a process of its own
    csv = bench.run(["overhead"], Options(quick=True), tmp_path, log=lambda _: None)
    rows = pd.read_csv(csv).set_index("method")
    assert list(rows.index) == list(bench_overhead.EXPERIMENTS)
    np.testing.assert_allclose(rows["overhead_fraction"], 1 - rows["limit_s"] / rows["harness_s"], rtol=1e-9)
    assert (rows["images"] == bench_overhead.QUICK_IMAGES).all()
    assert rows["note"].str.contains("score").all()
    # score split by metric (run.json's score_by_metric), the experiments' four and the rest
    for note in rows["note"]:
        split = re.search(r"score [\d.]+% \(([^)]*)\)", note).group(1).split(", ")
        assert sorted(part.split()[0] for part in split) == ["hog", "rest", "spearman_abs", "spearman_signed", "ssim"]
    markdown = (tmp_path / "bench.md").read_text()
    assert "## Runner overhead" in markdown and "| cascading_mlp | 2 |" in markdown


def test_a_failed_overhead_process_is_an_error_naming_its_experiment(capfd):
    with pytest.raises(RuntimeError, match="measuring no_such_experiment in its own process failed \\(exit 2"):
        bench_overhead.measure_apart("no_such_experiment", 2)
    assert "invalid choice: 'no_such_experiment'" in capfd.readouterr().err  # the process's own error, shown


def test_projected_overhead_scales_kernels_and_per_image_parts_only():
    timings = {"kernel_seconds": 20.0, "overhead_parts": {"score": 2.0, "assemble": 0.5, "targets": 0.1,
                                                          "randomize": 1.0, "write": 0.4, "other": 0.3}}
    assert bench_overhead.projected_fraction(timings, 1.0) == pytest.approx(4.3 / 24.3)
    overhead = 5 * (2.0 + 0.5 + 0.1) + 1.0 + 0.4 + 0.3
    assert bench_overhead.projected_fraction(timings, 5.0) == pytest.approx(overhead / (overhead + 100.0))


@pytest.mark.slow  # a random-weight InceptionV3 built, its 8 methods traced and run on 2 model states
def test_quick_protocol_runs_through_the_runner_on_the_papers_blocks():
    (row,) = bench_protocol.measure_all(Options(quick=True), log=lambda _: None)
    assert row["measured_states"] == 2 and row["device"].startswith(("CPU", "GPU"))
    assert row["method"] == "cascading: 8 methods x 17 blocks"
    assert row["projected_200_s"] == pytest.approx(200 * row["harness_s"])
    assert "1 cascade step(s) (2 of 18 states)" in row["note"]


@pytest.mark.parametrize("value", ["two", "0", "-1"])
def test_bad_protocol_steps_are_one_line_before_anything_runs(value, tmp_path, capsys, monkeypatch):
    """Catches: `int(value)` failing with a traceback after the method rows have run (minutes), or a
    step count of 0 accepted."""
    monkeypatch.setattr(bench, "run", lambda *a, **k: pytest.fail("the bench ran"))
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--protocol-steps", value, "--out", str(tmp_path)])
    assert exit_.value.code == 2 and not any(tmp_path.iterdir())
    assert f"{value!r}: valid: a positive number of cascade steps, or 'all'" in capsys.readouterr().err


def test_protocol_steps_reach_the_scenario_as_given(tmp_path, monkeypatch):
    """Catches: `--protocol-steps all` lost on the way (the CPU default of one step measured instead),
    or a default step count forced on a GPU run."""
    seen = []
    monkeypatch.setattr(bench, "run", lambda scenarios, options, *a, **k: seen.append(options.protocol))
    bench.main(["--scenarios", "protocol", "--protocol-steps", "all", "--out", str(tmp_path)])
    bench.main(["--scenarios", "protocol", "--protocol-steps", "3", "--protocol-images", "2", "--out", str(tmp_path)])
    bench.main(["--scenarios", "protocol", "--out", str(tmp_path)])
    assert seen == [{"images": 1, "settings": None, "steps": None}, {"images": 2, "settings": None, "steps": 3},
                    {"images": 1, "settings": None}]


def test_training_rows_are_medians_of_alternated_rounds_against_fit(monkeypatch):
    """Catches: a row's speed from its mean or last round instead of the median, its ratio taken
    against another configuration than the first (`fit`), or the configurations not alternated."""
    from harness.bench import training

    seconds = {"fit": iter([9, 0.4, 0.5, 0.2]), "loop1": iter([9, 0.1, 0.3, 0.2])}  # warm-up, then 3 rounds
    order = []

    class Fake:
        def __init__(self, recipe, how, chunk, deterministic):
            self.name = "fit" if how == "fit" else "loop1"

        def seconds_per_step(self, steps):
            order.append(self.name)
            return next(seconds[self.name])

    monkeypatch.setattr(training, "_Trainer", Fake)
    monkeypatch.setattr(training, "CONFIGS", {k: training.CONFIGS[k] for k in ("fit", "loop1")})
    fit, loop1 = training.measure_all(Options(), log=lambda _: None)
    assert order == ["fit", "loop1"] * 4
    assert fit["steps_per_s"] == pytest.approx(1 / 0.4) and loop1["steps_per_s"] == pytest.approx(1 / 0.2)
    assert fit["vs_fit"] == 1.0 and loop1["vs_fit"] == pytest.approx(2.0)
    assert "| loop1 | 5 | 2.00 |" in "\n".join(training.section(pd.DataFrame([fit, loop1])))


def test_sweep_rows_give_each_launchers_speedup_over_the_basic_one(monkeypatch, tmp_path):
    from harness.bench import sweep

    walls = {"basic": 100.0, "joblib": 40.0}
    monkeypatch.setattr(sweep, "time_sweep", lambda launcher, folder, runs, job: {
        "launcher": launcher, "jobs": len(runs), "wall_s": walls[launcher]})
    basic, joblib = sweep.measure_all(Options(quick=True), log=lambda _: None)
    assert (basic["speedup"], joblib["speedup"]) == (1.0, 2.5)
    assert "data.count=2" in joblib["sweep"] and "data.count=20" not in joblib["sweep"]  # quick: replaced, not doubled
