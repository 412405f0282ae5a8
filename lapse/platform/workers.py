"""Which process this is, and the worker heartbeat (SPEC §7 Operator console).

``WorkerHeartbeat`` is a Dramatiq middleware: when a worker boots it starts a
thread that writes the worker's row in ``worker_heartbeats`` at once and then
every LAPSE_HEARTBEAT_SECONDS; at shutdown it stops the thread and marks the
row stopped. ``lapse status`` reports a worker whose last beat is older than
LAPSE_HEARTBEAT_STALE_SECONDS and that never said it stopped: it died, hangs,
or lost its database.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

import dramatiq
import psycopg
from dramatiq import Middleware
from psycopg_pool import PoolTimeout

from lapse.platform import clock, db
from lapse.platform.sql import queries

logger = logging.getLogger(__name__)
SQL = queries(__file__, "workers")


def process_name() -> str:
    """``host:pid``: how the operator tables name a process (computed per call: forks change it)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class WorkerHeartbeat(Middleware):
    """Writes this worker's heartbeat row every ``interval`` seconds while it runs."""

    def __init__(self, broker_name: str, interval: float) -> None:
        self.broker_name, self.interval = broker_name, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_at: Any = None
        self._queues: list[str] = []

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._started_at = clock.now()
        consumed = getattr(worker, "consumer_whitelist", None) or broker.get_declared_queues()
        self._queues = sorted({q.removesuffix(".DQ").removesuffix(".XQ") for q in consumed})
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="lapse-heartbeat", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._write("stop_heartbeat")

    def _run(self) -> None:
        self._write("beat")
        while not self._stop.wait(self.interval):
            self._write("beat")

    def _write(self, block: str) -> None:
        params = {"worker": process_name(), "hostname": socket.gethostname(), "pid": os.getpid(),
                  "broker": self.broker_name, "queues": self._queues,
                  "started_at": self._started_at or clock.now(), "now": clock.now()}
        try:
            with db.pool().connection(timeout=5) as conn:
                conn.execute(SQL[block], params)
        except (psycopg.Error, PoolTimeout) as error:
            # A missed beat is itself the signal `lapse status` looks for; keep beating.
            logger.warning("worker heartbeat not written: %s", error)
