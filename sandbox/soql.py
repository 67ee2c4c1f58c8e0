"""Just enough SOQL for the Salesforce sandbox: the tokenizer, `SoqlParser` and the row filter.

``SELECT fields FROM Object [WHERE ...] [ORDER BY ...] [LIMIT n] [OFFSET n]``; see the salesforce module's
docstring for the operators and how literals are read. ``SELECT COUNT() FROM Object [WHERE ...] [LIMIT n]``
counts: `count_answer` is Salesforce's answer, the number in ``totalSize`` and no records. As in Salesforce,
COUNT() stands alone in the SELECT list and takes no ORDER BY; COUNT(field) is not emulated.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sandbox.salesforce_model import (
    ID_RE,
    ID_TYPES,
    ApiError,
    FieldSpec,
    SObject,
    malformed_query,
    parse_datetime,
    to_18,
)
from sandbox.tokens import TokenCursor

_SOQL_ESCAPES = {"n": "\n", "N": "\n", "r": "\r", "R": "\r", "t": "\t", "T": "\t", "b": "\b", "B": "\b",
                 "f": "\f", "F": "\f", '"': '"', "'": "'", "\\": "\\"}  # fmt: skip
_TOKEN_RE = re.compile(
    r"""(?P<space>\s+)
      | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?\d{2}))
      | (?P<date>\d{4}-\d{2}-\d{2})
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<op><=|>=|!=|<>|=|<|>)
      | (?P<punct>[(),])
      | (?P<name>[A-Za-z_][A-Za-z0-9_.]*)""",
    re.VERBOSE,
)
_KEYWORDS = frozenset({"select", "from", "where", "and", "or", "not", "in", "like", "order", "by", "asc", "desc",
                       "nulls", "first", "last", "limit", "offset", "true", "false", "null", "includes", "excludes"})  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # string, datetime, date, number, op, punct, name, keyword, end
    value: Any
    position: int


def _tokenize(soql: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(soql):
        if soql[position] == "'":
            text, position_after = _string_literal(soql, position)
            tokens.append(_Token("string", text, position))
            position = position_after
            continue
        match = _TOKEN_RE.match(soql, position)
        if match is None:
            raise malformed_query(soql, position, f"unexpected token: '{soql[position]}'")
        kind = match.lastgroup or ""
        if kind != "space":
            value: Any = match.group()
            if kind == "name" and value.lower() in _KEYWORDS:
                kind, value = "keyword", value.lower()
            tokens.append(_Token(kind, value, position))
        position = match.end()
    tokens.append(_Token("end", None, len(soql)))
    return tokens


def _string_literal(soql: str, start: int) -> tuple[str, int]:
    """A quoted SOQL string from `start` (the opening quote): its value and the position after it."""
    chars: list[str] = []
    position = start + 1
    while position < len(soql):
        char = soql[position]
        if char == "\\":
            escaped = soql[position + 1 : position + 2]
            if escaped not in _SOQL_ESCAPES:
                raise malformed_query(
                    soql, position, f"Invalid string literal '{soql[start:position + 2]}'. Illegal character "
                    f"sequence '\\{escaped}' in string literal."
                )
            chars.append(_SOQL_ESCAPES[escaped])
            position += 2
        elif char == "'":
            return "".join(chars), position + 1
        else:
            chars.append(char)
            position += 1
    raise malformed_query(soql, start, "unexpected token: unterminated string literal")


@dataclass(frozen=True, slots=True)
class _Compare:
    field: FieldSpec
    op: str  # = != < <= > >= in notin
    values: tuple[_Token, ...]
    wanted: tuple[Any, ...] = ()  # the literals as stored values compare with them (read once, not per row)

    @classmethod
    def of(cls, spec: FieldSpec, op: str, values: tuple[_Token, ...]) -> _Compare:
        return cls(spec, op, values, tuple(_literal_value(spec, token) for token in values))


@dataclass(frozen=True, slots=True)
class _Bool:
    op: str  # and, or, not
    parts: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class _Query:
    obj: SObject
    fields: tuple[FieldSpec, ...]
    where: Any
    order: tuple[tuple[FieldSpec, bool, bool], ...]  # field, descending, nulls last
    limit: int | None
    offset: int
    count: bool = False  # SELECT COUNT(): `fields` is empty


def count_answer(query: _Query, matched: int) -> dict[str, Any]:
    """Salesforce's answer to ``SELECT COUNT()``: the rows that match (within LIMIT/OFFSET) in
    ``totalSize``, one page, no records."""
    size = max(0, matched - query.offset)
    if query.limit is not None:
        size = min(size, query.limit)
    return {"totalSize": size, "done": True, "records": []}


class SoqlParser(TokenCursor[_Token]):
    def __init__(self, soql: str, objects: Mapping[str, SObject]) -> None:
        super().__init__(_tokenize(soql))
        self.soql, self.objects = soql, objects

    def fail(self, detail: str | None = None, token: _Token | None = None) -> ApiError:
        token = token or self.token
        shown = "EOF" if token.kind == "end" else str(token.value)
        return malformed_query(self.soql, token.position, detail or f"unexpected token: '{shown}'")

    def unexpected(self, token: _Token) -> Exception:
        return self.fail(token=token)

    def parse(self) -> _Query:
        self.take("keyword", "select")
        count = self._count()
        names = [] if count else [self.take("name")]
        while not count and self.accept("punct", ","):
            names.append(self.take("name"))
        self.take("keyword", "from")
        obj_token = self.take("name")
        obj = self.objects.get(str(obj_token.value).lower())
        if obj is None:
            raise ApiError(400, "INVALID_TYPE", f"\n{self.soql}\n{' ' * obj_token.position}^\nERROR at Row:1:Column:"
                            f"{obj_token.position + 1}\nsObject type '{obj_token.value}' is not supported.")
        fields: list[FieldSpec] = []
        for token in names:
            spec = self.field(obj, token)
            if spec in fields:
                raise self.fail(f"duplicate field selected: {spec.name}", token)
            fields.append(spec)
        where = None
        if self.accept("keyword", "where"):
            where = self.condition(obj)
        order: list[tuple[FieldSpec, bool, bool]] = []
        if count and self.token.kind == "keyword" and self.token.value == "order":
            raise self.fail("ORDER BY cannot be used with COUNT()")
        if self.accept("keyword", "order"):
            self.take("keyword", "by")
            while True:
                spec = self.field(obj, self.take("name"))
                descending = self.accept("keyword", "desc") is not None
                if not descending:
                    self.accept("keyword", "asc")
                nulls_last = descending  # SOQL's default: nulls first ascending, last descending
                if self.accept("keyword", "nulls"):
                    nulls_last = self.accept("keyword", "last") is not None
                    if not nulls_last:
                        self.take("keyword", "first")
                order.append((spec, descending, nulls_last))
                if not self.accept("punct", ","):
                    break
        limit = int(self.take("number").value) if self.accept("keyword", "limit") else None
        offset = int(self.take("number").value) if self.accept("keyword", "offset") else 0
        self.take("end")
        return _Query(obj, tuple(fields), where, tuple(order), limit, offset, count)

    def _count(self) -> bool:
        """``COUNT()`` as the whole SELECT list (then True), else nothing taken."""
        token = self.token
        if token.kind != "name" or str(token.value).lower() != "count" or self.tokens[self.index + 1].value != "(":
            return False
        self.index += 2
        if not self.accept("punct", ")"):
            raise self.fail("COUNT(field) is not supported by this sandbox")
        if self.token.kind == "punct" and self.token.value == ",":
            raise self.fail("COUNT() must be the only element in the SELECT list")
        return True

    def field(self, obj: SObject, token: _Token) -> FieldSpec:
        spec = obj.field(str(token.value))
        if spec is None:
            raise ApiError(400, "INVALID_FIELD", f"\n{self.soql}\n{' ' * token.position}^\nERROR at Row:1:Column:"
                            f"{token.position + 1}\nNo such column '{token.value}' on entity '{obj.name}'. If you are "
                            "attempting to use a custom field, be sure to append the '__c' after the custom field "
                            "name. Please reference your WSDL or the describe call for the appropriate names.")
        return spec

    def condition(self, obj: SObject) -> Any:
        first = self.unary(obj)
        joiner = self.token.value if self.token.kind == "keyword" and self.token.value in ("and", "or") else None
        if joiner is None:
            return first
        parts = [first]
        while self.accept("keyword", joiner):
            parts.append(self.unary(obj))
        if self.token.kind == "keyword" and self.token.value in ("and", "or"):
            raise self.fail()  # SOQL needs parentheses to mix AND and OR
        return _Bool(joiner, tuple(parts))

    def unary(self, obj: SObject) -> Any:
        if self.accept("keyword", "not"):
            return _Bool("not", (self.unary(obj),))
        if self.accept("punct", "("):
            inner = self.condition(obj)
            self.take("punct", ")")
            return inner
        spec = self.field(obj, self.take("name"))
        if self.accept("keyword", "like"):
            raise self.fail("LIKE is not supported by this sandbox")
        negated = bool(self.accept("keyword", "not"))
        if self.accept("keyword", "in"):
            self.take("punct", "(")
            values = [self.literal(spec)]
            while self.accept("punct", ","):
                values.append(self.literal(spec))
            self.take("punct", ")")
            return _Compare.of(spec, "notin" if negated else "in", tuple(values))
        if negated:
            raise self.fail()
        op = self.take("op").value
        return _Compare.of(spec, "!=" if op == "<>" else op, (self.literal(spec),))

    def literal(self, spec: FieldSpec) -> _Token:
        token = self.token
        if token.kind == "keyword" and token.value in ("true", "false", "null"):
            self.index += 1
            kind = "null" if token.value == "null" else "boolean"
            return _Token(kind, None if kind == "null" else token.value == "true", token.position)
        if token.kind not in ("string", "number", "date", "datetime"):
            raise self.fail()
        self.index += 1
        expected = {"boolean": "boolean", "date": "date", "datetime": "datetime", "int": "number",
                    "double": "number"}.get(spec.type, "string")  # fmt: skip
        if token.kind != expected:
            detail = f"value of filter criterion for field '{spec.name}' must be of type {spec.type}"
            if token.kind == "string":
                detail += " and should not be enclosed in quotes"
            raise self.filter_error(token, detail)
        if token.kind == "datetime":
            return _Token("datetime", parse_datetime(token.value), token.position)
        if token.kind == "date":
            return _Token("date", date.fromisoformat(token.value), token.position)
        if token.kind == "number":
            return _Token("number", float(token.value), token.position)
        if spec.type in ID_TYPES and token.value:
            if not ID_RE.match(token.value):
                raise self.filter_error(token, f"invalid ID field: {token.value}")
            return _Token("string", to_18(token.value), token.position)
        return token

    def filter_error(self, token: _Token, detail: str) -> ApiError:
        return ApiError(400, "INVALID_QUERY_FILTER_OPERATOR", f"\n{self.soql}\n{' ' * token.position}^\n"
                         f"ERROR at Row:1:Column:{token.position + 1}\n{detail}")


def comparable(spec: FieldSpec, value: Any) -> Any:
    """A stored value as the query compares it (None stays None)."""
    if value is None:
        return None
    if spec.type == "datetime":
        return _stored_datetime(value)
    if spec.type == "date":
        return date.fromisoformat(value)
    if spec.type in ID_TYPES:
        return value  # stored 18-character, and literals are made 18-character too
    if spec.type in ("int", "double"):
        return float(value)
    if isinstance(value, str):
        return value.casefold()  # text compares case-insensitively, as Salesforce does
    return value


@functools.lru_cache(maxsize=4096)
def _stored_datetime(text: str) -> datetime:
    """A stored datetime's value: rows share few distinct stamps, and a scan compares every row's."""
    return parse_datetime(text)


def _literal_value(spec: FieldSpec, token: _Token) -> Any:
    if token.kind == "null" or (token.kind == "string" and token.value == ""):
        return None  # Salesforce stores no empty strings: '' is null
    if token.kind == "string" and spec.type not in ID_TYPES:
        return token.value.casefold()
    return token.value


def soql_matches(node: Any, value_of: Callable[[FieldSpec], Any]) -> bool:
    if node is None:
        return True
    if isinstance(node, _Bool):
        if node.op == "and":
            return all(soql_matches(part, value_of) for part in node.parts)
        if node.op == "or":
            return any(soql_matches(part, value_of) for part in node.parts)
        return not soql_matches(node.parts[0], value_of)
    spec: FieldSpec = node.field
    have = comparable(spec, value_of(spec))
    wanted = node.wanted
    if node.op in ("in", "notin"):
        found = have in wanted
        return found if node.op == "in" else not found
    target = wanted[0]
    if node.op == "=":
        return have == target
    if node.op == "!=":
        return have != target  # a null field is != any non-null value, as in SOQL
    if have is None or target is None:
        return False
    try:
        return bool({"<": have < target, "<=": have <= target, ">": have > target, ">=": have >= target}[node.op])
    except TypeError:
        return False
