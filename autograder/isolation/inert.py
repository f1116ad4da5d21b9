"""What comes out of the sandbox is data: it is shown, never run or obeyed.

Text (``text``, ``csv_cell``): a student's error messages, the notes and names that reach
the instructor's terminal (the tables of ``python -m autograder grade``), the CSVs, the logs
and the class report have their control characters made visible: an escape sequence
(ANSI colours and cursor moves, an OSC 52 write to the clipboard), a carriage return that
rewrites a line, a bidirectional override that reorders what is read, shows as ``\\x1b``,
``\\r``, ``\\u202e``. A CSV cell that a spreadsheet would take for a formula (``=``, ``+``,
``-``, ``@``) starts with an apostrophe.

HTML (``clean_html``, ``SanitizeOutputs``, ``protect_page``): the pages made from a
student's notebook (the feedback, formgrader's views of a submission) run none of its
markup. nbconvert's ``sanitize_html`` (set in autograder/nbgrader_config.py) leaves out
Javascript outputs and passes HTML outputs through ``clean_html``, which this module
replaces by a stricter one (no script, no event handler, no ``javascript:`` link, images
from data only); nbgrader's own templates render markdown cells without it, so the filter
they all end with, ``strip_files_prefix``, is replaced too. ``SanitizeOutputs`` also
cleans the notebook itself before any template sees it. The feedback pages then get a
Content-Security-Policy that forbids every script (``protect_page``): they need none.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import bleach

# --- text for a terminal, a CSV, a log

#: Unicode categories shown escaped: controls (C0, DEL, C1), format characters (bidi
#: overrides, zero-width), line and paragraph separators, lone surrogates
_HIDDEN = {"Cc", "Cf", "Zl", "Zp", "Cs"}


def _visible(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char, f"\\x{code:02x}")
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def text(value, keep: str = "") -> str:
    """``value`` as a string whose control characters are shown, not obeyed (``\\x1b``,
    ``\\r``, ``\\u202e``); the characters in ``keep`` (say ``"\\n"`` for a log) stay.
    Idempotent: what it returns is returned unchanged."""
    value = str(value)
    return "".join(_visible(c) if c not in keep and unicodedata.category(c) in _HIDDEN else c for c in value)


#: what makes a spreadsheet read a cell as a formula
FORMULA = ("=", "+", "-", "@")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def csv_cell(value) -> str:
    """A CSV cell: ``text`` of it, and an apostrophe before anything that a spreadsheet would
    run as a formula (a number stays a number)."""
    value = text(value)
    if value.lstrip().startswith(FORMULA) and not _NUMBER.fullmatch(value.strip()):
        return "'" + value
    return value


# --- HTML made from a student's notebook

#: the markup a page may show: what markdown and pandas write, and pygments' highlighting
TAGS = frozenset(bleach.ALLOWED_TAGS) | {
    "p", "div", "span", "pre", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "img", "sub", "sup",
    "table", "thead", "tbody", "tfoot", "tr", "th", "td", "caption", "colgroup", "col",
    "dl", "dt", "dd", "del", "ins", "s", "kbd", "samp", "var", "small", "details", "summary", "figure", "figcaption",
}
#: images from the page itself only (a figure is a data: URI): nothing fetched, nothing run
IMAGE_SOURCE = re.compile(r"data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=\s]*", re.I)
LINK = re.compile(r"(https?:|mailto:|#)", re.I)
SCHEME = re.compile(r"\s*[a-z][a-z0-9+.-]*:", re.I)


def _attribute(tag: str, name: str, value: str) -> bool:
    if name in ("class", "id", "title"):
        return True
    if tag == "a":
        # http(s), mail, anchors and relative addresses (no scheme: nothing that runs)
        return name == "href" and (bool(LINK.match(value.strip())) or not SCHEME.match(value))
    if tag == "img":
        if name == "src":
            return bool(IMAGE_SOURCE.fullmatch(value.strip()))
        return name in ("alt", "width", "height")
    if tag in ("td", "th"):
        return name in ("colspan", "rowspan", "align")
    if tag in ("table", "ol"):
        return name in ("border", "start")
    return False


def clean_html(html) -> str:
    """HTML without what runs: markup outside ``TAGS`` is shown as text (escaped), event
    handlers and styles dropped, links only to http(s), mail and anchors, images only from
    data: URIs. Replaces nbconvert's ``clean_html`` filter (see the module's docstring)."""
    html = html.decode() if isinstance(html, bytes) else str(html)
    return bleach.clean(html, tags=TAGS, attributes=_attribute, protocols={"http", "https", "mailto", "data"},
                        strip=False, strip_comments=True)


def strip_files_prefix(html) -> str:
    """nbconvert's ``strip_files_prefix`` then ``clean_html``: every template pipes the
    markdown cells' HTML through it (nbgrader's feedback and formgrade templates without
    cleaning it), so replacing it cleans them all."""
    from nbconvert.filters.strings import strip_files_prefix as _strip_files_prefix

    return clean_html(_strip_files_prefix(html))


#: the outputs a page may show; Javascript, widgets, SVG and anything unknown are dropped
#: (an output always has text/plain too, which then shows)
SAFE_OUTPUTS = {"text/plain", "image/png", "image/jpeg", "text/latex", "application/json"}
CLEANED_OUTPUTS = {"text/html", "text/markdown"}
_GRADE_ID = re.compile(r"[\w.-]+")


def _dimension(value):
    """An image's width or height as a number, or None (the template writes it unquoted)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() and 0 < number < 100_000 else None


