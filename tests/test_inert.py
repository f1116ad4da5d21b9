"""What comes out of the sandbox is inert (autograder/isolation/inert.py): a student's text never drives
the instructor's terminal or spreadsheet, a student's markup never runs in a page. Fast: no
grading (the hostile class's probe-markup is graded in tests/test_sandbox.py)."""

from __future__ import annotations

import csv
import shutil
import unicodedata

import nbformat
import pytest

from autograder.isolation import inert
from autograder.reporting import report
from autograder.reporting.results import GRADED, Result
from autograder.reporting.tables import CSV_COLUMNS, table, write_reports
from conftest import REPO

#: an error message that writes the clipboard (OSC 52), moves the cursor up, erases the line
#: and prints over it, clears the screen with a C1 CSI, and reverses the text that follows
HOSTILE = "\x1b]52;c;cHJvYmU=\x07\x1b[1A\x1b[2K\rall tests passed\x9b2J\u202edesrever"
SHOWN = "\\x1b]52;c;cHJvYmU=\\x07\\x1b[1A\\x1b[2K\\rall tests passed\\x9b2J\\u202edesrever"


def _controls(text: str) -> list[str]:
    return [repr(c) for c in text if c not in "\n\t" and unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]


def test_control_characters_are_shown_not_obeyed():
    assert inert.text(HOSTILE) == SHOWN
    assert inert.text(SHOWN) == SHOWN, "idempotent: shown once, never twice"
    assert inert.text("line\nnext\ttab", keep="\n\t") == "line\nnext\ttab"
    assert inert.text("line\nnext") == "line\\nnext"
    assert inert.text("été, naïve: 3 ≤ 4 ✓") == "été, naïve: 3 ≤ 4 ✓", "printable text is unchanged"


@pytest.mark.parametrize("cell, expected", [
    ("=HYPERLINK(\"http://x\",\"y\")", "'=HYPERLINK(\"http://x\",\"y\")"), ("+1+cmd", "'+1+cmd"),
    ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"), ("  =1", "'  =1"),
    ("-2", "-2"), ("-0.5", "-0.5"), ("8", "8"), ("graded", "graded"), ("", ""),
])
def test_a_csv_cell_is_never_a_formula(cell, expected):
    assert inert.csv_cell(cell) == expected


def _result(student="eve", notes=(f"cell 3 raised RuntimeError: {HOSTILE}",)):
    return Result(student, "01-ddpg", GRADED, {"test_actor_loss": 1.0}, {"test_actor_loss": 1.0}, list(notes))


def test_the_printed_table_holds_no_control_character():
    text = table([_result(), _result("mallory\x1b[8m")], "01-ddpg")
    assert _controls(text) == [], _controls(text)
    assert SHOWN[:40] in text and "mallory\\x1b[8m" in text


def test_the_csvs_hold_no_control_character_nor_formula(tmp_path):
    notes = [f"=HYPERLINK(\"http://evil\",\"{HOSTILE}\")"]
    write_reports(tmp_path, [_result(notes=notes), _result("bob")])
    for path in (tmp_path / "grades").glob("*.csv"):
        assert _controls(path.read_text()) == [], path.name
    with (tmp_path / "grades" / "01-ddpg.csv").open(newline="") as f:
        rows = {row["student"]: row for row in csv.DictReader(f)}
    assert rows["eve"]["notes"].startswith("'=HYPERLINK(") and SHOWN in rows["eve"]["notes"]
    assert rows["bob"]["notes"].startswith("cell 3 raised RuntimeError: \\x1b]52")
    # writing again (one student regraded) keeps the rows as they were
    write_reports(tmp_path, [_result("bob")])
    with (tmp_path / "grades" / "01-ddpg.csv").open(newline="") as f:
        again = {row["student"]: row for row in csv.DictReader(f)}
    assert again == rows


