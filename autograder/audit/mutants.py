"""The mutants of the functions students write: small changes of a solution's body, made by
rules on its syntax tree, each a plausible bug.

A student function is a ``def`` (top-level, or a method of a class) of a solution cell of
``solutions/<assignment>.ipynb`` whose body holds ``### BEGIN SOLUTION`` ... ``### END
SOLUTION``; only the statements between the markers are changed. Each rule (``RULES``)
looks at one node of the tree and proposes replacements; each replacement is written back
into the cell's text at that node's place (the rest of the cell, comments included, is
kept), so that a mutant is the solution with one change.

A mutant's id is stable: ``<assignment>:<function>:<rule>:<digest>``, the digest taken over
the rule, the node's text, its replacement and how many identical changes come before it
in the function. It does not depend on line numbers: a docstring edited above keeps the
ids (a changed body changes only the ids of what changed).
"""

from __future__ import annotations

import ast
import copy
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

from autograder.course import SOLUTIONS, CourseError

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
MARKERS = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*(\n|\Z)", re.M)

#: names swapped with each other (a call's function, a method, an attribute)
SWAPS = {"min": "max", "max": "min", "minimum": "maximum", "maximum": "minimum", "amin": "amax", "amax": "amin",
         "mean": "sum", "sum": "mean", "zeros_like": "ones_like", "ones_like": "zeros_like",
         "randn_like": "rand_like", "randn": "rand", "nb_updates": "nb_steps", "nb_steps": "nb_updates"}
#: calls whose first two arguments are swapped (same kind, easily confused)
ARGUMENT_SWAPS = {"soft_update_params", "mse_loss", "smooth_l1_loss", "zip", "minimum", "maximum", "min", "max",
                  "clamp", "clip", "ContinuousQAgent"}
#: calls whose first argument is kept alone when the call is removed (a clamp, a copy, an order)
UNWRAPPED = {"clamp", "clip", "clamp_", "deepcopy", "reversed", "max", "min", "maximum", "minimum", "abs", "float",
             "detach", "with_prefix", "clone"}
#: modules whose attributes are functions, not objects a method is called on
MODULES = {"torch", "F", "nn", "np", "copy", "math"}


@dataclass(frozen=True)
class Mutant:
    id: str
    assignment: str
    function: str  # qualified: TD3.create_critics
    cell: str  # the grade_id of the solution cell
    line: int  # in the cell, from 1
    rule: str
    description: str  # one line: function, line, the change
    source: str  # the cell's new text (markers removed, as a student's cell)


@dataclass
class _Change:
    rule: str
    node: ast.AST | None  # the node replaced (None: a text edit of lines)
    replacement: str  # the new text of the node (or of the lines)
    what: str  # the change, for people
    lines: tuple[int, int] | None = None  # for a text edit of whole lines
    more: tuple = ()  # further (node, replacement) edits of the same change


def _segment(source: str, node: ast.AST) -> str:
    return ast.get_source_segment(source, node) or ast.unparse(node)


def _u(node: ast.AST) -> str:
    return ast.unparse(node)


def _name_of(func: ast.AST) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _is_method(call: ast.Call) -> bool:
    """``x.m(...)`` on an object (not ``torch.m(...)`` on a module)."""
    func = call.func
    return isinstance(func, ast.Attribute) and not (isinstance(func.value, ast.Name) and func.value.id in MODULES)


def _swap_12(text: str) -> str | None:
    """critic_1 <-> critic_2, "critic-1/" <-> "critic-2/"."""
    for a, b in (("_1", "_2"), ("_2", "_1"), ("-1/", "-2/"), ("-2/", "-1/")):
        if a in text:
            return text.replace(a, b, 1)
    return None


