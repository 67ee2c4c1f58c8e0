"""Personal-data and secret leak scanner: a pytest plugin, and a command for the demo.

Enabled only when loaded (`pytest -p tests.pii_scan_plugin`, which `make pii-scan` does), so the
normal suite pays nothing. For the whole session it taps every log record that any logger lets
through (ours, Prefect's flow and task run loggers, uvicorn, httpx, botocore, SQLAlchemy...)
with the root logger and Prefect's loggers at DEBUG, plus each test's captured stdout and stderr
(which also holds child processes' output: `dsr serve`, the CLI), plus every Prefect database the
session made (run logs, run names and parameters, state messages, events). At the end it looks
there for every seeded e-mail address, full name, phone number and postal address, and every
token, key and password the sandboxes and the suite use. Any hit fails the session; the report
names the source (logger or test) and shows a redacted excerpt.

Left out, and why:
- the sandboxes' own loggers (`sandbox.*`) and their HTTP server's request lines: that is the
  vendor's side of the wire, which of course sees the subject's address;
- the tests' assertion output (pytest's failure reports): a test that fails may quote what it
  compared, which is the test's business, not the product's;
- loggers our code deliberately holds above DEBUG (`connectors.base.CHATTY_LOGGERS`): those are
  held there in production too, and the scan measures what production would write.

`python tests/pii_scan_plugin.py --home DIR --prefect-db FILE LOG...` scans the demo's logs, its
Prefect database, its ledger events (not `dsr_identities`, where the address is kept on purpose)
and every evidence bundle under DIR (`make pii-scan` runs it after `dsr demo`).

The seeded values come from the seed functions themselves (sandbox/crm_seed.py and each
sandbox's `seed_demo`), so a new seeded person is scanned for without touching this file.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import traceback
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote_plus

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: the project's packages must import
    sys.path.insert(0, str(REPO))

# -- what to look for --------------------------------------------------------------------------------

EMAIL_RE = re.compile(r"[\w.+%'!#$&*/=?^`{|}~-]*@[\w-]+(?:\.[\w-]+)+", re.ASCII)
PHONE_RE = re.compile(r"\+?\d[\d ().-]{6,}\d")
_PHONE_KEYS = re.compile(r"phone|mobile|fax", re.I)
_FIRST_KEYS = re.compile(r"^(first_?name|firstname|given_?name)$", re.I)
_LAST_KEYS = re.compile(r"^(last_?name|lastname|family_?name|surname)$", re.I)
_ADDRESS_KEYS = re.compile(r"(billing|shipping|street)_?(address)?$|^addr(ess)?[0-9]?$|^street$", re.I)
_SECRET_NAME = re.compile(r"(token|secret|password|passwd|_key$|^key$|identity_key|callback_key)", re.I)
_NOT_SECRET_NAME = re.compile(r"(^|_)(id|url|path|header|env|name|bytes|count|ttl|seconds)s?$", re.I)
_COMPANY_DOMAINS = ("precision.test", "precision.example", "precisionot.com")
_MIN_SECRET = 6  # shorter literals ("wrong", "p") are test noise that would match everywhere


@dataclasses.dataclass
class Needles:
    """Everything that must never be written where the scan looks, by kind."""

    emails: set[str] = dataclasses.field(default_factory=set)  # lower-cased, trimmed
    names: set[tuple[str, str]] = dataclasses.field(default_factory=set)  # (first, last), lower-cased
    phones: set[str] = dataclasses.field(default_factory=set)  # digits only
    phone_texts: set[str] = dataclasses.field(default_factory=set)  # as seeded
    addresses: set[str] = dataclasses.field(default_factory=set)  # lower-cased
    secrets: set[str] = dataclasses.field(default_factory=set)

    def count(self) -> dict[str, int]:
        return {"emails": len(self.emails), "names": len(self.names), "phones": len(self.phones),
                "addresses": len(self.addresses), "secrets": len(self.secrets)}

    def literals(self) -> set[str]:
        """Fixed strings, lower-cased, that every needle's spellings contain: the grep prefilter's
        patterns (a superset: the Scanner then decides on the lines they flag)."""
        out: set[str] = set()
        for email in self.emails:
            out |= {email, email.replace("@", "%40"), email.replace("@", "\\u0040")}
        for first, last in self.names:
            out |= {f"{first}{sep}{last}" for sep in (" ", ".", "_", "-", "+", "%20", "  ")}
        out |= {p.lower() for p in self.phone_texts} | {p for p in self.phones}
        out |= {a.split(",")[0].strip() for a in self.addresses}
        for secret in self.secrets:
            out |= {secret.lower(), quote(secret, safe="").lower()}
        return {o for o in out if o}

    def add_email(self, value: str) -> None:
        value = value.strip().strip("'").lower()
        if EMAIL_RE.fullmatch(value):
            self.emails.add(value)

    def add_phone(self, value: str) -> None:
        digits = re.sub(r"\D", "", value)
        if len(digits) >= 8:
            self.phones.add(digits)
            self.phone_texts.add(value.strip())

    def add_name(self, first: str, last: str) -> None:
        first, last = first.strip().lower(), last.strip().lower()
        if len(first) > 1 and len(last) > 1 and first.isalpha() and last.replace("-", "").isalpha():
            self.names.add((first, last))

    def add_secret(self, value: str | bytes) -> None:
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        text = text.strip()
        # A secret is not a path, a pattern or a plain word ("testing" is moto's fake key: it would
        # match prose everywhere); real ones here all hold a digit or a symbol, or are long.
        if (len(text) >= _MIN_SECRET and not text.startswith(("/", "(")) and " " not in text
                and (not text.isalpha() or len(text) >= 16)):
            self.secrets.add(text)


def _walk(value: Any, needles: Needles, seen: set[int], depth: int = 0) -> None:
    """Collect personal data from a sandbox's in-memory store, whatever its shape."""
    if depth > 12 or id(value) in seen:
        return
    if isinstance(value, str):
        if "@" in value:
            needles.add_email(value)
        return
    if isinstance(value, dict):
        seen.add(id(value))
        first = next((v for k, v in value.items() if isinstance(k, str) and _FIRST_KEYS.match(k)), None)
        last = next((v for k, v in value.items() if isinstance(k, str) and _LAST_KEYS.match(k)), None)
        if isinstance(first, str) and isinstance(last, str):
            needles.add_name(first, last)
        for key, item in value.items():
            if isinstance(key, str) and isinstance(item, str):
                if _PHONE_KEYS.search(key):
                    needles.add_phone(item)
                elif _ADDRESS_KEYS.search(key) and len(item) >= 8:
                    needles.addresses.add(item.strip().lower())
            _walk(item, needles, seen, depth + 1)
        return
    if isinstance(value, (list, tuple, set, frozenset)):
        seen.add(id(value))
        for item in value:
            _walk(item, needles, seen, depth + 1)
        return
    if hasattr(value, "__dict__") and type(value).__module__.startswith("sandbox"):
        seen.add(id(value))
        _walk(vars(value), needles, seen, depth + 1)
    elif hasattr(value, "__slots__") and type(value).__module__.startswith("sandbox"):
        seen.add(id(value))
        _walk({s: getattr(value, s, None) for s in value.__slots__}, needles, seen, depth + 1)


