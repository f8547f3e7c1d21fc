"""A small, safe expression language for derived metrics and conditions.

Expressions use Python-like syntax (``segment == "SMB" and seats > 50``,
``active_users_30d / seats``) but are *not* run by Python: the text is parsed
into a tree, every node is checked against a short whitelist, and the tree is
evaluated column-wise over numpy arrays, one array per name.

N/A flows through everything: numbers are float64 with NaN for N/A, text is an
object array with None for N/A, and truth values are float64 1.0 / 0.0 / NaN
(three-valued, Kleene logic: ``N/A and False`` is False, ``N/A and True`` is N/A).
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol

import numpy as np

from .errors import ExpressionError

Column = Any  # np.ndarray (float64 or object) or a Python scalar that broadcasts
NUM, TEXT, BOOL, DATE, ANY = "number", "text", "boolean", "date", "any"


class Scope(Protocol):
    """What an expression needs from the data it runs over."""

    @property
    def n(self) -> int: ...

    @property
    def today(self) -> date: ...

    def column(self, name: str) -> np.ndarray: ...

    def as_of(self, name: str, days: int) -> np.ndarray: ...


# ---------------------------------------------------------------- tree


class Node:
    """One node of a parsed expression."""

    def eval(self, ctx: Scope) -> Column:
        raise NotImplementedError

    def children(self) -> Sequence[Node]:
        return ()

    def walk(self) -> Iterator[Node]:
        yield self
        for child in self.children():
            yield from child.walk()


@dataclass
class Const(Node):
    value: float | str | None | tuple[float | str | None, ...]

    def eval(self, ctx: Scope) -> Column:
        return self.value


@dataclass
class Name(Node):
    name: str

    def eval(self, ctx: Scope) -> Column:
        return ctx.column(self.name)


@dataclass
class Unary(Node):
    op: str
    operand: Node

    def children(self) -> Sequence[Node]:
        return (self.operand,)

    def eval(self, ctx: Scope) -> Column:
        value = self.operand.eval(ctx)
        if self.op == "not":
            t = _truth(value)
            return np.where(np.isnan(t), np.nan, 1.0 - t)
        return -_num(value)


@dataclass
class Binary(Node):
    op: str
    left: Node
    right: Node

    def children(self) -> Sequence[Node]:
        return (self.left, self.right)


@dataclass
class Arith(Binary):
    def eval(self, ctx: Scope) -> Column:
        a, b = _num(self.left.eval(ctx)), _num(self.right.eval(ctx))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if self.op == "+":
                out = a + b
            elif self.op == "-":
                out = a - b
            elif self.op == "*":
                out = a * b
            else:  # division by zero is N/A, never infinity
                out = np.divide(a, b)
        return np.where(np.isfinite(out), out, np.nan)


@dataclass
class Logic(Node):
    op: str  # "and" / "or"
    operands: list[Node]

    def children(self) -> Sequence[Node]:
        return self.operands

    def eval(self, ctx: Scope) -> Column:
        result = _truth(self.operands[0].eval(ctx))
        for operand in self.operands[1:]:
            other = _truth(operand.eval(ctx))
            if self.op == "and":
                decided, win = (result == 0) | (other == 0), 0.0
                certain = (result == 1) & (other == 1)
            else:
                decided, win = (result == 1) | (other == 1), 1.0
                certain = (result == 0) & (other == 0)
            result = np.where(decided, win, np.where(certain, 1.0 - win, np.nan))
        return result


@dataclass
class Compare(Binary):
    def eval(self, ctx: Scope) -> Column:
        a, b = self.left.eval(ctx), self.right.eval(ctx)
        if self.op in ("in", "not in"):
            return _membership(a, b, negate=self.op == "not in", n=ctx.n)
        return _compare(self.op, a, b)


@dataclass
class Call(Node):
    func: str
    args: list[Node]

    def children(self) -> Sequence[Node]:
        return self.args

    def eval(self, ctx: Scope) -> Column:
        return FUNCTIONS[self.func].run(self, ctx)


# ---------------------------------------------------------------- column helpers


def _is_text(value: Column) -> bool:
    return isinstance(value, str) or (isinstance(value, np.ndarray) and value.dtype == object)


def _num(value: Column) -> Column:
    """A numeric view of value: text becomes N/A (the type checker reports it earlier)."""
    if value is None:
        return np.nan
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return np.array([_to_float(v) for v in value], dtype=float)
        return value.astype(float, copy=False)
    return np.nan


def _to_float(v: object) -> float:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float):
        return float(v)
    return math.nan


def _truth(value: Column) -> Column:
    """Three-valued truth: 1.0, 0.0 or NaN (unknown)."""
    if _is_text(value):
        arr = np.asarray(value, dtype=object)
        return np.where(arr == None, np.nan, (arr != "").astype(float))  # noqa: E711
    num = _num(value)
    return np.where(np.isnan(num), np.nan, (num != 0).astype(float))


def _na_mask(value: Column) -> Column:
    if _is_text(value):
        return np.asarray(value, dtype=object) == None  # noqa: E711
    if value is None:
        return True
    return np.isnan(_num(value))


_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _compare(op: str, a: Column, b: Column) -> Column:
    na = np.logical_or(_na_mask(a), _na_mask(b))
    if _is_text(a) or _is_text(b):
        if op not in ("==", "!=") and not (_is_text(a) and _is_text(b)):
            return np.full(np.shape(na), np.nan)
        aa = np.asarray(a, dtype=object) if isinstance(a, np.ndarray) else a
        bb = np.asarray(b, dtype=object) if isinstance(b, np.ndarray) else b
        if op in ("==", "!="):
            raw = np.asarray(_OPS[op](aa, bb), dtype=bool)
        else:
            safe_a = np.where(na, "", aa) if isinstance(aa, np.ndarray) else aa
            safe_b = np.where(na, "", bb) if isinstance(bb, np.ndarray) else bb
            raw = np.asarray(_OPS[op](safe_a, safe_b), dtype=bool)
    else:
        with np.errstate(invalid="ignore"):
            raw = np.asarray(_OPS[op](_num(a), _num(b)), dtype=bool)
    return np.where(na, np.nan, raw.astype(float))


def _membership(a: Column, options: Column, negate: bool, n: int) -> Column:
    values = set(options if isinstance(options, tuple) else (options,))
    if isinstance(a, np.ndarray):
        if a.dtype == object:
            hit = np.fromiter((v in values for v in a), dtype=bool, count=len(a))
        else:
            nums = [v for v in values if isinstance(v, int | float)]
            hit = np.isin(a, np.array(nums, dtype=float))
        na = _na_mask(a)
    else:
        hit = np.asarray(a in values)
        na = np.asarray(a is None)
    if negate:
        hit = ~hit
    return np.where(na, np.nan, hit.astype(float))


# ---------------------------------------------------------------- functions


@dataclass(frozen=True)
class Function:
    """A whitelisted function: arity, result type and column-wise implementation."""

    min_args: int
    max_args: int | None
    result: str
    run: Callable[[Call, Scope], Column]
    doc: str
    history: bool = False  # first argument is a stored name read as of N days ago
    clock: bool = False  # reads today's date


def _args(call: Call, ctx: Scope) -> list[Column]:
    return [a.eval(ctx) for a in call.args]


def _fold(call: Call, ctx: Scope, fn: Callable[[Any, Any], Any]) -> Column:
    values = [_num(v) for v in _args(call, ctx)]
    out = values[0]
    for v in values[1:]:
        out = fn(out, v)
    return out


def _coalesce(call: Call, ctx: Scope) -> Column:
    values = _args(call, ctx)
    out = values[-1]
    for v in reversed(values[:-1]):
        out = np.where(_na_mask(v), out, v)
    return out


def _history_days(call: Call) -> int:
    arg = call.args[1]
    assert isinstance(arg, Const) and isinstance(arg.value, float)
    return int(arg.value)


def _change(call: Call, ctx: Scope) -> Column:
    name = call.args[0]
    assert isinstance(name, Name)
    now = _num(ctx.column(name.name))
    then = _num(ctx.as_of(name.name, _history_days(call)))
    return now - then


def _pct_change(call: Call, ctx: Scope) -> Column:
    name = call.args[0]
    assert isinstance(name, Name)
    now = _num(ctx.column(name.name))
    then = _num(ctx.as_of(name.name, _history_days(call)))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (now - then) / np.abs(then) * 100.0
    return np.where(np.isfinite(out), out, np.nan)


def _days_between(call: Call, ctx: Scope, sign: int) -> Column:
    value = call.args[0].eval(ctx)
    arr = np.asarray(value, dtype=object).reshape(-1)
    days = np.array([_iso_days(v) for v in arr], dtype=float)
    today = float(ctx.today.toordinal())
    out = (days - today) * sign
    return out if isinstance(value, np.ndarray) else out[0]


def _iso_days(v: object) -> float:
    if not isinstance(v, str) or len(v) < 10:
        return math.nan
    try:
        return float(date.fromisoformat(v[:10]).toordinal())
    except ValueError:
        return math.nan


FUNCTIONS: dict[str, Function] = {
    "min": Function(2, None, NUM, lambda c, x: _fold(c, x, np.minimum), "smallest of its arguments"),
    "max": Function(2, None, NUM, lambda c, x: _fold(c, x, np.maximum), "largest of its arguments"),
    "abs": Function(1, 1, NUM, lambda c, x: np.abs(_num(c.args[0].eval(x))), "absolute value"),
    "coalesce": Function(2, None, ANY, _coalesce, "first argument that is not N/A"),
    "is_na": Function(
        1, 1, BOOL, lambda c, x: np.asarray(_na_mask(c.args[0].eval(x)), dtype=float), "1 if N/A"
    ),
    "change": Function(2, 2, NUM, _change, "value now minus value N days ago", history=True),
    "pct_change": Function(
        2, 2, NUM, _pct_change, "percent change vs N days ago", history=True
    ),
    "days_since": Function(1, 1, NUM, lambda c, x: _days_between(c, x, -1), "days since a date", clock=True),
    "days_until": Function(1, 1, NUM, lambda c, x: _days_between(c, x, 1), "days until a date", clock=True),
}


# ---------------------------------------------------------------- parsing


_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_CMPOPS = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.In: "in",
    ast.NotIn: "not in",
}
_KEYWORDS = {"true": 1.0, "false": 0.0, "null": None, "True": 1.0, "False": 0.0, "None": None}


@dataclass
class Expression:
    """A parsed, whitelisted expression, ready to evaluate over columns."""

    source: str
    root: Node
    names: set[str] = field(default_factory=set)

    def evaluate(self, ctx: Scope) -> Column:
        value = self.root.eval(ctx)
        if isinstance(value, np.ndarray) and value.shape == (ctx.n,):
            return value
        if _is_text(value):
            return np.full(ctx.n, value, dtype=object)
        return np.full(ctx.n, _num(value), dtype=float)

    def history_refs(self) -> set[tuple[str, int]]:
        """The (name, days) pairs this expression reads from history."""
        refs = set()
        for node in self.root.walk():
            if isinstance(node, Call) and FUNCTIONS[node.func].history:
                name = node.args[0]
                assert isinstance(name, Name)
                refs.add((name.name, _history_days(node)))
        return refs

    def reads_today(self) -> bool:
        """Whether this expression reads today's date (days_since, days_until)."""
        return any(isinstance(node, Call) and FUNCTIONS[node.func].clock for node in self.root.walk())

    def constants(self) -> dict[str, set[Any]]:
        """Constants each name is compared with: the points where a condition can flip."""
        found: dict[str, set[Any]] = {}
        for node in self.root.walk():
            if isinstance(node, Compare):
                for side, other in ((node.left, node.right), (node.right, node.left)):
                    if isinstance(side, Name) and isinstance(other, Const):
                        values = other.value if isinstance(other.value, tuple) else (other.value,)
                        found.setdefault(side.name, set()).update(values)
        return found


