"""E-mail addresses in free text, however they are spelled: one detector for every door and check.

Officers type notes and reasons; a subject's address must not end up in the evidence, on the
auditor's pages or in the ledger's permanent record. A plain `local@domain.tld` pattern misses
what people (and pasted text) really produce, so the text is first brought to a canonical form:

- HTML entities (`&#64;`, `&commat;`), percent-encoding (`%40`) and backslash escapes (`\\u0040`) are
  decoded, repeatedly but a bounded number of times (`%2540` is `%40` encoded again);
- each character (with its combining marks) is NFKC-normalised, so fullwidth and small at-signs
  (`＠`, `﹫`) and dots become `@` and `.`; ideographic full stops count as dots (as IDNA says);
- invisible characters (zero-width spaces and joiners, soft hyphens, direction marks, BOMs,
  variation selectors, control characters) are removed.

The canonical text is then searched for the shapes an address takes: `"quoted local"@domain`,
internationalised letters anywhere, IP-literal (`x@[127.0.0.1]`) and dotless (`x@localhost`)
domains, spaces around the sign, bracketed spellings (`x (at) example (dot) org`, `x [at] ...`) and
the spelled-out `x at example.org`. The last one is ordinary English as well ("met at noon"), so it
only counts when the tail looks like a real domain: a label starting with a letter and a known
top-level domain (`looked at example.org's page` is flagged, on purpose: it may well be an address).

Every position in the canonical text remembers the span of the original it came from, so
`redact` replaces exactly the original characters of each address, encoded or not.

Deliberately broad: a false alarm costs an officer a rephrased note; a miss puts an address into
evidence that is kept for years.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

__all__ = ["REDACTED_EMAIL", "contains_email_address", "email_address_spans", "redact", "redact_all"]

REDACTED_EMAIL = "[redacted e-mail]"

#: Decoding rounds: enough for text encoded a few times over, bounded so hostile input cannot loop.
_MAX_ROUNDS = 4

# Printable ASCII without `%`, `&` or `\`: nothing to decode, normalise or remove (the fast path).
_PLAIN = re.compile(r"[\t\n\r\x20-\x24\x27-\x5b\x5d-\x7e]*")

_ENTITY = re.compile(r"&(?:#[0-9]{1,8}|#[xX][0-9a-fA-F]{1,7}|[A-Za-z][A-Za-z0-9]{1,31});?")
_PERCENT = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
_BACKSLASH = re.compile(r"\\(?:u[0-9a-fA-F]{4}|x[0-9a-fA-F]{2}|U[0-9a-fA-F]{8}|(?=[^\w\s]))")

# Characters that render as nothing (or nearly) but would split a pattern: control characters but
# tab and line ends, every format character (Unicode category Cf: zero-width spaces and joiners, soft
# hyphen, direction marks and isolates, BOM, tags), variation selectors, the combining grapheme
# joiner, Hangul and Braille blanks. Listed, not computed, so importing this module stays instant.
_INVISIBLE_RANGES = (
    (0x0, 0x8), (0xB, 0xC), (0xE, 0x1F), (0x7F, 0x9F), (0xAD, 0xAD), (0x34F, 0x34F), (0x600, 0x605),
    (0x61C, 0x61C), (0x6DD, 0x6DD), (0x70F, 0x70F), (0x890, 0x891), (0x8E2, 0x8E2), (0x115F, 0x1160),
    (0x17B4, 0x17B5), (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x2064), (0x2066, 0x206F),
    (0x2800, 0x2800), (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x13430, 0x13438), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
#: str.translate table that deletes them.
_INVISIBLE: dict[int, None] = {code: None for low, high in _INVISIBLE_RANGES for code in range(low, high + 1)}
# Full stops NFKC leaves alone but domain names treat as dots (IDNA, RFC 3490 section 3.1).
_DOTS = str.maketrans({"\u3002": ".", "\uff61": ".", "\uff0e": "."})

# Combining marks: part of a letter in an internationalised local part or domain.
_MARKS = "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"
_LOCAL_CHARS = rf"\w{_MARKS}!#$%&'*+/=?^`{{|}}~.\-"
_LABEL = rf"[\w{_MARKS}\-]+"
_LETTER_LABEL = rf"[^\W\d_][\w{_MARKS}\-]*"
_DOT = r"(?:\.|\s*[(\[{<]\s*dot\s*[)\]}>]\s*|\s+dot\s+)"
_TLD = rf"(?:xn--[\w\-]+|[^\W\d_]{{2,63}})(?![\w{_MARKS}\-])"
_DOTTED = rf"{_LABEL}(?:{_DOT}{_LABEL})*{_DOT}{_TLD}"
_IP = r"(?:\[\s*(?:ipv6:)?[0-9a-f:.]+\s*\]|\d{1,3}(?:\.\d{1,3}){3}(?!\d))"

# Top-level domains a spelled-out "x at example.org" must end in: ISO 3166 country codes (and the
# few ccTLDs outside it) and the generic ones addresses commonly use. Left out: endings that are far
# more often file names in a note (md, py, sh).
_COUNTRY_TLDS = (
    "ac ad ae af ag ai al am ao aq ar as at au aw ax az ba bb bd be bf bg bh bi bj bm bn bo bq br bs bt bw by "
    "bz ca cc cd cf cg ch ci ck cl cm cn co cr cu cv cw cx cy cz de dj dk dm do dz ec ee eg er es et eu fi fj "
    "fk fm fo fr ga gd ge gf gg gh gi gl gm gn gp gq gr gs gt gu gw gy hk hm hn hr ht hu id ie il im in io iq "
    "ir is it je jm jo jp ke kg kh ki km kn kp kr kw ky kz la lb lc li lk lr ls lt lu lv ly ma mc me mg mh mk "
    "ml mm mn mo mp mq mr ms mt mu mv mw mx my mz na nc ne nf ng ni nl no np nr nu nz om pa pe pf pg ph pk pl "
    "pm pn pr ps pt pw qa re ro rs ru rw sa sb sc sd se sg si sk sl sm sn so sr ss st su sv sx sy sz tc td tf "
    "tg th tj tk tl tm tn to tr tt tv tw tz ua ug uk us uy uz va vc ve vg vi vn vu wf ws ye yt za zm zw"
)
_GENERIC_TLDS = (
    "com org net edu gov mil int info biz name pro mobi aero coop museum jobs travel tel asia cat app dev "
    "xyz online site shop store tech cloud email mail blog website digital agency company solutions services "
    "top icu vip studio network systems global"
)
_KNOWN_TLD = "(?:" + "|".join(sorted({*_COUNTRY_TLDS.split(), *_GENERIC_TLDS.split()}, key=len, reverse=True)) + ")"
_KNOWN_DOMAIN = rf"(?!(?:a|an|the)\b){_LETTER_LABEL}(?:{_DOT}{_LABEL})*{_DOT}{_KNOWN_TLD}(?![\w{_MARKS}\-])"

_ADDRESS = re.compile(
    rf"""
    (?: "[^"\n]{{1,64}}"                          # a quoted local part: "rel note"@example.org
      | (?<![{_LOCAL_CHARS}])[{_LOCAL_CHARS}]+     # a whole run of local-part characters
    )
    (?: @ (?:{_IP}|{_DOTTED}|{_LETTER_LABEL})                                # x@example.org, x@localhost
      | \s*[(\[{{<]\s*(?:at|@)\s*[)\]}}>]\s* (?:{_IP}|{_DOTTED}|{_LETTER_LABEL})  # x (at) example (dot) org
      | (?:\s+@\s*|@\s+) (?:{_IP}|{_DOTTED})                                 # x @ example.org
      | \s+at\s+ {_KNOWN_DOMAIN}                                             # x at example.org
    )
    """,
    re.IGNORECASE | re.VERBOSE,
)


@dataclass
class _Canonical:
    """Canonical text, and for each of its characters the span of the original it came from."""

    text: str
    starts: list[int]
    ends: list[int]

    @classmethod
    def of(cls, text: str) -> _Canonical:
        return cls(text, list(range(len(text))), list(range(1, len(text) + 1)))

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        return self.starts[start], self.ends[end - 1]


def _substitute(source: _Canonical, pattern: re.Pattern[str], decode: Callable[[str], str]) -> _Canonical:
    """Replace each match by its decoding; every decoded character maps to the whole match's span."""
    text, starts, ends = [], [], []
    last = 0
    for match in pattern.finditer(source.text):
        decoded = decode(match.group())
        if decoded == match.group():
            continue
        text.append(source.text[last:match.start()])
        starts += source.starts[last:match.start()]
        ends += source.ends[last:match.start()]
        span_start, span_end = source.original_span(match.start(), match.end())
        text.append(decoded)
        starts += [span_start] * len(decoded)
        ends += [span_end] * len(decoded)
        last = match.end()
    if last == 0:
        return source
    text.append(source.text[last:])
    starts += source.starts[last:]
    ends += source.ends[last:]
    return _Canonical("".join(text), starts, ends)


