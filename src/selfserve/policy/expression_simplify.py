"""Algebraic simplification of routing expressions, preserving every replica's score.

Search produces expressions such as `max(total_prompt_tokens - (total_prompt_tokens -
prefix_hit_tokens), 0)`; a reader should see `prefix_hit_tokens`. `simplify` rewrites a
tree bottom-up until nothing changes, with rules that keep the *value* of the expression
for every snapshot (so the argmin, and hence every routing decision, is unchanged):

- constant folding with the evaluator's own semantics (safe division, clamped log1p);
- identities: `x + 0`, `x - 0`, `x * 1`, `x / 1`, `--x` → `x`; `x * 0`, `0 / x`, `x / 0`
  → `0` (division by zero is 0 in the language); `0 - x` → `-x`;
- sums are collected into coefficient × term form, so `a + (b - a)` → `b`, `x - x` → `0`
  and `2 * x + 3 * x` → `5 * x`;
- `min`/`max`: nested calls of the same function are flattened, repeated arguments and
  all-but-one constant are dropped, `max(x, 0)` → `x` and `min(x, 0)` → `0` when `x` is
  non-negative (every feature is: counts, fractions, ages and rates), `abs(x)` → `x` then;
- `if` with a constant test keeps one branch; `if t then x else x` → `x`.

Values are kept exactly except for float rounding where sums are re-associated (a relative
error of about 1e-16, far below the policy's 1e-9 tie tolerance). The assumption behind
`x * 0 → 0` and `x - x → 0` is that scores are finite, which holds for snapshot features;
an expression that overflows to infinity is already a rejected candidate in the tuner.
"""

from __future__ import annotations

from selfserve.policy.expression_eval import _BINARY, _safe_log1p
from selfserve.policy.expression_syntax import (
    Binary,
    Call,
    Cond,
    Expr,
    Feature,
    Num,
    Param,
    Unary,
    children,
)

_MAX_PASSES = 8


def simplify(tree: Expr) -> Expr:
    """The simplest equivalent tree this module can find (params are left as they are)."""
    for _ in range(_MAX_PASSES):
        simpler = _simplify(tree)
        if simpler == tree:
            return simpler
        tree = simpler
    return tree


def is_nonnegative(node: Expr) -> bool:
    """True when `node` is >= 0 for every snapshot (conservative: False if unsure)."""
    if isinstance(node, Num):
        return node.value >= 0
    if isinstance(node, Feature):
        return True
    if isinstance(node, Call):
        if node.func in ("log1p", "abs"):
            return True
        if node.func == "max":
            return any(is_nonnegative(arg) for arg in node.args)
        return all(is_nonnegative(arg) for arg in node.args)  # min
    if isinstance(node, Binary):
        if node.op in ("+", "*", "/"):
            return is_nonnegative(node.left) and is_nonnegative(node.right)
        return node.op != "-"  # comparisons and boolean operators give 0 or 1
    if isinstance(node, Unary):
        return node.op == "not"
    if isinstance(node, Cond):
        return is_nonnegative(node.then) and is_nonnegative(node.otherwise)
    return False  # a Param: its value may be anything


def _simplify(node: Expr) -> Expr:
    if isinstance(node, (Num, Feature, Param)):
        return node
    kids = [_simplify(child) for child in children(node)]
    if isinstance(node, Unary):
        return _unary(node.op, kids[0])
    if isinstance(node, Binary):
        if node.op in ("+", "-"):
            return _sum(Binary(node.op, kids[0], kids[1]))
        return _binary(node.op, kids[0], kids[1])
    if isinstance(node, Call):
        return _call(node.func, kids)
    if isinstance(node, Cond):
        test, then, otherwise = kids
        if isinstance(test, Num):
            return then if test.value else otherwise
        return otherwise if then == otherwise else Cond(test, then, otherwise)
    return node


def _unary(op: str, operand: Expr) -> Expr:
    if isinstance(operand, Num):
        return Num(-operand.value if op == "-" else (0.0 if operand.value else 1.0))
    if op == "-" and isinstance(operand, Unary) and operand.op == "-":
        return operand.operand
    return Unary(op, operand)


def _binary(op: str, left: Expr, right: Expr) -> Expr:
    if isinstance(left, Num) and isinstance(right, Num):
        return Num(float(_BINARY[op](left.value, right.value)))
    if op == "*":
        if _is(left, 0.0) or _is(right, 0.0):
            return Num(0.0)
        if _is(left, 1.0):
            return right
        if _is(right, 1.0):
            return left
        if _is(left, -1.0):
            return _unary("-", right)
        if _is(right, -1.0):
            return _unary("-", left)
    elif op == "/":
        if _is(left, 0.0) or _is(right, 0.0):
            return Num(0.0)  # 0 / x is 0, and so is x / 0 in the language
        if _is(right, 1.0):
            return left
    return Binary(op, left, right)


