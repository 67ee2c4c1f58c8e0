"""What the sandboxes' query-language parsers (SOQL, SuiteQL) share: reading a token list left to right."""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar


class Token(Protocol):
    @property
    def kind(self) -> str: ...

    @property
    def value(self) -> Any: ...


T = TypeVar("T", bound=Token)


class TokenCursor(Generic[T]):
    """A position in a token list ending with a token of kind ``end``."""

    def __init__(self, tokens: list[T]) -> None:
        self.tokens, self.index = tokens, 0

    @property
    def token(self) -> T:
        return self.tokens[self.index]

    def unexpected(self, token: T) -> Exception:
        """The error a parser raises for a token its grammar does not allow where it stands."""
        raise NotImplementedError

    def take(self, kind: str, value: str | None = None) -> T:
        """The current token, which must be of `kind` (and `value`); then move past it."""
        token = self.token
        if token.kind != kind or (value is not None and token.value != value):
            raise self.unexpected(token)
        self.index += 1
        return token

    def accept(self, kind: str, value: str | None = None) -> T | None:
        """The current token if it is of `kind` (and `value`), then moving past it; else None."""
        token = self.token
        if token.kind == kind and (value is None or token.value == value):
            self.index += 1
            return token
        return None
