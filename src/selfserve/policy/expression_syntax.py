"""The routing expression language: its features, tokens, AST, parser and pretty-printer.

A learned heuristic is *data*: a short arithmetic expression over named snapshot features
that gives every replica a score. This module turns untrusted text (from a policy file, a
mutation, an optimizer or an LLM) into a small immutable AST by parsing it against a
whitelist of features, functions and operators, with limits on text length, node count,
depth and literal size. Nothing here calls `eval`, `exec` or `ast`: the tokenizer is a
hand-written scanner and the parser a precedence-climbing recursive descent, so a proposal
can at worst be rejected with an `ExpressionError` naming the position and what is valid.

Grammar (lowest precedence first)::

    expr    := 'if' expr 'then' expr 'else' expr | or
    or      := and ('or' and)*
    and     := not ('and' not)*
    not     := 'not' not | compare
    compare := sum (('<' | '<=' | '>' | '>=' | '==' | '!=') sum)?
    sum     := product (('+' | '-') product)*
    product := unary (('*' | '/') unary)*
    unary   := '-' unary | atom
    atom    := NUMBER | NAME | FUNC '(' expr (',' expr)* ')' | '(' expr ')'

Comparisons and boolean operators yield 1.0 (true) or 0.0 (false); any non-zero value is
true. Division by (near) zero yields 0; `log1p(x)` is `log1p(max(x, 0))`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

# Per-replica features: fields of `ReplicaView` (own / scraped / static, see snapshot.py).
REPLICA_FEATURES: dict[str, str] = {
    "index": "static: the replica's position in the cluster (0-based)",
    "in_flight_requests": "own: dispatched to this replica and not yet completed",
    "prefill_requests": "own: dispatched here, no first token yet",
    "queued_prefill_tokens": "own: uncached prompt tokens of requests here without a first token",
    "decode_requests": "own: requests here past their first token, not completed",
    "running_decode_tokens": "own: estimated context tokens of the decoding requests here",
    "prefix_hit_tokens": "own: tokens of THIS request the router's index expects cached here",
    "media_hit_tokens": "own: media tokens of this request expected cached here",
    "recent_ttft_s": "own: moving average of observed TTFT here (0 before any)",
    "recent_output_tokens_per_s": "own: output tokens/s over the recent window",
    "recent_requests_per_s": "own: dispatches/s over the recent window",
    "num_requests_running": "scraped: engine's running requests (stale by the scrape interval)",
    "num_requests_waiting": "scraped: engine's waiting queue length",
    "kv_cache_usage": "scraped: KV cache usage fraction in [0, 1]",
    "metrics_age_s": "scraped: age of the scraped metrics in seconds",
    "kv_capacity_tokens": "static: KV cache capacity of the replica in tokens",
    "max_model_len": "static: longest context the replica serves",
    "is_healthy": "1 when the replica is healthy, else 0",
}

# Request features: fields of `RequestView` (the request being routed). `arrival_s` is left
# out on purpose: a heuristic must not depend on wall-clock time.
REQUEST_FEATURES: dict[str, str] = {
    "prompt_tokens": "request: text prompt tokens",
    "media_tokens": "request: media (image/audio/video) tokens",
    "total_prompt_tokens": "request: prompt_tokens + media_tokens",
    "expected_output_tokens": "request: expected output tokens (known in traces, estimated live)",
}

# Cluster aggregates of replica features, computed once per decision when referenced, so a
# score can normalise over the candidates (as llm-d's queue scorer does).
AGGREGATED_FEATURES: tuple[str, ...] = (
    "in_flight_requests",
    "prefill_requests",
    "queued_prefill_tokens",
    "decode_requests",
    "running_decode_tokens",
    "prefix_hit_tokens",
    "num_requests_running",
    "num_requests_waiting",
    "kv_cache_usage",
    "recent_ttft_s",
)
AGGREGATE_KINDS: tuple[str, ...] = ("min", "max", "mean")
CLUSTER_FEATURES: dict[str, str] = {
    f"cluster_{kind}_{name}": f"cluster: {kind} of {name} over the candidate replicas"
    for name in AGGREGATED_FEATURES
    for kind in AGGREGATE_KINDS
}
CLUSTER_FEATURES["num_replicas"] = "cluster: number of candidate replicas"

FEATURES: dict[str, str] = {**REPLICA_FEATURES, **REQUEST_FEATURES, **CLUSTER_FEATURES}

# name -> (min arity, max arity or None for unbounded)
FUNCTIONS: dict[str, tuple[int, int | None]] = {
    "min": (2, None),
    "max": (2, None),
    "log1p": (1, 1),
    "abs": (1, 1),
}
KEYWORDS: frozenset[str] = frozenset({"if", "then", "else", "and", "or", "not"})
COMPARE_OPS: tuple[str, ...] = ("<", "<=", ">", ">=", "==", "!=")

MAX_TEXT_CHARS = 4000
MAX_NODES = 160
MAX_DEPTH = 32
MAX_LITERAL = 1e12


class ExpressionError(ValueError):
    """A rejected expression: says where (character offset) and what would be valid."""

    def __init__(self, message: str, position: int | None = None):
        self.position = position
        where = f" at character {position}" if position is not None else ""
        super().__init__(f"{message}{where}")


# ---------------------------------------------------------------- AST


@dataclass(frozen=True, slots=True)
class Num:
    value: float


@dataclass(frozen=True, slots=True)
class Feature:
    name: str


@dataclass(frozen=True, slots=True)
class Param:
    """A named constant whose value lives in the policy's `params` (tunable)."""

    name: str


