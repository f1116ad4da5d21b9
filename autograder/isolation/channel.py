"""The student's side of grading: a plain Python process, in the sandbox, that runs the
student's notebook (never its tests) and then answers the judge's requests over a pipe.

The judge (``autograder.isolation.judge``, another process, where the student's code never
runs) executes every test cell. When a test calls a function the student wrote, the
call crosses to this process; what comes back is data (numbers, strings, tensors
by value, containers of them) or a handle to an object that stays here (a TD3
object, a network), on which the judge can read attributes and call methods.

This file is the only part of the grader the sandbox sees: it is mounted read-only at
/sandbox/lib/channel.py and imports nothing of ``autograder`` (which holds the hidden
tests). It holds no secret: the student may read it, and may even patch it from their
own code. That changes what this process answers: its values are what the student's
code could answer anyway, and what a call wrote in its tensor arguments is read by the
judge from the memory they share, not from the answer. What it reports about the
student's objects (a graph recorded, a gradient, a tensor replaced) it could forge; a
change to this file's code, its server's state or its serializer is noted as tampering
(best effort: it runs here).

Wire format: frames of an 8-byte length and a payload. Requests (judge -> here) are
pickles, from the trusted side. Answers (here -> judge) are written with
``torch.save`` and read with ``torch.load(weights_only=True)``: plain containers,
numbers, strings and tensors, nothing that runs code when it is read.
"""

from __future__ import annotations

import builtins
import io
import os
import pickle
import signal
import struct
import sys

HEADER = struct.Struct("<Q")
#: longest answer the judge accepts (a student's function returning 1 GB is not graded)
MAX_FRAME = 256 * 2**20
#: printed output of the student's code kept per request
MAX_PRINTED = 20_000
#: memory shared with the judge (a sealed memfd: it cannot grow), where the tensors of the
#: calls' arguments live, so that the judge reads itself what a call did to them
ARENA_SIZE = 64 * 2**20


def shared_tensor(buffer, torch, offset: int, dtype, shape, stride, nbytes: int):
    """The tensor whose storage is bytes [offset, offset + nbytes) of ``buffer`` (the memory
    shared by the judge and the student's process: both build the same view of it)."""
    raw = torch.frombuffer(buffer, dtype=torch.uint8, count=nbytes, offset=offset)
    return raw.view(dtype).as_strided(tuple(shape), tuple(stride))


def write_frame(stream, payload: bytes) -> None:
    stream.write(HEADER.pack(len(payload)) + payload)
    stream.flush()


