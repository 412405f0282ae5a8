"""Dramatiq's Prometheus middleware in a Lapse worker, writing to this run's folder.

The metrics are served by Lapse's exposition server (``dramatiq actors -f
lapse.operator.metrics:serve_metrics``), which adds Lapse's own figures to
Dramatiq's, so Dramatiq's own server is not forked.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.middleware import prometheus
from dramatiq.middleware.prometheus import Prometheus

from lapse.platform.metrics_setup import RUN_FOLDER


class WorkerMetrics(Prometheus):
    """``dramatiq_*`` counters and histograms of this worker, in ``RUN_FOLDER``."""

    @property
    def forks(self) -> list[Any]:
        return []

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        # Dramatiq read its folder from the environment when it was imported; make
        # sure it is this run's, whatever imported it first.
        prometheus.DB_PATH = str(RUN_FOLDER)
        super().after_process_boot(broker)


def worker_metrics() -> list[dramatiq.Middleware]:
    """The middleware to add: none outside a dramatiq worker with metrics on."""
    return [WorkerMetrics()] if RUN_FOLDER is not None else []