def parse(source: str) -> Expression:
    """Parse and check an expression; raise ExpressionError naming the column at fault."""
    text = source.strip()
    if not text:
        raise ExpressionError("the expression is empty")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        col = exc.offset or 0
        raise ExpressionError(f"syntax error at column {col}: {exc.msg}", col) from None
    root = _convert(tree.body)
    names = {n.name for n in root.walk() if isinstance(n, Name)}
    return Expression(text, root, names)


def _fail(node: ast.AST, message: str) -> ExpressionError:
    col = getattr(node, "col_offset", 0) + 1
    return ExpressionError(f"{message} (column {col})", col)


def _convert(node: ast.AST) -> Node:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool):
            return Const(1.0 if node.value else 0.0)
        if isinstance(node.value, int | float):
            return Const(float(node.value))
        if isinstance(node.value, str) or node.value is None:
            return Const(node.value)
        raise _fail(node, f"constant {node.value!r} is not allowed")
    if isinstance(node, ast.Name):
        if node.id in _KEYWORDS:
            return Const(_KEYWORDS[node.id])
        return Name(node.id)
    if isinstance(node, ast.List | ast.Tuple):
        values: list[float | str | None] = []
        for elt in node.elts:
            converted = _convert(elt)
            if not isinstance(converted, Const) or isinstance(converted.value, tuple):
                raise _fail(elt, "a list may hold only constants")
            values.append(converted.value)
        return Const(tuple(values))
    if isinstance(node, ast.UnaryOp):
        if isinstance(node.op, ast.Not):
            return Unary("not", _convert(node.operand))
        if isinstance(node.op, ast.USub):
            inner = _convert(node.operand)
            if isinstance(inner, Const) and isinstance(inner.value, float):
                return Const(-inner.value)
            return Unary("-", inner)
        if isinstance(node.op, ast.UAdd):
            return _convert(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return Arith(_BINOPS[type(node.op)], _convert(node.left), _convert(node.right))
    if isinstance(node, ast.BoolOp):
        op = "and" if isinstance(node.op, ast.And) else "or"
        return Logic(op, [_convert(v) for v in node.values])
    if isinstance(node, ast.Compare):
        parts: list[Node] = []
        left = _convert(node.left)
        for cmp, comparator in zip(node.ops, node.comparators, strict=True):
            if type(cmp) not in _CMPOPS:
                raise _fail(node, "only ==, !=, <, <=, >, >=, in and not in compare values")
            right = _convert(comparator)
            parts.append(Compare(_CMPOPS[type(cmp)], left, right))
            left = right
        return parts[0] if len(parts) == 1 else Logic("and", parts)
    if isinstance(node, ast.Call):
        return _convert_call(node)
    if isinstance(node, ast.BinOp):
        raise _fail(node, "only + - * / are allowed as arithmetic")
    raise _fail(node, f"'{ast.unparse(node)}' is not allowed in an expression")


def _convert_call(node: ast.Call) -> Node:
    if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
        known = ", ".join(sorted(FUNCTIONS))
        raise _fail(node, f"unknown function '{ast.unparse(node.func)}'; known: {known}")
    if node.keywords:
        raise _fail(node, "functions take positional arguments only")
    fn = FUNCTIONS[node.func.id]
    count = len(node.args)
    if count < fn.min_args or (fn.max_args is not None and count > fn.max_args):
        want = str(fn.min_args) if fn.max_args == fn.min_args else f"at least {fn.min_args}"
        raise _fail(node, f"{node.func.id}() takes {want} argument(s), got {count}")
    args = [_convert(a) for a in node.args]
    if fn.history:
        if not isinstance(args[0], Name):
            raise _fail(node, f"{node.func.id}() needs a stored metric or input name first")
        days = args[1]
        if not (isinstance(days, Const) and isinstance(days.value, float) and days.value >= 1):
            raise _fail(node, f"{node.func.id}() needs a whole number of days >= 1 second")
        args[1] = Const(float(int(days.value)))
    return Call(node.func.id, args)


# ---------------------------------------------------------------- type checking


def infer_type(expr: Expression, types: dict[str, str]) -> tuple[str, list[str]]:
    """The expression's result type and any type mistakes, given each name's type."""
    problems: list[str] = []

    def visit(node: Node) -> str:
        if isinstance(node, Const):
            if isinstance(node.value, str):
                return TEXT
            return ANY if node.value is None or isinstance(node.value, tuple) else NUM
        if isinstance(node, Name):
            return types.get(node.name, ANY)
        if isinstance(node, Unary):
            inner = visit(node.operand)
            if node.op == "-" and inner in (TEXT, DATE):
                problems.append(f"cannot negate {inner} value '{_show(node.operand)}'")
            return BOOL if node.op == "not" else NUM
        if isinstance(node, Arith):
            for side in (node.left, node.right):
                kind = visit(side)
                if kind in (TEXT, DATE):
                    problems.append(
                        f"'{_show(side)}' is {kind}; arithmetic '{node.op}' needs numbers"
                    )
            return NUM
        if isinstance(node, Logic):
            for operand in node.operands:
                visit(operand)
            return BOOL
        if isinstance(node, Compare):
            left, right = visit(node.left), visit(node.right)
            if node.op not in ("in", "not in", "==", "!=") and {left, right} == {TEXT, NUM}:
                problems.append(f"'{_show(node)}' orders text against a number")
            if node.op in ("==", "!=") and {left, right} == {TEXT, NUM}:
                problems.append(f"'{_show(node)}' compares text with a number: never true")
            return BOOL
        if isinstance(node, Call):
            kinds = [visit(a) for a in node.args]
            fn = FUNCTIONS[node.func]
            if node.func in ("days_since", "days_until") and kinds[0] not in (DATE, TEXT, ANY):
                problems.append(f"{node.func}() needs a date, '{_show(node.args[0])}' is {kinds[0]}")
            if fn.result == ANY:
                concrete = [k for k in kinds if k != ANY]
                return concrete[0] if concrete else ANY
            return fn.result
        return ANY

    return visit(expr.root), problems


def _show(node: Node) -> str:
    if isinstance(node, Const):
        return repr(node.value)
    if isinstance(node, Name):
        return node.name
    if isinstance(node, Arith):
        return f"{_show(node.left)} {node.op} {_show(node.right)}"
    if isinstance(node, Compare):
        return f"{_show(node.left)} {node.op} {_show(node.right)}"
    if isinstance(node, Call):
        return f"{node.func}({', '.join(_show(a) for a in node.args)})"
    return node.__class__.__name__.lower()
