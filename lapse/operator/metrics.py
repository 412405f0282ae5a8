"""The Prometheus exposition server of a Lapse worker (SPEC §7 Observability).

Run by the ``dramatiq`` command as a fork: ``dramatiq actors -f
lapse.operator.metrics:serve_metrics``. It listens on LAPSE_METRICS_HOST:
LAPSE_METRICS_PORT and serves, at every scrape:

- Dramatiq's metrics of every worker process of this run (``dramatiq_*``)
  and the in-process breaker gauge ``lapse_circuit_state``, summed from the
  run's multiprocess folder;
- what ``lapse status`` sees (the same ``collect_status``): queue depth and
  oldest message age per queue and kind, the dead-letter archive, each
  sweep's last success and lag, leaks and unapplied batches, breakers that
  are not closed in any process, worker heartbeats, broadcasts in progress;
- Lapse's domain counters, counted in the database (every worker's and every
  ``lapse sweep``'s work, surviving restarts).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from lapse.platform import clock, db
from lapse.platform.config import settings
from lapse.platform.metrics_setup import RUN_FOLDER, prepare
from lapse.platform.sql import queries

logger = logging.getLogger(__name__)
SQL = queries(__file__, "metrics")
_BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}
COUNTERS = {
    "renewals": "auto-renewals charged",
    "renewal_failures": "auto-renewals that failed (the subscription went to grace)",
    "expiries": "subscriptions expired",
    "activations": "subscriptions activated (key provisioned)",
    "tagged_recordings": "recording objects tagged for deletion in S3",
    "restored_recordings": "recording objects restored (tag removed) in S3",
}


def _gauge(name: str, text: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, labels=labels)


class LapseCollector:
    """Collects Lapse's figures at scrape time, from the database and the broker."""

    def __init__(self, broker: Any) -> None:
        self.broker = broker

    def describe(self) -> list[Metric]:
        return []  # computed at each scrape; nothing to register up front

    def collect(self) -> Iterator[Metric]:
        from lapse.operator.status import collect_status

        now = clock.now()
        pool = db.pool()
        report = collect_status(pool, now=now, since=now - timedelta(hours=24), broker=self.broker)
        yield from status_metrics(report)
        with pool.connection() as conn:
            counts: Any = conn.execute(SQL["domain_counts"]).fetchone()
            outcomes: list[Any] = conn.execute(SQL["notification_outcomes"]).fetchall()
        for key, text in COUNTERS.items():
            yield CounterMetricFamily(f"lapse_{key}", text, value=int(counts[key]))
        notices = CounterMetricFamily("lapse_notifications", "notifications by outcome (status)",
                                      labels=["outcome"])
        for row in outcomes:
            notices.add_metric([row["outcome"]], int(row["count"]))
        yield notices


