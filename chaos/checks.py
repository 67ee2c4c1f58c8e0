"""What a chaos trial compares: the request's outcome, the vendors' end state, and the write
calls each vendor saw (which ones a crash made the pipeline repeat).

What "not idempotent" means, per vendor (a repeat of one of these fails the trial):

- NetSuite: a PATCH (anonymisation) or DELETE of a record that succeeded (204) more than once.
  A second DELETE answers 404 and changes nothing; a second anonymisation is never sent because
  the connector reads the record first and finds the values already written.
- Salesforce: a record deleted or anonymised successfully more than once (composite or single
  calls; a re-sent delete of a deleted record answers ENTITY_IS_DELETED and changes nothing).
- HubSpot: a GDPR delete (204) or an anonymising update of the same record more than once.

Idempotent by the vendor's own definition, so counted and reported but allowed to repeat when a
crash fell between the vendor's answer and the ledger's record of it (the one window a
write-ahead log cannot close without vendor idempotency keys): a delete re-sent for a record
already gone, HubSpot's batch archive (204 whether or not the id still exists), a Google Ads
Customer Match removal job or a LinkedIn segment REMOVE for a subject already removed (removing a
non-member is a no-op on both platforms).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from dsr.contract import CountsRecords, DataCategory, RetentionSource, Subject, close_connector
from dsr.service import DsrService
from dsr.state import RequestState, SystemStatus
from sandbox.crm_seed import ACCESS_SUBJECT, DECOY_EMAILS, ERASURE_SUBJECT
from sandbox.hubspot import DECOY_EMAILS as HUBSPOT_DECOYS
from sandbox.kit import SandboxServer, Written

# Whose records must end exactly as in an uninterrupted run: the subject, another subject, and
# look-alike decoys an over-broad match would take (a few, so a trial stays quick).
WATCHED = (ERASURE_SUBJECT, ACCESS_SUBJECT, DECOY_EMAILS[0], HUBSPOT_DECOYS[0])


def _key(text: str) -> str:
    """Targets are kept as digests: a HubSpot GDPR delete names the contact by its address."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _json(data: bytes) -> Any:
    try:
        return json.loads(data or b"null")
    except ValueError:
        return None


@dataclass
class Effects:
    strict: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (vendor, kind, target) -> times
    idempotent: Counter[tuple[str, str, str]] = field(default_factory=Counter)

    def repeats(self) -> tuple[int, int]:
        """(non-idempotent repeats, idempotent repeats)."""
        return (sum(n - 1 for n in self.strict.values() if n > 1),
                sum(n - 1 for n in self.idempotent.values() if n > 1))


_NS_RECORD = re.compile(r"/services/rest/record/v1/(\w+)/(\d+)$")
_SF_ONE = re.compile(r"/sobjects/\w+/(\w+)$")
_ADS_JOB = re.compile(r"/customers/\d+/offlineUserDataJobs:create$")
_LI_REMOVE = re.compile(r"/rest/dmpSegments/(\d+)/users$")


def effects(servers: dict[str, SandboxServer]) -> Effects:
    found = Effects()
    for vendor_name, server in servers.items():
        for call in server.vendor.journal or []:
            for strict, kind, target in _classify(vendor_name, call):
                (found.strict if strict else found.idempotent)[(vendor_name, kind, target)] += 1
    return found


