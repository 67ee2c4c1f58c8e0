"""Ledger benchmark: appends per second with the hash chain, on SQLite and on
PostgreSQL, against plain inserts of the same rows; and the time to verify a 1M-event chain.

What is appended: the events of real requests. One access and one erasure request are carried out
through `RequestRunner` on the demo CRM (CRM only: no vendor is needed to get realistic events),
and their chains (type, payload, actor; ~10 events each) are replayed under new request ids with
`Ledger.append`, the way the service appends: one transaction per event, reading the chain to
link the new event, and keeping the request index up to date (the projector). Two more passes
over the same rows isolate the costs:

- ``chain only``: `Ledger.append(..., project=False)` (how purge runs and holds append): reads
  just the chain head;
- ``plain``: the very rows the chained pass stored, inserted into a fresh, identically migrated
  ledger with one INSERT per transaction: no read, no hash, no index. The ratio judged is
  chained / plain.

Verification: one chain of N events (default 1,000,000, purge-checkpoint-like payloads) is written
with bulk inserts (precomputed hashes), on SQLite and on PostgreSQL, then `Ledger.verify` runs in a
child process: seconds, events per second and the child's peak RSS. Verify streams the chain
(`Ledger.iter_events`, 1,000 rows a batch), so a chain of a tenth the length is verified the same
way, and the ratio of the two peaks says whether memory grows with the chain (aim <= 1.2).

    python -m bench.ledger [--quick] [--size EVENTS] [--verify-events N] [--no-postgres]
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import (
    Report,
    ServiceSpec,
    log,
    open_service,
    parse_args,
    postgres_schema,
    postgres_url,
    run_in_child,
    scratch_dir,
    submit_verified,
    write_data_map,
)

APPEND_EVENTS = 20_000  # per database and pass
VERIFY_EVENTS = 1_000_000  # the size the aims in bench/README.md are set for
FLAT_AIM = 1.2  # peak RSS verifying N events / verifying N/10: constant memory means ~1
LONG_CHAIN, SHORT_CHAIN = "purge-bench-long-chain", "purge-bench-short-chain"
QUICK_APPEND, QUICK_VERIFY = 300, 2_000


def template_chains(root: Path) -> list[list[tuple[str, dict[str, Any], str]]]:
    """(type, payload, actor) of each event of a real access and a real erasure request."""
    from dsr.run import RequestRunner
    from sandbox.crm_seed import ACCESS_SUBJECT, ERASURE_SUBJECT, seed_crm

    crm_url = f"sqlite:///{root / 'crm.sqlite'}"
    seed_crm(crm_url, contacts=40)
    systems = write_data_map(root / "systems.yaml", crm_url=crm_url, systems=["crm"])
    spec = ServiceSpec(home=str(root / "var"), systems_file=str(systems), env={})
    chains = []
    with open_service(spec) as service:
        runner = RequestRunner(service)
        for kind, email in (("access", ACCESS_SUBJECT), ("erasure", ERASURE_SUBJECT)):
            request_id = submit_verified(service, kind, email)
            plan = runner.begin(request_id)
            for system in plan.systems:
                runner.run_system(request_id, system, service.connecting(system))
            runner.finish(request_id)
            chains.append([(e.type, dict(e.payload), e.actor) for e in service.events(request_id)])
    return chains


def _append_pass(url: str, chains: list[list[tuple[str, dict[str, Any], str]]], events: int, *, project: bool,
                 tag: str) -> tuple[int, float]:
    """Replay template chains under new ids until `events` are appended; (events, seconds)."""
    from dsr.ledger.store import Ledger
    from dsr.state import index_row

    ledger = Ledger(url, projector=index_row)
    done, index = 0, 0
    started = time.perf_counter()
    try:
        while done < events:
            chain = chains[index % len(chains)]
            request_id = f"bench-{tag}-{index:07d}"
            for seq, (kind, payload, actor) in enumerate(chain):
                if done >= events:
                    break
                ledger.append(request_id, kind, payload, actor=actor, expect_new=seq == 0, project=project)
                done += 1
            index += 1
        return done, time.perf_counter() - started
    finally:
        ledger.close()


def _plain_pass(source_url: str, target_url: str, tag: str) -> tuple[int, float]:
    """The rows the chained pass stored, inserted as they are: one INSERT per transaction."""
    from sqlalchemy import insert, select

    from dsr.ledger.schema import events as events_table
    from dsr.ledger.store import Ledger, create_ledger_engine

    source = create_ledger_engine(source_url, for_writes=False)
    columns = [c for c in events_table.c if c.name != "id"]
    with source.connect() as conn:
        rows = [dict(r) for r in conn.execute(
            select(*columns).where(events_table.c.request_id.like(f"bench-{tag}-%")).order_by(events_table.c.id)
        ).mappings()]
    source.dispose()
    Ledger(target_url).close()  # migrate the target: the same table, constraints and indexes
    engine = create_ledger_engine(target_url)
    statement = insert(events_table)
    started = time.perf_counter()
    for row in rows:
        with engine.begin() as conn:
            conn.execute(statement, row)
    seconds = time.perf_counter() - started
    engine.dispose()
    return len(rows), seconds


def measure_appends(label: str, chained_url: str, plain_url: str, chains: list[list[tuple[str, dict[str, Any], str]]],
                    events: int) -> dict[str, tuple[int, float]]:
    """Chained (with index), chained (no index) and plain passes on one kind of database."""
    results = {}
    log(f"ledger/{label}: {events} chained appends with the request index")
    results["chained"] = _append_pass(chained_url, chains, events, project=True, tag="idx")
    log(f"ledger/{label}: {events} chained appends without the index (project=False)")
    results["chain_only"] = _append_pass(chained_url, chains, events, project=False, tag="raw")
    log(f"ledger/{label}: the same {events} rows as plain inserts")
    results["plain"] = _plain_pass(chained_url, plain_url, tag="idx")
    return results


def build_long_chain(url: str, events: int, request_id: str = "purge-bench-long-chain") -> float:
    """Write one valid chain of `events` events with bulk inserts; seconds taken."""
    from sqlalchemy import insert

    from dsr.ledger.events import GENESIS_HASH, LedgerEvent
    from dsr.ledger.schema import events as events_table
    from dsr.ledger.store import Ledger

    Ledger(url).close()
    from dsr.ledger.store import create_ledger_engine

    engine = create_ledger_engine(url)
    started = time.perf_counter()
    prev, at = GENESIS_HASH, datetime(2026, 1, 1, tzinfo=UTC)
    batch: list[dict[str, Any]] = []
    import json

    for seq in range(1, events + 1):
        payload = {"system": "crm", "category": "technical", "records": 2000, "purged": 2000, "failed": 0,
                   "vendor_calls": 4, "api_calls": 4, "vendor_receipt_ids": [f"crm-sql:{seq:08x}"],
                   "first": f"crm/web_analytics_events/{seq * 2000}", "last": f"crm/web_analytics_events/{seq * 2000 + 1999}",
                   "keys_sha256": f"{seq:064x}"}
        event = LedgerEvent.create(request_id, seq, at + timedelta(milliseconds=seq), "retention-purge", "purge.batch",
                                   payload, prev)
        prev = event.hash
        batch.append({"request_id": request_id, "seq": seq, "at": event.at, "actor": event.actor, "type": event.type,
                      "payload": json.dumps(event.payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
                      "prev_hash": event.prev_hash, "hash": event.hash})
        if len(batch) >= 10_000 or seq == events:
            with engine.begin() as conn:
                conn.execute(insert(events_table), batch)
            batch = []
    engine.dispose()
    return time.perf_counter() - started


def verify_in_child(url: str, request_id: str) -> dict[str, Any]:
    """Child: `Ledger.verify` of the long chain, timed."""
    from dsr.ledger.store import Ledger

    ledger = Ledger(url)
    started = time.perf_counter()
    count = ledger.verify(request_id)
    seconds = time.perf_counter() - started
    ledger.close()
    return {"events": count, "seconds": seconds}


def measure_verify(report: Report, label: str, url: str, events: int) -> None:
    """Verify a chain of `events` and one of a tenth of that in child processes; emit the figures."""
    short = max(events // 10, 1)
    log(f"ledger/{label}: writing one chain of {events:,} events and one of {short:,} (bulk inserts)")
    build_seconds = build_long_chain(url, events, LONG_CHAIN)
    build_long_chain(url, short, SHORT_CHAIN)
    log(f"ledger/{label}: chains written in {build_seconds:.0f} s; verifying each in a child process")
    long_child = run_in_child(verify_in_child, url, LONG_CHAIN)
    short_child = run_in_child(verify_in_child, url, SHORT_CHAIN)
    verified = long_child.value
    size: dict[str, Any] = {"events": verified["events"]}
    if verified["events"] < VERIFY_EVENTS:
        size["reduced_from"] = VERIFY_EVENTS
    report.emit(f"ledger.{label}.verify_seconds", verified["seconds"], "s", size=size,
                note=f"Ledger.verify of one chain ({label}): stream every event, recompute every hash")
    report.emit(f"ledger.{label}.verify_rate", verified["events"] / verified["seconds"], "events/s", size=size)
    report.emit(f"ledger.{label}.verify_peak_rss", long_child.peak_rss_mb, "MiB",
                long_child.peak_rss_mb / short_child.peak_rss_mb, f"<= {FLAT_AIM}", size=size,
                note=f"peak RSS of the verifying process; ratio = against verifying {short:,} events "
                     "(1.0 = memory does not grow with the chain)",
                peak_rss_tenth_mb=round(short_child.peak_rss_mb, 1))


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verify-events", type=int, default=None, help=f"length of the verified chain ({VERIFY_EVENTS:,})")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")


def main(argv: list[str] | None = None) -> int:
    args = parse_args("Ledger appends (chained vs plain) and chain verification.", argv, _add_arguments)
    report = Report("ledger")
    events = args.size or (QUICK_APPEND if args.quick else APPEND_EVENTS)
    verify_events = args.verify_events or (QUICK_VERIFY if args.quick else VERIFY_EVENTS)
    pg, why_not = (None, "--no-postgres given") if args.no_postgres else postgres_url()
    with scratch_dir("ledger") as root:
        log("ledger: carrying out one access and one erasure request on the demo CRM for template events")
        chains = template_chains(root / "template")
        per_request = sum(len(c) for c in chains) / len(chains)
        size = {"events": events, "events_per_request": round(per_request, 1)}
        databases: list[tuple[str, Any]] = [("sqlite", None)]
        if pg:
            databases.append(("postgresql", pg))
        else:
            report.note(f"PostgreSQL figures skipped: {why_not}")
        for label, base in databases:
            if base is None:
                results = measure_appends(label, f"sqlite:///{root / 'chained.sqlite'}",
                                          f"sqlite:///{root / 'plain.sqlite'}", chains, events)
            else:
                with postgres_schema(base) as chained_url, postgres_schema(base) as plain_url:
                    results = measure_appends(label, chained_url, plain_url, chains, events)
            plain_rate = results["plain"][0] / results["plain"][1]
            for kind, (count, seconds) in results.items():
                rate = count / seconds
                if kind == "plain":
                    report.emit(f"ledger.{label}.plain_insert_rate", rate, "events/s", size=size,
                                note="the same rows, one INSERT per transaction: the baseline")
                elif kind == "chained":
                    report.emit(f"ledger.{label}.append_rate", rate, "events/s", rate / plain_rate, None, size=size,
                                note="Ledger.append as the service calls it (hash chain + request index); "
                                     "ratio = chained / plain inserts (no aim is set)")
                else:
                    report.emit(f"ledger.{label}.append_rate_no_index", rate, "events/s", rate / plain_rate, None,
                                size=size, note="Ledger.append(project=False): chain head + hash only, no index")
        for label, base in databases:
            if base is None:
                measure_verify(report, label, f"sqlite:///{root / 'long-chain.sqlite'}", verify_events)
            else:
                with postgres_schema(base) as url:
                    measure_verify(report, label, url, verify_events)
        if pg is None:
            report.note("chain verification was measured on SQLite only")
    report.summary()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
