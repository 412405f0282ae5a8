"""What each console page shows, read from the database only (never a panel).

Each function returns the page's data as a dict: the HTML template renders
it and the page's JSON twin returns it as is.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from psycopg import Connection

from lapse.flows.sweeps import SWEEPS
from lapse.operator import dlq, status
from lapse.operator.explain import explain, timeline
from lapse.operator.web import bulk, charts, cron
from lapse.platform.config import Settings
from lapse.platform.sql import queries

SQL = queries(__file__, "web")
NEW_DEAD_LETTERS = timedelta(hours=24)


def sweeps(conn: Connection[Any], *, now: datetime) -> list[dict[str, Any]]:
    """Every sweep: cron in words, next run, last run's outcome and duration, last success, overdue.

    Overdue as ``lapse status`` says it: no success within one cadence plus its slack.
    """
    found = conn.execute(SQL["sweep_last_runs"], {"sweeps": list(SWEEPS), "now": now}).fetchall()
    last = {r["sweep"]: r for r in found}
    rows = []
    for sweep in SWEEPS.values():
        run = last[sweep.name] if last[sweep.name]["id"] is not None else None
        succeeded = last[sweep.name]["last_success"]
        rows.append({
            "name": sweep.name, "actor": sweep.actor_name, "cron": sweep.cron,
            "cron_words": cron.in_words(sweep.cron), "next_run": cron.next_run(sweep.cron, now),
            "built": sweep.body is not None, "pending": sweep.pending,
            "last_status": run["status"] if run else None,
            "last_started_at": run["started_at"] if run else None,
            "last_finished_at": run["finished_at"] if run else None,
            "last_duration_seconds": run["duration"].total_seconds()
            if run and run["duration"] is not None else None,
            "last_error": run["error"] if run else None,
            "last_counts": run["counts"] if run else None,
            "last_success_at": succeeded,
            "overdue": sweep.body is not None and (
                succeeded is None or now - succeeded > status.allowed_lag(sweep.cron)),
        })
    return rows


def sweep_history(conn: Connection[Any], name: str, *, limit: int = 200) -> list[dict[str, Any]]:
    rows = conn.execute(SQL["sweep_history"], {"sweep": name, "limit": limit}).fetchall()
    return [dict(r) | {"duration_seconds": r["duration"].total_seconds()
                       if r["duration"] is not None else None} for r in rows]


def dead_letters(conn: Connection[Any], flt: bulk.DeadFilter, *, now: datetime,
                 limit: int = 200, new_since: datetime | None = None) -> dict[str, Any]:
    """Open dead letters matching ``flt``: grouped by error, the rows, and the filter's choices.

    ``new``: open ones that failed last since ``new_since`` (default: the last 24 hours).
    """
    since = new_since or now - NEW_DEAD_LETTERS
    facets = conn.execute(SQL["dead_facets"], {"since": since}).fetchone()
    assert facets is not None
    return {
        "filter": flt.sql(), "filter_query": flt.query(),
        "groups": conn.execute(SQL["dead_groups"], flt.sql()).fetchall(),
        "rows": conn.execute(SQL["dead_rows"], flt.sql() | {"limit": limit}).fetchall(),
        "limit": limit, "open": facets["open"], "new": facets["new"], "new_since": since,
        "actors": sorted(facets["actors"] or []), "queues": sorted(facets["queues"] or []),
    }


def dead_letter(conn: Connection[Any], dead_id: int) -> dict[str, Any]:
    return dict(dlq.show(conn, dead_id))


def user(conn: Connection[Any], user_id: int, *, now: datetime, config: Settings,
         limit: int = 500) -> dict[str, Any]:
    """The user page: ``lapse explain``'s facts and the timeline, newest first."""
    found = explain(conn, user_id, now=now, config=config)
    return {"user": conn.execute(SQL["user_row"], {"user_id": user_id}).fetchone(),
            "explain": found.as_json(),
            "timeline": timeline(conn, user_id, limit=limit)}


def chart_data(conn: Connection[Any], *, since: datetime, now: datetime, config: Settings,
               with_leaks: bool = True) -> list[charts.Chart]:
    return charts.daily_charts(conn, since=since, now=now, config=config, with_leaks=with_leaks)


def audit(conn: Connection[Any], *, limit: int = 100) -> list[dict[str, Any]]:
    return conn.execute(SQL["audit_list"], {"limit": limit}).fetchall()


def overview(conn: Connection[Any], report: status.StatusReport, *,
             now: datetime) -> dict[str, Any]:
    """Does anything need the operator: ``lapse status``'s report (collected by the caller, on
    its own connection), dead letters by error, sweeps, the console's recent actions."""
    dead = dead_letters(conn, bulk.DeadFilter(), now=now, limit=0)
    return {"now": now, "needs_attention": report.needs_attention,
            "attention": [f.text for f in report.findings if f.severity == status.ATTENTION],
            "info": [f.text for f in report.findings if f.severity != status.ATTENTION],
            "status": report.to_dict(), "sweeps": sweeps(conn, now=now),
            "dead_letters": {"open": dead["open"], "new": dead["new"], "new_since": dead["new_since"],
                             "groups": dead["groups"][:10]},
            "audit": audit(conn, limit=5)}