def _rules(node: ast.AST, parent: ast.AST | None, params: set[str], source: str):
    """The changes each rule proposes at one node (an expression or a statement)."""
    text = lambda n: _segment(source, n)  # noqa: E731
    # index 0 <-> 1, -1 -> 0, time moved off the last dimension
    if isinstance(node, ast.Subscript):
        index = node.slice
        if isinstance(index, ast.Constant) and type(index.value) is int and index.value in (0, 1):
            new = copy.copy(node)
            new.slice = ast.Constant(1 - index.value)
            yield _Change("index", node, _u(new), f"{text(node)} -> {_u(new)}")
        if isinstance(index, ast.UnaryOp) and isinstance(index.op, ast.USub) and _u(index) == "-1":
            new = copy.copy(node)
            new.slice = ast.Constant(0)
            yield _Change("index", node, _u(new), f"{text(node)} -> {_u(new)}")
        if isinstance(index, ast.Tuple) and index.elts and isinstance(index.elts[0], ast.Constant) \
                and index.elts[0].value is Ellipsis and len(index.elts) == 2:
            new = copy.copy(node)
            new.slice = index.elts[1]
            yield _Change("axis", node, _u(new), f"{text(node)} -> {_u(new)} (the first dimension, not the last)")
        if isinstance(node.value, ast.Name) and node.value.id in params and isinstance(node.ctx, ast.Load):
            yield _Change("detach", node, f"{text(node)}.detach()", f"{text(node)} -> {text(node)}.detach()")
    # a name: min <-> max, mean <-> sum ...; _1 <-> _2; tau -> 1 - tau
    if isinstance(node, ast.Attribute) and node.attr in SWAPS:
        new = copy.copy(node)
        new.attr = SWAPS[node.attr]
        yield _Change("swap", node, _u(new), f"{text(node)} -> {_u(new)}")
    if isinstance(node, ast.Name) and node.id in ("min", "max", "sum"):
        yield _Change("swap", node, SWAPS[node.id], f"{node.id} -> {SWAPS[node.id]}")
    if isinstance(node, (ast.Name, ast.Attribute)) and isinstance(node.ctx, ast.Load):
        swapped = _swap_12(node.id if isinstance(node, ast.Name) else node.attr)
        if swapped is not None:
            new = copy.copy(node)
            if isinstance(node, ast.Name):
                new.id = swapped
            else:
                new.attr = swapped
            yield _Change("twin", node, _u(new), f"{text(node)} -> {_u(new)} (the other twin)")
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        swapped = _swap_12(node.value)
        if swapped is not None:
            yield _Change("twin", node, repr(swapped), f"{node.value!r} -> {swapped!r} (the other twin)")
    if isinstance(node, ast.Name) and "tau" in node.id and isinstance(node.ctx, ast.Load) and not (
            isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Sub) and parent.right is node
            and _u(parent.left) in ("1", "1.0")):
        yield _Change("tau", node, f"(1 - {node.id})", f"{node.id} -> 1 - {node.id}")
    # a keyword dim= changed
    if isinstance(node, ast.keyword) and node.arg in ("dim", "axis") and isinstance(node.value, (ast.Constant, ast.UnaryOp)):
        value = _u(node.value)
        for other in {"0": ["1"], "1": ["0"], "-1": ["0"]}.get(value, ["0"]):
            yield _Change("dim", node, f"{node.arg}={other}", f"{node.arg}={value} -> {node.arg}={other}")
    # a term or a factor dropped, a sign flipped
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
        kind = "term" if isinstance(node.op, (ast.Add, ast.Sub)) else "factor"
        for side, kept in (("left", node.left), ("right", node.right)):
            if kind == "factor" and side == "left" and isinstance(node.op, ast.Div):
                continue  # a / b -> a is "b dropped" (right), b alone is no plausible bug
            yield _Change(kind, node, f"({text(kept)})", f"{text(node)} -> {text(kept)}")
        if isinstance(node.op, (ast.Add, ast.Sub)):
            new = copy.copy(node)
            new.op = ast.Sub() if isinstance(node.op, ast.Add) else ast.Add()
            yield _Change("sign", node, f"({_u(new)})", f"{text(node)} -> {_u(new)}")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Invert, ast.Not)):
        what = "sign" if isinstance(node.op, ast.USub) else "not"
        yield _Change(what, node, f"({text(node.operand)})", f"{text(node)} -> {text(node.operand)}")
    # a call: a clamp, a copy, a conversion removed; two arguments swapped
    if isinstance(node, ast.Call):
        name = _name_of(node.func)
        if name in UNWRAPPED and not (_is_method(node) and isinstance(parent, ast.Expr)):
            kept = node.func.value if _is_method(node) else (node.args[0] if node.args else None)
            if kept is not None:
                yield _Change("call", node, f"({text(kept)})", f"{text(node)} -> {text(kept)}")
        elif _is_method(node) and name and name.endswith("_") and not isinstance(parent, ast.Expr):
            # an in-place step of a chain removed (x.mul_(a).add_(b) -> x.add_(b))
            yield _Change("call", node, f"({text(node.func.value)})", f"{text(node)} -> {text(node.func.value)}")
        if name in ARGUMENT_SWAPS and len(node.args) >= 2 and not any(isinstance(a, ast.Starred) for a in node.args[:2]) \
                and _u(node.args[0]) != _u(node.args[1]):
            new = copy.copy(node)
            new.args = [node.args[1], node.args[0], *node.args[2:]]
            yield _Change("args", node, _u(new), f"{name}(a, b, ...) -> {name}(b, a, ...): {_u(node.args[0])} <-> {_u(node.args[1])}")
    # a comparison: its constant shifted, == <-> !=
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        right = node.comparators[0]
        if isinstance(right, ast.Constant) and type(right.value) is int:
            new = copy.copy(node)
            new.comparators = [ast.Constant(right.value + 1)]
            yield _Change("compare", node, _u(new), f"{text(node)} -> {_u(new)}")
        flips = {ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt}
        if type(node.ops[0]) in flips:
            new = copy.copy(node)
            new.ops = [flips[type(node.ops[0])]()]
            yield _Change("compare", node, _u(new), f"{text(node)} -> {_u(new)}")
    # a returned value detached
    if isinstance(node, ast.Return) and node.value is not None:
        yield _Change("detach", node.value, f"({text(node.value)}).detach()", f"return {text(node.value)}.detach()")