def add_crm_seed(needles: Needles) -> None:
    """Every person the demo CRM seed writes, at the sizes the demo (200) and the tests (40) use."""
    from sandbox.crm_seed import seed_crm

    for contacts in (200, 40):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "crm.sqlite"
            seed_crm(str(path), contacts=contacts)
            with contextlib.closing(sqlite3.connect(path)) as db:
                for (table,) in db.execute("select name from sqlite_master where type='table'").fetchall():
                    cursor = db.execute(f'select * from "{table}"')
                    columns = [d[0] for d in cursor.description]
                    for row in cursor:
                        record = dict(zip(columns, row, strict=True))
                        _walk(record, needles, set())
                        full = record.get("full_name") or record.get("billing_name")
                        if isinstance(full, str) and " " in full.strip():
                            needles.add_name(*full.strip().split(" ", 1))


def add_sandbox_seeds(needles: Needles) -> None:
    """Every person each vendor sandbox's `seed_demo` loads, and each sandbox's credentials."""
    import sandbox.google_ads
    import sandbox.hubspot
    import sandbox.linkedin
    import sandbox.netsuite
    import sandbox.salesforce
    import sandbox.wistia

    modules = (sandbox.google_ads, sandbox.hubspot, sandbox.linkedin, sandbox.netsuite, sandbox.salesforce,
               sandbox.wistia)
    for module in modules:
        for attr, value in vars(module).items():
            if attr.isupper() and isinstance(value, str) and _SECRET_NAME.search(attr):
                needles.add_secret(value)
        for attr, value in vars(module).items():
            if isinstance(value, type) and attr.endswith("Sandbox") and value.__module__ == module.__name__:
                vendor = value()
                vendor.seed_demo(7)
                _walk(vars(vendor), needles, set())