def _sanitize_outputs() -> type:
    """``SanitizeOutputs``, an nbconvert preprocessor: defined when first asked for (the
    module's ``__getattr__``), so that a process that only shows text (``text``: a Dask
    worker, the results) does not import nbconvert (0.2 CPU-seconds)."""
    from nbconvert.preprocessors import Preprocessor

    class SanitizeOutputs(Preprocessor):
        """Cleans a notebook before any template renders it: outputs of kinds that may run are
        dropped, HTML and markdown outputs cleaned, image sizes made numbers and file names
        dropped (templates write them in attributes), markdown cells and their attachments left
        to ``strip_files_prefix``. A grade_id that is not a name is made one (templates write it
        unescaped)."""

        def preprocess_cell(self, cell, resources, index):
            meta = cell.get("metadata", {}).get("nbgrader")
            if isinstance(meta, dict) and "grade_id" in meta and not _GRADE_ID.fullmatch(str(meta["grade_id"])):
                meta["grade_id"] = re.sub(r"[^\w.-]", "_", str(meta["grade_id"])) or "_"
            if cell.get("cell_type") == "raw":
                cell.source = clean_html(cell.source)
            if cell.get("cell_type") != "code":
                return cell, resources
            for output in cell.get("outputs", []):
                if output.get("output_type") not in ("display_data", "execute_result"):
                    continue
                data = output.get("data", {})
                for kind in list(data):
                    if kind in CLEANED_OUTPUTS:
                        value = data[kind]
                        data[kind] = clean_html(value if isinstance(value, str) else "".join(value))
                    elif kind not in SAFE_OUTPUTS:
                        del data[kind]
                metadata = output.get("metadata", {})
                metadata.pop("filenames", None)
                for kind in list(metadata):
                    if isinstance(metadata[kind], dict) and kind.startswith("image/"):
                        for size in ("width", "height"):
                            if size in metadata[kind]:
                                value = _dimension(metadata[kind][size])
                                if value is None:
                                    del metadata[kind][size]
                                else:
                                    metadata[kind][size] = value
            return cell, resources

    SanitizeOutputs.__qualname__ = "SanitizeOutputs"
    return SanitizeOutputs


def __getattr__(name: str):
    if name == "SanitizeOutputs":
        globals()[name] = _sanitize_outputs()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: the pages the course writes show what they hold and run nothing: no script at all,
#: styles inline, images from data: URIs, nothing fetched, no form sent anywhere
CSP = ("default-src 'none'; script-src 'none'; object-src 'none'; style-src 'unsafe-inline'; "
       "img-src data:; font-src 'self' data:; base-uri 'none'; form-action 'none'")
CSP_META = f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
#: MathJax, which nbgrader's feedback template loads from a CDN: with no script allowed, a
#: page without it (the formulas of the instructor's text show as TeX)
_MATHJAX = re.compile(r"\s*<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.S)
_HEAD = re.compile(r"<head\b[^>]*>", re.I)


def protect_page(html: str) -> str:
    """A page of the course (feedback, report) with its Content-Security-Policy first in its
    head, and without the scripts of nbgrader's template (MathJax)."""
    html = _MATHJAX.sub("", html, count=1)
    head = _HEAD.search(html)
    if head is None:
        raise ValueError("a page without <head>: cannot give it its Content-Security-Policy")
    if html[head.end():].lstrip().startswith(CSP_META):
        return html
    return html[:head.end()] + "\n" + CSP_META + html[head.end():]


def protect_feedback(folder: Path) -> None:
    """Every HTML page under ``folder`` (a submission's feedback) given its policy, once."""
    for page in Path(folder).rglob("*.html"):
        html = page.read_text()
        protected = protect_page(html)
        if protected != html:
            page.write_text(protected)
