"""The report page as a list of blocks, rendered twice (`report.md`, self-contained `report.html`) so that both
say the same thing. Inline markup in text: `**bold**` and `` `code` `` only.
"""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    title: str
    frame: pd.DataFrame  # string cells
    note: str = ""
    styles: pd.DataFrame | None = None  # a CSS class per cell of `frame` (same shape), "" for none


@dataclass(frozen=True)
class Image:
    path: str  # relative to the report's folder, with "/" separators
    title: str  # short: the alt text
    caption: str


@dataclass(frozen=True)
class Details:
    """Blocks folded away under a one-line summary (HTML <details>, which Markdown viewers render too)."""
    summary: str
    blocks: tuple


Block = Heading | Paragraph | Bullets | Table | Image | Details


# -- Markdown ----------------------------------------------------------------------------------------------
def to_markdown(blocks: list[Block]) -> str:
    return "\n\n".join(_md(block) for block in blocks) + "\n"


def _md(block: Block) -> str:
    if isinstance(block, Heading):
        return f"{'#' * block.level} {block.text}"
    if isinstance(block, Paragraph):
        return block.text
    if isinstance(block, Bullets):
        return "\n".join(f"- {item}" for item in block.items)
    if isinstance(block, Table):
        columns = block.frame.columns
        rows = [columns, ["---"] * len(columns), *block.frame.itertuples(index=False, name=None)]
        lines = [f"**{block.title}**", "", *("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
                                            for cells in rows)]
        return "\n".join(lines + (["", f"*{block.note}*"] if block.note else []))
    if isinstance(block, Details):
        inner = "\n\n".join(_md(b) for b in block.blocks)
        return f"<details><summary>{html.escape(block.summary)}</summary>\n\n{inner}\n\n</details>"
    return f"![{block.title}]({block.path})\n\n*{block.caption}*"


# -- HTML ----------------------------------------------------------------------------------------------------
STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222; margin: 0; }
main { max-width: 1200px; margin: 0 auto; padding: 1.5rem 2rem 4rem; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3rem; }
h2 { border-bottom: 1px solid #eee; padding-bottom: .2rem; margin-top: 2.2rem; }
table { border-collapse: collapse; margin: .4rem 0 .2rem; font-size: .86rem; }
caption { text-align: left; font-weight: 600; padding: .3rem 0; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
tbody tr:nth-child(even) { background: #fafafa; }
td.long { white-space: normal; min-width: 24rem; text-align: left; }
.scroll { overflow-x: auto; }
figure { margin: 1.2rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption, .note { color: #555; font-size: .88rem; }
code { background: #f2f2f2; padding: 0 .2rem; border-radius: 3px; }
td.pass { background: #d6efd6; } td.fail { background: #f6d0d0; }
td.inconclusive { background: #fbefc4; } td.undefined { background: #e4e4e4; }
details > summary { cursor: pointer; font-weight: 600; margin: 1.2rem 0 .4rem; }
"""


LONG_CELL = 60  # characters


def to_html(blocks: list[Block], root: Path, title: str) -> str:
    body = "\n".join(_html(block, root) for block in blocks)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n{body}\n"
            f"</main>\n</body>\n</html>\n")


def _inline(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _html(block: Block, root: Path) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{_inline(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        return f"<p>{_inline(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>\n" + "\n".join(f"<li>{_inline(item)}</li>" for item in block.items) + "\n</ul>"
    if isinstance(block, Table):
        head = "".join(f"<th>{_inline(str(c))}</th>" for c in block.frame.columns)
        styles = block.styles if block.styles is not None else pd.DataFrame("", block.frame.index, block.frame.columns)
        rows = "\n".join("<tr>" + "".join(_html_cell(str(v), str(c)) for v, c in zip(values, classes)) + "</tr>"
                         for values, classes in zip(block.frame.itertuples(index=False, name=None),
                                                    styles.itertuples(index=False, name=None)))
        note = f'<p class="note">{_inline(block.note)}</p>' if block.note else ""
        return (f'<div class="scroll"><table><caption>{_inline(block.title)}</caption>\n'
                f"<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody></table></div>{note}")
    if isinstance(block, Details):
        inner = "\n".join(_html(b, root) for b in block.blocks)
        return f"<details><summary>{_inline(block.summary)}</summary>\n{inner}\n</details>"
    # Embedded, not linked: the page must open from disk, alone, with no server.
    data = base64.b64encode((root / block.path).read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(block.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_inline(block.caption)}</figcaption></figure>")


def _html_cell(text: str, style: str = "") -> str:
    # Numbers stay on one line; a long settings list may wrap instead of widening the table.
    style = style or ("long" if len(text) > LONG_CELL else "")
    return f'<td class="{style}">{_inline(text)}</td>' if style else f"<td>{_inline(text)}</td>"

