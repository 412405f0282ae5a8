"""The retention audits: leaks (R8) and S3 drift (R9).

A leak is a ``has_audio`` recite recording of a user without retention; its
age is ``now - retention_end(u)``. Tagging batches not yet applied in S3 are
leaks too: the database says tagged, the object is not.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from psycopg import Connection

from domain.storage import RecordingStore
from lapse.platform.sql import queries

SQL = queries(__file__, "audits")
HISTORY = ("ever_trial", "ever_paid", "paid_ended_lt_30d", "paid_ended_30_90d",
           "paid_ended_gt_90d", "family", "sponsorship", "none")


@dataclass(frozen=True)
class Day:
    day: date
    new_with_audio: int
    leaked: int

    @property
    def leak_percent(self) -> float:
        return round(100.0 * self.leaked / self.new_with_audio, 3) if self.new_with_audio else 0.0


@dataclass
class LeakReport:
    now: datetime
    max_age: timedelta
    days: list[Day]
    leaked_users: list[dict[str, Any]]
    composition: dict[str, int]
    unapplied_batches: list[dict[str, Any]]

    @property
    def leaked_recordings(self) -> int:
        return sum(int(u["recordings"]) for u in self.leaked_users)

    @property
    def oldest_leak_age(self) -> timedelta | None:
        ages = [self.now - u["retention_end"] for u in self.leaked_users if u["retention_end"]]
        ages += [self.now - b["created_at"] for b in self.unapplied_batches]
        return max(ages, default=None)

    @property
    def too_old(self) -> bool:
        oldest = self.oldest_leak_age
        return oldest is not None and oldest > self.max_age


def leak_report(conn: Connection[Any], *, now: datetime, since: datetime, max_age: timedelta,
                billing_grace: timedelta) -> LeakReport:
    """R8: leaks per creation day, leaked users by history, unapplied batches."""
    params = {"now": now, "grace": billing_grace, "since": since}
    leaked = [dict(r) for r in conn.execute(SQL["leaked_users"], params)]
    ids = [u["user_id"] for u in leaked]
    days = [Day(r["day"], int(r["new_with_audio"]), int(r["leaked"]))
            for r in conn.execute(SQL["by_day"], params | {"leaked": ids})]
    batches = [dict(r) for r in conn.execute(SQL["unapplied_batches"])]
    return LeakReport(now, max_age, days, leaked, _composition(leaked, now), batches)


def _composition(leaked: Iterable[dict[str, Any]], now: datetime) -> dict[str, int]:
    counts: Counter[str] = Counter(dict.fromkeys(HISTORY, 0))
    for user in leaked:
        marks = [k for k in ("ever_trial", "ever_paid", "family", "sponsorship") if user[k]]
        if user["paid_ended_at"] is not None:
            ago = now - user["paid_ended_at"]
            marks.append("paid_ended_lt_30d" if ago < timedelta(days=30) else
                         "paid_ended_30_90d" if ago <= timedelta(days=90) else "paid_ended_gt_90d")
        counts.update(marks or ["none"])
    return dict(counts)


@dataclass
class S3Report:
    checked: int = 0
    pending: int = 0
    drift: Counter[str] = field(default_factory=Counter)
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.drift


def recordings_page(conn: Connection[Any], *, after: int, limit: int = 1000) -> list[dict[str, Any]]:
    """Recordings with an audio key and an id above ``after``, in id order."""
    return conn.execute(SQL["recordings_page"], {"after": after, "limit": limit}).fetchall()


def recordings_to_check(conn: Connection[Any], *, sample: int | None,
                        page: int = 1000) -> Iterable[dict[str, Any]]:
    """All recordings with an audio key (keyset pages), or a random sample of them."""
    if sample is not None:
        yield from conn.execute(SQL["recordings_sample"], {"sample": sample})
        return
    after = 0
    while rows := recordings_page(conn, after=after, limit=page):
        yield from rows
        after = rows[-1]["id"]


def pending_keys(conn: Connection[Any]) -> set[str]:
    """Keys whose S3 state is still being changed by a pending batch (not drift yet)."""
    return {r["key"] for r in conn.execute(SQL["pending_keys"])}


def s3_drift(recordings: Iterable[dict[str, Any]], store: RecordingStore, *,
             pending: set[str], keep_samples: int = 20, report: S3Report | None = None) -> S3Report:
    """R9: tagged ⇒ tag present; has_audio ⇒ object present and untagged; purged ⇒ object gone.

    Pass the ``report`` of earlier pages to add this page's findings to it.
    """
    report = report or S3Report()
    for rec in recordings:
        report.checked += 1
        if rec["audio_key"] in pending:
            report.pending += 1
            continue
        found = store.inspect(rec["audio_key"])
        problem = _drift(rec, found.exists, found.tagged)
        if problem:
            report.drift[problem] += 1
            if len(report.samples) < keep_samples:
                report.samples.append({"recording_id": rec["id"], "user_id": rec["user_id"],
                                       "key": rec["audio_key"], "problem": problem})
    return report


def _drift(rec: dict[str, Any], exists: bool, tagged: bool) -> str | None:
    if rec["audio_purged_at"] is not None:
        return "purged_but_present" if exists else None
    if rec["deletion_tagged_at"] is not None:
        return "tagged_object_missing" if not exists else None if tagged else "tag_missing"
    if rec["has_audio"]:
        return "audio_object_missing" if not exists else "kept_but_tagged" if tagged else None
    return None