def add_test_literals(needles: Needles, tests_dir: Path = REPO / "tests") -> None:
    """String literals the suite uses as keys, tokens and passwords (assigned to a name that says
    so, passed as such a keyword, or set as such an environment variable)."""
    for path in sorted(tests_dir.glob("*.py")):
        if path.name == Path(__file__).name:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            # The subjects the tests make up ("queue.subject@example.com"), but the company's own
            # addresses (sender, escalations): those are not anyone's personal data.
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "@" in node.value:
                for found in EMAIL_RE.findall(node.value):
                    if not found.lower().endswith(_COMPANY_DOMAINS) and found.split("@")[0]:
                        needles.add_email(found)
            pairs: list[tuple[str, ast.AST]] = []
            if isinstance(node, ast.Assign):
                pairs += [(t.id, node.value) for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.keyword) and node.arg:
                pairs.append((node.arg, node.value))
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "setenv"
                  and len(node.args) == 2 and isinstance(node.args[0], ast.Constant)):
                pairs.append((str(node.args[0].value), node.args[1]))
            for name, value in pairs:
                if not (_SECRET_NAME.search(name) and not _NOT_SECRET_NAME.search(name)):
                    continue
                if isinstance(value, ast.Constant) and isinstance(value.value, (str, bytes)):
                    text = value.value.decode() if isinstance(value.value, bytes) else value.value
                    if not text.startswith("/") and " " not in text:  # paths and prose are not secrets
                        needles.add_secret(text)


def add_key_files(needles: Needles, root: Path) -> None:
    """Identity keys and signing keys generated under `root` (each test's var/keys, the demo's),
    and the status-callback key derived from each identity key."""
    if not root.exists():
        return
    for path in root.rglob("keys/*"):
        if not path.is_file() or path.suffix == ".pub":
            continue
        with contextlib.suppress(OSError):
            text = path.read_text(encoding="utf-8", errors="replace")
            if "PRIVATE KEY" in text:
                for line in text.splitlines():
                    if line and not line.startswith("-----"):
                        needles.add_secret(line)
            elif path.name == "identity.key":
                add_identity_key(needles, text.strip())


def add_identity_key(needles: Needles, key: str) -> None:
    needles.add_secret(key)
    # dsr.adapters.webhooks.callback_key's default: derived from the identity key.
    derived = hmac.new(key.encode("utf-8"), b"dsr-pipeline opendsr status callbacks v1", hashlib.sha256)
    needles.add_secret(derived.hexdigest())


def collect_needles() -> Needles:
    needles = Needles()
    add_crm_seed(needles)
    add_sandbox_seeds(needles)
    add_test_literals(needles)
    # The decoys are personal data too; the seeds hold them, but say so in case a seed changes.
    from sandbox.crm_seed import ACCESS_SUBJECT, DECOY_EMAILS, ERASURE_SUBJECT

    for email in (ERASURE_SUBJECT, ACCESS_SUBJECT, *DECOY_EMAILS):
        needles.emails.add(email)
    for secret in list(needles.secrets):
        if secret == "test-identity-key":
            add_identity_key(needles, secret)
    return needles


# -- searching -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Hit:
    kind: str
    source: str
    excerpt: str  # redacted