def _unescape_backslash(escape: str) -> str:
    if len(escape) == 1:  # `\@`: a backslash that only escapes punctuation
        return ""
    try:
        return chr(int(escape[2:], 16))
    except (ValueError, OverflowError):
        return escape


def _decode(source: _Canonical) -> _Canonical:
    source = _substitute(source, _ENTITY, html.unescape)
    source = _substitute(source, _PERCENT, lambda run: unquote(run, errors="replace"))
    return _substitute(source, _BACKSLASH, _unescape_backslash)


def _is_invisible(char: str) -> bool:
    return ord(char) in _INVISIBLE


def _normalise(source: _Canonical) -> _Canonical:
    """NFKC per character with its combining marks; invisible characters dropped; all dots as '.'."""
    text, starts, ends = [], [], []
    chars, count = source.text, len(source.text)
    index = 0
    while index < count:
        unit_end = index + 1
        while unit_end < count and unicodedata.combining(chars[unit_end]):
            unit_end += 1
        kept = "".join(c for c in chars[index:unit_end] if not _is_invisible(c))
        if kept:
            normal = unicodedata.normalize("NFKC", kept).translate(_DOTS)
            text.append(normal)
            starts += [source.starts[index]] * len(normal)
            ends += [source.ends[unit_end - 1]] * len(normal)
        index = unit_end
    return _Canonical("".join(text), starts, ends)


