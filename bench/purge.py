"""Retention purge benchmark: expired records over the CRM, Salesforce and HubSpot.

Set-up (parent process): the demo sandboxes (`sandbox.demo.demo_sandboxes`, default limits) with
50 ms added to every vendor call once seeding is done, and a fresh demo CRM, given expired
records: web analytics events dated 2020 in the CRM, Leads last modified in 2021 in Salesforce
(created through its sObject Collections API), contacts last modified in 2021 in HubSpot. The
blast-radius guard is opened (max_share 1.0) since wiping expired data is the point here.

The purge runs in a child process (peak RSS is its own), with the real `Purger`, once per
system (`systems=[name]`) so that each has its own wall time: the count pass and the purge pass,
as `dsr purge` runs them. Done twice, at a small and a large total, to compare peak RSS.

Figures, per vendor:
- records per delete call, against the vendor's maximum batch (CRM 500 per statement,
  Salesforce 200 per sObject Collections call, HubSpot 100 per batch/archive): aim >= 0.95;
- records per second against the rate ceiling, the best any client could do within the vendor's
  limits: list every record once at the largest page and delete it in the largest batch.
  Salesforce shares one budget (25/s) between query pages (2,000) and deletes (200):
  25 / (1/200 + 1/2000) = 4,545/s. HubSpot has a search budget (4/s x 200 per page = 800/s)
  and a general one (10/s x 100 = 1,000/s): 800/s. The CRM has no vendor limit (no ceiling);
- the same against the guarded ceiling: the blast-radius guard needs every expired record counted
  before the first delete, so listing and deleting cannot overlap. With one budget for both
  (Salesforce) that changes nothing (4,545/s); with separate ones (HubSpot) the listing's time and
  the deletes' time add up: 1 / (1/800 + 1/1,000) = 444/s, which is 0.56 of the plain ceiling;
- budget use: the time the calls actually made need at the vendor's limits, over the wall time
  (near 1: the client paces at the limit; low: something other than the limit holds it back);
- throttling answers received (aim 0);
and peak RSS at both totals (aim: within 20%).

The split of records between systems is not even (--split): HubSpot lists at most 800 records/s
and its sandbox scans every stored contact on each search, so its share is kept small enough to
finish in minutes; the CRM holds the bulk.

    python -m bench.purge [--quick] [--size LARGE_TOTAL] [--small N] [--split crm=0.78,salesforce=0.2,hubspot=0.02]
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import (
    CallLog,
    Report,
    ServiceSpec,
    demo_stack,
    is_throttle,
    log,
    open_service,
    parse_args,
    run_in_child,
    scratch_dir,
    set_latency,
    vendor_limits,
)

FULL_SMALL, FULL_LARGE = 100_000, 1_000_000
QUICK_SMALL, QUICK_LARGE = 1_000, 3_000
DEFAULT_SPLIT = {"crm": 0.78, "salesforce": 0.20, "hubspot": 0.02}
SYSTEMS = ("crm", "salesforce", "hubspot")
LATENCY_MS = 50.0
MAX_BATCH = {"crm": 500, "salesforce": 200, "hubspot": 100}
PAGE = {"salesforce": 2000, "hubspot": 200}  # records per listing call (Salesforce query page, HubSpot search page)
RSS_AIM = 1.2


def ceiling(system: str, limits: dict[str, tuple[int, float]]) -> float | None:
    """Records/s the vendor's limits allow at best (list once at the largest page, delete at the largest batch)."""
    if system == "salesforce":
        calls, period = limits["salesforce"]
        return (calls / period) / (1 / MAX_BATCH[system] + 1 / PAGE[system])
    if system == "hubspot":
        search, search_period = limits["hubspot:search"]
        general, general_period = limits["hubspot"]
        return min(search / search_period * PAGE[system], general / general_period * MAX_BATCH[system])
    return None