def status_metrics(report: Any) -> Iterator[Metric]:
    """The figures of a ``StatusReport`` as Prometheus metric families."""
    depth = _gauge("lapse_queue_messages", "messages the broker holds per queue (ready, delayed, "
                   "dead), waiting or in progress", ["queue", "kind"])
    age = _gauge("lapse_queue_oldest_message_age_seconds", "age of the oldest message per queue "
                 "and kind (0 when empty)", ["queue", "kind"])
    for q in report.queues:
        depth.add_metric([q["queue"], q["kind"]], q["depth"])
        age.add_metric([q["queue"], q["kind"]], q["oldest_age_seconds"])
    yield from (depth, age)
    yield GaugeMetricFamily("lapse_dead_letter_archive_size", "dead letters in the archive not "
                            "requeued", value=report.dead_letters["open"])
    yield GaugeMetricFamily("lapse_dead_letters_new", "dead letters of the last 24 hours",
                            value=report.dead_letters["new"])
    yield from _sweep_metrics(report)
    leaks = report.leaks
    yield GaugeMetricFamily("lapse_leaked_users", "users without retention who still have audio",
                            value=leaks["leaked_users"])
    yield GaugeMetricFamily("lapse_leaked_recordings", "has_audio recordings of users without "
                            "retention", value=leaks["leaked_recordings"])
    yield GaugeMetricFamily("lapse_unapplied_tagging_batches", "tagging batches not yet applied "
                            "in S3", value=leaks["unapplied_batches"])
    yield GaugeMetricFamily("lapse_oldest_leak_age_seconds", "age of the oldest leak or unapplied "
                            "batch (0 when none)", value=leaks["oldest_leak_age_seconds"] or 0)
    yield GaugeMetricFamily("lapse_leaks_past_alert_age", "1 when a leak is older than the alert "
                            "age", value=1 if leaks["past_alert_age"] else 0)
    breakers = _gauge("lapse_breaker_state", "circuit breakers not closed, per port and process "
                      "(1 half-open, 2 open), from the database", ["port", "worker"])
    for b in report.breakers:
        breakers.add_metric([b["port"], b["worker"]], _BREAKER_VALUES[b["state"]])
    yield breakers
    yield from _worker_metrics(report)
    if report.broadcasts is not None:
        yield GaugeMetricFamily("lapse_broadcasts_in_progress", "broadcasts being sent",
                                value=len(report.broadcasts))
    yield GaugeMetricFamily("lapse_status_needs_attention", "1 when `lapse status` would exit 1",
                            value=1 if report.needs_attention else 0)


def _sweep_metrics(report: Any) -> Iterator[Metric]:
    last = _gauge("lapse_sweep_last_success_timestamp_seconds", "end of the sweep's last "
                  "successful run (unix time; absent when it never completed)", ["sweep"])
    lag = _gauge("lapse_sweep_lag_seconds", "time since the sweep's last successful run", ["sweep"])
    overdue = _gauge("lapse_sweep_overdue", "1 when the sweep missed its cadence plus slack", ["sweep"])
    failing = _gauge("lapse_sweep_failing", "1 when the sweep's last run failed", ["sweep"])
    for s in report.sweeps:
        if not s["implemented"]:
            continue
        if s["last_success"] is not None:
            last.add_metric([s["sweep"]], s["last_success"].timestamp())
            lag.add_metric([s["sweep"]], s["lag_seconds"])
        overdue.add_metric([s["sweep"]], 1 if s["overdue"] else 0)
        failing.add_metric([s["sweep"]], 1 if s["failing"] else 0)
    yield from (last, lag, overdue, failing)


def _worker_metrics(report: Any) -> Iterator[Metric]:
    beat = _gauge("lapse_worker_heartbeat_age_seconds", "time since each running worker's last "
                  "heartbeat", ["worker"])
    for w in report.workers:
        if w["stopped_at"] is None:
            beat.add_metric([w["worker"]], w["beat_age_seconds"])
    yield beat
    yield GaugeMetricFamily("lapse_workers_stale", "running workers whose heartbeat is stale",
                            value=sum(bool(w["stale"]) for w in report.workers))


def registry(broker: Any) -> CollectorRegistry:
    """Dramatiq's metrics of this run plus Lapse's collector."""
    found = CollectorRegistry()
    folder = RUN_FOLDER or prepare()
    if folder is not None:
        MultiProcessCollector(found, path=str(folder))
    found.register(LapseCollector(broker))  # type: ignore[arg-type]
    return found


def serve_metrics() -> int:
    """The fork function: serve /metrics until the dramatiq command stops."""
    import actors  # noqa: F401  (declares every queue on the configured broker)
    from lapse.platform.brokers import broker

    config = settings()
    handler = type("Handler", (_MetricsHandler,), {"broker": broker})
    server = ThreadingHTTPServer((config.metrics_host, config.metrics_port), handler)
    logger.info("serving metrics on http://%s:%s/metrics", config.metrics_host, config.metrics_port)
    server.serve_forever()
    return 0


class _MetricsHandler(BaseHTTPRequestHandler):
    broker: Any = None

    def do_GET(self) -> None:  # noqa: N802  (the http.server protocol)
        body = generate_latest(registry(self.broker))
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        logger.debug(format, *args)
