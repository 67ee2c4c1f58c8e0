"""The NetSuite sandbox's SuiteQL: a small, strict subset of Oracle SQL over customer, contact, transaction.

Tokenizer, parser (`SuiteQLParser`) and evaluation (`truth`, `operand_value`); see the netsuite module's
docstring for the dialect.
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
                       "asc", "desc", "as"})  # fmt: skip
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
class _Query:
    table: str
    select: tuple[tuple[str, Operand], ...]  # (output key, operand)
    where: Any
    order: tuple[tuple[Operand, bool], ...]  # (operand, descending)


class SuiteQLParser(TokenCursor[_Tok]):
    def __init__(self, text: str) -> None:
        super().__init__(_tokenize(text))
        self.table = ""

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
        after_from, self.index = self.index, start
        select: list[tuple[str, Operand]] = []
        if self.accept("punct", "*"):
            select = [(name, Operand(name)) for name in SUITEQL_TABLES[table]]
        else:
            while True:
                operand = self.operand()
                key = operand.column
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
        return _Query(table, tuple(select), where, tuple(order))

    def column(self, tok: _Tok) -> str:
        name = str(tok.value).lower()
        if "." in name:
            prefix, name = name.split(".", 1)
            if prefix != self.table:
                raise QueryError(f"Unknown table alias '{prefix}'.")
        if name not in SUITEQL_TABLES[self.table]:
            raise QueryError(f"Field '{name}' for record '{self.table}' was not found. Reason: NOT_EXPOSED - "
                              "Not available for channel SEARCH")
        return name

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
