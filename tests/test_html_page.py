import base64
import re

from fmnist.html_page import image_html, page, table_html


def test_tables_escape_their_cells_and_mark_highlighted_rows():
    table = table_html(["setting", "<a>"], [["dropout", "0.3"], ["name", "<script>"]], highlight={1})
    assert "<th>&lt;a&gt;</th>" in table and "<td>&lt;script&gt;</td>" in table and "<script>" not in table
    assert table.count("<tr class=diff>") == 1 and "<tr class=diff><th scope=row>name</th>" in table
    # However many columns, it scrolls in a box of its own, as a long command wraps: the page never goes sideways.
    styled = page("t", [("h", table + "<pre>fmnist tune --train-best study --runs-dir /a/long/path</pre>")])
    assert table.startswith("<div class=wide><table>") and table.endswith("</table></div>")
    assert ".wide{overflow-x:auto}" in styled and "pre{white-space:pre-wrap;" in styled
    assert "td{overflow-wrap:break-word;min-width:4.5em}" in styled and "th[scope=row]{white-space:nowrap}" in styled
    # A path or run name may break after each "/" and "_" (a browser breaks after "-" itself), a row's name never.
    named = table_html(["setting", "run_a"], [["early_stopping_patience", "/runs/2026-x_y/a"], ["loss", "0.3 / 0.2"]])
    assert "<th>run_<wbr>a</th>" in named and "<th scope=row>early_stopping_patience</th>" in named
    assert "<td>/<wbr>runs/<wbr>2026-x_<wbr>y/<wbr>a</td>" in named and "<td>0.3 / 0.2</td>" in named
    checksum = "0123456789abcdef" * 4  # a SHA-256, which has no place to break, in four parts that do
    assert f"<td>{'<wbr>'.join([checksum[:16]] * 4)}</td>" in table_html(["file", "sha256"], [["model", checksum]])


def test_images_are_inlined_byte_for_byte_or_named_as_missing(tmp_path):
    png = tmp_path / "p.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    encoded = re.search(r'src="data:image/png;base64,([^"]+)"', image_html(png, "a <b> picture")).group(1)
    assert base64.b64decode(encoded) == png.read_bytes()
    assert image_html(tmp_path / "none.png", "curves") == "<p>(curves not available for this run)</p>"
    assert page("t <1>", [("h", "<p>x</p>")]).count("t &lt;1&gt;") == 2  # the title, and the heading
