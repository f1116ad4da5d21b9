"""The grading side of the course: release, hand-out, execution and grading of notebooks."""

import sys
import types


def _defer_rfc3987_syntax() -> None:
    """Makes ``import nbformat`` 1.1 s cheaper in every process of the grader.

    jupyter-events asks for ``jsonschema[format-nongpl]``, which installs rfc3987-syntax; when
    it is installed, jsonschema imports it with itself (to check the "iri" format), and its
    import compiles 39 lark grammars: 1.1 CPU-seconds of the 1.2 that ``import nbformat``
    costs (measured 2026-12-07, ``python -c "import nbformat"``: 1.23 s; 0.15 s without it).
    nbformat, hence nbgrader and everything here, imports jsonschema. Nothing here checks an
    IRI, so the module is replaced by a stand-in whose one function jsonschema takes
    (``is_valid_syntax``) imports the real module the first time it is called: the checks
    are the same, their cost is paid only by a process that makes one."""
    if "rfc3987_syntax" in sys.modules:
        return
    try:
        from importlib.util import find_spec

        if find_spec("rfc3987_syntax") is None:
            return
    except (ImportError, ValueError):
        return
    stand_in = types.ModuleType("rfc3987_syntax", "Stand-in: imports rfc3987_syntax at its first use")

    def is_valid_syntax(*args, **kwargs):
        if sys.modules.get("rfc3987_syntax") is stand_in:
            del sys.modules["rfc3987_syntax"]
        import rfc3987_syntax

        return rfc3987_syntax.is_valid_syntax(*args, **kwargs)

    stand_in.is_valid_syntax = is_valid_syntax
    sys.modules["rfc3987_syntax"] = stand_in


_defer_rfc3987_syntax()
