"""Output of ``lapse audit leaks`` (R8) and ``lapse audit s3`` (R9): table, JSON, CSV, Prometheus."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from datetime import timedelta
from typing import Any

from domain import audits
from lapse.platform import clock, metrics
from lapse.platform.config import Settings

EXIT_OK, EXIT_FOUND = 0, 1


def leaks(args: argparse.Namespace, config: Settings, pool: Any) -> int:
    clock.override(args.now, changes_state=False, allowed=True)
    now = clock.now()
    max_age = args.max_age or config.leak_alert_age
    with pool.connection() as conn:
        report = audits.leak_report(conn, now=now, since=args.since or now - timedelta(days=30),
                                    max_age=max_age, billing_grace=config.billing_grace)
    _observe(report)
    {"table": _table, "json": _json, "csv": _csv,
     "prometheus": lambda r: print(metrics.exposition(), end="")}[args.format](report)
    return EXIT_FOUND if report.too_old else EXIT_OK


def _observe(report: audits.LeakReport) -> None:
    """Set the leak gauges (R8) from a report."""
    metrics.LEAKED_RECORDINGS.set(report.leaked_recordings)
    metrics.LEAKED_USERS.set(len(report.leaked_users))
    oldest = report.oldest_leak_age
    metrics.OLDEST_LEAK.set(oldest.total_seconds() if oldest else 0)
    metrics.UNAPPLIED.set(len(report.unapplied_batches))
    metrics.LEAKS_TOO_OLD.set(1 if report.too_old else 0)


def _summary(report: audits.LeakReport) -> dict[str, Any]:
    oldest = report.oldest_leak_age
    return {"now": report.now.isoformat(), "max_age_hours": report.max_age.total_seconds() / 3600,
            "leaked_users": len(report.leaked_users),
            "leaked_recordings": report.leaked_recordings,
            "unapplied_batches": len(report.unapplied_batches),
            "oldest_leak_age_hours": round(oldest.total_seconds() / 3600, 2) if oldest else None,
            "too_old": report.too_old}


def _table(report: audits.LeakReport) -> None:
    summary = _summary(report)
    print(f"leaks as of {summary['now']} (alert age {summary['max_age_hours']:g} h)")
    print(f"  {'day':10}  {'new with audio':>14}  {'leaked':>7}  {'leak %':>7}")
    for day in report.days:
        print(f"  {day.day.isoformat():10}  {day.new_with_audio:>14}  {day.leaked:>7}  "
              f"{day.leak_percent:>7.3f}")
    print(f"leaked users: {summary['leaked_users']} ({summary['leaked_recordings']} recordings); "
          "by history:")
    for name, count in report.composition.items():
        print(f"  {name:20} {count}")
    print(f"tagging batches not applied in S3 (counted as leaks): {summary['unapplied_batches']}")
    for batch in report.unapplied_batches[:20]:
        print(f"  batch {batch['id']} user {batch['user_id']} {batch['action']} {batch['keys']} keys "
              f"since {batch['created_at'].isoformat()} attempts {batch['attempts']} "
              f"{batch['last_error'] or ''}")
    oldest = summary["oldest_leak_age_hours"]
    print("no leaks" if oldest is None else
          f"oldest leak: {oldest} h — {'PAST THE ALERT AGE' if report.too_old else 'within the alert age'}")


def _json(report: audits.LeakReport) -> None:
    print(json.dumps(_summary(report) | {
        "days": [{"day": d.day.isoformat(), "new_with_audio": d.new_with_audio,
                  "leaked": d.leaked, "leak_percent": d.leak_percent} for d in report.days],
        "composition": report.composition,
        "unapplied_batches": report.unapplied_batches,
        "leaked_user_ids": [u["user_id"] for u in report.leaked_users],
    }, default=str, indent=2))


def _csv(report: audits.LeakReport) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["section", "key", "new_with_audio", "leaked", "leak_percent"])
    for d in report.days:
        writer.writerow(["day", d.day.isoformat(), d.new_with_audio, d.leaked, d.leak_percent])
    for name, count in report.composition.items():
        writer.writerow(["history", name, "", count, ""])
    writer.writerow(["unapplied_batches", "tag_or_purge", "", len(report.unapplied_batches), ""])


def s3(args: argparse.Namespace, config: Settings, pool: Any) -> int:
    from lapse.ports import s3 as adapter

    store = adapter.store()
    with pool.connection() as conn:
        pending = audits.pending_keys(conn)
        chosen = list(audits.recordings_to_check(conn, sample=args.sample)) if args.sample else []
    if args.sample:
        report = audits.s3_drift(chosen, store, pending=pending)
    else:
        # Page by page, holding no connection during the S3 calls and never
        # the whole table in memory.
        report, after = audits.S3Report(), 0
        while True:
            with pool.connection() as conn:
                page = audits.recordings_page(conn, after=after)
            if not page:
                break
            audits.s3_drift(page, store, pending=pending, report=report)
            after = page[-1]["id"]
    if args.json:
        print(json.dumps({"checked": report.checked, "pending": report.pending,
                          "drift": dict(report.drift), "samples": report.samples,
                          "ok": report.ok}, indent=2))
    else:
        print(f"checked {report.checked} recordings against S3 "
              f"({'sample' if args.sample else 'all'}); {report.pending} with a pending batch")
        for problem, count in sorted(report.drift.items()):
            print(f"  DRIFT {problem:24} {count}")
        for sample in report.samples:
            print(f"    recording {sample['recording_id']} user {sample['user_id']} {sample['key']}: "
                  f"{sample['problem']}")
        print("database and S3 agree" if report.ok else "database and S3 disagree")
    return EXIT_OK if report.ok else EXIT_FOUND
