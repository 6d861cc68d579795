"""The paper's reference values (docs/protocol.md §7), for the report's "paper" column only.

They are shown next to this run's numbers and never used to tune anything. Each table is kept as
text laid out like the paper's, so it can be checked against the source by eye. A cell is a value
("0.60"), an approximate value ("~0.99") or a range ("0.00-0.12", read off a figure).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from harness.report.labels import RANDOM_LABELS


@dataclass(frozen=True)
class Reference:
    table: str
    model: str
    schedule: str
    metric: str
    method: str
    block: str
    low: float
    high: float
    text: str  # the value as the paper prints it

    def difference(self, mean: float) -> float:
        """Our mean minus the paper's value; for a range, the distance outside it (0 inside); NaN stays NaN."""
        if math.isnan(mean):
            return mean
        if mean < self.low:
            return mean - self.low
        if mean > self.high:
            return mean - self.high
        return 0.0


@dataclass(frozen=True)
class ReferenceTable:
    title: str
    source: str
    model: str
    schedule: str
    metric: str
    layout: str  # header "method block...", then one row per method

    def references(self) -> list[Reference]:
        header, *rows = (line.split() for line in self.layout.strip().splitlines())
        blocks = header[1:]
        return [_reference(self, method, block, cell) for method, *cells in rows for block, cell in zip(blocks, cells)]


def _reference(table: ReferenceTable, method: str, block: str, cell: str) -> Reference:
    low, _, high = cell.lstrip("~").partition("-")
    return Reference(table.title, table.model, table.schedule, table.metric, method, block,
                     float(low), float(high or low), cell)


_NOTEBOOK = "authors' notebook, mean of 10 test images"
_FIGURE = "read off the paper's figure, +-0.03"

TABLES = (
    ReferenceTable("MNIST CNN, cascading randomization, |Spearman|", _NOTEBOOK, "mnist_cnn", "cascading",
                   "spearman_abs", """
        method                 logits  fc1    conv2  conv1
        gradient               0.60    0.40   0.11   0.08
        smoothgrad             0.54    0.33   0.18   0.21
        guided_backprop        0.89    0.77   0.63   0.44
        gradcam                0.56    0.34   0.29   0.30
        guided_gradcam         0.56    0.36   0.33   0.28
        integrated_gradients   0.994   0.993  0.993  0.992
        gradient_x_input       0.993   0.993  0.993  0.992
        ig_smoothgrad          0.58    0.43   0.38   0.36
    """),
    ReferenceTable("MNIST MLP, cascading randomization, |Spearman|", _NOTEBOOK, "mnist_mlp", "cascading",
                   "spearman_abs", """
        method                 logits  hidden3  hidden2  hidden1
        gradient               0.23    0.10     0.015    0.02
        smoothgrad             0.25    0.12     0.007    0.025
        guided_backprop        0.90    0.82     0.44     0.04
        integrated_gradients   ~0.99   ~0.99    ~0.99    ~0.99
        gradient_x_input       ~0.99   ~0.99    ~0.99    ~0.99
    """),
    ReferenceTable("MNIST CNN, data randomization, |Spearman|", _FIGURE, "mnist_cnn", "data_randomization",
                   "spearman_abs", f"""
        method                 {RANDOM_LABELS}
        gradient               0.17
        smoothgrad             0.25
        guided_backprop        0.57
        gradcam                0.03
        guided_gradcam         0.57
        integrated_gradients   0.99
        ig_smoothgrad          0.46
        gradient_x_input       0.99
    """),
    ReferenceTable("MNIST CNN, data randomization, signed Spearman", _FIGURE + " (one range for all methods)",
                   "mnist_cnn", "data_randomization", "spearman_signed", f"""
        method                 {RANDOM_LABELS}
        gradient               0.00-0.12
        smoothgrad             0.00-0.12
        guided_backprop        0.00-0.12
        gradcam                0.00-0.12
        guided_gradcam         0.00-0.12
        integrated_gradients   0.00-0.12
        ig_smoothgrad          0.00-0.12
        gradient_x_input       0.00-0.12
    """),
    ReferenceTable("MNIST MLP, data randomization, |Spearman|", _FIGURE, "mnist_mlp", "data_randomization",
                   "spearman_abs", f"""
        method                 {RANDOM_LABELS}
        gradient               0.60
        smoothgrad             0.59
        guided_backprop        0.70
        integrated_gradients   0.99
        ig_smoothgrad          0.80
    """),
)


def lookup(model: str, schedule: str, metric: str, method: str, block: str) -> Reference | None:
    """The paper's value for one cell, if it reports one (model: the true-label model's name)."""
    for table in TABLES:
        if (table.model, table.schedule, table.metric) == (model, schedule, metric):
            for ref in table.references():
                if (ref.method, ref.block) == (method, block):
                    return ref
    return None