def test_the_report_shows_a_student_text_inert_and_runs_no_script(tmp_path):
    root = tmp_path / "course"
    (root / "grades").mkdir(parents=True)
    shutil.copytree(REPO / "notebooks", root / "release" / "01-ddpg", ignore=lambda d, names: [
        n for n in names if n != "01-ddpg.ipynb"])
    notebook = nbformat.read(str(REPO / "notebooks" / "01-ddpg.ipynb"), as_version=4)
    for cell in notebook.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "test_actor_loss":
            cell.outputs = [nbformat.v4.new_output("error", ename="AssertionError", evalue=HOSTILE, traceback=[])]
    (root / "autograded" / "eve" / "01-ddpg").mkdir(parents=True)
    nbformat.write(notebook, str(root / "autograded" / "eve" / "01-ddpg" / "01-ddpg.ipynb"))
    with (root / "grades" / "01-ddpg.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, [*CSV_COLUMNS[:-1], "test_actor_loss", "notes"])
        writer.writeheader()
        writer.writerow({"student": "eve", "status": "graded", "autograded": "0", "total": "0", "total_max": "1",
                         "test_actor_loss": "0", "notes": "time limit"})
    page = report.write(root, ["01-ddpg"]).read_text()
    assert _controls(page) == [] and SHOWN[:40] in page
    head = page[:page.index("</head>")]
    assert inert.CSP_META in head and head.index(inert.CSP_META) < head.index("<title>")


@pytest.mark.parametrize("markup, kept", [
    ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
    ("<img src=x onerror=alert(1)>", "<img>"),
    ('<a href="javascript:alert(1)">x</a>', "<a>x</a>"),
    ('<a href=" JaVaScRiPt:alert(1)">x</a>', "<a>x</a>"),
    ('<svg onload=alert(1)></svg>', "&lt;svg onload=alert(1)&gt;&lt;/svg&gt;"),
    ('<iframe src="data:text/html,x"></iframe>', "&lt;iframe"),
    ('<div style="position:fixed">x</div>', "<div>x</div>"),
    # what honest outputs and markdown need stays
    ('<img src="data:image/png;base64,iVBO" alt="a figure">', '<img src="data:image/png;base64,iVBO" alt="a figure">'),
    ('<table border="1" class="dataframe"><thead><tr><th>a</th></tr></thead><tbody><tr><td>1</td></tr></tbody></table>',
     '<table border="1" class="dataframe"><thead><tr><th>a</th></tr></thead><tbody><tr><td>1</td></tr></tbody></table>'),
    ('<a href="https://pytorch.org">torch</a> <a href="#top">top</a> <a href="other.ipynb">next</a>',
     '<a href="https://pytorch.org">torch</a> <a href="#top">top</a> <a href="other.ipynb">next</a>'),
    ('<pre><span class="k">def</span> f</pre><h2 id="x">Title</h2>',
     '<pre><span class="k">def</span> f</pre><h2 id="x">Title</h2>'),
])
def test_clean_html_keeps_what_shows_and_drops_what_runs(markup, kept):
    assert kept in inert.clean_html(markup)


def test_outputs_that_run_are_dropped_before_any_template():
    cell = nbformat.v4.new_code_cell("x", outputs=[
        nbformat.v4.new_output("display_data", data={"application/javascript": "alert(1)", "text/plain": "<JS>"}),
        nbformat.v4.new_output("display_data", data={"text/html": "<script>alert(1)</script><b>b</b>",
                                                     "image/svg+xml": "<svg onload=alert(1)/>",
                                                     "application/vnd.jupyter.widget-view+json": {"model_id": "x"}}),
        nbformat.v4.new_output("display_data", data={"image/png": "iVBO"},
                               metadata={"image/png": {"width": "1 onload=alert(1)", "height": 40},
                                         "filenames": {"image/png": "/etc/passwd"}}),
    ])
    cell.metadata["nbgrader"] = {"grade_id": "x\"><script>alert(1)</script>", "solution": True}
    cell, _ = inert.SanitizeOutputs().preprocess_cell(cell, {}, 0)
    assert dict(cell.outputs[0].data) == {"text/plain": "<JS>"}
    assert dict(cell.outputs[1].data) == {"text/html": "&lt;script&gt;alert(1)&lt;/script&gt;<b>b</b>"}
    assert cell.outputs[2].metadata == {"image/png": {"height": 40}}
    assert cell.metadata["nbgrader"]["grade_id"] == "x___script_alert_1___script_"


def test_a_page_gets_its_policy_first_and_loses_the_scripts_of_its_template():
    page = ("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\" />\n<!-- Load mathjax -->\n<script src=\"m.js\"> "
            "</script>\n<script type=\"text/x-mathjax-config\">init()</script>\n<!-- End of mathjax configuration -->\n"
            "</head><body>x</body></html>")
    protected = inert.protect_page(page)
    assert protected.startswith("<!DOCTYPE html>\n<html>\n<head>\n" + inert.CSP_META)
    assert "<script" not in protected and "<body>x</body>" in protected
    assert inert.protect_page(protected) == protected
    assert "script-src 'none'" in inert.CSP and "'unsafe-inline'" not in inert.CSP.split("style-src")[0]
    with pytest.raises(ValueError):
        inert.protect_page("<html><body>no head</body></html>")