def _statement_changes(function: ast.FunctionDef, region: tuple[int, int], source: str):
    """Whole statements: one deleted; torch.no_grad() removed, or added around the body."""
    lines = source.splitlines()
    inside = [s for s in ast.walk(function) if isinstance(s, ast.stmt) and s is not function
              and region[0] < s.lineno and s.end_lineno < region[1]]
    for statement in inside:
        if isinstance(statement, (ast.Return, ast.With, ast.If, ast.For)):
            continue  # deleting a return or a whole block is no plausible bug (their parts are)
        indent = " " * statement.col_offset
        first = lines[statement.lineno - 1].strip()
        yield _Change("delete", None, indent + "pass", f"deleted: {first}", (statement.lineno, statement.end_lineno))
    for statement in inside:
        if isinstance(statement, ast.With) and "no_grad" in _u(statement.items[0].context_expr):
            body = [lines[i - 1] for i in range(statement.body[0].lineno, statement.end_lineno + 1)]
            shift = statement.body[0].col_offset - statement.col_offset
            kept = "\n".join(line[shift:] if line[:shift].strip() == "" else line for line in body)
            yield _Change("no_grad", None, kept, f"'with {_u(statement.items[0].context_expr)}:' removed",
                          (statement.lineno, statement.end_lineno))
    top = _outermost(function, region)
    if top and not any(isinstance(s, ast.With) and "no_grad" in _u(s.items[0].context_expr) for s in inside):
        start, end = top[0].lineno, top[-1].end_lineno
        indent = " " * top[0].col_offset
        body = "\n".join("    " + line if line.strip() else line for line in lines[start - 1:end])
        yield _Change("no_grad", None, f"{indent}with torch.no_grad():\n{body}", "the body run under torch.no_grad()",
                      (start, end))


def _outermost(function: ast.FunctionDef, region: tuple[int, int]) -> list[ast.stmt]:
    """The statements between the markers that no other statement there holds, in order."""
    inside = lambda s: region[0] < s.lineno and s.end_lineno < region[1]  # noqa: E731
    found = []

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt) and inside(child):
                found.append(child)
            elif isinstance(child, ast.stmt):
                visit(child)

    visit(function)
    return found


def _tau_swaps(function: ast.FunctionDef, region: tuple[int, int], source: str):
    """tau <-> 1 - tau everywhere at once, for a name that appears as ``1 - name``."""
    nodes = [n for s in _outermost(function, region) for n in ast.walk(s)]
    ones = [n for n in nodes if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Sub) and _u(n.left) in ("1", "1.0")
            and isinstance(n.right, ast.Name)]
    for name in sorted({n.right.id for n in ones}):
        mine = [n for n in ones if n.right.id == name]
        inner = {id(n.right) for n in mine}
        alone = [n for n in nodes if isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Load)
                 and id(n) not in inner]
        if not alone:
            continue
        edits = [(n, name) for n in mine] + [(n, f"(1 - {name})") for n in alone]
        yield _Change("tau", edits[0][0], edits[0][1], f"{name} <-> 1 - {name} (everywhere)", more=tuple(edits[1:]))


def _region(function: ast.FunctionDef, lines: list[str]) -> tuple[int, int] | None:
    """The lines (from 1) of the BEGIN and END markers inside a function, or None."""
    begin = end = None
    for number in range(function.lineno, function.end_lineno + 2):
        if number > len(lines):
            break
        stripped = lines[number - 1].strip()
        if stripped == BEGIN and begin is None:
            begin = number
        elif stripped == END and begin is not None:
            end = number
            break
    return (begin, end) if begin and end else None