@dataclass(frozen=True, slots=True)
class Unary:
    op: str  # "-" or "not"
    operand: Expr


@dataclass(frozen=True, slots=True)
class Binary:
    op: str  # + - * / < <= > >= == != and or
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Call:
    func: str
    args: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Cond:
    test: Expr
    then: Expr
    otherwise: Expr


Expr = Num | Feature | Param | Unary | Binary | Call | Cond


def children(node: Expr) -> tuple[Expr, ...]:
    if isinstance(node, Unary):
        return (node.operand,)
    if isinstance(node, Binary):
        return (node.left, node.right)
    if isinstance(node, Call):
        return node.args
    if isinstance(node, Cond):
        return (node.test, node.then, node.otherwise)
    return ()


def count_nodes(node: Expr) -> int:
    return 1 + sum(count_nodes(child) for child in children(node))


def depth(node: Expr) -> int:
    kids = children(node)
    return 1 + (max(depth(child) for child in kids) if kids else 0)


def features_used(node: Expr) -> set[str]:
    found: set[str] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, Feature):
            found.add(current.name)
        stack.extend(children(current))
    return found


def check_limits(node: Expr) -> None:
    """Raise `ExpressionError` if the tree is larger or deeper than allowed."""
    nodes = count_nodes(node)
    if nodes > MAX_NODES:
        raise ExpressionError(f"expression has {nodes} nodes; at most {MAX_NODES} are allowed")
    levels = depth(node)
    if levels > MAX_DEPTH:
        raise ExpressionError(f"expression is {levels} levels deep; at most {MAX_DEPTH} allowed")


# ---------------------------------------------------------------- tokenizer

_SYMBOLS_2 = ("<=", ">=", "==", "!=")
_SYMBOLS_1 = "+-*/(),<>"


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # "num", "name", "op", "end"
    text: str
    position: int


def tokenize(text: str) -> list[Token]:
    if not isinstance(text, str):
        raise ExpressionError(f"expression must be a string, got {type(text).__name__}")
    if len(text) > MAX_TEXT_CHARS:
        raise ExpressionError(
            f"expression is {len(text)} characters long; at most {MAX_TEXT_CHARS} are allowed"
        )
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
            continue
        if ch.isascii() and (ch.isdigit() or (ch == "." and i + 1 < n and text[i + 1].isdigit())):
            start = i
            while i < n and text[i].isascii() and (text[i].isdigit() or text[i] == "."):
                i += 1
            if i < n and text[i] in "eE":
                j = i + 1
                if j < n and text[j] in "+-":
                    j += 1
                if j < n and text[j].isascii() and text[j].isdigit():
                    i = j
                    while i < n and text[i].isascii() and text[i].isdigit():
                        i += 1
            tokens.append(Token("num", text[start:i], start))
            continue
        if ch.isascii() and (ch.isalpha() or ch == "_"):
            start = i
            while i < n and text[i].isascii() and (text[i].isalnum() or text[i] == "_"):
                i += 1
            tokens.append(Token("name", text[start:i], start))
            continue
        if text[i : i + 2] in _SYMBOLS_2:
            tokens.append(Token("op", text[i : i + 2], i))
            i += 2
            continue
        if ch in _SYMBOLS_1:
            tokens.append(Token("op", ch, i))
            i += 1
            continue
        raise ExpressionError(
            f"unexpected character {ch!r}; valid are numbers, feature names, "
            "+ - * / ( ) , < <= > >= == != and the words if/then/else/and/or/not",
            i,
        )
    tokens.append(Token("end", "", n))
    return tokens


