"""``lapse report --html FILE [--since D]``: the console's charts and the audits' verdicts as one page.

The page is self-contained (inline CSS and SVG, no script, no URL to fetch),
so it can be mailed or archived; the demo writes one at its end. Verdicts:
SPEC §8's invariants, leaks past their alert age (R8), dead letters new
since the report's start, and each area ``lapse status`` watches (sweeps
overdue or failing, queues, worker heartbeats, circuit breakers).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from psycopg import Connection
from psycopg_pool import ConnectionPool

from domain.invariants import check_invariants
from lapse.operator import status
from lapse.operator.web import app, bulk, charts, pages
from lapse.platform.config import Settings, settings


@dataclass(frozen=True)
class Verdict:
    name: str
    ok: bool
    detail: str


STATUS_AREAS = (("sweeps on time", "sweep_overdue"), ("sweeps succeeding", "sweep_failing"),
                ("queues consumed in time", "queue_age"), ("workers alive", "worker_stale"),
                ("circuit breakers closed", "breaker_open"))


def verdicts(conn: Connection[Any], report: status.StatusReport, *, since: datetime,
             now: datetime, config: Settings) -> list[Verdict]:
    """Each check the report answers, as ok or not with one line of detail."""
    found = [Verdict(f"invariant {r.name}", r.ok,
                     r.meaning + ("" if r.ok else f" ({r.violations} violations)"))
             for r in check_invariants(conn, now=now, billing_grace=config.billing_grace,
                                       alert_age=config.leak_alert_age)]
    leaks = report.leaks
    found.append(Verdict(
        "no leak past its alert age", not leaks["past_alert_age"],
        f"{leaks['leaked_recordings']} leaked recording(s) of {leaks['leaked_users']} user(s), "
        f"{leaks['unapplied_batches']} unapplied tagging batch(es); oldest "
        f"{_age(leaks['oldest_leak_age_seconds'])} (alert age {config.leak_alert_age})"))
    dead = pages.dead_letters(conn, bulk.DeadFilter(), now=now, limit=0, new_since=since)
    found.append(Verdict("no new dead letter", dead["new"] == 0,
                         f"{dead['new']} since {since.isoformat()}, {dead['open']} open in all"))
    for name, kind in STATUS_AREAS:
        texts = [f.text for f in report.findings
                 if f.kind == kind and f.severity == status.ATTENTION]
        found.append(Verdict(name, not texts, "; ".join(texts) or "nothing to report"))
    return found


def _age(seconds: float | None) -> str:
    return "none" if seconds is None else str(timedelta(seconds=round(seconds)))


def render_html_report(conn: Connection[Any], found: list[Verdict], *, since: datetime,
                       now: datetime, config: Settings) -> str:
    """The report page as one string."""
    drawn = charts.daily_charts(conn, since=since, now=now, config=config)
    css = (app.HERE / "static" / "console.css").read_text()
    return app.environment().get_template("report.html").render(
        verdicts=found, charts=drawn, since=since, now=now, css=css, svg=charts.svg,
        ok=all(v.ok for v in found), sweeps=pages.sweeps(conn, now=now))


def write_html_report(pool: ConnectionPool, path: str | Path, *, since: datetime, now: datetime,
                      config: Settings | None = None, broker: Any = None) -> list[Verdict]:
    """Write the report to ``path``; return its verdicts (the demo prints them).

    ``broker``: whose queues the status verdicts measure (default: the configured one).
    """
    config = config or settings()
    report = status.collect_status(pool, now=now, since=since, broker=broker, config=config)
    with pool.connection() as conn:
        found = verdicts(conn, report, since=since, now=now, config=config)
        html = render_html_report(conn, found, since=since, now=now, config=config)
    Path(path).write_text(html, encoding="utf-8")
    return found
