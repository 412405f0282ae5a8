"""Prometheus gauges of the leak figures (R8), for a textfile collector or a scrape.

``lapse audit leaks --format prometheus`` prints them in the text exposition
format, for node_exporter's textfile collector: run it from cron (hourly is
enough; the figures move with the hourly and daily sweeps) into the
collector's folder. They live in their own registry, not in a worker's.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)
LEAKED_RECORDINGS = Gauge("lapse_leaked_recordings", "has_audio recordings of users without retention",
                          registry=REGISTRY)
LEAKED_USERS = Gauge("lapse_leaked_users", "users without retention who still have audio",
                     registry=REGISTRY)
OLDEST_LEAK = Gauge("lapse_oldest_leak_age_seconds",
                    "age of the oldest leak or unapplied tagging batch (0 when none)", registry=REGISTRY)
UNAPPLIED = Gauge("lapse_unapplied_tagging_batches", "tagging batches not yet applied in S3",
                  registry=REGISTRY)
LEAKS_TOO_OLD = Gauge("lapse_leaks_past_alert_age", "1 when a leak is older than the alert age",
                      registry=REGISTRY)


def exposition() -> str:
    return generate_latest(REGISTRY).decode()