# ---------------------------------------------------------------- parser


class _Parser:
    def __init__(self, text: str, params: Mapping[str, float]):
        self.tokens = tokenize(text)
        self.pos = 0
        self.params = params
        self.nodes = 0
        self.depth = 0

    def peek(self) -> Token:
        return self.tokens[self.pos]

    def take(self) -> Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def expect(self, kind: str, text: str) -> Token:
        token = self.take()
        if token.kind != kind or token.text != text:
            shown = token.text or "end of expression"
            raise ExpressionError(f"expected {text!r}, found {shown!r}", token.position)
        return token

    def node(self, value: Expr) -> Expr:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ExpressionError(f"expression has more than {MAX_NODES} nodes")
        return value

    def is_word(self, word: str) -> bool:
        token = self.peek()
        return token.kind == "name" and token.text == word

    def parse(self) -> Expr:
        tree = self.expr()
        token = self.peek()
        if token.kind != "end":
            raise ExpressionError(
                f"unexpected {token.text!r} after a complete expression", token.position
            )
        return tree

    def expr(self) -> Expr:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(
                f"expression nests deeper than {MAX_DEPTH} levels", self.peek().position
            )
        try:
            if self.is_word("if"):
                self.take()
                test = self.expr()
                self.expect("name", "then")
                then = self.expr()
                self.expect("name", "else")
                otherwise = self.expr()
                return self.node(Cond(test, then, otherwise))
            return self.or_()
        finally:
            self.depth -= 1

    def or_(self) -> Expr:
        left = self.and_()
        while self.is_word("or"):
            self.take()
            left = self.node(Binary("or", left, self.and_()))
        return left

    def and_(self) -> Expr:
        left = self.not_()
        while self.is_word("and"):
            self.take()
            left = self.node(Binary("and", left, self.not_()))
        return left

    def not_(self) -> Expr:
        if self.is_word("not"):
            self.take()
            return self.node(Unary("not", self.not_()))
        return self.compare()

    def compare(self) -> Expr:
        left = self.sum()
        token = self.peek()
        if token.kind == "op" and token.text in COMPARE_OPS:
            self.take()
            left = self.node(Binary(token.text, left, self.sum()))
            after = self.peek()
            if after.kind == "op" and after.text in COMPARE_OPS:
                raise ExpressionError("comparisons cannot be chained; use 'and'", after.position)
        return left

    def sum(self) -> Expr:
        left = self.product()
        while self.peek().kind == "op" and self.peek().text in "+-":
            op = self.take().text
            left = self.node(Binary(op, left, self.product()))
        return left

    def product(self) -> Expr:
        left = self.unary()
        while self.peek().kind == "op" and self.peek().text in "*/":
            op = self.take().text
            left = self.node(Binary(op, left, self.unary()))
        return left

    def unary(self) -> Expr:
        if self.peek().kind == "op" and self.peek().text == "-":
            self.take()
            self.depth += 1
            try:
                if self.depth > MAX_DEPTH:
                    raise ExpressionError(f"expression nests deeper than {MAX_DEPTH} levels")
                operand = self.unary()
            finally:
                self.depth -= 1
            if isinstance(operand, Num):
                return Num(-operand.value)
            return self.node(Unary("-", operand))
        return self.atom()

    def atom(self) -> Expr:
        token = self.take()
        if token.kind == "num":
            try:
                value = float(token.text)
            except ValueError:
                raise ExpressionError(f"malformed number {token.text!r}", token.position) from None
            if not math.isfinite(value) or abs(value) > MAX_LITERAL:
                raise ExpressionError(
                    f"number {token.text} is out of range; |n| <= {MAX_LITERAL:g}", token.position
                )
            return self.node(Num(value))
        if token.kind == "op" and token.text == "(":
            inner = self.expr()
            self.expect("op", ")")
            return inner
        if token.kind == "name":
            name = token.text
            if name in FUNCTIONS:
                return self.call(name, token)
            if name in KEYWORDS:
                raise ExpressionError(f"unexpected keyword {name!r}", token.position)
            if name in FEATURES:
                return self.node(Feature(name))
            if name in self.params:
                return self.node(Param(name))
            raise ExpressionError(
                f"unknown name {name!r}; valid names are the features "
                f"({', '.join(sorted(REPLICA_FEATURES) + sorted(REQUEST_FEATURES))}, "
                "cluster_min_/cluster_max_/cluster_mean_<feature>, num_replicas), "
                f"the functions ({', '.join(FUNCTIONS)}) and the declared params "
                f"({', '.join(sorted(self.params)) or 'none'})",
                token.position,
            )
        shown = token.text or "end of expression"
        raise ExpressionError(f"expected a number, name or '(', found {shown!r}", token.position)

    def call(self, name: str, token: Token) -> Expr:
        self.expect("op", "(")
        args = [self.expr()]
        while self.peek().kind == "op" and self.peek().text == ",":
            self.take()
            args.append(self.expr())
        self.expect("op", ")")
        low, high = FUNCTIONS[name]
        if len(args) < low or (high is not None and len(args) > high):
            wanted = f"{low}" if low == high else f"at least {low}"
            raise ExpressionError(
                f"{name}() takes {wanted} argument(s), got {len(args)}", token.position
            )
        return self.node(Call(name, tuple(args)))


