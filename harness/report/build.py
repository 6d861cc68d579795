"""build_report(folder): `summary.csv` (with a first column `experiment`), `verdicts.csv`, `figures/*.png`,
`report.md` and `report.html`, written atomically from the result files alone (same files -> same bytes); into
`folder/report/` when `folder` is itself a run or sweep folder, whose own `summary.csv` stays.
"""
from __future__ import annotations

from pathlib import Path

from harness.report.gallery import FIGURES, map_figures, score_figures
from harness.report.load import RUN_RECORD, Experiment, is_sweep, load_folder, with_family
from harness.report.page import Heading, Paragraph, to_html, to_markdown
from harness.report.paper import paper_section
from harness.report.segmentation import segmentation_section
from harness.report.sections import (BUDGET_EXPERIMENT, TITLE, budget_section, claims_section, headline_section,
                                     repairs_section, results_section, skipped_section, verdicts_section,
                                     what_ran_section)
from harness.report.tables import merged_summary
from harness.results import VERDICTS, atomic_write, write_csv
from harness.verdicts import verdict_table


def build_report(folder: Path) -> Path:
    """Build the report for a results folder; returns the path of `report.html`."""
    folder = Path(folder)
    experiments = load_folder(folder)
    out = folder / "report" if (folder / RUN_RECORD).is_file() or is_sweep(folder) else folder
    summary = merged_summary(experiments)
    write_csv(out / "summary.csv", summary)
    verdicts = verdict_table(summary)
    # verdicts.csv names each row's method family and its entry (`variant`), as a run folder's does.
    verdicts["method"] = with_family(verdicts, experiments)["family"]
    write_csv(out / VERDICTS, verdicts)
    families = with_family(summary, experiments)
    ran = [e for e in experiments if e.runs]
    # The budget study's snapshots have their own section; their curves stay with the experiment's results.
    headline = {e.name: score_figures(e, out) for e in ran if e.name != BUDGET_EXPERIMENT}
    maps = {e.name: ([] if e.name in headline else score_figures(e, out)) + map_figures(e, out) for e in ran}
    budget, budget_figures = budget_section(experiments, out)
    segmentation, segmentation_figures = segmentation_section(experiments, out)
    written = [*budget_figures, *segmentation_figures,
               *(image for images in (*headline.values(), *maps.values()) for image in images)]
    kept = {out / image.path for image in written}
    for path in (out / FIGURES).glob("*.png"):  # the report's own folder: drop figures of data now gone
        if path not in kept:
            path.unlink()
    # What a reader came for first (the verdict matrices, then the curves), the details and settings last.
    blocks = [Heading(1, TITLE), Paragraph(_intro(experiments)), *skipped_section(experiments),
              *verdicts_section(verdicts, per_experiment=is_sweep(folder)),
              *headline_section(experiments, headline), *claims_section(families), *budget,
              *repairs_section(experiments), *segmentation,
              *paper_section(families, experiments), *results_section(experiments, summary, maps),
              *what_ran_section(experiments)]
    atomic_write(out / "report.md", lambda tmp: tmp.write_text(to_markdown(blocks), encoding="utf-8"))
    page = to_html(blocks, out, TITLE)
    return atomic_write(out / "report.html", lambda tmp: tmp.write_text(page, encoding="utf-8"))


def _intro(experiments: list[Experiment]) -> str:
    ran = [f"`{e.name}`" for e in experiments if e.runs]
    skipped = [f"`{e.name}`" for e in experiments if e.skipped is not None]
    text = (f"Built from the result files of this folder: {len(ran)} experiment(s) with results "
            f"({', '.join(ran) or 'none'})")
    text += f", {len(skipped)} skipped ({', '.join(skipped)})." if skipped else "."
    return text + (" Every number below is recomputable from `summary.csv` (merged over experiments) and "
                   "each run folder's `scores.csv`.")

