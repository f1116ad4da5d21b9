"""The code's layout: the grader's layers import only downwards, and neither package has an
import cycle. Every import counts, those inside functions too (a lazy import is still a
dependency). Fast: it reads the source, it imports nothing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

#: the grader's layers, from the bottom: a module may import its own layer and those below
LAYERS = ["autograder.course", "autograder.isolation", "autograder.reporting", "autograder.grading",
          "autograder.lms", "autograder.audit", "autograder.portal", "autograder.cli", "autograder.__main__", "autograder.nbgrader_config"]
#: the package itself (its docstring)
BOTTOM = {"autograder"}


def modules(package: str) -> dict[str, Path]:
    """Every module of ``package`` by dotted name (a package by its __init__.py)."""
    found = {}
    for path in sorted((REPO / package).rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``name`` imports, anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def layer(name: str) -> int:
    if name in BOTTOM:
        return 0
    for index, prefix in enumerate(LAYERS):
        if name == prefix or name.startswith(prefix + "."):
            return index
    raise AssertionError(f"{name} is in no layer of LAYERS: add it to one")


def graph(package: str) -> dict[str, set[str]]:
    found = modules(package)
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for child in sorted(edges.get(node, ())):
            if state.get(child) == 1:
                return stack[stack.index(child):] + [child]
            if child not in state:
                found = visit(child)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_graders_layers_import_only_downwards():
    upwards = [f"{name} imports {target}" for name, targets in graph("autograder").items()
               for target in sorted(targets) if layer(target) > layer(name)]
    assert not upwards, "imports of a higher layer: " + "; ".join(upwards)


@pytest.mark.parametrize("package", ["autograder", "bbrl_course"])
def test_no_import_cycle(package):
    found = cycle(graph(package))
    assert found is None, f"import cycle in {package}: {' -> '.join(found)}"


def test_the_checks_find_what_they_look_for():
    """The two checks above fail on a graph that has the fault (so they can fail)."""
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None
    assert layer("autograder.grading.driver") > layer("autograder.reporting.tables") > layer("autograder.course.config")
    # a lazy import inside a function is found
    assert "autograder.grading.submission" in imports(
        "autograder.grading.zygote_like", _source("def f():\n    from autograder.grading import submission\n"),
        {"autograder.grading", "autograder.grading.submission"})


def _source(text: str) -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "module.py"
    path.write_text(text)
    return path


@pytest.mark.parametrize("package", ["autograder", "bbrl_course", "benchmarks", "tests"])
def test_no_module_compiles_with_a_warning(package):
    # a SyntaxWarning (a string "called" where a comma or + was meant, an invalid escape) is
    # printed on stderr by every command that imports the module: a user sees it, and a graded
    # cell that writes to stderr scores 0
    import warnings

    for path in sorted((REPO / package).rglob("*.py")):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            compile(path.read_text(), str(path), "exec")