class Scanner:
    """Finds needles in text: linear in the text, whatever the number of needles (no per-needle pass
    except for secrets, which are few dozen)."""

    def __init__(self, needles: Needles) -> None:
        self.needles = needles
        firsts = sorted({f for f, _ in needles.names}, key=len, reverse=True)
        lasts = sorted({last for _, last in needles.names}, key=len, reverse=True)
        self._name_re = (re.compile(r"\b(" + "|".join(map(re.escape, firsts)) + r")[\s._+-]{1,3}("
                                    + "|".join(map(re.escape, lasts)) + r")\b", re.I) if firsts else None)
        self._secret_list = sorted(needles.secrets, key=len, reverse=True)
        # Addresses are "<number> <street>[, city, country]": one regex over the few street names,
        # then a set lookup of "<number> <street>", instead of one search per address.
        self._address_keys = {a.split(",")[0].strip() for a in needles.addresses}
        streets = sorted({re.sub(r"^\d+\s*", "", k) for k in self._address_keys}, key=len, reverse=True)
        self._address_re = (re.compile(r"\b(\d+)\s+(" + "|".join(map(re.escape, streets)) + r")\b", re.I)
                            if streets else None)

    def find(self, text: str) -> list[tuple[str, int, int]]:
        """(kind, start, end) of each needle found in `text` itself."""
        found: list[tuple[str, int, int]] = []
        lower = text.lower()
        for m in EMAIL_RE.finditer(lower):
            token = m.group(0).strip(".'")
            # The address itself, or a longer token ending in it ("mailto:", quoting, a prefix).
            if token in self.needles.emails or any(True for _ in _suffix_candidates(token, self.needles.emails)):
                found.append(("email", m.start(), m.end()))
        if self._name_re is not None:
            for m in self._name_re.finditer(text):
                if (m.group(1).lower(), m.group(2).lower()) in self.needles.names:
                    found.append(("name", m.start(), m.end()))
        for m in PHONE_RE.finditer(text):
            if re.sub(r"\D", "", m.group(0)) in self.needles.phones:
                found.append(("phone", m.start(), m.end()))
        if self._address_re is not None:
            for m in self._address_re.finditer(text):
                if f"{m.group(1)} {m.group(2).lower()}" in self._address_keys:
                    found.append(("address", m.start(), m.end()))
        for secret in self._secret_list:
            at = text.find(secret)
            if at >= 0:
                found.append(("secret", at, at + len(secret)))
        return found

    def hits(self, text: str, source: str) -> list[Hit]:
        """Hits in `text`, also as URL-decoded or JSON-unescaped (an address in a query string)."""
        for variant in _variants(text):
            found = self.find(variant)
            if found:
                return [Hit(kind, source, redacted_excerpt(variant, found, index)) for index, (kind, _, _) in
                        enumerate(found)]
        return []


def _suffix_candidates(token: str, emails: set[str]) -> Iterator[str]:
    """Seeded addresses that could be a proper suffix of `token` (same domain part)."""
    domain = token[token.index("@"):] if "@" in token else ""
    local = token[: len(token) - len(domain)]
    for cut in range(1, len(local)):
        candidate = local[cut:] + domain
        if candidate in emails:
            yield candidate


def _variants(text: str) -> Iterator[str]:
    yield text
    if "%" in text or "+" in text:
        decoded = unquote_plus(text)
        if decoded != text:
            yield decoded
    if "\\u" in text:
        with contextlib.suppress(Exception):
            yield text.encode("latin-1", "backslashreplace").decode("unicode_escape")


def redacted_excerpt(text: str, spans: list[tuple[str, int, int]], index: int, width: int = 70) -> str:
    """The context of hit `index`, with every hit on the line replaced by its kind and a short hash
    (so the report can tell two hits apart without itself holding the value)."""
    out, cursor, at = [], 0, (0, 0)
    for number, (kind, start, end) in sorted(enumerate(spans), key=lambda s: (s[1][1], -s[1][2])):
        if start < cursor:  # inside a span already replaced (a name inside an address)
            if number == index:
                at = (sum(map(len, out)) - 1, sum(map(len, out)))
            continue
        out.append(text[cursor:start])
        tag = f"<{kind}:{hashlib.sha256(text[start:end].lower().encode()).hexdigest()[:8]}>"
        if number == index:
            at = (sum(map(len, out)), sum(map(len, out)) + len(tag))
        out.append(tag)
        cursor = end
    out.append(text[cursor:])
    redacted = "".join(out)
    return redacted[max(0, at[0] - width):at[1] + width].replace("\n", "\\n")


# -- where to look: logs, captured output, Prefect databases, evidence --------------------------------