def read_frame(stream) -> bytes | None:
    """The next frame, or None at the end of the stream."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ValueError(f"a frame of {size} bytes")
    payload = stream.read(size)
    if len(payload) < size:
        return None
    return payload


def spare_dynamo(torch) -> int:
    """Lets the student's optimizers run without importing torch._dynamo (1 CPU-second of
    imports, in every student's process: torch compiles nothing here). torch.optim imports it
    on the first call of an optimizer's ``step`` (``_use_grad_for_differentiable``, for a
    graph break) and of ``zero_grad``, ``add_param_group``, ``state_dict``... (``_disable_dynamo``,
    to keep dynamo out of them). Both only matter while dynamo traces, which needs it
    imported: the methods of torch.optim's own optimizers are replaced by the same methods
    that do the same once torch._dynamo is imported (by the student's torch.compile, say), and
    nothing more before. Returns the number of methods replaced."""
    import functools

    def disabled(fn):
        def call(*args, **kwargs):
            if "torch._dynamo" in sys.modules:  # torch's own path, from now on
                fn.__dynamo_disable = torch._dynamo.disable(fn, True, wrapping=False)
                return fn.__dynamo_disable(*args, **kwargs)
            return fn(*args, **kwargs)
        return call

    def graph_break():
        if "torch._dynamo" in sys.modules:
            torch._dynamo.graph_break()

    def grad_for_differentiable(func):  # torch.optim.optimizer._use_grad_for_differentiable, as it does it
        def step(self, *args, **kwargs):
            previous = torch.is_grad_enabled()
            try:
                torch.set_grad_enabled(self.defaults["differentiable"])
                graph_break()
                return func(self, *args, **kwargs)
            finally:
                graph_break()
                torch.set_grad_enabled(previous)
        return functools.update_wrapper(step, func)

    replaced = 0
    classes = [torch.optim.Optimizer]
    while classes:
        cls = classes.pop()
        classes.extend(cls.__subclasses__())
        for name, method in list(vars(cls).items()):
            code, inner = getattr(method, "__code__", None), getattr(method, "__wrapped__", None)
            if code is None or inner is None:
                continue
            if code.co_name == "inner" and "fn" in code.co_freevars and not hasattr(inner, "__dynamo_disable"):
                inner.__dynamo_disable = disabled(inner)  # what torch's wrapper calls, once set
                replaced += 1
            elif code.co_name == "_use_grad":
                setattr(cls, name, grad_for_differentiable(inner))
                replaced += 1
    return replaced


class Server:
    """Runs the student's cells, then serves the judge's requests until the pipe closes."""

    def __init__(self, requests, answers, arena=None):
        import numpy
        import torch

        from bbrl_course import checks

        spare_dynamo(torch)
        self.requests, self.answers, self.arena = requests, answers, arena
        self.torch, self.numpy, self.checks = torch, numpy, checks
        self.objects: dict[int, object] = {}  # handles given to the judge (kept alive: ids stay unique)
        self.namespace: dict = {"__name__": "__main__", "__builtins__": builtins}
        self.ipython = _IPythonStandIn()
        self.namespace["get_ipython"] = lambda: self.ipython
        self.watched = _watched(torch, numpy, checks)
        self.records_autograd = checks.records_autograd  # the course's, whatever the student's code does
        self.count_updates = checks.count_updates
        self.update_facts = checks.update_facts
        self.reported: set[str] = set()
        # the server's own state: what it holds at the start is what it must hold at every answer
        self.watched.update({f"the channel's server.{name}": (self, name, value) for name, value in vars(self).items()})
        self.own_names = frozenset(vars(self)) | {"own_names"}

    # --- encoding of answers: data by value, anything else as a handle
    def encode(self, value, depth: int = 0):
        torch, numpy = self.torch, self.numpy
        if value is None or type(value) in (bool, int, float, str):
            return value
        if depth > 20:
            return self.handle(value)
        if isinstance(value, torch.Tensor) and value.layout == torch.strided and not value.is_complex():
            self.objects[id(value)] = value
            return {"~": "tensor", "id": id(value), "value": value.detach().cpu().clone().contiguous(),
                    "requires_grad": bool(value.requires_grad), "leaf": bool(value.is_leaf),
                    "param": isinstance(value, torch.nn.Parameter)}
        if type(value) is numpy.ndarray and value.dtype.kind in "biuf":
            return {"~": "ndarray", "value": torch.from_numpy(numpy.ascontiguousarray(value)).clone()}
        if isinstance(value, numpy.generic) and value.dtype.kind in "biuf":
            return value.item()
        if type(value) in (list, tuple):
            return {"~": type(value).__name__, "items": [self.encode(v, depth + 1) for v in value]}
        if type(value) is dict:
            return {"~": "dict", "items": [[self.encode(k, depth + 1), self.encode(v, depth + 1)]
                                           for k, v in value.items()]}
        return self.handle(value)

    def handle(self, value):
        self.objects[id(value)] = value
        try:
            text = repr(value)[:200]
        except Exception:
            text = f"<{type(value).__name__}>"
        return {"~": "handle", "id": id(value), "type": type(value).__qualname__, "repr": text,
                "callable": callable(value)}

    # --- decoding of requests: pickles from the judge; tensors and handles by persistent id
    def decode(self, payload: bytes):
        objects, torch, arena = self.objects, self.torch, self.arena
        sent: dict[int, tuple] = {}  # index -> (tensor here, snapshot, data pointer)

        class Unpickler(pickle.Unpickler):
            def persistent_load(self, pid):
                kind = pid[0]
                if kind == "ref":
                    return objects[pid[1]]
                if kind in ("tensor", "shared"):
                    _, index, value, requires_grad, is_param = pid
                    if kind == "shared":  # in the memory shared with the judge (``value`` says where)
                        if arena is None:
                            raise pickle.UnpicklingError("a shared tensor, and no shared memory")
                        value = shared_tensor(arena, torch, *value)
                    if index not in sent:
                        tensor = torch.nn.Parameter(value, requires_grad) if is_param else value.requires_grad_(requires_grad)
                        sent[index] = (tensor, tensor.detach().clone(), tensor.data_ptr())
                    return sent[index][0]
                raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")

        return Unpickler(io.BytesIO(payload)).load(), sent

    # --- the requests
    def serve(self):
        while True:
            payload = read_frame(self.requests)
            if payload is None:
                return
            (op, body), sent = self.decode(payload)
            printed = io.StringIO()
            saved = sys.stdout, sys.stderr
            sys.stdout = sys.stderr = printed
            try:
                answer = getattr(self, f"op_{op}")(body, sent)
            except BaseException as error:  # the student's exceptions (SystemExit included) go to the judge
                answer = {"raise": self.describe(error)}
            finally:
                sys.stdout, sys.stderr = saved
            text = printed.getvalue()
            answer["printed"] = text[:MAX_PRINTED]
            if len(text) > MAX_PRINTED:  # what was left out (the judge bounds what it keeps itself)
                answer["printed_dropped"] = len(text.encode(errors="replace")) - len(text[:MAX_PRINTED].encode(errors="replace"))
            answer["tampering"] = self.tampering()
            buffer = io.BytesIO()
            self.torch.save(answer, buffer)
            write_frame(self.answers, buffer.getvalue())

    def describe(self, error: BaseException) -> dict:
        frame = error.__traceback__
        while frame is not None and frame.tb_next is not None:
            frame = frame.tb_next
        where = frame.tb_frame.f_code.co_qualname if frame is not None else "<module>"
        try:
            message = str(error)[:2000]
        except Exception:
            message = "(an error whose message cannot be shown)"
        return {"type": type(error).__name__, "builtin": type(error).__module__ == "builtins",
                "message": message, "where": where}

    def op_setup(self, body, sent):
        """Runs the notebook's cells (the student's and the given ones, never the tests), as a
        notebook would: what each cell prints, displays (``display``, its last expression,
        the matplotlib figures of the student's own cells) and raises becomes its outputs,
        cut at the byte limits and sent to the judge as soon as the cell ends (a frame
        ``{"progress": ...}`` per cell): the feedback shows them, and the student's code
        runs once per submission. ``cells``: [label, source, whether it shows figures]."""
        import ast
        import base64

        from IPython.core.formatters import DisplayFormatter
        from IPython.core.inputtransformer2 import TransformerManager

        cells, names, seconds, (cell_bytes, total_bytes) = body
        transformer, formatter = TransformerManager(), DisplayFormatter()
        current = _Outputs(cell_bytes, total_bytes)

        def display(*objects, include=None, exclude=None, metadata=None, raw=False, **ignored):
            for value in objects:
                if raw:
                    data, meta = value, dict(metadata or {})
                else:
                    data, meta = formatter.format(value, include=include, exclude=exclude)
                    meta = {**meta, **(metadata or {})}
                current.add("display_data", data, meta)

        draws = [True]  # whether the cell that runs shows its figures (a given cell's are the same for all)

        def figures(*args, **kwargs):  # as matplotlib's inline backend: every open figure, then closed
            pyplot = sys.modules.get("matplotlib.pyplot")
            if pyplot is None:
                return
            for number in pyplot.get_fignums() if draws[0] else ():
                figure = pyplot.figure(number)
                image = io.BytesIO()
                figure.savefig(image, format="png", bbox_inches="tight")
                current.add("display_data", {"image/png": base64.b64encode(image.getvalue()).decode(),
                                             "text/plain": repr(figure)}, {})
            pyplot.close("all")

        try:
            import IPython.core.display
            import IPython.core.display_functions
            import IPython.display
        except ImportError:
            pass
        else:
            IPython.display.display = IPython.core.display_functions.display = display
            if hasattr(IPython.core.display, "display"):
                IPython.core.display.display = display
        self.namespace["display"] = display
        errors = []
        signal.signal(signal.SIGALRM, _over_time)
        for index, (label, source, shows_figures) in enumerate(cells):
            draws[0] = shows_figures
            if "matplotlib.pyplot" in sys.modules:  # plt.show() shows, as in a notebook
                sys.modules["matplotlib.pyplot"].show = figures
            saved = sys.stdout, sys.stderr
            current.start()
            sys.stdout, sys.stderr = _Stream(current, "stdout"), _Stream(current, "stderr")
            signal.setitimer(signal.ITIMER_REAL, seconds)  # a cell's time limit, as in the notebook
            try:
                tree = ast.parse(transformer.transform_cell(source), f"<cell {label}>")
                # a notebook shows the value of a cell's last expression, unless a ";" ends the cell
                shown = not source.rstrip().endswith(";")
                last = tree.body.pop() if shown and tree.body and isinstance(tree.body[-1], ast.Expr) else None
                exec(compile(tree, f"<cell {label}>", "exec"), self.namespace)
                if last is not None:
                    value = eval(compile(ast.Expression(last.value), f"<cell {label}>", "eval"), self.namespace)
                    if value is not None:
                        data, meta = formatter.format(value)
                        current.add("execute_result", data, meta)
                figures()
            except BaseException as error:  # as in a notebook: the next cells still run
                if isinstance(error, KeyboardInterrupt):
                    raise
                signal.setitimer(signal.ITIMER_REAL, 0)
                described = self.describe(error)
                errors.append([label, described["type"], described["message"][:300]])
                current.error(error, described, timed_out=isinstance(error, CellTimeLimit))
                try:  # its figures are not the next cell's
                    if "matplotlib.pyplot" in sys.modules:
                        sys.modules["matplotlib.pyplot"].close("all")
                except Exception:
                    pass
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                sys.stdout, sys.stderr = saved
            buffer = io.BytesIO()
            self.torch.save({"progress": [index, current.outputs, current.dropped]}, buffer)
            write_frame(self.answers, buffer.getvalue())
        prefix = "bbrl_course.checks."
        helpers = {label[len(prefix):]: original for label, (_, _, original) in self.watched.items()
                   if label.startswith(prefix)}
        for name, value in self.namespace.items():
            if name in helpers and value is not helpers[name]:
                self.note(f"the notebook redefines the course's {name}")
        found = {name: self.encode(self.namespace[name]) for name in names if name in self.namespace}
        return {"errors": errors, "names": found}

    def op_call(self, body, sent):
        # watch: whether a test watches this call for an autograd graph (the watch, a torch
        # function mode, slows every torch operation by about a third: a training's too)
        target, args, kwargs, *watch = body
        function = target
        modules = _modules_in(args, self.torch.nn.Module)
        slots = {path: _slots(module) for path, module in modules.items()}
        if watch and not watch[0]:
            result, built = function(*args, **kwargs), False
        else:
            with self.records_autograd() as graph:
                result = function(*args, **kwargs)
            built = bool(graph.built)
        answer = {"value": self.encode(result), "built": built,
                  "changed": self.changed(sent), "replaced": self.replaced(modules, slots)}
        torch = self.torch
        if isinstance(result, torch.Tensor) and result.requires_grad and result.numel() == 1:
            inputs = [(index, tensor) for index, (tensor, _, _) in sent.items() if tensor.requires_grad]
            if inputs:
                grads = torch.autograd.grad(result.sum(), [t for _, t in inputs], allow_unused=True, retain_graph=True)
                answer["grads"] = [[index, None if g is None else g.detach().clone()]
                                   for (index, _), g in zip(inputs, grads)]
        return answer

    def changed(self, sent) -> list:
        """The judge's tensors that the call modified: new values, and whether their storage moved."""
        changed = []
        for index, (tensor, snapshot, pointer) in sent.items():
            moved = tensor.data_ptr() != pointer
            if moved or tensor.shape != snapshot.shape or not self.torch.equal(tensor.detach(), snapshot):
                changed.append([index, tensor.detach().clone(), moved])
        return changed

    def replaced(self, modules, slots) -> list:
        """Parameters of the judge's networks that the call replaced by other tensors."""
        replaced = []
        for path, module in modules.items():
            for key, before in slots[path].items():
                owner, name = key
                now = dict(module.named_modules()).get(owner)
                tensor = None if now is None else now._parameters.get(name)
                if tensor is not before and tensor is not None:
                    replaced.append([list(path), owner, name, self.encode(tensor)])
        return replaced

    def op_getattr(self, body, sent):
        target, name = body
        return {"value": self.encode(getattr(target, name))}

    def op_iter(self, body, sent):
        return {"value": self.encode(iter(body))}

    def op_next(self, body, sent):
        return {"value": self.encode(next(body))}

    def op_len(self, body, sent):
        return {"value": int(len(body))}

    def op_getitem(self, body, sent):
        target, key = body
        return {"value": self.encode(target[key])}

    def op_helper(self, body, sent):
        """Course helpers that run the student's code under instruments (their results are the
        student's code's behaviour, as any answer)."""
        name, obj, args = body
        if name == "count_updates":
            return {"value": self.encode(self.count_updates(obj, *args))}
        if name == "update_facts":
            return {"value": self.encode(self.update_facts(obj, *args))}
        if name == "best_policy":
            means = [float(rewards.mean()) for _, rewards in obj.eval_history]
            best = max(range(len(means)), key=means.__getitem__) if means else -1
            policy = obj.best_policy
            state = {} if policy is None else {k: v.detach().clone() for k, v in policy.state_dict().items()}
            curve = [(int(steps), mean) for (steps, _), mean in zip(obj.eval_history, means)]
            return {"value": self.encode({"state": state, "evaluation": best, "best_reward": float(obj.best_reward),
                                          "curve": curve})}
        raise ValueError(f"no helper {name}")

    # --- what the student's code changed that no honest notebook changes
    def note(self, what: str):
        self.reported.add(what)

    def tampering(self) -> list[str]:
        for label, (owner, attribute, original) in self.watched.items():
            if getattr(owner, attribute, None) is not original:
                self.note(f"replaced {label}")
        for hook in sorted(self.ipython.touched):
            self.note(f"changes IPython's {hook}")
        for name in sorted(set(vars(self)) - self.own_names):
            self.note(f"replaced the channel's Server.{name} (on the server)"[:120])
        if sys.gettrace() is not None or sys.getprofile() is not None:
            self.note("installed a trace or profile function (sys.settrace)")
        return sorted(self.reported)


class _Outputs:
    """A cell's outputs as a notebook keeps them (plain data), cut at the byte limits: a
    cell's, and what is left of the notebook's. The judge cuts them again (this process is
    the student's to change)."""

    def __init__(self, cell_bytes: int, total_bytes: int):
        self.cell_bytes, self.left = cell_bytes, total_bytes
        self.outputs: list = []
        self.size = self.dropped = 0

    def start(self):
        self.outputs, self.size, self.dropped = [], 0, 0

    def room(self) -> int:
        return max(0, min(self.cell_bytes - self.size, self.left))

    def _use(self, size: int):
        self.size += size
        self.left -= size

    def stream(self, name: str, text: str):
        data = text.encode(errors="replace")
        if len(data) > self.room():
            kept = data[:self.room()].decode(errors="ignore")
            self.dropped += len(data) - len(kept.encode())
            text, data = kept, kept.encode()
        if not text:
            return
        self._use(len(data))
        last = self.outputs[-1] if self.outputs else None
        if last is not None and last["output_type"] == "stream" and last["name"] == name:
            last["text"] += text
        else:
            self.outputs.append({"output_type": "stream", "name": name, "text": text})

    def add(self, kind: str, data, metadata):
        import base64
        import json

        if isinstance(data, dict):  # an image as bytes (a _repr_png_), in base64 as a notebook holds it
            data = {key: base64.b64encode(value).decode() if isinstance(value, bytes) else value
                    for key, value in data.items()}
        try:  # plain data only (what the judge can read): anything else as its text
            output = json.loads(json.dumps({"output_type": kind, "data": data, "metadata": metadata}, default=str))
        except (TypeError, ValueError, RecursionError):
            return
        size = len(json.dumps(output).encode())
        if size > self.room():
            self.dropped += size
            return
        self._use(size)
        self.outputs.append(output)

    def error(self, error: BaseException, described: dict, timed_out: bool):
        import traceback

        try:  # from the cell's own frame on (the channel's are not the student's)
            lines = traceback.format_exception(type(error), error, error.__traceback__.tb_next)
            trace = "".join(lines).splitlines()[-200:]
        except BaseException:
            trace = [f"{described['type']}: {described['message']}"]
        self.outputs.append({"output_type": "error", "ename": described["type"], "evalue": described["message"],
                             "traceback": trace, "timed_out": timed_out})


class _Stream(io.TextIOBase):
    """sys.stdout or sys.stderr while a cell runs: what is written becomes the cell's outputs."""

    def __init__(self, outputs: _Outputs, name: str):
        super().__init__()
        self._outputs, self._name = outputs, name

    @property
    def encoding(self):
        return "utf-8"

    def writable(self):
        return True

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._outputs.stream(self._name, text)
        return len(text)


class CellTimeLimit(Exception):
    pass


def _over_time(signum, frame):
    raise CellTimeLimit("this cell ran over its time limit")


def _modules_in(value, module_type, path=(), depth=0, found=None) -> dict:
    """The networks in a request's arguments, by their path (the judge walks its own the same way)."""
    found = {} if found is None else found
    if depth > 3:
        return found
    if isinstance(value, module_type):
        found[path] = value
    elif type(value) in (list, tuple):
        for index, item in enumerate(value):
            _modules_in(item, module_type, (*path, index), depth + 1, found)
    elif type(value) is dict:
        for key, item in value.items():
            if type(key) is str:
                _modules_in(item, module_type, (*path, key), depth + 1, found)
    elif hasattr(value, "__dict__") and not isinstance(value, type) and type(value).__module__ != "builtins":
        for key, item in sorted(vars(value).items()):
            if not key.startswith("_"):
                _modules_in(item, module_type, (*path, key), depth + 1, found)
    return found


def _slots(module) -> dict:
    return {(owner, name): tensor for owner, sub in module.named_modules()
            for name, tensor in sub._parameters.items()}


def _watched(torch, numpy, checks) -> dict:
    """What the tests compare with, and the course's helpers: (owner, attribute, original)."""
    watched = {}
    for owner, prefix, names in (
        (torch, "torch.", ("isclose", "allclose", "equal", "eq", "all", "any", "abs", "max", "min", "tensor")),
        (torch.Tensor, "torch.Tensor.", ("__eq__", "__bool__", "__float__", "all", "any", "item", "tolist",
                                         "abs", "max", "min", "sum", "mean", "backward")),
        (torch.testing, "torch.testing.", ("assert_close",)),
        (numpy, "numpy.", ("isclose", "allclose", "array_equal", "isfinite", "all", "any", "abs", "diff")),
        (numpy.testing, "numpy.testing.", ("assert_allclose", "assert_array_equal")),
        (builtins, "builtins.", ("abs", "all", "any", "bool", "float", "int", "isinstance", "len", "max", "min", "sum",
                        "round", "sorted", "hasattr", "getattr", "next", "iter", "zip", "range", "type")),
    ):
        for name in names:
            if hasattr(owner, name):
                watched[prefix + name] = (owner, name, getattr(owner, name))
    for name, value in vars(checks).items():
        if callable(value) and not name.startswith("__"):
            watched[f"bbrl_course.checks.{name}"] = (checks, name, value)
    # IPython's shell (there is none here: a notebook that changes it wants to change the tests' run)
    from IPython.core.interactiveshell import InteractiveShell

    for name in ("showtraceback", "_showtraceback", "run_cell", "run_cell_async", "run_ast_nodes", "run_code",
                 "transform_cell", "set_custom_exc"):
        watched[f"IPython's InteractiveShell.{name}"] = (InteractiveShell, name, getattr(InteractiveShell, name))
    # the channel's own code (what reads the requests, runs the calls, says what they did and
    # writes the answers) and what it serializes with: a notebook that changes it wants to
    # change the answers
    for owner, prefix, names in (
        (torch, "torch.", ("save", "frombuffer", "from_numpy", "equal")),
        (torch.Tensor, "torch.Tensor.", ("data_ptr", "detach", "clone", "contiguous", "cpu", "requires_grad_",
                                         "is_leaf", "requires_grad", "grad_fn", "shape", "numel")),
        (torch.autograd, "torch.autograd.", ("grad",)),
        (torch.nn.Module, "torch.nn.Module.", ("named_modules", "__getattr__", "__setattr__")),
        (pickle, "pickle.", ("Unpickler",)),
        (io, "io.", ("BytesIO", "StringIO")),
    ):
        for name in names:
            if hasattr(owner, name):
                watched[prefix + name] = (owner, name, getattr(owner, name))
    module = sys.modules[__name__]
    for name, value in vars(module).items():
        if not name.startswith("__"):
            watched[f"the channel's {name}"] = (module, name, value)
    for cls in (Server, _IPythonStandIn, _Anything):
        for name in vars(cls):
            if not name.startswith("__") or name in ("__init__", "__getattr__", "__setattr__", "__call__"):
                watched[f"the channel's {cls.__name__}.{name}"] = (cls, name, getattr(cls, name))
    return watched


class _IPythonStandIn:
    """``get_ipython()`` outside IPython: magics do nothing, and reaching for IPython's
    hooks (input transformers, showtraceback, run_cell, events, ...) is noted."""

    def __init__(self):
        object.__setattr__(self, "touched", set())

    def run_line_magic(self, *args, **kwargs):
        return None

    def run_cell_magic(self, *args, **kwargs):
        return None

    def system(self, *args, **kwargs):
        return None

    def __getattr__(self, name):
        self.touched.add(name)
        return _Anything()

    def __setattr__(self, name, value):
        self.touched.add(name)


class _Anything:
    """Whatever the student's code does with an IPython hook here, it does nothing."""

    def __getattr__(self, name):
        return _Anything()

    def __call__(self, *args, **kwargs):
        return _Anything()

    def __iter__(self):
        return iter(())

    def append(self, *args):
        return None


def main(argv: list[str] | None = None):
    """``python channel.py [FD]``: FD, the descriptor of the memory shared with the judge
    (``argv``: the arguments, when the judge forked this process: ``judge.fork_channel``)."""
    argv = sys.argv[1:] if argv is None else argv
    # the pipes to the judge get their own descriptors; the student's code sees none of them
    # on 0, 1 and 2 (what it prints is caught per request and sent along)
    requests = os.fdopen(os.dup(0), "rb")
    answers = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(devnull, fd)
    arena = None
    if argv:  # the descriptor of the memory shared with the judge
        import mmap

        fd = int(argv[0])
        arena = mmap.mmap(fd, ARENA_SIZE)
        os.close(fd)
    server = Server(requests, answers, arena)
    server.serve()


if __name__ == "__main__":
    main()
