"""The formatter: one canonical layout for alexdsl source, like gofmt.

The layout is printed from the syntax tree, so formatting never changes the network:

* one statement per line; one space after each comma, ``label: op(...) | op``;
* the colons of consecutive ``input`` lines and of consecutive layer lines are padded so the
  values line up (a blank line or another kind of statement starts a new run);
* block bodies are indented 2 spaces;
* numbers, strings and shapes are printed exactly as written;
* comments are kept: a comment on its own line stays before the statement that follows it,
  a comment after code stays at the end of its line, two spaces after the code; the trailing
  comments of consecutive lines are aligned;
* single blank lines between statements are kept, runs of blank lines become one;
* a chain written across several lines (a line starting with ``|``) keeps its line breaks.

>>> print(format_source("network  T\\ninput x:3x8x8\\nc1:conv(4,3)|relu   # two layers\\n"), end="")
network T
input x: 3x8x8
c1: conv(4, 3) | relu  # two layers
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alexdsl.syntax import ast
from alexdsl.syntax.parser import parse_module

INDENT = "  "
_MARK = "\0"  # between code and its trailing comment until the comments are aligned


def _align_trailing(lines: list[str]) -> list[str]:
    """Trailing comments of consecutive lines start in one column, two spaces after the longest code."""
    out = list(lines)
    i = 0
    while i < len(out):
        if _MARK not in out[i]:
            i += 1
            continue
        j = i
        while j < len(out) and _MARK in out[j]:
            j += 1
        column = max(len(line.split(_MARK, 1)[0]) for line in out[i:j]) + 2
        for k in range(i, j):
            code, comment = out[k].split(_MARK, 1)
            out[k] = code.ljust(column) + comment
        i = j
    return out


# values ---------------------------------------------------------------------------------------
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2, "//": 2}
_ATOM = 3  # names, numbers, tuples, calls: never parenthesised


def _precedence(value: ast.Value) -> int:
    if isinstance(value, ast.BinaryOp):
        return _PRECEDENCE[value.op]
    if isinstance(value, ast.Literal) and value.text.startswith("-"):
        return _ATOM - 1  # -1 as a factor: parenthesised after '-' only
    return _ATOM - 1 if isinstance(value, ast.Negate) else _ATOM


def _operand(value: ast.Value, least: int) -> str:
    """``value`` inside an expression, in parentheses when it binds less tightly than ``least``."""
    text = format_value(value)
    return f"({text})" if _precedence(value) < least else text


def format_value(value: ast.Value) -> str:
    if isinstance(value, ast.Literal):
        if value.text:
            return value.text
        if isinstance(value.value, bool):
            return "true" if value.value else "false"
        if isinstance(value.value, str):
            return '"' + value.value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return repr(value.value)
    if isinstance(value, ast.Name):
        return value.name
    if isinstance(value, ast.TupleValue):
        return "(" + ", ".join(format_value(v) for v in value.items) + ")"
    if isinstance(value, ast.ShapeValue):
        return value.text or "x".join(map(str, value.dims))
    if isinstance(value, ast.Call):
        return format_call(value)
    if isinstance(value, ast.BinaryOp):  # minimal parentheses: the right operand of equal precedence keeps them
        level = _PRECEDENCE[value.op]
        return f"{_operand(value.left, level)} {value.op} {_operand(value.right, level + 1)}"
    if isinstance(value, ast.Negate):
        return "-" + _operand(value.operand, _ATOM)
    raise TypeError(f"not a value: {value!r}")


def format_args(args: list[ast.Arg]) -> str:
    return ", ".join(f"{a.keyword}={format_value(a.value)}" if a.keyword else format_value(a.value) for a in args)


def format_call(call: ast.Call) -> str:
    if not call.has_parens and not call.args:
        return call.name
    return f"{call.name}({format_args(call.args)})"


def _phase(phase: ast.Name | None) -> str:
    return f" @{phase.name}" if phase is not None else ""


def _sources(sources: list[ast.Name]) -> str:
    return ", ".join(s.name for s in sources) + " -> " if sources else ""


def _link(link: ast.Link) -> str:
    return (f"{link.label.name}: " if link.label is not None else "") + format_call(link.call)


# statements -----------------------------------------------------------------------------------
def _label_of(stmt: ast.Statement) -> str | None:
    """The text before the aligned colon, for statements that take part in alignment."""
    if isinstance(stmt, (ast.LayerStmt, ast.RepeatStmt)):
        return stmt.label.name
    if isinstance(stmt, ast.InputStmt):
        return f"input {stmt.name.name}"
    return None


def _run_kind(stmt: ast.Statement) -> str | None:
    if isinstance(stmt, (ast.LayerStmt, ast.RepeatStmt)):
        return "layer"
    if isinstance(stmt, ast.InputStmt):
        return "input"
    return None


def _statement_lines(stmt: ast.Statement, width: int, indent: str) -> list[str]:
    """The statement's text lines (without comments); ``width`` pads its label colon."""
    return [text for text, _ in _statement_rows(stmt, width, indent)]