def guarded_ceiling(system: str, limits: dict[str, tuple[int, float]]) -> float | None:
    """Records/s at best when every record must be counted before the first delete. Both vendors
    count with a query (Salesforce's COUNT(), HubSpot's search `total`: a call per object), so the
    listing can still go on while the deletes do, and the guard costs nothing measurable: the
    ceiling is the plain one. (Were the records listed to be counted, the listing's time and the
    deletes' would add up on HubSpot, whose two budgets are separate: 444 records/s.)"""
    return ceiling(system, limits)


# --- seeding (parent) ------------------------------------------------------------------------------------


def seed_crm_expired(crm_url: str, count: int, seed: int = 5) -> tuple[int, int]:
    """`count` web analytics events from 2020 (13-month retention: long expired), on existing contacts;
    the range of their ids."""
    rng = random.Random(seed)
    path = crm_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        first = int(conn.execute("SELECT coalesce(max(id), 0) FROM web_analytics_events").fetchone()[0]) + 1
        contacts = [row[0] for row in conn.execute("SELECT id FROM contacts")]
        start = datetime(2020, 1, 1)
        rows = ((rng.choice(contacts), f"198.51.100.{n % 250 + 1}", "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0",
                 f"/products/lenses/{n % 997}", (start + timedelta(seconds=31 * n)).isoformat(sep=" "))
                for n in range(count))
        conn.executemany("INSERT INTO web_analytics_events (contact_id, ip_address, user_agent, page, occurred_at) "
                         "VALUES (?, ?, ?, ?, ?)", rows)
    return first, first + count - 1


def crm_left(crm_url: str, ids: tuple[int, int]) -> int:
    with sqlite3.connect(crm_url.removeprefix("sqlite:///")) as conn:
        return int(conn.execute("SELECT count(*) FROM web_analytics_events WHERE id BETWEEN ? AND ?", ids).fetchone()[0])


def seed_salesforce_expired(url: str, count: int) -> list[str]:
    """`count` Leads last modified in 2021, through sObject Collections (200 per call); their ids."""
    from sandbox.salesforce import OrgClient

    org = OrgClient(url)
    ids: list[str] = []
    try:
        chunk = 10_000
        for start in range(0, count, chunk):
            records = [{"LastName": f"Expired{n}", "Company": "Old Prospects BV", "Email": f"lead.{n}@expired.example",
                        "LeadSource": "Web", "CreatedDate": "2021-03-01T08:00:00.000+0000",
                        "LastModifiedDate": "2021-03-01T08:00:00.000+0000"}
                       for n in range(start, min(start + chunk, count))]
            ids.extend(org.create_many("Lead", records))
    finally:
        org.close()
    return ids


def seed_hubspot_expired(vendor: Any, count: int) -> list[str]:
    """`count` contacts last modified in 2021 (the sandbox's own bulk helper); their ids."""
    if not count:
        return []
    return list(vendor.add_contacts(count, prefix="expired", domain="purge.example",
                                    last_modified="2021-03-01T08:00:00.000Z"))


# --- the purge (child) -----------------------------------------------------------------------------------


