"""The paper's reference values (docs/protocol.md §7), for the report's "paper vs this run" tables only: shown
next to this run's numbers, never used to tune anything. Each table is text laid out like its source (the MLP's
turned: blocks down, methods across), to check by eye. A cell is "0.60+-0.084" (mean and the SD over the authors'
test images), "0.17" (a single value read off a figure; its reading tolerance is not an SD) or "0.00-0.12" (a
range read off a figure).

Sources. The cascading tables: the authors' notebooks in adebayoj/sanity_checks_saliency,
`notebooks/cnn_mnist_cascading_randomization.ipynb` and `notebooks/mlp_mnist_cascading_randomization.ipynb`,
dataframes `test_df` (mean) and `test_df2` (`np.std`, ddof=0) of the absolute rank correlation over their 10
test images; means as the paper's appendix prints them, SDs to 2 significant digits. Their columns
softmax_linear, fc1, hidden2, hidden1 (CNN) are this harness's logits, fc1, conv2, conv1. The data randomization
values are read off the paper's figure (Adebayo et al., NeurIPS 2018) within about 0.03: no notebook of that
test, so no SD. The authors' `src/train_cnn_models.py` trains 50 epochs (`--nepochs`) at batch 50 on MNIST's
55,000 training digits.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.report.labels import RANDOM_LABELS

AUTHORS_IMAGES = 10             # test images per cell in the authors' notebooks (`demobatch`)
AUTHORS_TRAIN_DIGITS = 55_000   # MNIST training digits (5,000 of the 60,000 held for validation)
AUTHORS_EPOCHS = 50
AUTHORS_BATCH = 50
AUTHORS_STEPS = AUTHORS_TRAIN_DIGITS // AUTHORS_BATCH * AUTHORS_EPOCHS
FIGURE_TOLERANCE = 0.03         # how precisely a value can be read off the paper's figure (not an SD)
SD_LIMIT = 2.0                  # a cell more than this many of the authors' SDs away is marked


@dataclass(frozen=True)
class Reference:
    """One cell of a reference table."""
    method: str
    block: str
    low: float
    high: float
    text: str          # the value as the paper prints it, without its spread
    sd_text: str       # its SD over the authors' images as written ("0.084"); "" where the source gives none

    @property
    def sd(self) -> float | None:
        return float(self.sd_text) if self.sd_text else None

    def difference(self, mean: float) -> float:
        """Our mean minus the paper's value; for a range, the distance outside it (0 inside); NaN stays NaN."""
        return mean - min(max(mean, self.low), self.high)

    def sd_units(self, mean: float) -> float | None:
        """(our mean - the authors' mean) / the authors' SD; None without an SD (never one invented)."""
        return None if self.sd is None else (mean - self.low) / self.sd


@dataclass(frozen=True)
class ReferenceTable:
    title: str
    source: str
    model: str
    schedule: str
    metric: str
    layout: str  # header "method block...", then one row per method; or "block method...", a row per block

    def references(self) -> list[Reference]:
        """The cells, method by method, each in its blocks' order, whichever way the layout runs."""
        header, *rows = (line.split() for line in self.layout.strip().splitlines())
        cells = {(name, column): cell for name, *row in rows for column, cell in zip(header[1:], row)}
        if header[0] == "block":
            cells = {(method, block): cell for (block, method), cell in cells.items()}
        methods = list(dict.fromkeys(method for method, _ in cells))
        blocks = list(dict.fromkeys(block for _, block in cells))
        refs = []
        for method, block in ((m, b) for m in methods for b in blocks if (m, b) in cells):
            value, _, sd = cells[method, block].partition("+-")
            low, _, high = value.partition("-")
            refs.append(Reference(method, block, float(low), float(high or low), value, sd))
        return refs


_NOTEBOOK = "authors' notebook, mean ± SD over its 10 test images"
_FIGURE = "read off the paper's figure, +-0.03 (a reading tolerance, not an SD)"

TABLES = (
    ReferenceTable("MNIST CNN, cascading randomization, |Spearman|", _NOTEBOOK, "mnist_cnn", "cascading",
                   "spearman_abs", """
        method                 logits         fc1            conv2          conv1
        gradient               0.60+-0.084    0.40+-0.13     0.11+-0.052    0.08+-0.030
        smoothgrad             0.54+-0.060    0.33+-0.032    0.18+-0.054    0.21+-0.024
        guided_backprop        0.89+-0.031    0.77+-0.035    0.63+-0.073    0.44+-0.053
        gradcam                0.56+-0.23     0.34+-0.18     0.29+-0.17     0.30+-0.13
        guided_gradcam         0.56+-0.22     0.36+-0.18     0.33+-0.18     0.28+-0.11
        integrated_gradients   0.994+-0.0035  0.993+-0.0039  0.993+-0.0048  0.992+-0.0050
        gradient_x_input       0.993+-0.0046  0.993+-0.0044  0.993+-0.0043  0.992+-0.0055
        ig_smoothgrad          0.58+-0.079    0.43+-0.099    0.38+-0.088    0.36+-0.078
    """),
    ReferenceTable("MNIST MLP, cascading randomization, |Spearman|", _NOTEBOOK, "mnist_mlp", "cascading",
                   "spearman_abs", """
        block     gradient      smoothgrad     guided_backprop  integrated_gradients  gradient_x_input  ig_smoothgrad
        logits    0.23+-0.19    0.25+-0.17     0.90+-0.054      0.994+-0.0039         0.994+-0.0041     0.41+-0.12
        hidden3   0.10+-0.062   0.12+-0.059    0.82+-0.085      0.993+-0.0047         0.993+-0.0047     0.37+-0.10
        hidden2   0.015+-0.038  0.007+-0.049   0.44+-0.051      0.992+-0.0051         0.992+-0.0052     0.33+-0.087
        hidden1   0.02+-0.036   0.025+-0.037   0.04+-0.025      0.993+-0.0044         0.993+-0.0044     0.35+-0.11
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
    return next((ref for table in TABLES if (table.model, table.schedule, table.metric) == (model, schedule, metric)
                 for ref in table.references() if (ref.method, ref.block) == (method, block)), None)
