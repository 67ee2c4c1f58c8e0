"""The NetSuite sandbox's SuiteQL: a small, strict subset of Oracle SQL over customer, contact, transaction.

Tokenizer, parser (`SuiteQLParser`) and evaluation (`truth`, `operand_value`, `join_rows`); see the netsuite
module's docstring for the dialect.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sandbox.netsuite_records import SUITEQL_TABLES, us_date
from sandbox.tokens import TokenCursor

IN_LIST_MAX = 1000

class QueryError(Exception):
    """An unsupported or malformed query: NetSuite's 400 "Invalid search query"."""


_TOKEN_RE = re.compile(
    r"""(?P<space>\s+)
      | (?P<number>\d+(?:\.\d+)?)
      | (?P<op><=|>=|!=|<>|=|<|>)
      | (?P<punct>[(),*])
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)""",
    re.VERBOSE,
)
_KEYWORDS = frozenset({"select", "from", "where", "and", "or", "not", "in", "is", "null", "like", "order", "by",
                       "asc", "desc", "as", "left", "outer", "inner", "join", "on"})  # fmt: skip
_FUNCTIONS = frozenset({"lower", "upper", "to_char"})
_DATE_FORMATS = {"YYYY-MM-DD": "%Y-%m-%d", "YYYY-MM-DD HH24:MI:SS": "%Y-%m-%d %H:%M:%S"}


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # string, number, op, punct, name, keyword, end
    value: Any


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    position = 0
    while position < len(text):
        if text[position] == "'":
            chars: list[str] = []
            position += 1
            while True:
                if position >= len(text):
                    raise QueryError("Unterminated string literal.")
                if text[position] == "'":
                    if text[position + 1 : position + 2] == "'":
                        chars.append("'")
                        position += 2
                        continue
                    position += 1
                    break
                chars.append(text[position])
                position += 1
            tokens.append(_Tok("string", "".join(chars)))
            continue
        match = _TOKEN_RE.match(text, position)
        if match is None:
            raise QueryError(f"Unexpected character at position {position}.")
        kind = match.lastgroup or ""
        value: Any = match.group()
        if kind == "name" and value.lower() in _KEYWORDS:
            kind, value = "keyword", value.lower()
        if kind != "space":
            tokens.append(_Tok(kind, value))
        position = match.end()
    tokens.append(_Tok("end", None))
    return tokens


@dataclass(frozen=True, slots=True)
class Operand:
    column: str
    func: str | None = None
    fmt: str | None = None


@dataclass(frozen=True, slots=True)
class Join:
    """``[LEFT [OUTER] | INNER] JOIN table ON a = b``: the joined table, whether unmatched rows of the first
    are kept (their joined columns NULL), and the two columns compared (``table.column`` each)."""

    table: str
    outer: bool
    left: str
    right: str


@dataclass(frozen=True, slots=True)
class _Query:
    table: str
    select: tuple[tuple[str, Operand], ...]  # (output key, operand)
    where: Any
    order: tuple[tuple[Operand, bool], ...]  # (operand, descending)
    join: Join | None = None  # with a join, every operand's column is ``table.column``