def parse_expression(text: str, params: Mapping[str, float] | None = None) -> Expr:
    """Parse untrusted text into an AST, or raise `ExpressionError`.

    `params` names constants the expression may reference (their values are bound when
    compiling); a param may not shadow a feature or function name.
    """
    params = dict(params or {})
    for name, value in params.items():
        if not isinstance(name, str) or not name.isidentifier() or not name.isascii():
            raise ExpressionError(f"param name {name!r} is not a plain identifier")
        if name in FEATURES or name in FUNCTIONS or name in KEYWORDS:
            raise ExpressionError(f"param name {name!r} collides with a feature/function/keyword")
        if (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            raise ExpressionError(f"param {name!r} must be a finite number, got {value!r}")
    tree = _Parser(text, params).parse()
    check_limits(tree)
    return tree


# ---------------------------------------------------------------- printer

_PRECEDENCE = {
    "or": 1,
    "and": 2,
    "not": 3,
    "<": 4,
    "<=": 4,
    ">": 4,
    ">=": 4,
    "==": 4,
    "!=": 4,
    "+": 5,
    "-": 5,
    "*": 6,
    "/": 6,
}
_UNARY_MINUS = 7
_ATOM = 8


def format_number(value: float) -> str:
    """Shortest text that parses back to exactly `value`."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _precedence(node: Expr) -> int:
    if isinstance(node, Cond):
        return 0
    if isinstance(node, Binary):
        return _PRECEDENCE[node.op]
    if isinstance(node, Unary):
        return _PRECEDENCE["not"] if node.op == "not" else _UNARY_MINUS
    if isinstance(node, Num) and node.value < 0:
        return _UNARY_MINUS
    return _ATOM


def to_text(node: Expr, params: Mapping[str, float] | None = None) -> str:
    """Readable text that parses back to the same tree; with `params`, inline their values."""

    def wrap(child: Expr, minimum: int) -> str:
        text = render(child)
        return f"({text})" if _precedence(child) < minimum else text

    def render(current: Expr) -> str:
        if isinstance(current, Num):
            return format_number(current.value)
        if isinstance(current, Feature):
            return current.name
        if isinstance(current, Param):
            if params is not None and current.name in params:
                value = float(params[current.name])
                return format_number(value) if value >= 0 else f"({format_number(value)})"
            return current.name
        if isinstance(current, Unary):
            if current.op == "not":
                return f"not {wrap(current.operand, _PRECEDENCE['not'])}"
            return f"-{wrap(current.operand, _UNARY_MINUS)}"
        if isinstance(current, Binary):
            level = _PRECEDENCE[current.op]
            # Left-associative: the right side needs brackets at equal precedence; comparisons
            # are non-associative, so both sides need them.
            left_min = level + 1 if level == 4 else level
            return f"{wrap(current.left, left_min)} {current.op} {wrap(current.right, level + 1)}"
        if isinstance(current, Call):
            return f"{current.func}({', '.join(render(arg) for arg in current.args)})"
        if isinstance(current, Cond):
            # The test and branches are full expressions; bracket nested conditionals in the
            # test and then-branch so the reader never has to resolve a dangling else.
            return (
                f"if {wrap(current.test, 1)} then {wrap(current.then, 1)} "
                f"else {render(current.otherwise)}"
            )
        raise TypeError(f"not an expression node: {current!r}")

    return render(node)
