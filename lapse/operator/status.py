"""``lapse status``: does anything need the operator? (SPEC §7 Operator console).

``collect_status`` reads the database (and the broker's queues) once and
returns a ``StatusReport``: the facts of each area and a list of findings.
A finding of severity ``attention`` means someone should act, and makes
``lapse status`` exit 1; ``info`` findings are shown but are no alarm.
The web console's overview shows the same report.

What is watched: overdue or failing sweeps, dead letters new since ``since``,
queue depth and oldest message age (ready, delayed, dead), workers with a
stale heartbeat, leaks and unapplied tagging batches past the alert age,
circuit breakers not closed, broadcasts in progress.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from domain import audits
from lapse.flows import sweeps as sweep_table
from lapse.platform.config import Settings, settings
from lapse.platform.queues import QueueStat, queue_stats
from lapse.platform.sql import queries

SQL = queries(__file__, "status")
ATTENTION, INFO = "attention", "info"
#: A process without a heartbeat (a CLI run) counts its open breaker for this long.
BREAKER_FRESH = timedelta(hours=1)
IN_PROGRESS = {"running", "sending", "started", "in_progress", "active", "paused"}


@dataclass(frozen=True)
class Finding:
    kind: str
    severity: str
    text: str
    subject: str = ""


@dataclass
class StatusReport:
    now: datetime
    since: datetime
    findings: list[Finding] = field(default_factory=list)
    sweeps: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: dict[str, Any] = field(default_factory=dict)
    queues: list[dict[str, Any]] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)
    leaks: dict[str, Any] = field(default_factory=dict)
    breakers: list[dict[str, Any]] = field(default_factory=list)
    broadcasts: list[dict[str, Any]] | None = None

    @property
    def needs_attention(self) -> bool:
        return any(f.severity == ATTENTION for f in self.findings)

    def add(self, kind: str, severity: str, text: str, subject: str = "") -> None:
        self.findings.append(Finding(kind, severity, text, subject))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["needs_attention"] = self.needs_attention
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=_jsonable, indent=2)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return str(value)


@contextmanager
def _connection(pool_or_conn: Any) -> Any:
    if hasattr(pool_or_conn, "connection"):
        with pool_or_conn.connection() as conn:
            yield conn
    else:
        yield pool_or_conn


def collect_status(pool_or_conn: Any, *, now: datetime, since: datetime, broker: Any = None,
                   config: Settings | None = None) -> StatusReport:
    """Everything ``lapse status`` shows, as of ``now``; dead letters are new after ``since``.

    ``broker``: whose queues to measure (default: the configured broker).
    Read-only: it changes nothing.
    """
    config = config or settings()
    if broker is None:
        from lapse.platform.brokers import broker as configured

        broker = configured
    report = StatusReport(now=now, since=since)
    with _connection(pool_or_conn) as conn:
        _sweeps(conn, report, config)
        _dead_letters(conn, report)
        _queues(conn, report, broker, config)
        _workers(conn, report, config)
        _leaks(conn, report, config)
        _breakers(conn, report, config)
        _broadcasts(conn, report)
    return report


def cadence(cron: str) -> timedelta:
    """The interval of the simple crons the sweep table uses (every N minutes, hourly, daily)."""
    minute, hour = cron.split()[:2]
    if hour != "*":
        return timedelta(days=1)
    if minute == "*":
        return timedelta(minutes=1)
    if minute.startswith("*/"):
        return timedelta(minutes=int(minute[2:]))
    return timedelta(hours=1)


def allowed_lag(cron: str) -> timedelta:
    """How long after its last success a sweep is overdue: one cadence plus a slack.

    Daily sweeps are re-checked hourly against their slot, so they get two hours.
    """
    every = cadence(cron)
    return every + (timedelta(hours=2) if every >= timedelta(days=1) else max(every, timedelta(minutes=5)))


def _sweeps(conn: Any, report: StatusReport, config: Settings) -> None:
    table = sweep_table.SWEEPS
    rows = conn.execute(SQL["sweep_runs"], {"sweeps": sorted(table), "now": report.now})
    for row in rows:
        sweep = table[row["sweep"]]
        last = row["last_success"]
        lag = report.now - last if last else None
        implemented = sweep.body is not None
        overdue = implemented and (lag is None or lag > allowed_lag(sweep.cron))
        failing = implemented and row["last_status"] == "failed"
        report.sweeps.append({"sweep": sweep.name, "cron": sweep.cron, "implemented": implemented,
                              "last_success": last, "lag_seconds": lag.total_seconds() if lag else None,
                              "allowed_lag_seconds": allowed_lag(sweep.cron).total_seconds(),
                              "last_status": row["last_status"], "last_error": row["last_error"],
                              "overdue": overdue, "failing": failing})
        if overdue:
            when = f"last success {_ago(lag)} ago" if lag is not None else "never completed"
            report.add("sweep_overdue", ATTENTION, f"sweep_{sweep.name} is overdue ({when}; "
                       f"runs {sweep.cron})", sweep.name)
        if failing:
            report.add("sweep_failing", ATTENTION, f"sweep_{sweep.name}'s last run failed: "
                       f"{(row['last_error'] or '')[:200]}", sweep.name)


def _dead_letters(conn: Any, report: StatusReport) -> None:
    params = {"since": report.since, "now": report.now}
    counts = conn.execute(SQL["dead_letter_counts"], params).fetchone()
    groups = [dict(r) for r in conn.execute(SQL["new_dead_letters_by_actor"], params)]
    report.dead_letters = {"new": int(counts["new"]), "open": int(counts["open"]), "new_by_actor": groups}
    if counts["new"]:
        top = ", ".join(f"{g['actor']} ×{g['count']}" for g in groups[:3])
        report.add("dead_letters", ATTENTION, f"{counts['new']} new dead letter(s) since "
                   f"{report.since.isoformat()}: {top} (lapse dlq list)")
    elif counts["open"]:
        report.add("dead_letters", INFO, f"{counts['open']} older dead letter(s) still in the archive")


def _queues(conn: Any, report: StatusReport, broker: Any, config: Settings) -> None:
    stats: list[QueueStat] = queue_stats(broker, conn=conn)
    limit = config.queue_age_alert_seconds
    for stat in stats:
        age = stat.oldest_age_seconds(report.now)
        report.queues.append({"queue": stat.queue, "kind": stat.kind, "depth": stat.depth,
                              "oldest_at": stat.oldest_at, "oldest_age_seconds": age})
        if stat.kind == "ready" and stat.depth and age > limit:
            report.add("queue_age", ATTENTION, f"queue {stat.queue}: {stat.depth} message(s), the "
                       f"oldest waiting {_ago(timedelta(seconds=age))} (alert after "
                       f"{_ago(timedelta(seconds=limit))}); are workers consuming it?", stat.queue)


def _workers(conn: Any, report: StatusReport, config: Settings) -> None:
    stale_after = timedelta(seconds=config.heartbeat_stale_seconds)
    running = 0
    for row in conn.execute(SQL["workers"], {"now": report.now}):
        age = report.now - row["beat_at"]
        stale = row["stopped_at"] is None and age > stale_after
        running += row["stopped_at"] is None and not stale
        report.workers.append(dict(row) | {"beat_age_seconds": age.total_seconds(), "stale": stale})
        if stale:
            report.add("worker_stale", ATTENTION, f"worker {row['worker']} ({row['broker']}) last "
                       f"beat {_ago(age)} ago and never said it stopped", row["worker"])
    if not running:
        report.add("no_worker", INFO, "no worker is running (no fresh heartbeat)")


def _leaks(conn: Any, report: StatusReport, config: Settings) -> None:
    leak = audits.leak_report(conn, now=report.now, since=report.now, max_age=config.leak_alert_age,
                              billing_grace=config.billing_grace)
    oldest = leak.oldest_leak_age
    report.leaks = {"leaked_users": len(leak.leaked_users), "leaked_recordings": leak.leaked_recordings,
                    "unapplied_batches": len(leak.unapplied_batches),
                    "oldest_leak_age_seconds": oldest.total_seconds() if oldest else None,
                    "alert_age_seconds": config.leak_alert_age.total_seconds(),
                    "past_alert_age": leak.too_old}
    what = (f"{len(leak.leaked_users)} leaked user(s) ({leak.leaked_recordings} recordings), "
            f"{len(leak.unapplied_batches)} unapplied tagging batch(es)")
    if leak.too_old:
        report.add("leaks", ATTENTION, f"{what}; the oldest is {_ago(oldest)} old, past the alert "
                   f"age (lapse audit leaks)")
    elif oldest is not None:
        report.add("leaks", INFO, f"{what}, within the alert age")


def _breakers(conn: Any, report: StatusReport, config: Settings) -> None:
    fresh_beat = timedelta(seconds=config.heartbeat_stale_seconds)
    for row in conn.execute(SQL["breakers_not_closed"]):
        if row["stopped_at"] is not None:
            continue  # that process stopped: its breakers went with it
        alive = row["beat_at"] is not None and report.now - row["beat_at"] <= fresh_beat
        if not alive and report.now - row["changed_at"] > BREAKER_FRESH:
            continue
        report.breakers.append(dict(row))
        report.add("breaker_open", ATTENTION, f"circuit {row['port']} is {row['state'].replace('_', '-')} "
                   f"in {row['worker']} since {row['changed_at'].isoformat()} "
                   f"({row['failures']} consecutive failures)", row["port"])


def _broadcasts(conn: Any, report: StatusReport) -> None:
    if not conn.execute(SQL["broadcasts_exist"]).fetchone()["present"]:
        return
    report.broadcasts = [row["row"] for row in conn.execute(SQL["recent_broadcasts"])
                         if str(row["row"].get("status", "")).lower() in IN_PROGRESS]
    for b in report.broadcasts:
        report.add("broadcast", INFO, f"broadcast {b.get('id', '?')} is {b.get('status')}",
                   str(b.get("id", "")))


def _ago(delta: timedelta | None) -> str:
    seconds = int(delta.total_seconds()) if delta else 0
    if seconds >= 172800:
        return f"{seconds // 86400} d"
    if seconds >= 7200:
        return f"{seconds // 3600} h"
    if seconds >= 120:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def render(report: StatusReport) -> str:
    """The one-screen text of ``lapse status``: findings first, then the facts behind them."""
    lines = [f"lapse status as of {report.now.isoformat()} — "
             + ("NEEDS ATTENTION" if report.needs_attention else "all well")]
    lines += [f"  {'!!' if f.severity == ATTENTION else '--'} {f.text}"
              for f in sorted(report.findings, key=lambda f: f.severity != ATTENTION)]
    lines.append("sweeps (last success, lag):")
    for s in report.sweeps:
        mark = "OVERDUE" if s["overdue"] else "FAILING" if s["failing"] else \
            "ok" if s["implemented"] else "not built"
        lag = _ago(timedelta(seconds=s["lag_seconds"])) if s["lag_seconds"] is not None else "never"
        lines.append(f"  {s['sweep']:20} {s['cron']:13} {lag:>8}  {mark}")
    busy = [q for q in report.queues if q["depth"]]
    lines.append("queues (depth, oldest):" + ("" if busy else " all empty"))
    lines += [f"  {q['queue']:16} {q['kind']:8} {q['depth']:>7}  "
              f"{_ago(timedelta(seconds=q['oldest_age_seconds']))}" for q in busy]
    live = [w for w in report.workers if w["stopped_at"] is None]
    lines.append(f"workers: {sum(not w['stale'] for w in live)} beating, "
                 f"{sum(w['stale'] for w in live)} stale")
    d, k = report.dead_letters, report.leaks
    lines.append(f"dead letters: {d['new']} new since {report.since.isoformat()}, {d['open']} open")
    lines.append(f"leaks: {k['leaked_users']} user(s), {k['unapplied_batches']} unapplied batch(es)")
    lines.append(f"circuit breakers not closed: {len(report.breakers)}")
    if report.broadcasts is not None:
        lines.append(f"broadcasts in progress: {len(report.broadcasts)}")
    return "\n".join(lines)