class SuiteQLParser(TokenCursor[_Tok]):
    def __init__(self, text: str) -> None:
        super().__init__(_tokenize(text))
        self.table = ""
        self.joined = ""  # the JOINed table, if any

    def unexpected(self, token: _Tok) -> Exception:
        shown = "end of query" if token.kind == "end" else repr(str(token.value))
        return QueryError(f"Invalid or unsupported search: unexpected {shown}.")

    def parse(self) -> _Query:
        self.take("keyword", "select")
        start = self.index
        while self.token.kind != "end" and not (self.token.kind == "keyword" and self.token.value == "from"):
            self.index += 1
        self.take("keyword", "from")
        table = str(self.take("name").value).lower()
        if table not in SUITEQL_TABLES:
            raise QueryError(f"Record '{table}' was not found.")
        self.table = table
        join = self.join_clause()
        after_from, self.index = self.index, start
        select: list[tuple[str, Operand]] = []
        if self.accept("punct", "*"):
            if join is not None:
                raise QueryError("Name the columns of a join (SELECT * is not supported here).")
            select = [(name, Operand(name)) for name in SUITEQL_TABLES[table]]
        else:
            while True:
                operand = self.operand()
                key = operand.column.rsplit(".", 1)[-1]
                if self.accept("keyword", "as"):
                    key = str(self.take("name").value).lower()
                elif operand.func:
                    raise QueryError("Give a function column an alias (AS name).")
                select.append((key, operand))
                if not self.accept("punct", ","):
                    break
        self.take("keyword", "from")
        self.index = after_from
        where = self.disjunction() if self.accept("keyword", "where") else None
        order: list[tuple[Operand, bool]] = []
        if self.accept("keyword", "order"):
            self.take("keyword", "by")
            aliases = dict(select)
            while True:
                name = str(self.token.value).lower() if self.token.kind == "name" else ""
                follows = self.tokens[self.index + 1]
                if name in aliases and not (follows.kind == "punct" and follows.value == "("):
                    self.index += 1
                    operand = aliases[name]
                else:
                    operand = self.operand()
                descending = bool(self.accept("keyword", "desc"))
                if not descending:
                    self.accept("keyword", "asc")
                order.append((operand, descending))
                if not self.accept("punct", ","):
                    break
        self.take("end")
        return _Query(table, tuple(select), where, tuple(order), join)

    def join_clause(self) -> Join | None:
        """``[LEFT [OUTER] | INNER] JOIN table ON a = b`` after the FROM table, or None."""
        outer = bool(self.accept("keyword", "left"))
        if outer:
            self.accept("keyword", "outer")
        elif not self.accept("keyword", "inner") and not (self.token.kind == "keyword" and self.token.value == "join"):
            return None
        self.take("keyword", "join")
        joined = str(self.take("name").value).lower()
        if joined not in SUITEQL_TABLES:
            raise QueryError(f"Record '{joined}' was not found.")
        if joined == self.table:
            raise QueryError("A table joined to itself needs aliases, which this dialect does not take.")
        self.joined = joined
        self.take("keyword", "on")
        left = self.column(self.take("name"))
        if self.take("op").value != "=":
            raise QueryError("Invalid or unsupported search: a join is ON one column = another.")
        right = self.column(self.take("name"))
        if {left.split(".")[0], right.split(".")[0]} != {self.table, joined}:
            raise QueryError("Invalid or unsupported search: a join compares a column of each table.")
        return Join(joined, outer, left, right)

    def column(self, tok: _Tok) -> str:
        """A column of the FROM table (its name); with a join, of either table (``table.column``: an
        unqualified name both tables have is ambiguous, as in Oracle)."""
        name = str(tok.value).lower()
        tables = [self.table, self.joined] if self.joined else [self.table]
        prefix = None
        if "." in name:
            prefix, name = name.split(".", 1)
            if prefix not in tables:
                raise QueryError(f"Unknown table alias '{prefix}'.")
        having = [t for t in ([prefix] if prefix else tables) if name in SUITEQL_TABLES[t]]
        if not having:
            raise QueryError(f"Field '{name}' for record '{prefix or self.table}' was not found. Reason: "
                              "NOT_EXPOSED - Not available for channel SEARCH")
        if len(having) > 1:
            raise QueryError("ORA-00918: column ambiguously defined")
        return f"{having[0]}.{name}" if self.joined else name

    def operand(self) -> Operand:
        tok = self.take("name")
        if tok.value.lower() in _FUNCTIONS and self.accept("punct", "("):
            func = tok.value.lower()
            inner = self.column(self.take("name"))
            fmt = None
            if func == "to_char":
                self.take("punct", ",")
                fmt = str(self.take("string").value)
                if fmt not in _DATE_FORMATS:
                    raise QueryError(f"Unsupported date format '{fmt}'.")
            self.take("punct", ")")
            return Operand(inner, func, fmt)
        return Operand(self.column(tok))

    def disjunction(self) -> Any:
        parts = [self.conjunction()]
        while self.accept("keyword", "or"):
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else ("or", parts)

    def conjunction(self) -> Any:
        parts = [self.negation()]
        while self.accept("keyword", "and"):
            parts.append(self.negation())
        return parts[0] if len(parts) == 1 else ("and", parts)

    def negation(self) -> Any:
        if self.accept("keyword", "not"):
            return ("not", self.negation())
        if self.accept("punct", "("):
            inner = self.disjunction()
            self.take("punct", ")")
            return inner
        left = self.operand()
        if self.accept("keyword", "is"):
            negated = bool(self.accept("keyword", "not"))
            self.take("keyword", "null")
            return ("null", left, negated)
        negated = bool(self.accept("keyword", "not"))
        if self.accept("keyword", "in"):
            self.take("punct", "(")
            values = [self.literal()]
            while self.accept("punct", ","):
                values.append(self.literal())
            self.take("punct", ")")
            if len(values) > IN_LIST_MAX:
                raise QueryError("ORA-01795: maximum number of expressions in a list is 1000")
            return ("in", left, values, negated)
        if self.accept("keyword", "like"):
            pattern = self.take("string").value
            regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
            return ("like", left, re.compile(f"^{regex}$", re.DOTALL), negated)
        if negated:
            raise QueryError("Invalid or unsupported search: NOT must precede IN or LIKE here.")
        op = self.take("op").value
        return ("cmp", left, "!=" if op == "<>" else op, self.literal())

    def literal(self) -> Any:
        tok = self.token
        if tok.kind == "string":
            self.index += 1
            return tok.value or None  # Oracle: '' is NULL
        if tok.kind == "number":
            self.index += 1
            return float(tok.value) if "." in tok.value else int(tok.value)
        if tok.kind == "keyword" and tok.value == "null":
            self.index += 1
            return None
        if tok.kind == "name" and tok.value.lower() == "to_date":
            self.index += 1
            self.take("punct", "(")
            text = str(self.take("string").value)
            self.take("punct", ",")
            fmt = str(self.take("string").value)
            self.take("punct", ")")
            if fmt not in _DATE_FORMATS:
                raise QueryError(f"Unsupported date format '{fmt}'.")
            try:
                return datetime.strptime(text, _DATE_FORMATS[fmt]).replace(tzinfo=UTC)
            except ValueError:
                raise QueryError("ORA-01861: literal does not match format string") from None
        raise QueryError("Invalid or unsupported search: a literal value is expected.")