def _canonical(text: str) -> _Canonical:
    current = _Canonical.of(text)
    if _PLAIN.fullmatch(text):
        return current
    for _ in range(_MAX_ROUNDS):
        following = _normalise(_decode(current))
        if following.text == current.text:
            break
        current = following
    return current


def _canonical_text(text: str) -> str:
    """The canonical text alone, at C speed: for a yes/no answer on text of any size.

    Whole-text NFKC can compose across what `_normalise` treats as separate units; that only
    joins letters with their marks, which the pattern accepts either way.
    """
    for _ in range(_MAX_ROUNDS):
        decoded = _ENTITY.sub(lambda m: html.unescape(m.group()), text)
        decoded = _PERCENT.sub(lambda m: unquote(m.group(), errors="replace"), decoded)
        decoded = _BACKSLASH.sub(lambda m: _unescape_backslash(m.group()), decoded)
        following = unicodedata.normalize("NFKC", decoded.translate(_INVISIBLE)).translate(_DOTS)
        if following == text:
            break
        text = following
    return text


# The quick tests below use str methods (C loops) rather than patterns: a regex search costs a
# microsecond or two a line in Python, and the bundle screens every line of every refs file.
def _as_is(text: str) -> bool:
    """Plain ASCII that canonicalisation would not change: no escape to decode, no control to drop."""
    if not text.isascii() or "%" in text or "&" in text or "\\" in text:
        return False
    return text.replace("\n", "").replace("\t", "").replace("\r", "").isprintable()


def _has_hint(canonical: str) -> bool:
    """What every address in canonical text has: an at-sign, or "at" between spaces or brackets
    ("x at y", "x (at) y", "x ( at ) y")."""
    if "@" in canonical:
        return True
    lower = canonical.lower()
    found = lower.find("at", 1)
    while found != -1:
        before, after = lower[found - 1], lower[found + 2:found + 3]
        if (before.isspace() or before in "([{<") and after and (after.isspace() or after in ")]}>"):
            return True
        found = lower.find("at", found + 1)
    return False


def email_address_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) in `text` of every e-mail address found, in order, overlapping spans merged."""
    if not contains_email_address(text):  # the quick answer first; spans need the character map
        return []
    canonical = _canonical(text)
    spans: list[tuple[int, int]] = []
    for match in _ADDRESS.finditer(canonical.text):
        start, end = canonical.original_span(match.start(), match.end())
        if spans and start < spans[-1][1]:
            spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
        else:
            spans.append((start, end))
    return spans


def may_hold_email_address(text: str) -> bool:
    """False only when no part of `text` (no line of it, say) can hold an address: plain text with
    no hint anywhere. A quick screen of a large text before `contains_email_address` on its parts:
    each part of such a text is plain too, and has no hint either."""
    return not _as_is(text) or _has_hint(text)


def contains_email_address(text: str) -> bool:
    """True when `text` holds something that is, or is spelled as, an e-mail address."""
    canonical = text if _as_is(text) else _canonical_text(text)
    return _has_hint(canonical) and _ADDRESS.search(canonical) is not None


def redact(text: str) -> str:
    """`text` with each e-mail address (as originally written) replaced by `[redacted e-mail]`.

    A text that still holds an address after a few passes (pieces that join up once their
    neighbours are gone) is withheld whole: what leaves here never holds an address.
    """
    for _ in range(_MAX_ROUNDS):
        spans = email_address_spans(text)
        if not spans:
            return text
        pieces, last = [], 0
        for start, end in spans:
            pieces += [text[last:start], REDACTED_EMAIL]
            last = end
        pieces.append(text[last:])
        text = "".join(pieces)
    return text if not contains_email_address(text) else REDACTED_EMAIL


def redact_all(value: Any) -> Any:
    """`value` (JSON-like: mappings, lists, strings) with `redact` applied to every string, keys too."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {redact(str(key)) if isinstance(key, str) else key: redact_all(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_all(item) for item in value]
    return value