def _classify(vendor: str, call: Written) -> Iterable[tuple[bool, str, str]]:
    path, ok = call.path, 200 <= call.status < 300
    if vendor == "netsuite":
        match = _NS_RECORD.search(path)
        if match and call.method in ("PATCH", "DELETE"):
            if call.status == 204:
                yield True, call.method.lower(), f"{match[1]}/{match[2]}"
            elif call.method == "DELETE" and call.status == 404:
                yield False, "delete-gone", f"{match[1]}/{match[2]}"
    elif vendor == "salesforce":
        if path.endswith("/composite/sobjects") and call.method in ("DELETE", "PATCH") and ok:
            kind = "delete" if call.method == "DELETE" else "anonymise"
            for result in _json(call.answer) or []:
                if result.get("success"):
                    yield True, kind, str(result.get("id"))
                else:
                    yield False, f"{kind}-refused", str(result.get("id"))
        elif (match := _SF_ONE.search(path)) and call.method in ("DELETE", "PATCH"):
            if call.status == 204:
                yield True, "delete" if call.method == "DELETE" else "anonymise", match[1]
            else:
                yield False, f"{call.method.lower()}-refused", match[1]
    elif vendor == "hubspot":
        if path.endswith("/gdpr-delete"):
            target = _key(str((_json(call.body) or {}).get("objectId")))
            yield (True, "gdpr-delete", target) if call.status == 204 else (False, "gdpr-delete-gone", target)
        elif path.endswith("/batch/archive"):
            for item in (_json(call.body) or {}).get("inputs", []):
                yield False, "archive", f"{path.split('/')[4]}/{item.get('id')}"
        elif path.endswith("/batch/update") and ok:
            for item in (_json(call.answer) or {}).get("results", []):
                yield True, "anonymise", f"{path.split('/')[4]}/{item.get('id')}"
    elif vendor == "google_ads":
        if _ADS_JOB.search(path) and ok:
            metadata = ((_json(call.body) or {}).get("job") or {}).get("customerMatchUserListMetadata") or {}
            yield False, "removal-job", str(metadata.get("userList"))
    elif vendor == "linkedin":
        if (match := _LI_REMOVE.search(path)) and ok:
            yield False, "segment-remove", match[1]


# -- outcomes and end states -------------------------------------------------------------------


def outcome(state: RequestState) -> dict[str, Any]:
    """A request's result as the privacy office sees it (a record taken in the first run or the
    re-run counts the same: `delete` and `already_gone` are both done)."""
    systems = {}
    for name, s in sorted(state.systems.items()):
        systems[name] = {"status": s.status.value, "found": s.found, "exported": s.exported,
                         "remaining": None if s.remaining is None else len(s.remaining),
                         "done": sum(n for k, n in s.actions.items() if k != "failed"),
                         "failed": s.actions.get("failed", 0)}
    return {"status": state.status.value, "systems": systems}


def vendor_state(service: DsrService, servers: dict[str, SandboxServer], *, purge: bool = False) -> dict[str, Any]:
    """What each system holds for the watched addresses (and, for a purge, what is still expired)."""
    from chaos.child import PURGE_DAY
    from dsr.retention import cutoffs

    view: dict[str, Any] = {}
    limits = cutoffs(service.policy, PURGE_DAY) if purge else {}
    for name in sorted(service.data_map.enabled()):
        connector = service.connector(name)
        try:
            if connector.info.write_only:
                view[name] = {"members": _members(servers[name].vendor)}
                continue
            found = {_key(email): sorted(r.key for r in connector.discover(
                Subject(email=email, identity_hash=service.identity_hash(email)))) for email in WATCHED}
            entry: dict[str, Any] = {"watched": found}
            if isinstance(connector, CountsRecords):
                entry["total"] = connector.total_records()
            if purge and isinstance(connector, RetentionSource):
                entry["expired"] = {c.value: sum(1 for _ in connector.expired(c, limits[c]))
                                    for c in sorted(limits, key=lambda c: c.value) if c in DataCategory}
            view[name] = entry
        finally:
            close_connector(connector)
    return view


def _members(vendor: Any) -> dict[str, list[str]]:
    """Every audience list's members, read from the sandbox itself (the API cannot read them)."""
    ids = {"google_ads": ("111", "222", "333"), "linkedin": ("8001", "8002", "8003")}[vendor.name]
    return {list_id: sorted(vendor.members(list_id)) for list_id in ids}


def unfinished_but_completed(state: RequestState) -> list[str]:
    """Systems not completed in a request marked completed (must always be empty)."""
    if state.status.value != "completed":
        return []
    return [n for n, s in state.systems.items() if s.status != SystemStatus.COMPLETED]