class LogTap:
    """Writes every log record any logger lets through to a file, whoever its handlers are.

    Wraps `logging.Logger.callHandlers` (the stdlib, not a client library; behaviour unchanged):
    a handler on the root logger would miss loggers that do not propagate (Prefect's `_internal`,
    uvicorn's) and is dropped whenever Prefect re-applies its logging config.
    """

    # The vendor's side of the wire (see the module docstring): the sandboxes, and the tests' own
    # SMTP server (aiosmtpd's `mail.log`), which of course receives the subject's address.
    EXCLUDED = ("sandbox.", "mail.log")
    _EXCLUDED_OUTPUT = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} \| \w+\s*\| (sandbox\.|mail\.log)")  # their console lines

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = 0
        self._lock = threading.Lock()
        self._file = path.open("a", encoding="utf-8", errors="backslashreplace")
        self._original = logging.Logger.callHandlers
        self._local = threading.local()

    def install(self) -> None:
        tap = self

        def call_handlers(logger: logging.Logger, record: logging.LogRecord) -> None:
            tap.record(record)
            tap._original(logger, record)

        logging.Logger.callHandlers = call_handlers  # type: ignore[method-assign]

    def uninstall(self) -> None:
        logging.Logger.callHandlers = self._original  # type: ignore[method-assign]
        with self._lock:
            self._file.close()

    def record(self, record: logging.LogRecord) -> None:
        if record.name.startswith(self.EXCLUDED) or getattr(self._local, "busy", False):
            return
        self._local.busy = True
        try:
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - a bad format string: keep what there is
                message = f"{record.msg!r} % {record.args!r}"
            parts = [message]
            if record.exc_info and record.exc_info[1] is not None:
                parts.append("".join(traceback.format_exception(*record.exc_info)))
            if record.stack_info:
                parts.append(record.stack_info)
            extras = {k: v for k, v in vars(record).items() if k in ("flow_run_name", "task_run_name")}
            line = json.dumps({"logger": record.name, "level": record.levelname, "text": "\n".join(parts),
                               **extras}, default=str)
            with self._lock:
                if not self._file.closed:
                    self._file.write(line + "\n")
                    self.lines += 1
        finally:
            self._local.busy = False

    def write_text(self, source: str, text: str) -> None:
        """Captured output, one JSON line per line of it, tagged with where it came from."""
        with self._lock:
            for line in text.splitlines():
                if self._EXCLUDED_OUTPUT.match(line):
                    continue
                self._file.write(json.dumps({"logger": source, "level": "OUTPUT", "text": line}) + "\n")
                self.lines += 1

    def write_line(self, source: str, text: str) -> None:
        with self._lock:
            self._file.write(json.dumps({"logger": source, "level": "ROW", "text": text}) + "\n")
            self.lines += 1

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def flush(self) -> None:
        with self._lock:
            self._file.flush()


def flagged_lines(path: Path, needles: Needles) -> set[int] | None:
    """Line numbers (1-based) where any needle's literal spelling occurs, found by `grep -F`
    (Aho-Corasick: hundreds of MB a second, whatever the number of needles); None without grep."""
    grep = shutil.which("grep")
    if grep is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", delete=False) as patterns:
        patterns.write("\n".join(sorted(needles.literals())) + "\n")
    try:
        done = subprocess.run([grep, "-F", "-i", "-o", "-n", "-f", patterns.name, str(path)],
                              capture_output=True, env={**os.environ, "LC_ALL": "C"}, check=False)
    finally:
        os.unlink(patterns.name)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"grep failed: {done.stderr.decode(errors='replace')[:200]}")
    return {int(line.split(b":", 1)[0]) for line in done.stdout.splitlines() if line}


def scan_tap_file(path: Path, scanner: Scanner) -> tuple[int, list[Hit]]:
    """Every record of a tap file; only the lines the prefilter flags are read closely."""
    flagged = flagged_lines(path, scanner.needles)
    lines, hits = 0, []
    with path.open(encoding="utf-8", errors="replace") as handle:
        for raw in handle:
            lines += 1
            if flagged is not None and lines not in flagged:
                continue
            entry = json.loads(raw)
            hits += scanner.hits(entry["text"], f"{entry['logger']} [{entry['level']}]")
    return lines, hits


