"""Export and bundle benchmark: one access request whose subject owns ~1 GB.

The subject is the demo access subject of the demo CRM (the only system here: the vendors'
rate limits would turn a gigabyte into hours, and memory is the point), given years of support
chat transcripts (~85% of the bytes, ~20 KB each) and web analytics events (~400 B each), text
drawn from a fixed pseudo-English pool so that it compresses like prose.

The request is carried out in a child process by `RequestRunner` (begin, run_system, finish),
as the flow does, and timed per phase:

- export: discovery and the connector's streamed export into the staging JSONL file;
- package + bundle: `finish`, which writes the subject's package (data.json, one CSV per
  object, summaries) and seals the evidence bundle.

Figures: the child's peak RSS (aim <= 300 MB: stream, never hold the export), the package +
bundle MB/s (MB of the staging export per second) against `sha256sum` + `zip -1` of the very
same staging file, timed in the same run; the export MB/s; and, to tell growth from baseline,
the peak RSS of the same run at a tenth of the size.

    python -m bench.export [--quick] [--size MB]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import sqlite3
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import (
    Report,
    ServiceSpec,
    log,
    open_service,
    parse_args,
    run_in_child,
    scratch_dir,
    submit_verified,
    write_data_map,
)

TARGET_MB = 1000  # ~1 GB, the size the aims in bench/README.md are set for
QUICK_MB = 4
RSS_AIM_MB = 300
TRANSCRIPT_SHARE = 0.85
TRANSCRIPT_BYTES = 20_000  # mean
EVENT_BYTES = 400  # mean, whole row
MB = 1_000_000

_WORDS = ("the order lens coating shipped quote invoice please thanks could you check status of my delivery "
          "we need a replacement for the optical bench mount aperture focal length calibration sample "
          "tracking number warranty return customs broker datasheet tolerance wavelength anti reflective "
          "prism mirror beam splitter assembly drawing revision hello regards best kind urgent tomorrow "
          "monday friday week month price discount volume lead time stock backorder support agent ticket").split()
_AGENTS = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
           "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
           "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 "
           "Safari/605.1.15")
_PAGES = ("/products/lenses/achromat-{n}", "/products/mirrors/flat-{n}?coating=uv-al", "/support/tickets/{n}",
          "/quote/new?sku=OPT-{n}", "/docs/datasheets/{n}.pdf", "/account/orders/{n}")


def _pool(rng: random.Random, size: int = 2_000_000) -> str:
    parts, total = [], 0
    while total < size:
        sentence = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 18))).capitalize() + ". "
        if rng.random() < 0.15:
            sentence += "\n"
        parts.append(sentence)
        total += len(sentence)
    return "".join(parts)


def build_subject_data(crm_path: Path, megabytes: float, seed: int = 11) -> dict[str, int]:
    """Add ~`megabytes` of chat transcripts and analytics events to the access subject."""
    from sandbox.crm_seed import ACCESS_SUBJECT

    rng = random.Random(seed)
    pool = _pool(rng)
    target = megabytes * MB
    transcripts_bytes = target * TRANSCRIPT_SHARE
    events = int(target * (1 - TRANSCRIPT_SHARE) / EVENT_BYTES)
    start = datetime(2019, 1, 1, 8, 0)
    counts = {"chat_transcripts": 0, "web_analytics_events": 0}
    with sqlite3.connect(crm_path) as conn:
        (contact_id,) = conn.execute("SELECT id FROM contacts WHERE lower(trim(email)) = ?", (ACCESS_SUBJECT,)).fetchone()

        def transcripts():
            written = 0.0
            while written < transcripts_bytes:
                length = rng.randint(TRANSCRIPT_BYTES // 2, TRANSCRIPT_BYTES * 3 // 2)
                offset = rng.randrange(0, len(pool) - length)
                text = pool[offset:offset + length]
                written += length
                counts["chat_transcripts"] += 1
                yield (contact_id, ACCESS_SUBJECT, (start + timedelta(minutes=37 * counts["chat_transcripts"]))
                       .isoformat(sep=" "), text)

        conn.executemany("INSERT INTO chat_transcripts (contact_id, email, started_at, transcript) VALUES (?, ?, ?, ?)",
                         transcripts())

        def visits():
            for n in range(events):
                page = rng.choice(_PAGES).format(n=rng.randint(100, 99999))
                extra = pool[n % 1000: n % 1000 + rng.randint(80, 200)]  # campaign/referrer text: wider rows
                yield (contact_id, f"192.0.2.{n % 250 + 1}", rng.choice(_AGENTS), f"{page}&ref={extra!s}",
                       (start + timedelta(seconds=97 * n)).isoformat(sep=" "))

        conn.executemany("INSERT INTO web_analytics_events (contact_id, ip_address, user_agent, page, occurred_at) "
                         "VALUES (?, ?, ?, ?, ?)", visits())
        counts["web_analytics_events"] = events
    return counts


def access_in_child(spec: ServiceSpec, email: str) -> dict[str, Any]:
    """Child: carry out one access request and time its phases."""
    from dsr.run import RequestRunner

    with open_service(spec) as service:
        request_id = submit_verified(service, "access", email, regime="uk-gdpr")
        runner = RequestRunner(service)
        started = time.perf_counter()
        plan = runner.begin(request_id)
        for system in plan.systems:
            runner.run_system(request_id, system, service.connecting(system))
        exported = time.perf_counter()
        # The runner removes its staging once the package is recorded; hard links keep the very
        # bytes for the sha256sum + zip baseline, at no copying cost.
        kept = Path(spec.home).parent / "staging-kept"
        kept.mkdir(exist_ok=True)
        for path in sorted(runner.staging_dir(request_id).glob("*.jsonl")):
            os.link(path, kept / path.name)
        cpu = time.process_time()
        outcome = runner.finish(request_id)
        finished, cpu = time.perf_counter(), time.process_time() - cpu
        state = service.state(request_id)
        return {
            "status": outcome.status.value, "reason": outcome.reason,
            "records": sum(s.exported or 0 for s in state.systems.values()),
            "export_seconds": exported - started, "finish_seconds": finished - exported, "finish_cpu_seconds": cpu,
            "staging": [str(p) for p in sorted(kept.glob("*.jsonl"))],
            "staging_bytes": sum(p.stat().st_size for p in kept.glob("*.jsonl")),
            "package_bytes": outcome.package_path.stat().st_size if outcome.package_path else 0,
            "bundle_bytes": outcome.bundle_path.stat().st_size if outcome.bundle_path else 0,
            "events": len(service.events(request_id)),
        }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def baseline(files: list[str], work: Path) -> dict[str, float]:
    """`sha256sum` and `zip -1` of the same files, timed (the page cache is as warm as for the pipeline),
    with their CPU seconds (what a loaded machine changes least)."""
    if not (shutil.which("sha256sum") and shutil.which("zip")):
        raise RuntimeError("sha256sum and zip are needed for the baseline (apt-get install coreutils zip)")
    cpu, started = _children_cpu(), time.perf_counter()
    subprocess.run(["sha256sum", *files], check=True, stdout=subprocess.DEVNULL)
    hashed = time.perf_counter()
    target = work / "baseline.zip"
    subprocess.run(["zip", "-1", "-q", "-j", str(target), *files], check=True)
    zipped, cpu = time.perf_counter(), _children_cpu() - cpu
    size = target.stat().st_size
    target.unlink()
    return {"sha256_seconds": hashed - started, "zip_seconds": zipped - hashed, "zip_bytes": size, "cpu_seconds": cpu}


def run_once(root: Path, megabytes: float) -> tuple[dict[str, Any], float]:
    """Seed the CRM with a subject owning ~`megabytes`, run the access request in a child."""
    from sandbox.crm_seed import ACCESS_SUBJECT, seed_crm

    root.mkdir(parents=True)
    crm = root / "crm.sqlite"
    seed_crm(f"sqlite:///{crm}", contacts=40)
    log(f"export: giving the access subject ~{megabytes:g} MB of CRM records")
    counts = build_subject_data(crm, megabytes)
    systems = write_data_map(root / "systems.yaml", crm_url=f"sqlite:///{crm}", systems=["crm"])
    spec = ServiceSpec(home=str(root / "var"), systems_file=str(systems), env={})
    log(f"export: {sum(counts.values()):,} rows added ({counts}); running the access request in a child process")
    child = run_in_child(access_in_child, spec, ACCESS_SUBJECT)
    if child.value["status"] != "completed":
        raise RuntimeError(f"the access request ended {child.value['status']}: {child.value['reason']}")
    return child.value, child.peak_rss_mb


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")


def main(argv: list[str] | None = None) -> int:
    args = parse_args("One access request over ~1 GB: peak RSS and package+bundle MB/s vs sha256sum + zip -1.",
                      argv, _add_arguments)
    report = Report("export")
    megabytes = float(args.size or (QUICK_MB if args.quick else TARGET_MB))
    with scratch_dir("export", keep=args.keep) as root:
        small, small_peak = run_once(root / "small", megabytes / 10)
        result, peak = run_once(root / "large", megabytes)
        log("export: timing sha256sum + zip -1 of the same staging bytes")
        base = baseline(result["staging"], root)
    size_mb = result["staging_bytes"] / MB
    size = {"export_mb": round(size_mb, 1), "records": result["records"], "ledger_events": result["events"]}
    if megabytes < TARGET_MB:
        size["reduced_from"] = "~1 GB"
    pipeline_rate = size_mb / result["finish_seconds"]
    base_rate = size_mb / (base["sha256_seconds"] + base["zip_seconds"])
    report.emit("export.peak_rss", peak, "MiB", peak / RSS_AIM_MB, "<= 1.0", size=size,
                note=f"peak RSS of the process carrying out the request; ratio = peak / {RSS_AIM_MB} MB")
    small_size = {"export_mb": round(small["staging_bytes"] / MB, 1), "records": small["records"]}
    report.emit("export.peak_rss_tenth", small_peak, "MiB", peak / small_peak, None, size=small_size,
                note="the same at a tenth of the size; ratio = peak at full size / peak at a tenth (1.0 = flat)")
    report.emit("export.package_bundle_rate", pipeline_rate, "MB/s", pipeline_rate / base_rate, ">= 0.5", size=size,
                note="MB of staged export per second of finish() (package + evidence bundle); "
                     "ratio = against sha256sum + zip -1 of the same bytes in this run",
                package_mb=result["package_bytes"] / MB, bundle_mb=result["bundle_bytes"] / MB,
                seconds=result["finish_seconds"], cpu_seconds=round(result["finish_cpu_seconds"], 3),
                baseline_cpu_seconds=round(base["cpu_seconds"], 3))
    report.emit("export.baseline_rate", base_rate, "MB/s", size=size,
                note="sha256sum + zip -1 of the staged export, one after the other",
                sha256_seconds=base["sha256_seconds"], zip_seconds=base["zip_seconds"], zip_mb=base["zip_bytes"] / MB,
                cpu_seconds=round(base["cpu_seconds"], 3))
    report.emit("export.export_rate", size_mb / result["export_seconds"], "MB/s", size=size,
                note="discovery + streamed connector export into the staging file (CRM, SQLite)",
                seconds=result["export_seconds"])
    report.note("only the CRM takes part: the subject's gigabyte lives there, and vendor rate limits would make it hours")
    report.note("package + bundle write twice the export (data.json and the spreadsheets), each deflated: '>= 0.5' of sha256sum + zip -1 on the export once")
    report.summary()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