def _statement_rows(stmt: ast.Statement, width: int, indent: str) -> list[tuple[str, int]]:
    """Like :func:`_statement_lines`, each line with the source line its text starts on."""
    if isinstance(stmt, ast.LayerStmt):
        return _chain_rows(stmt, width, indent)
    return [(line, stmt.span.line) for line in _simple_lines(stmt, width, indent)]


def _head(stmt: ast.Statement, width: int) -> str:
    label = _label_of(stmt)
    if label is None:
        return ""
    return (label + ":").ljust(max(width, len(label) + 1)) + " "


def _chain_rows(stmt: ast.LayerStmt, width: int, indent: str) -> list[tuple[str, int]]:
    head = _head(stmt, width)
    rows: list[tuple[list[str], int]] = [([indent + head + _sources(stmt.sources) + _link(stmt.links[0])],
                                          stmt.span.line)]
    pad = indent + " " * max(len(head) - 2, 2)
    for prev, link in zip(stmt.links, stmt.links[1:]):
        if link.span.line > prev.span.end_line:
            rows.append(([pad + "| " + _link(link)], link.span.line))
        else:
            rows[-1][0].append(_link(link))
    rows[-1][0][-1] += _phase(stmt.phase)
    return [(" | ".join(parts), line) for parts, line in rows]  # joined once: a chain of 50,000 links stays linear


def _simple_lines(stmt: ast.Statement, width: int, indent: str) -> list[str]:
    head = _head(stmt, width)
    if isinstance(stmt, ast.NetworkStmt):
        return [indent + f"network {stmt.name.name}"]
    if isinstance(stmt, ast.DescriptionStmt):
        return [indent + f"description {format_value(stmt.text)}"]
    if isinstance(stmt, ast.InputStmt):
        value = format_value(stmt.shape) if stmt.shape is not None else format_call(stmt.type_call)  # type: ignore
        return [indent + head + value]
    if isinstance(stmt, ast.OutputStmt):
        return [indent + "output " + ", ".join(n.name for n in stmt.names)]
    if isinstance(stmt, ast.DefaultsStmt):
        return [indent + f"defaults {stmt.target.name}({format_args(stmt.args)})"]
    if isinstance(stmt, ast.SolverStmt):
        return [indent + f"solver({format_args(stmt.args)})"]
    if isinstance(stmt, ast.PreprocessStmt):
        return [indent + f"preprocess {stmt.target.name}({format_args(stmt.args)})"]
    if isinstance(stmt, ast.RepeatStmt):
        index = f"as {stmt.index.name}: " if stmt.index is not None else ""
        first = f"{format_call(stmt.first)}, then " if stmt.first is not None else ""
        return [indent + head + _sources(stmt.sources) + f"repeat {format_value(stmt.count)} {index}{first}"
                + format_call(stmt.call) + _phase(stmt.phase)]
    raise TypeError(f"not a statement: {stmt!r}")


def _block_header(stmt: ast.BlockDef) -> str:
    params = ", ".join(p.name.name + (f"={format_value(p.default)}" if p.default is not None else "")
                       for p in stmt.params)
    return f"block {stmt.name.name}({params}) {{"


# comments -------------------------------------------------------------------------------------
@dataclass
class _Slots:
    """Comments attached to one statement."""

    leading: list[ast.Comment] = field(default_factory=list)
    trailing: list[ast.Comment] = field(default_factory=list)
    close_trailing: list[ast.Comment] = field(default_factory=list)  # blocks: on the '}' line


@dataclass
class _Region:
    """Statements of the file or of a block body, with the standalone comments among them."""

    statements: list[ast.Statement]
    comments: list[ast.Comment] = field(default_factory=list)


