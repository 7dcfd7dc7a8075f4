"""The self-contained HTML pages fmnist writes (a run's report, a comparison, a study's page): their parts."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any


def page(title: str, sections: list[tuple[str, str]]) -> str:
    """A self-contained HTML page: the title, then each (heading, HTML) section."""
    body = "".join(f"<h2>{html.escape(heading)}</h2>{content}" for heading, content in sections)
    style = (
        # Wide enough for the widest picture (1,650 px) at its own size where the screen allows; text kept to lines
        # that read.
        "body{font-family:system-ui,sans-serif;max-width:1700px;margin:2em auto;padding:0 1em;color:#222}"
        "p{max-width:75em}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}"
        "th{background:#f3f3f3}img{max-width:100%}tr.diff td,tr.diff th{background:#fff3bf}"
        # A table wider than the window scrolls in its own box, and a long command wraps (it pastes as one line):
        # the page itself never scrolls sideways.
        ".wide{overflow-x:auto}pre{white-space:pre-wrap;overflow-wrap:anywhere}"
        # A cell's long path or run name breaks after a "/", "_" or "-" (table_html marks the first two), and a number
        # never, so the columns fit a laptop's window where they can; a longer word widens the table, which then
        # scrolls in its box.
        "td{overflow-wrap:break-word;min-width:4.5em}"
        "th[scope=row]{white-space:nowrap}"  # a row's name whole: "early_stopping_patience", "images (--limit)"
        'tr.diff th::before{content:"\\2260  "}'
        # A phone: a row's name wraps, so that its value stays in sight; a picture keeps its own size, its labels
        # legible, scrolling in its own box (shrunk to 390 px, a confusion matrix's counts were 2 px high).
        ".figure{overflow-x:auto}"
        "@media(max-width:700px){th[scope=row]{white-space:normal;min-width:8em}.figure img{max-width:none}}"
    )
    return (
        # The viewport's own width: without it a phone lays the page out 980 px wide and shrinks it to 6 px text.
        f"<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content=\"width=device-width, initial-scale=1\"><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n"
    )


def image_html(path: Path, alt: str) -> str:
    """The PNG at ``path`` inlined as an <img>, or a note that it is missing."""
    if not path.is_file():
        return f"<p>({html.escape(alt)} not available for this run)</p>"
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<div class=figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}"></div>'


def _breakable(cell: Any) -> str:
    """A cell's text escaped, a line allowed to break after each "/" and "_" inside a path or run name, and after every
    16 characters of a SHA-256."""
    # A path broke mid-number, and a class name mid-word, where any place did, and a checksum, which breaks nowhere,
    # widened its table past the page. A browser breaks after a "-" of its own accord.
    breakable = re.sub(r"((?<!\d)/|_)(?=\S)", r"\1<wbr>", html.escape(str(cell)))  # not in 1/2
    return re.sub(r"\b[0-9a-f]{64}\b", lambda checksum: "<wbr>".join(re.findall(".{16}", checksum[0])), breakable)


def table_html(header: list[str], rows: list[list[Any]], highlight: set[int] = frozenset()) -> str:
    """An HTML table whose first column names its rows (row headers, for a screen reader); the rows whose indices
    are in ``highlight`` are marked (class ``diff``: coloured, and led by "≠", not colour alone)."""
    head = "".join(f"<th>{_breakable(h)}</th>" for h in header)
    body = "".join(
        ("<tr class=diff>" if i in highlight else "<tr>")
        + "".join(f"<th scope=row>{html.escape(str(c))}</th>" if j == 0 else f"<td>{_breakable(c)}</td>"
                  for j, c in enumerate(row))
        + "</tr>" for i, row in enumerate(rows)
    )
    return f"<div class=wide><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