def _functions(tree: ast.Module):
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            yield node.name, node
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    yield f"{node.name}.{item.name}", item


def _apply(source: str, change: _Change) -> str:
    lines = source.splitlines(keepends=True)
    if change.lines is not None:
        start, end = change.lines
        return "".join(lines[:start - 1]) + change.replacement + "\n" + "".join(lines[end:])
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line.encode()))
    data = source.encode()
    edits = sorted([(change.node, change.replacement), *change.more],
                   key=lambda e: (e[0].lineno, e[0].col_offset), reverse=True)
    for node, replacement in edits:  # from the end, so that the offsets before stay right
        begin = offsets[node.lineno - 1] + node.col_offset
        finish = offsets[node.end_lineno - 1] + node.end_col_offset
        data = data[:begin] + replacement.encode() + data[finish:]
    return data.decode()


def function_mutants(assignment: str, cell_id: str, source: str) -> list[Mutant]:
    """The mutants of the student functions of one solution cell (its text with markers)."""
    tree = ast.parse(source)
    lines = source.splitlines()
    found: list[Mutant] = []
    for qualname, function in _functions(tree):
        region = _region(function, lines)
        if region is None:
            continue
        params = {a.arg for a in function.args.args}
        changes = []
        for statement in _outermost(function, region):
            parents = {}
            for parent in ast.walk(statement):
                for child in ast.iter_child_nodes(parent):
                    parents[child] = parent
            for node in ast.walk(statement):
                changes.extend(_rules(node, parents.get(node), params, source))
        changes.extend(_statement_changes(function, region, source))
        changes.extend(_tau_swaps(function, region, source))
        seen_trees, occurrences = {ast.dump(tree)}, {}
        for change in changes:
            new_source = _apply(source, change)
            try:
                new_tree = ast.dump(ast.parse(new_source))
            except SyntaxError:
                continue  # a rule wrote something that is not Python: no mutant
            if new_tree in seen_trees:
                continue  # no change, or the same mutant as another rule's
            seen_trees.add(new_tree)
            original = _segment(source, change.node) if change.node is not None else \
                "\n".join(lines[change.lines[0] - 1:change.lines[1]])
            key = (change.rule, " ".join(original.split()), " ".join(change.replacement.split()))
            occurrences[key] = occurrences.get(key, 0) + 1
            digest = hashlib.sha1(repr((*key, occurrences[key])).encode()).hexdigest()[:8]
            line = change.node.lineno if change.node is not None else change.lines[0]
            found.append(Mutant(
                id=f"{assignment}:{qualname}:{change.rule}:{digest}", assignment=assignment, function=qualname,
                cell=cell_id, line=line, rule=change.rule,
                description=f"{qualname}, line {line} of {cell_id}: {_short(change.what)}",
                source=MARKERS.sub("", new_source)))
    return found


def _short(text: str, width: int = 160) -> str:
    """One line: spaces collapsed, brackets' inner spaces removed, cut at ``width``."""
    line = re.sub(r"([(\[]) | ([)\]])", r"\1\2", " ".join(text.split()))
    return line if len(line) <= width else line[:width - 3] + "..."


def solution_cells(assignment: str, solutions: Path = SOLUTIONS) -> list[tuple[str, str]]:
    """(grade_id, source) of the solution cells of an assignment."""
    path = Path(solutions) / f"{assignment}.ipynb"
    if not path.exists():
        raise CourseError(f"no {path.name} in {solutions}: the assignments are {', '.join(p.stem for p in Path(solutions).glob('*.ipynb'))}")
    notebook = nbformat.read(str(path), as_version=4)
    return [(c.metadata["nbgrader"]["grade_id"], c.source) for c in notebook.cells
            if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")]


def mutants(assignment: str, solutions: Path = SOLUTIONS) -> list[Mutant]:
    """Every mutant of the functions students write in an assignment."""
    found = []
    for cell_id, source in solution_cells(assignment, solutions):
        try:
            found.extend(function_mutants(assignment, cell_id, source))
        except SyntaxError as error:
            raise CourseError(f"solutions/{assignment}.ipynb, cell {cell_id}: not Python ({error.msg}, line "
                              f"{error.lineno}): fix the solution") from None
    ids = [m.id for m in found]
    if len(ids) != len(set(ids)):  # two functions of the same name in two cells: told apart by their cell
        found = [Mutant(**{**m.__dict__, "id": m.id.replace(f":{m.function}:", f":{m.cell}/{m.function}:", 1)})
                 for m in found]
    return found