class _Printer:
    def __init__(self, module: ast.Module):
        self.module = module
        self.lines = module.source.split("\n")
        self.slots: dict[int, _Slots] = {}
        self.regions: dict[int, _Region] = {}  # id(BlockDef) -> its body region
        self.top = _Region(list(module.statements))
        for stmt in module.statements:
            if isinstance(stmt, ast.BlockDef):
                self.regions[id(stmt)] = _Region(list(stmt.body))
        for comment in module.comments:
            self._attach(comment)

    def _slot(self, stmt: ast.Statement) -> _Slots:
        return self.slots.setdefault(id(stmt), _Slots())

    def _is_trailing(self, comment: ast.Comment) -> bool:
        line = self.lines[comment.line - 1] if comment.line - 1 < len(self.lines) else ""
        return line[: comment.column - 1].strip() != ""

    def _attach(self, comment: ast.Comment) -> None:
        trailing = self._is_trailing(comment)
        region = self.top
        statements = self.module.statements
        while True:
            owner = next((s for s in statements if s.span.line <= comment.line <= s.span.end_line), None)
            if owner is None:
                region.comments.append(comment)
                return
            if isinstance(owner, ast.BlockDef):
                inner = next((s for s in owner.body if s.span.line <= comment.line <= s.span.end_line), None)
                if inner is None:
                    if trailing and comment.line == owner.span.line:
                        self._slot(owner).trailing.append(comment)
                    elif trailing and comment.line == owner.span.end_line:
                        self._slot(owner).close_trailing.append(comment)
                    else:
                        self.regions[id(owner)].comments.append(comment)
                    return
                region, statements = self.regions[id(owner)], owner.body
                continue
            slot = self._slot(owner)
            if trailing:
                slot.trailing.append(comment)
            else:
                slot.leading.append(comment)
            return

    def _blank_between(self, end_line: int, start_line: int) -> bool:
        return any(not self.lines[i - 1].strip() for i in range(end_line + 1, start_line)
                   if 0 < i <= len(self.lines))

    @staticmethod
    def _with_comment(code: str, comment: ast.Comment) -> str:
        return code.rstrip() + _MARK + comment.text.rstrip()

    def region(self, region: _Region, depth: int) -> list[str]:
        indent = INDENT * depth
        items: list[tuple[int, int, object]] = [(s.span.line, s.span.end_line, s) for s in region.statements]
        items += [(c.line, c.line, c) for c in region.comments]
        items.sort(key=lambda item: (item[0], isinstance(item[2], ast.Comment) is False))
        widths = self._widths(items)
        out: list[str] = []
        prev_end: int | None = None
        for start, end, item in items:
            if prev_end is not None and self._blank_between(prev_end, start):
                out.append("")
            if isinstance(item, ast.Comment):
                out.append(indent + item.text.rstrip())
            else:
                out.extend(self.statement(item, widths.get(id(item), 0), depth))  # type: ignore[arg-type]
            prev_end = max(end, prev_end or 0)
        return out

    def _widths(self, items: list[tuple[int, int, object]]) -> dict[int, int]:
        """Label widths for alignment runs (statements only; comments do not break a run)."""
        widths: dict[int, int] = {}
        run: list[ast.Statement] = []
        run_kind: str | None = None
        prev_end: int | None = None

        def flush() -> None:
            if run:
                width = max(len(_label_of(s) or "") + 1 for s in run)
                for s in run:
                    widths[id(s)] = width

        for start, end, item in items:
            if isinstance(item, ast.Comment):
                prev_end = end
                continue
            kind = _run_kind(item)  # type: ignore[arg-type]
            broken = prev_end is not None and self._blank_between(prev_end, start)
            if kind is None or kind != run_kind or broken:
                flush()
                run = []
            run_kind = kind
            if kind is not None:
                run.append(item)  # type: ignore[arg-type]
            prev_end = end
        flush()
        return widths

    def statement(self, stmt: ast.Statement, width: int, depth: int) -> list[str]:
        indent = INDENT * depth
        slot = self.slots.get(id(stmt), _Slots())
        out = [indent + c.text.rstrip() for c in slot.leading]
        trailing = list(slot.trailing)
        if isinstance(stmt, ast.BlockDef):
            out += [indent + c.text.rstrip() for c in trailing[:-1]]
            header = indent + _block_header(stmt)
            out.append(self._with_comment(header, trailing[-1]) if trailing else header)
            out.extend(self.region(self.regions[id(stmt)], depth + 1))
            close = indent + "}"
            for comment in slot.close_trailing[:-1]:
                out.append(INDENT * (depth + 1) + comment.text.rstrip())
            out.append(self._with_comment(close, slot.close_trailing[-1]) if slot.close_trailing else close)
            return out
        rows = _statement_rows(stmt, width, indent)
        lines = [text for text, _ in rows]
        placed: dict[int, ast.Comment] = {}
        hoisted: list[ast.Comment] = []
        for comment in slot.trailing:
            row = max(i for i, (_, line) in enumerate(rows) if line <= comment.line or i == 0)
            if row in placed:
                hoisted.append(placed[row])
            placed[row] = comment
        for row, comment in placed.items():
            lines[row] = self._with_comment(lines[row], comment)
        out = [indent + c.text.rstrip() for c in sorted(slot.leading + hoisted, key=lambda c: c.line)]
        return out + lines


def format_module(module: ast.Module) -> str:
    """The canonical text of a parsed module (ends with one newline; empty stays empty)."""
    printer = _Printer(module)
    lines = _align_trailing(printer.region(printer.top, 0))
    text = "\n".join(line.rstrip() for line in lines).strip("\n")
    return text + "\n" if text else ""


def format_source(text: str, file: str = "<string>") -> str:
    """Format alexdsl source text. Raises :class:`~alexdsl.errors.AlexDSLError` on a syntax error."""
    return format_module(parse_module(text, file))