def purge_in_child(spec: ServiceSpec, systems: list[str]) -> dict[str, Any]:
    """Child: one Purger run per system, timed; what each tally says."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from dsr.retention import Purger

    deletes = {"crm": 0}

    def count_deletes(conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        # The CRM's "API calls" are SQL statements: count its DELETEs (not the ledger's writes).
        if statement.lstrip().upper().startswith("DELETE") and str(conn.engine.url).endswith("crm.sqlite"):
            deletes["crm"] += 1

    event.listen(Engine, "before_cursor_execute", count_deletes)
    results: dict[str, Any] = {}
    with open_service(spec) as service:
        retention = service.policy.retention.model_copy(update={"max_share": 1.0, "max_count": 10**12})
        service.__dict__["policy"] = service.policy.model_copy(update={"retention": retention})

        def connect(name: str) -> Any:
            return service.connector(name)

        for system in systems:
            started = time.perf_counter()
            outcome = Purger(service, connect).run(systems=[system])
            seconds = time.perf_counter() - started
            tallies = [t for t in outcome.tallies if t.system == system]
            api_calls = sum(t.api_calls for t in tallies)
            results[system] = {
                "status": outcome.status, "seconds": seconds,
                "purged": sum(t.purged for t in tallies), "failed": sum(t.failed for t in tallies),
                "candidates": sum(t.candidates for t in tallies), "api_calls": api_calls,
                "delete_calls": deletes["crm"] if system == "crm" else api_calls,
                "purge_pass_seconds": sum(t.seconds for t in tallies),
            }
    return results


def run_size(root: Path, total: int, split: dict[str, float], latency_ms: float) -> dict[str, Any]:
    """Seed `total` expired records, purge them in a child; per-system results, calls, peak RSS."""
    counts = {s: int(round(total * split.get(s, 0.0))) for s in SYSTEMS}
    counts["crm"] += total - sum(counts.values())
    root.mkdir(parents=True)
    with demo_stack(root, systems=SYSTEMS, crm_contacts=40) as stack:
        log(f"purge: seeding {counts} expired records")
        crm_ids = seed_crm_expired(stack.crm_url, counts["crm"])
        sf_ids = seed_salesforce_expired(stack.servers["salesforce"].url, counts["salesforce"])
        hs_ids = seed_hubspot_expired(stack.servers["hubspot"].vendor, counts["hubspot"])
        vendors = {name: stack.servers[name] for name in ("salesforce", "hubspot")}
        stack.reset(latency_ms=0.0)  # forget the seeding's calls and quota use
        set_latency(vendors, latency_ms)
        calls = CallLog(vendors)
        log(f"purge: purging {total:,} expired records (+ the demo data's own) in a child process")
        try:
            child = run_in_child(purge_in_child, stack.spec, list(SYSTEMS))
        finally:
            calls.close()
        stats = stack.stats()
        salesforce, hubspot = stack.servers["salesforce"].vendor, stack.servers["hubspot"].vendor
        left = {"crm": crm_left(stack.crm_url, crm_ids),
                "salesforce": sum(1 for i in sf_ids if not (salesforce.record("Lead", i) or {"IsDeleted": True})["IsDeleted"]),
                "hubspot": sum(1 for i in hs_ids if hubspot.get("contacts", i) is not None)}
    return {"counts": counts, "results": child.value, "peak_rss_mb": child.peak_rss_mb, "calls": calls.snapshot(),
            "stats": stats, "left": left}


def _split(text: str) -> dict[str, float]:
    split = {}
    for part in text.split(","):
        name, _, share = part.partition("=")
        if name.strip() not in SYSTEMS:
            raise argparse.ArgumentTypeError(f"--split: unknown system {name!r} (one of {', '.join(SYSTEMS)})")
        split[name.strip()] = float(share)
    if abs(sum(split.values()) - 1.0) > 1e-6:
        raise argparse.ArgumentTypeError("--split: shares must add up to 1")
    return split


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--small", type=int, default=None, help=f"the small total (default {FULL_SMALL:,})")
    parser.add_argument("--split", type=_split, default=DEFAULT_SPLIT,
                        help="shares of the records per system, e.g. crm=0.78,salesforce=0.2,hubspot=0.02")
    parser.add_argument("--latency-ms", type=float, default=LATENCY_MS, help="added to every vendor call (50)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args("Retention purge: records per call vs max batch, throughput vs rate ceiling, flat RSS.",
                      argv, _add_arguments)
    report = Report("purge")
    large = args.size or (QUICK_LARGE if args.quick else FULL_LARGE)
    small = args.small or (QUICK_SMALL if args.quick else min(FULL_SMALL, large // 10 or 1))
    limits = vendor_limits()
    runs = {}
    with scratch_dir("purge") as root:
        for label, total in (("small", small), ("large", large)):
            runs[label] = run_size(root / label, total, args.split, args.latency_ms)
    run = runs["large"]
    base_size = {"expired_records": large, "per_system": run["counts"], "latency_ms": args.latency_ms}
    if large < FULL_LARGE:
        base_size["reduced_from"] = FULL_LARGE
    for system in SYSTEMS:
        result = run["results"][system]
        size = {**base_size, "system_records": run["counts"][system], "purged": result["purged"]}
        per_call = result["purged"] / result["delete_calls"] if result["delete_calls"] else 0.0
        report.emit(f"purge.records_per_call.{system}", per_call, "records/call", per_call / MAX_BATCH[system],
                    ">= 0.95", size=size, max_batch=MAX_BATCH[system], api_calls=result["api_calls"],
                    note=f"records per delete call (DELETE statement for the CRM) / the max batch "
                         f"{MAX_BATCH[system]}")
        rate = result["purged"] / result["seconds"]
        top = ceiling(system, limits)
        report.emit(f"purge.throughput.{system}", rate, "records/s", rate / top if top else None,
                    ">= 0.9" if top else None, size=size, ceiling=top, seconds=result["seconds"],
                    purge_pass_seconds=result["purge_pass_seconds"],
                    note=("no vendor rate limit (local SQL): no ceiling" if top is None else
                          "records purged per second of the whole run (count + purge pass) / the ceiling"))
        guarded = guarded_ceiling(system, limits)
        if guarded is not None:
            report.emit(f"purge.throughput_guarded.{system}", rate, "records/s", rate / guarded, ">= 0.9", size=size,
                        ceiling=guarded, plain_ceiling=top,
                        note="records purged per second / the best rate when the count (the guard) must finish "
                             "before the first delete: the plain ceiling, as both vendors count with a query")
        left = run["left"][system]
        report.emit(f"purge.left_behind.{system}", left, "records",
                    left / run["counts"][system] if run["counts"][system] else 0.0, "<= 0", size=size,
                    note="seeded expired records still there after a completed run; ratio = share of those seeded")
        if system == "crm":
            continue
        budgets: dict[str, int] = {}
        throttled = 0
        for _, budget, status in run["calls"]:
            if budget.startswith(system) and budget in limits:
                budgets[budget] = budgets.get(budget, 0) + 1
                throttled += is_throttle(budget, status)
        # A sliding window lets its first `calls` through at once; every further one costs period/calls.
        needed = max(max(0, n - limits[b][0]) * limits[b][1] / limits[b][0] for b, n in budgets.items())
        report.emit(f"purge.budget_use.{system}", needed / result["seconds"], "share", needed / result["seconds"],
                    None, size=size, calls=budgets,
                    note="the time the calls made need at the vendor's limits / wall time (1.0 = paced at the limit)")
        stats = run["stats"][system]
        answered = int(stats.get("calls", 0))
        report.emit(f"purge.throttled.{system}", stats.get("throttled", 0), "answers",
                    stats.get("throttled", 0) / answered if answered else 0.0, "<= 0", size=size,
                    vendor_calls=answered, logged_throttles=throttled,
                    note="429/403 throttling answers (sandbox /__sandbox__/stats); ratio = share of the vendor's calls")
    peak_small, peak_large = runs["small"]["peak_rss_mb"], runs["large"]["peak_rss_mb"]
    small_size = {"expired_records": small, "per_system": runs["small"]["counts"]}
    if small < FULL_SMALL:
        small_size["reduced_from"] = FULL_SMALL
    report.emit("purge.peak_rss_small", peak_small, "MiB", size=small_size,
                note="peak RSS of the purging process at the small total")
    report.emit("purge.peak_rss_large", peak_large, "MiB", peak_large / peak_small, f"<= {RSS_AIM}",
                size=base_size, note="peak RSS at the large total; ratio = large / small (aim: the same within 20%)")
    totals = sum(r["seconds"] for r in run["results"].values())
    report.emit("purge.total_seconds", totals, "s", size=base_size,
                note="wall time of the three purges at the large total (systems run one after the other)")
    report.note(f"records split {args.split} (not even: HubSpot lists at most 800 records/s and its sandbox scans "
                f"every contact per search; see --split)")
    if large < FULL_LARGE or small < FULL_SMALL:
        report.note(f"sizes reduced to {small:,} / {large:,} from the full {FULL_SMALL:,} / {FULL_LARGE:,}")
    report.summary()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
