"""How the processes log: plain text (default) or JSON, one object per line (DSR_LOG_FORMAT=json).

Logs never carry personal data (DESIGN invariant 4). Code logs identities as their keyed hash; as
a safety net for a message that slipped one through (a vendor error echoing an address), every
e-mail address in a record is replaced by its keyed hash before any handler writes it, when the
installation's identity key is at hand, else by a placeholder.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from dsr.identity import identity_hash

# Deliberately broad: a false positive costs a hashed word in a log line, a miss costs a leak.
_EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")
#: Attributes every LogRecord has; anything else was passed in `extra=` and goes into the JSON object.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def identity_key_from_environment() -> bytes | None:
    """The identity key if this installation has one already (never creates it: logging makes no state)."""
    if os.environ.get("DSR_IDENTITY_KEY"):
        return os.environ["DSR_IDENTITY_KEY"].encode("utf-8")
    path = Path(os.environ.get("DSR_HOME", "var")) / "keys" / "identity.key"
    try:
        return path.read_text().strip().encode("utf-8")
    except OSError:
        return None


class RedactIdentities(logging.Filter):
    """Replace e-mail addresses in a record's message (and extras) by their keyed hash."""

    def __init__(self, key: Callable[[], bytes | None] = identity_key_from_environment) -> None:
        super().__init__()
        self._key = key

    def _redact(self, text: str) -> str:
        if "@" not in text:
            return text
        key = self._key()
        return _EMAIL.sub(lambda m: identity_hash("email", m.group(0).lower(), key) if key else "[e-mail]", text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self._redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        for name, value in list(vars(record).items()):
            if name not in _STANDARD and isinstance(value, str):
                setattr(record, name, self._redact(value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                entry[name] = value if isinstance(value, str | int | float | bool | None) else str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(log_format: str = "text", level: str = "WARNING") -> None:
    """Set up the root logger once per process: text or JSON lines on stderr, identities redacted."""
    fmt = log_format.strip().lower()
    if fmt not in ("text", "json"):
        raise ValueError(f"DSR_LOG_FORMAT: {log_format!r} must be text or json")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactIdentities())
    root = logging.getLogger()
    # JSON lines are for a log collector: another handler on the root (Prefect's console, set up in a
    # flow-run process) would write the same records again in another format, so it goes.
    for old in [h for h in root.handlers if getattr(h, "_dsr_handler", False) or fmt == "json"]:
        root.removeHandler(old)
    handler._dsr_handler = True  # type: ignore[attr-defined]
    try:
        root.setLevel(level.strip().upper())
    except ValueError:
        raise ValueError(f"DSR_LOG_LEVEL: {level!r} must be DEBUG, INFO, WARNING or ERROR") from None
    root.addHandler(handler)


def configure_from_environment() -> None:
    """In a process that did not start through `dsr` (a Prefect worker's flow run): JSON lines when
    DSR_LOG_FORMAT=json; text mode leaves the process's logging as it is."""
    if os.environ.get("DSR_LOG_FORMAT", "").strip().lower() == "json":
        configure_logging("json", os.environ.get("DSR_LOG_LEVEL", "WARNING"))
