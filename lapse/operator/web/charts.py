"""The console's daily charts (SPEC §7), one point per day, drawn as inline SVG on the server.

``daily_charts`` reads the counts per UTC day from the database (renewals and
failed renewals, expiries, activations, tagging and restore batches, leaked
recordings by creation day, dead letters by first failure); ``svg`` draws one
chart with a ``<circle class="point">`` per series and day, so a page or the
HTML report needs no script and no network.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from html import escape
from typing import Any

from psycopg import Connection

from domain.audits import leak_report
from lapse.platform.config import Settings
from lapse.platform.sql import queries

SQL = queries(__file__, "web")
COLORS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea")


@dataclass
class Series:
    key: str
    label: str
    values: list[int]


@dataclass
class Chart:
    key: str
    title: str
    days: list[date]
    series: list[Series]

    def as_json(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "days": [d.isoformat() for d in self.days],
                "series": {s.key: s.values for s in self.series}}


def day_range(*, since: datetime, now: datetime) -> tuple[date, date]:
    """The first and last UTC day shown."""
    first = since.astimezone(UTC).date()
    last = now.astimezone(UTC).date()
    return min(first, last), last


def daily_charts(conn: Connection[Any], *, since: datetime, now: datetime, config: Settings,
                 with_leaks: bool = True) -> list[Chart]:
    """Every chart of the console, from the first day of ``since`` to the day of ``now`` (UTC).

    The leak chart costs a leak audit (``retention_holds`` for every user with audio): the
    overview, refreshed every few seconds, leaves it out (``with_leaks=False``).
    """
    first, last = day_range(since=since, now=now)
    days_param = {"first_day": first, "last_day": last}
    events = conn.execute(SQL["daily_events"], days_param).fetchall()
    batches = conn.execute(SQL["daily_batches"], days_param).fetchall()
    dead = conn.execute(SQL["daily_dead_letters"], days_param).fetchall()
    days = [r["day"] for r in events]

    def column(rows: list[Any], key: str) -> list[int]:
        return [int(r[key]) for r in rows]

    found = [
        Chart("renewals", "Renewals and failed renewals", days,
              [Series("renewals", "renewed", column(events, "renewals")),
               Series("renewal_failures", "failed (to grace)", column(events, "renewal_failures"))]),
        Chart("expiries", "Expiries", days, [Series("expiries", "expired", column(events, "expiries"))]),
        Chart("activations", "Activations", days,
              [Series("activations", "activated", column(events, "activations"))]),
        Chart("tags", "Tagging and restore batches", days,
              [Series("tags", "tag", column(batches, "tags")),
               Series("restores", "restore", column(batches, "restores"))]),
        Chart("dead_letters", "Dead letters (by first failure)", days,
              [Series("dead_letters", "dead", column(dead, "dead_letters"))]),
    ]
    if with_leaks:
        report = leak_report(conn, now=now, since=datetime.combine(first, time(), UTC),
                             max_age=config.leak_alert_age, billing_grace=config.billing_grace)
        leaked = {d.day: d.leaked for d in report.days}
        found.insert(4, Chart("leaks", "Leaked recordings (by creation day, as of now)", days,
                              [Series("leaks", "leaked", [leaked.get(d, 0) for d in days])]))
    return found


def svg(chart: Chart, *, width: int = 560, height: int = 170) -> str:
    """One chart as an ``<svg>`` element: a polyline and one circle per series and day."""
    left, right, top, bottom = 36, 12, 12, 34
    top_value = max([v for s in chart.series for v in s.values] + [1])
    count = len(chart.days)
    step = (width - left - right) / max(count - 1, 1)

    def x(i: int) -> float:
        return left + (i * step if count > 1 else (width - left - right) / 2)

    def y(v: int) -> float:
        return top + (height - top - bottom) * (1 - v / top_value)

    parts = [f'<svg class="chart" data-chart="{chart.key}" '
             f'data-days="{count}" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" role="img" aria-label="{escape(chart.title)}">',
             f'<line x1="{left}" y1="{y(0):.1f}" x2="{width - right}" y2="{y(0):.1f}" '
             'stroke="#999" stroke-width="1"/>',
             f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" font-size="10">{top_value}</text>',
             f'<text x="{left - 4}" y="{y(0):.1f}" text-anchor="end" font-size="10">0</text>']
    if chart.days:
        parts.append(f'<text x="{x(0):.1f}" y="{height - 18}" font-size="10">'
                     f'{chart.days[0].isoformat()}</text>')
        parts.append(f'<text x="{x(count - 1):.1f}" y="{height - 18}" text-anchor="end" '
                     f'font-size="10">{chart.days[-1].isoformat()}</text>')
    for n, series in enumerate(chart.series):
        color = COLORS[n % len(COLORS)]
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(series.values))
        parts.append(f'<g class="series" data-series="{series.key}">')
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{points}"/>')
        for i, (day, value) in enumerate(zip(chart.days, series.values, strict=True)):
            parts.append(f'<circle class="point" data-day="{day.isoformat()}" data-value="{value}" '
                         f'cx="{x(i):.1f}" cy="{y(value):.1f}" r="2.5" fill="{color}">'
                         f'<title>{day.isoformat()} {escape(series.label)}: {value}</title></circle>')
        parts.append("</g>")
        parts.append(f'<text x="{left + 6 + 130 * n}" y="{height - 4}" font-size="11" '
                     f'fill="{color}">■ {escape(series.label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def default_since(now: datetime, days: int = 30) -> datetime:
    """The start of the window the charts show by default: ``days`` days back, day included."""
    return now - timedelta(days=days - 1)