def _is(node: Expr, value: float) -> bool:
    return isinstance(node, Num) and node.value == value


# ---- sums: collect coefficient x term -------------------------------------------------


def _terms(node: Expr, sign: float, out: list[tuple[float, Expr]]) -> None:
    """Flatten a +/- tree into (coefficient, term) pairs; a constant c is (c, Num(1))."""
    if isinstance(node, Binary) and node.op in ("+", "-"):
        _terms(node.left, sign, out)
        _terms(node.right, -sign if node.op == "-" else sign, out)
    elif isinstance(node, Unary) and node.op == "-":
        _terms(node.operand, -sign, out)
    elif isinstance(node, Num):
        out.append((sign * node.value, _ONE))
    elif isinstance(node, Binary) and node.op == "*" and isinstance(node.left, Num):
        out.append((sign * node.left.value, node.right))
    elif isinstance(node, Binary) and node.op == "*" and isinstance(node.right, Num):
        out.append((sign * node.right.value, node.left))
    else:
        out.append((sign, node))


_ONE = Num(1.0)


def _sum(node: Binary) -> Expr:
    pairs: list[tuple[float, Expr]] = []
    _terms(node, 1.0, pairs)
    order: list[Expr] = []
    weights: dict[Expr, float] = {}
    for weight, term in pairs:
        if term not in weights:
            order.append(term)
            weights[term] = 0.0
        weights[term] += weight
    if len(weights) == len(pairs) and all(weights.values()):
        # Nothing combined or vanished: keep the author's form (bar trivial identities).
        return _plain_sum(node)
    kept = [(weights[t], t) for t in order if weights[t] != 0.0 and t != _ONE]
    constant = weights.get(_ONE, 0.0)
    result: Expr | None = None
    for weight, term in kept:
        magnitude = abs(weight)
        piece = term if magnitude == 1.0 else Binary("*", Num(magnitude), term)
        if result is None:
            result = piece if weight > 0 else _unary("-", piece)
        else:
            result = Binary("+" if weight > 0 else "-", result, piece)
    if constant != 0.0:
        if result is None:
            return Num(constant)
        result = Binary("+" if constant > 0 else "-", result, Num(abs(constant)))
    return result if result is not None else Num(0.0)


def _plain_sum(node: Binary) -> Expr:
    left, right = node.left, node.right
    if isinstance(left, Num) and isinstance(right, Num):
        return Num(float(_BINARY[node.op](left.value, right.value)))
    if _is(right, 0.0):
        return left
    if _is(left, 0.0):
        return right if node.op == "+" else _unary("-", right)
    if isinstance(right, Num) and right.value < 0:  # x + -c reads as x - c
        return Binary("-" if node.op == "+" else "+", left, Num(-right.value))
    return node


# ---- min / max / abs / log1p ------------------------------------------------------------


def _call(func: str, args: list[Expr]) -> Expr:
    if all(isinstance(arg, Num) for arg in args):
        values = [arg.value for arg in args]  # type: ignore[union-attr]
        if func == "min":
            return Num(min(values))
        if func == "max":
            return Num(max(values))
        if func == "abs":
            return Num(abs(values[0]))
        return Num(_safe_log1p(values[0]))
    if func == "abs":
        return args[0] if is_nonnegative(args[0]) else Call(func, tuple(args))
    if func == "log1p":
        return Call(func, tuple(args))
    flat: list[Expr] = []
    for arg in args:
        nested = arg.args if isinstance(arg, Call) and arg.func == func else (arg,)
        for item in nested:
            if item not in flat:
                flat.append(item)
    constants = [a.value for a in flat if isinstance(a, Num)]
    rest = [a for a in flat if not isinstance(a, Num)]
    if constants:
        bound = min(constants) if func == "min" else max(constants)
        constants = [bound]
        if bound <= 0.0 and all(is_nonnegative(a) for a in rest):
            if func == "min":
                return Num(bound)  # min(x >= 0, c <= 0) is c
            constants = []  # max(x >= 0, c <= 0) is x
    args_out = rest + [Num(c) for c in constants]
    if len(args_out) == 1:
        return args_out[0]
    return Call(func, tuple(args_out))