def scan_sqlite(path: Path, scanner: Scanner, *, skip: Iterable[str] = ()) -> tuple[int, list[Hit]]:
    """Every text value of every row of a SQLite file (but the tables in `skip`)."""
    with tempfile.TemporaryDirectory() as tmp:
        tap = LogTap(Path(tmp) / "rows.jsonl")
        rows = 0
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            names = [n for (n,) in db.execute("select name from sqlite_master where type='table'")]
            for table in names:
                if table in skip:
                    continue
                for row in db.execute(f'select * from "{table}"'):
                    rows += 1
                    tap.write_line(f"{path.name}:{table}", " | ".join(
                        v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in row if v is not None))
        tap.close()
        _, hits = scan_tap_file(tap.path, scanner)
    return rows, hits


def scan_text_file(path: Path, scanner: Scanner) -> tuple[int, list[Hit]]:
    with tempfile.TemporaryDirectory() as tmp:
        tap = LogTap(Path(tmp) / "lines.jsonl")
        tap.write_text(path.name, path.read_text(encoding="utf-8", errors="replace"))
        tap.close()
        return scan_tap_file(tap.path, scanner)


def scan_zip(path: Path, scanner: Scanner) -> tuple[int, list[Hit]]:
    members, hits = 0, []
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            members += 1
            text = archive.read(name).decode("utf-8", "replace")
            hits += scanner.hits(text, f"{path.name}:{name}")
    return members, hits


def format_report(title: str, figures: dict[str, Any], hits: list[Hit], limit: int = 200) -> str:
    lines = [f"== {title}", json.dumps(figures, sort_keys=True), f"hits: {len(hits)}"]
    seen: set[tuple[str, str]] = set()
    for hit in hits:
        key = (hit.source, hit.excerpt)
        if key in seen:
            continue
        seen.add(key)
        if len(seen) > limit:
            lines.append(f"... and more ({len(hits)} in all)")
            break
        lines.append(f"  [{hit.kind}] {hit.source}: {hit.excerpt}")
    return "\n".join(lines) + "\n"


# -- the pytest plugin -----------------------------------------------------------------------------------

_LEVEL_ENV = {  # before Prefect is imported: its logging config reads these
    "PREFECT_LOGGING_LEVEL": "DEBUG",
    "PREFECT_LOGGING_ROOT_LEVEL": "DEBUG",
    "PREFECT_LOGGING_INTERNAL_LEVEL": "DEBUG",
    "PREFECT_INTERNAL_LOGGING_LEVEL": "DEBUG",
    "PREFECT_SERVER_LOGGING_LEVEL": "DEBUG",
    "DSR_LOG_LEVEL": "DEBUG",  # `dsr` child processes the tests start
}


class _Session:
    def __init__(self, config: Any) -> None:
        self.config = config
        self.dir = Path(tempfile.mkdtemp(prefix="dsr-pii-scan-"))
        self.tap = LogTap(self.dir / "records.jsonl")
        self.prefect_dbs: set[Path] = set()
        self.report_path = Path(os.environ.get("DSR_PII_SCAN_REPORT", "var/pii-scan/suite-report.txt"))
        self.hits: list[Hit] = []
        self.figures: dict[str, Any] = {}


_session: _Session | None = None


def pytest_configure(config: Any) -> None:
    global _session
    for key, value in _LEVEL_ENV.items():
        os.environ[key] = value
    _session = _Session(config)
    _session.tap.install()
    _debug_levels()


def _debug_levels() -> None:
    """Prefect's dictConfig (on import, and in each test harness) resets levels: put DEBUG back on
    the root and every logger that was set from the environment, but leave the ones our code holds
    on purpose (connectors.base.CHATTY_LOGGERS) where production holds them."""
    logging.getLogger().setLevel(logging.DEBUG)
    # The tests' SMTP server is the vendor's side (not scanned); at DEBUG it would put the recipient
    # into the tests' own log captures, which some tests check for the address.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    held = set(sys.modules["connectors.base"].CHATTY_LOGGERS) if "connectors.base" in sys.modules else set()
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and logger.level > logging.DEBUG and name not in held:
            if name.startswith(("prefect", "uvicorn", "fastapi")):
                logger.setLevel(logging.DEBUG)


def pytest_runtest_setup(item: Any) -> None:
    _debug_levels()