def join_rows(join: Join, first: str, left: list[dict[str, Any]], right: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of ``first JOIN join.table ON ...``, keyed ``table.column``; with LEFT OUTER, a row of `first`
    that nothing matches is kept once with the joined table's columns NULL."""
    mine, theirs = (join.left, join.right) if join.left.startswith(f"{first}.") else (join.right, join.left)
    mine, theirs = mine.split(".", 1)[1], theirs.split(".", 1)[1]
    by_key: dict[Any, list[dict[str, Any]]] = {}
    for row in right:
        if row.get(theirs) is not None:
            by_key.setdefault(row[theirs], []).append(row)
    joined = []
    for row in left:
        prefixed = {f"{first}.{k}": v for k, v in row.items()}
        matches = by_key.get(row.get(mine), []) if row.get(mine) is not None else []
        for match in matches:
            joined.append({**prefixed, **{f"{join.table}.{k}": v for k, v in match.items()}})
        if not matches and join.outer:
            joined.append(prefixed)
    return joined


def operand_value(operand: Operand, row: Mapping[str, Any]) -> Any:
    value = row.get(operand.column)
    if value is None:
        return None
    if operand.func in ("lower", "upper"):
        if not isinstance(value, str):
            return value
        return value.lower() if operand.func == "lower" else value.upper()
    if operand.func == "to_char":
        moment = value if isinstance(value, datetime) else datetime.combine(value, datetime.min.time(), UTC)
        return moment.strftime(_DATE_FORMATS[operand.fmt or "YYYY-MM-DD"])
    return value


def _coerce(have: Any, literal: Any) -> tuple[Any, Any]:
    """Both sides of a comparison in one type (Oracle's implicit conversions, as far as SuiteQL needs them)."""
    if isinstance(have, datetime) and isinstance(literal, datetime):
        return have, literal
    if isinstance(have, date) and not isinstance(have, datetime) and isinstance(literal, datetime):
        return datetime.combine(have, datetime.min.time(), UTC), literal
    if isinstance(have, bool):
        have = "T" if have else "F"
    if isinstance(have, int | float) and isinstance(literal, str):
        try:
            return have, float(literal)
        except ValueError:
            raise QueryError("ORA-01722: invalid number") from None
    if isinstance(have, str) and isinstance(literal, int | float):
        return have, str(literal)
    if isinstance(have, date | datetime) or isinstance(literal, datetime):
        raise QueryError("ORA-00932: inconsistent datatypes")
    return have, literal


def truth(node: Any, row: Mapping[str, Any]) -> bool | None:
    """SQL's three-valued logic: True, False, or None (unknown)."""
    kind = node[0]
    if kind in ("and", "or"):
        values = [truth(part, row) for part in node[1]]
        if kind == "and":
            return False if False in values else None if None in values else True
        return True if True in values else None if None in values else False
    if kind == "not":
        inner = truth(node[1], row)
        return None if inner is None else not inner
    have = operand_value(node[1], row)
    if kind == "null":
        return (have is not None) if node[2] else (have is None)
    if have is None:
        return None
    if kind == "like":
        found = isinstance(have, str) and bool(node[2].match(have))
        return not found if node[3] else found
    if kind == "in":
        values = [v for v in node[2] if v is not None]
        found = any(a == b for a, b in (_coerce(have, v) for v in values))
        if not found and len(values) < len(node[2]):
            return None
        return not found if node[3] else found
    literal = node[3]
    if literal is None:
        return None
    left, right = _coerce(have, literal)
    op = node[2]
    try:
        return {"=": left == right, "!=": left != right, "<": left < right, "<=": left <= right, ">": left > right,
                ">=": left >= right}[op]
    except TypeError:
        raise QueryError("ORA-00932: inconsistent datatypes") from None


def suiteql_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "T" if value else "F"
    if isinstance(value, datetime):
        return us_date(value.date())
    if isinstance(value, date):
        return us_date(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value
