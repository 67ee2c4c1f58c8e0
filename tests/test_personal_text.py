"""The e-mail detector every door uses on free text: what it must catch, what it must leave alone."""

from __future__ import annotations

import sys
import time
import unicodedata

import pytest

from dsr.bundle import contains_email_address as bundle_contains_email_address
from dsr.personal_text import (
    _INVISIBLE,
    REDACTED_EMAIL,
    contains_email_address,
    email_address_spans,
    redact,
    redact_all,
)

#: Every way of writing an address that must be caught (each wrapped in a sentence too, below).
ADDRESSES = [
    # plain and the probe's 17 forms
    "ada.lovelace@example.com",
    "rel.nöte@exämple.org",
    '"rel note"@example.org',
    "x@[127.0.0.1]",
    "x@localhost",
    "x＠example.org",  # fullwidth at-sign
    "x\u200b@example.org",  # zero-width space before the sign
    "x%40example.org",
    "x&#64;example.org",
    "x (at) example.org",
    "x [at] example.org",
    "x at example.org",
    "x (at) example (dot) org",
    "x [at] example [dot] org",
    "x﹫example.org",  # small commercial at
    "x@example。org",  # ideographic full stop
    "ｊｏｈｎ＠ｅｘａｍｐｌｅ．ｃｏｍ",  # all fullwidth
    # encodings, once and more than once
    "x%2540example.org",
    "x&amp;#64;example.org",
    "x&#x40;example.org",
    "x&commat;example.org",
    "x\\u0040example.org",
    "x\\x40example.org",
    "x\\@example.org",
    "x％40example.org",  # fullwidth percent sign
    "x&lt;at&gt;example.org",
    "%61%64%61%40%65%78%61%6d%70%6c%65%2e%63%6f%6d",  # every character percent-encoded
    # invisible characters
    "x\u00ad@example.org",  # soft hyphen
    "x@ex\u200dample.org",  # zero-width joiner
    "x\u2060@example.org",  # word joiner
    "x\ufeff@example.org",  # byte-order mark
    "x\u202e@example.org",  # right-to-left override
    "x@exa\u034fmple.org",  # combining grapheme joiner
    "x\x00@example.org",  # a control character
    # shapes of the address itself
    '"rel\\"note"@example.org',
    "x@[IPv6:2001:db8::1]",
    "x@127.0.0.1",
    "x@intranet",
    "user+tag@sub.example.co.uk",
    "first.o'brien@example.ie",
    "пользователь@пример.рф",
    "用户@例子.广告",
    "x@exa\u0301mple.org",  # a combining accent
    "user@xn--bcher-kva.example",
    "MIXED.Case@Example.ORG",
    "x@example.org.",
    # spaced and bracketed spellings
    "x @ example.org",
    "x@ example.org",
    "x{at}example.org",
    "x<at>example.org",
    "x (@) example.org",
    "x[@]example.org",
    "x(at)example(dot)org",
    "X AT EXAMPLE DOT COM",
    "john at example dot co dot uk",
    "x at example {dot} org",
    "x\u00a0at\u00a0example.org",  # no-break spaces
    "jan at firma.pl",
    "looked at example.org's page",  # arguably an address: flagged on purpose
    "mailto:x@example.org",
    "https://user@example.org/path",
]

#: Ordinary notes an officer writes: none may be refused.
ORDINARY = [
    "met at noon",
    "Met at noon. Called back at 3.",
    "verified at the front desk with a passport",
    "called at 10.30 and left a message",
    "arrived at St. Mary's at 9",
    "the export is at report.pdf",
    "see the notes at report.md",
    "ID checked at 3 p.m. today",
    "looked at it. Then left",
    "AT&T customer since 2019",
    "worked at a dot com in 2000",
    "50% of the records were archived",
    "cost 10&20 per item",
    "Spoke at length about the case",
    "at e.g. the office or at i.e. home",
    "call @ 3pm",
    "thanks @alice for the review",
    "the 2@3pm slot was free",
    "deadline at 9.am",
    "Subject asked at 14:00 via phone whether we hold data",
    "code returned at 10:42; identity confirmed",
    "extension: volume of records across 12 systems",
    "Ticket #4521 closed; data map at v3.2",
    "paused at the subject's request (clarification)",
    "Looked at the data, nothing else at all",
    "Réclamation reçue à l'accueil, pièce d'identité vérifiée",
    "Ausweis geprüft — alles in Ordnung",
    "身份已核实",
]


@pytest.mark.parametrize("address", ADDRESSES)
def test_every_spelling_of_an_address_is_found(address: str) -> None:
    assert contains_email_address(address)
    assert contains_email_address(f"Subject wrote from {address} on Monday; please check.")


def test_the_corpus_is_large_enough() -> None:
    assert len(ADDRESSES) >= 50 and len(ORDINARY) >= 20


@pytest.mark.parametrize("sentence", ORDINARY)
def test_ordinary_notes_are_not_taken_for_addresses(sentence: str) -> None:
    assert not contains_email_address(sentence)
    assert redact(sentence) == sentence


@pytest.mark.parametrize("address", ADDRESSES)
def test_redact_leaves_no_address_and_keeps_the_rest(address: str) -> None:
    text = f"Before: {address} — after."
    redacted = redact(text)
    assert REDACTED_EMAIL in redacted
    assert not contains_email_address(redacted)
    assert redacted.startswith("Before:") and redacted.endswith("after.")


def test_redact_replaces_exactly_the_original_characters_of_each_address() -> None:
    text = "from x&#64;example.org and rel.nöte＠exämple.org, not met at noon"
    assert redact(text) == f"from {REDACTED_EMAIL} and {REDACTED_EMAIL}, not met at noon"
    spans = email_address_spans(text)
    assert [text[a:b] for a, b in spans] == ["x&#64;example.org", "rel.nöte＠exämple.org"]


def test_redact_all_reaches_every_string_of_a_view() -> None:
    view = {"note": "ask x@example.org", "steps": ["ok", "y (at) example.org"], "n": 3, "x@example.org": True}
    assert redact_all(view) == {"note": f"ask {REDACTED_EMAIL}", "steps": ["ok", REDACTED_EMAIL], "n": 3,
                                REDACTED_EMAIL: True}


def test_the_bundle_refuses_with_the_same_detector() -> None:
    assert bundle_contains_email_address is contains_email_address


def test_every_invisible_character_this_python_knows_is_removed() -> None:
    """The listed ranges must cover every control and format character of the running Unicode version."""
    missing = [hex(code) for code in range(sys.maxunicode + 1)
               if unicodedata.category(chr(code)) in ("Cc", "Cf") and chr(code) not in "\t\n\r"
               and code not in _INVISIBLE]
    assert missing == []


@pytest.mark.parametrize("hostile", [
    "a" * 100_000, "a." * 50_000, "a at " * 20_000, "a@" * 50_000, "%41" * 30_000, "&amp;" * 20_000,
    "ö" * 100_000, "e\u0301" * 50_000, "x@" + "a." * 50_000 + "1", '"' * 50_000, "x (at) " * 20_000,
])
def test_hostile_text_is_answered_in_linear_time(hostile: str) -> None:
    started = time.perf_counter()
    contains_email_address(hostile)
    redact(hostile)
    assert time.perf_counter() - started < 3.0