def pytest_runtest_logreport(report: Any) -> None:
    if _session is None:
        return
    # The tests' own assertion output (report.longrepr) is left out on purpose; their captured
    # output is what the code under test printed.
    for title, text in report.sections:  # capstdout would repeat the earlier phases' output
        if title in (f"Captured stdout {report.when}", f"Captured stderr {report.when}") and text:
            _session.tap.write_text(f"{title.split()[1]} of {report.nodeid} ({report.when})", text)
    if "prefect.settings" in sys.modules:
        with contextlib.suppress(Exception):
            url = str(sys.modules["prefect.settings"].PREFECT_SERVER_DATABASE_CONNECTION_URL.value() or "")
            if url.startswith("sqlite") and ":///" in url:
                _session.prefect_dbs.add(Path(url.split(":///", 1)[1]))


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    if _session is None:
        return
    state = _session
    state.tap.flush()
    basetemp = Path(session.config._tmp_path_factory.getbasetemp())
    needles = collect_needles()
    add_key_files(needles, basetemp)
    for token in _issued_tokens:
        needles.add_secret(token)
    scanner = Scanner(needles)
    state.tap.uninstall()
    lines, hits = scan_tap_file(state.tap.path, scanner)
    dbs = state.prefect_dbs | set(basetemp.rglob("prefect*.db"))
    rows = 0
    for db in sorted(p for p in dbs if p.exists()):
        counted, found = scan_sqlite(db, scanner)
        rows, hits = rows + counted, hits + found
    state.figures = {"needles": needles.count(), "log_and_output_lines": lines, "prefect_dbs": len(dbs),
                     "prefect_rows": rows, "tokens_issued": len(_issued_tokens)}
    state.hits = hits
    state.report_path.parent.mkdir(parents=True, exist_ok=True)
    state.report_path.write_text(format_report("pytest suite", state.figures, hits), encoding="utf-8")
    if hits and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _session is None or not _session.figures:
        return
    terminalreporter.section("personal data and secret scan")
    terminalreporter.write(format_report("pytest suite", _session.figures, _session.hits, limit=50))
    terminalreporter.write_line(f"full report: {_session.report_path}; records: {_session.tap.path}")


# Tokens the code issues at run time (API and subject tokens) are secrets too: note each one as it
# is made. The wrapper returns exactly what `new_token` returns, wherever `new_token` was imported.
_issued_tokens: list[str] = []


def _watch_tokens() -> None:
    import dsr.access

    original = dsr.access.new_token

    def new_token() -> str:
        token = original()
        _issued_tokens.append(token)
        return token

    # Modules imported before this (through conftest.py) hold the original under their own name.
    for module in list(sys.modules.values()):
        if getattr(module, "new_token", None) is original:
            module.new_token = new_token  # type: ignore[attr-defined]


def pytest_sessionstart(session: Any) -> None:
    if _session is not None:
        _watch_tokens()


# -- the demo: `python tests/pii_scan_plugin.py ...` -----------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Scan the demo's logs, Prefect DB, ledger and bundles.")
    parser.add_argument("logs", nargs="*", type=Path, help="plain-text log or output files")
    parser.add_argument("--home", type=Path, help="the demo's DSR home (keys, ledger.sqlite, bundles)")
    parser.add_argument("--prefect-db", type=Path, action="append", default=[])
    parser.add_argument("--report", type=Path)
    args = parser.parse_args(argv)
    needles = collect_needles()
    hits: list[Hit] = []
    figures: dict[str, Any] = {"log_lines": 0, "prefect_rows": 0, "ledger_rows": 0, "bundle_members": 0}
    if args.home:
        add_key_files(needles, args.home)
    scanner = Scanner(needles)
    for path in args.logs:
        counted, found = scan_text_file(path, scanner)
        figures["log_lines"] += counted
        hits += found
    for db in args.prefect_db:
        counted, found = scan_sqlite(db, scanner)
        figures["prefect_rows"] += counted
        hits += found
    if args.home:
        ledger = args.home / "ledger.sqlite"
        if ledger.exists():  # the events and the request index; dsr_identities holds the address on purpose
            counted, found = scan_sqlite(ledger, scanner, skip=("dsr_identities",))
            figures["ledger_rows"] += counted
            hits += found
        for bundle in sorted(args.home.rglob("evidence-v*.zip")):
            counted, found = scan_zip(bundle, scanner)
            figures["bundle_members"] += counted
            hits += found
    figures["needles"] = needles.count()
    report = format_report("dsr demo", figures, hits)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(report, encoding="utf-8")
    sys.stdout.write(report)
    return 1 if hits else 0


if __name__ == "__main__":
    raise SystemExit(main())
