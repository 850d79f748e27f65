"""Per-layer profiles of a generated executor or torch module: a sorted table and a Chrome trace.

A generated ``forward`` is straight-line code with one statement per kernel: a fused group on
the CuPy/NumPy executor (``conv1 + bn1 + conv1_relu``), a layer or functional op on torch.
Profiling runs a copy of that method, compiled from the same source with a clock read before
each statement, in place of the original; the generated source and the unprofiled path are
untouched. On a GPU every clock read first waits for the device, so each statement is charged
its own kernels.

>>> import alexdsl, numpy
>>> from alexdsl.backends.executor import compile as compile_executor
>>> net = alexdsl.parse("network T\\ninput x: 3x8x8\\nc: conv(4, 3) | relu\\ng: global_avgpool | fc(5)\\n")
>>> executor = compile_executor(net, device="cpu")
>>> profile = Profile(net.name)
>>> profile_executor(executor, profile)
>>> executor(numpy.zeros((2, 3, 8, 8), numpy.float32)).shape
(2, 5)
>>> [step.kind for step in profile.totals() if step.name == "c + c_relu"]
['conv2d']
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import textwrap
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from alexdsl.fileio import write_text_atomic

STAMP = "_alexdsl_profile_stamp"  # the clock read inserted before each statement of the copy


@dataclass(frozen=True)
class Step:
    """One statement of a forward: the layer or fused group it runs, and its kernel or module kind."""

    name: str
    kind: str


@dataclass
class Profile:
    """Timed forward calls: per call, the start and duration of every step (seconds, perf_counter)."""

    title: str
    calls: list[tuple[float, float]] = field(default_factory=list)  # (start, seconds) of each forward
    events: list[tuple[Step, int, float, float]] = field(default_factory=list)  # (step, call, start, seconds)
    origin: float = field(default_factory=time.perf_counter)

    def clear(self) -> None:
        """Forget what was recorded (a warm-up call, say)."""
        self.calls.clear()
        self.events.clear()

    def totals(self) -> dict[Step, float]:
        """Seconds per step over all calls, slowest first."""
        totals: dict[Step, float] = {}
        for step, _, _, seconds in self.events:
            totals[step] = totals.get(step, 0.0) + seconds
        return dict(sorted(totals.items(), key=lambda item: -item[1]))

    def table(self) -> str:
        """Time per step and per kind with its share of the total, slowest first (as ORT's and torch's profilers)."""
        totals = self.totals()
        total = sum(totals.values())
        if not self.calls or not total:
            return f"profile of {self.title}: nothing was run"
        calls = len(self.calls)
        lines = [f"profile of {self.title}: {calls} forward call(s), {total * 1e3:.2f} ms in all, "
                 f"{total * 1e3 / calls:.3f} ms per call",
                 f"{'ms/call':>10} {'share':>7} {'cumul.':>7}  {'kind':<20} layer (fused group)"]
        lines += _rows(totals, total, calls, lambda step: (step.kind, step.name))
        by_kind: dict[str, float] = {}
        for step, seconds in totals.items():
            by_kind[step.kind] = by_kind.get(step.kind, 0.0) + seconds
        counts = {kind: sum(step.kind == kind for step in totals) for kind in by_kind}
        lines += ["", f"{'ms/call':>10} {'share':>7} {'cumul.':>7}  {'kind':<20} steps"]
        ordered = dict(sorted(by_kind.items(), key=lambda item: -item[1]))
        lines += _rows(ordered, total, calls, lambda kind: (kind, str(counts[kind])))
        return "\n".join(lines)

    def chrome_trace(self) -> dict[str, Any]:
        """The Trace Event Format that chrome://tracing and Perfetto open: one complete event per step."""
        pid = os.getpid()

        def event(name: str, category: str, start: float, seconds: float, **args: Any) -> dict[str, Any]:
            return {"name": name, "cat": category, "ph": "X", "pid": pid, "tid": 0,
                    "ts": round((start - self.origin) * 1e6, 3), "dur": round(seconds * 1e6, 3), "args": args}

        events: list[dict[str, Any]] = [
            {"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": f"alexdsl {self.title}"}}]
        events += [event("forward", "forward", start, seconds, call=call)
                   for call, (start, seconds) in enumerate(self.calls)]
        events += [event(step.name, step.kind, start, seconds, call=call)
                   for step, call, start, seconds in self.events]
        return {"traceEvents": events, "displayTimeUnit": "ms"}

    def write_trace(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`chrome_trace` as JSON, atomically."""
        write_text_atomic(path, json.dumps(self.chrome_trace()) + "\n")


def _rows(totals: dict[Any, float], total: float, calls: int, label: Callable[[Any], tuple[str, str]]) -> list[str]:
    rows, cumulative = [], 0.0
    for key, seconds in totals.items():
        cumulative += seconds
        kind, name = label(key)
        rows.append(f"{seconds * 1e3 / calls:10.3f} {100 * seconds / total:6.1f}% {100 * cumulative / total:6.1f}%  "
                    f"{kind:<20} {name}")
    return rows


Describe = Callable[[ast.stmt, str | None, str], Step]  # (statement, its comment, its source) -> Step


def _comments(source: str) -> dict[int, str]:
    """Line number -> the text of the comment on that line (lines that are only a comment included)."""
    import io
    import tokenize

    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {tok.start[0]: tok.string.lstrip("#").strip() for tok in tokens if tok.type == tokenize.COMMENT}


def attach(target: Any, profile: Profile, describe: Describe, sync: Callable[[], None] | None = None) -> None:
    """Make ``target.forward`` (an instance attribute over the class's method) a timed copy of it.

    Every top-level statement of the method becomes one :class:`Step`, named by ``describe``
    from the statement, the comment just above or on its first line, and its source text.
    """
    method = type(target).forward
    lines, first = inspect.getsourcelines(method)
    source = textwrap.dedent("".join(lines))
    comments = _comments(source)
    tree = ast.parse(source)
    function = tree.body[0]
    assert isinstance(function, ast.FunctionDef)
    body = function.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    steps, timed, previous_end = [], [], function.lineno
    for statement in body:
        comment = next((comments[line] for line in range(previous_end + 1, statement.lineno + 1) if line in comments),
                       None)
        segment = ast.get_source_segment(source, statement) or ""
        steps.append(describe(statement, comment, " ".join(segment.split())))
        stamp = ast.Expr(ast.Call(ast.Name(STAMP, ast.Load()), [], []))
        timed += [ast.copy_location(stamp, statement), statement]
        previous_end = statement.end_lineno or statement.lineno
    function.body = timed
    ast.fix_missing_locations(tree)
    ast.increment_lineno(tree, first - 1)  # tracebacks still point at the generated source's lines
    stamps: list[float] = []

    def stamp() -> None:
        if sync is not None:
            sync()
        stamps.append(time.perf_counter())

    namespace = dict(method.__globals__, **{STAMP: stamp})
    exec(compile(tree, method.__code__.co_filename, "exec"), namespace)  # noqa: S102 - the generated source, reparsed
    copy = types.MethodType(namespace[function.name], target)

    def timed_forward(*inputs: Any) -> Any:
        stamps.clear()
        began = time.perf_counter()
        result = copy(*inputs)
        stamp()
        call = len(profile.calls)
        profile.calls.append((began, stamps[-1] - began))
        profile.events += [(step, call, start, end - start)
                           for step, start, end in zip(steps, stamps, stamps[1:], strict=False)]
        return result

    target.forward = timed_forward


def executor_step(statement: ast.stmt, comment: str | None, segment: str) -> Step:
    """An executor statement: named by its fused-group comment, of the kind of its ``rt.`` kernel."""
    value = getattr(statement, "value", None)
    kind = "python"
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute):
        kind = value.func.attr
    return Step(comment or segment, kind)


def profile_executor(executor: Any, profile: Profile) -> None:
    """Profile every later call of a generated CuPy/NumPy executor into ``profile``.

    A profiled executor runs every batch whole, never split over threads (``executor.sharding``): each step is
    timed over the whole batch, its kernels using the thread pool and BLAS's threads as on a batch too small to
    split (see docs/cupy.md).
    """
    executor.sharding = False
    sync = None
    if executor.device == "cuda":
        stream = executor.xp.cuda.get_current_stream
        sync = lambda: stream().synchronize()  # noqa: E731
    attach(executor, profile, executor_step, sync)


def _submodule_path(func: ast.expr) -> list[str] | None:
    """``self.a['0'].b`` -> ['a', '0', 'b']; None when ``func`` is not a submodule of ``self``."""
    path: list[str] = []
    while True:
        if isinstance(func, ast.Name):
            return path[::-1] if func.id == "self" and path else None
        if isinstance(func, ast.Attribute):
            path.append(func.attr)
            func = func.value
        elif isinstance(func, ast.Subscript) and isinstance(func.slice, ast.Constant):
            path.append(str(func.slice.value))
            func = func.value
        elif (isinstance(func, ast.Call) and isinstance(func.func, ast.Name) and func.func.id == "getattr"
              and len(func.args) == 2 and isinstance(func.args[1], ast.Constant)):
            path.append(str(func.args[1].value))
            func = func.args[0]
        else:
            return None


def profile_torch_module(module: Any, profile: Profile) -> None:
    """Profile every later call of a generated torch module (its layers and functional ops) into ``profile``."""
    import torch

    def describe(statement: ast.stmt, comment: str | None, segment: str) -> Step:
        value = getattr(statement, "value", None)
        targets = getattr(statement, "targets", None)
        name = ast.unparse(targets[0]) if targets else segment
        if isinstance(value, ast.Call):
            path = _submodule_path(value.func)
            if path is not None:
                return Step(".".join(path), type(module.get_submodule(".".join(path))).__name__)
            if isinstance(value.func, ast.Attribute | ast.Name):
                return Step(name, value.func.attr if isinstance(value.func, ast.Attribute) else value.func.id)
        if isinstance(value, ast.BinOp):
            return Step(name, type(value.op).__name__.lower())
        return Step(name, "python")

    on_gpu = any(p.is_cuda for p in module.parameters())
    attach(module, profile, describe, torch.cuda.synchronize if on_gpu else None)
