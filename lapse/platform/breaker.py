"""A circuit breaker around an HTTP port: a down service is not hammered by every worker thread.

Closed: calls go through; ``threshold`` consecutive failures open it. Open:
calls fail at once with ``CircuitOpen`` until ``cooldown`` has passed. Then
one probe call is let through (half-open): success closes the circuit,
failure opens it again. The state is a Prometheus gauge per port
(0 closed, 1 half-open, 2 open).

Every transition is also written to the database (``breaker_states``, one row
per port and process, and ``breaker_transitions``), so ``lapse status`` and
the web console see every worker's breakers. The write happens after the
breaker's lock is released, on a pool connection taken for that write only;
a failed write is logged and never fails the call the breaker guards.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
from prometheus_client import Gauge
from psycopg_pool import PoolTimeout

from lapse.platform import clock, db
from lapse.platform.errors import RetryableError
from lapse.platform.sql import queries
from lapse.platform.workers import process_name

logger = logging.getLogger(__name__)
SQL = queries(__file__, "breaker")
STATE = Gauge("lapse_circuit_state", "0 closed, 1 half-open, 2 open", ["port"],
              multiprocess_mode="livemax")
CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}

#: ``recorder(port, from_state, to_state, failures)``, called after each transition.
Recorder = Callable[[str, str, str, int], None]


def record_in_database(port: str, from_state: str, to_state: str, failures: int) -> None:
    """Write one transition and the port's current state for this process."""
    params = {"port": port, "worker": process_name(), "from_state": from_state,
              "to_state": to_state, "failures": failures, "now": clock.now()}
    try:
        with db.pool().connection(timeout=2) as conn, conn.transaction():
            conn.execute(SQL["record_transition"], params)
            conn.execute(SQL["upsert_state"], params)
    except (psycopg.Error, PoolTimeout) as error:
        # Observability must not fail the call it observes; the gauge still moves.
        logger.warning("circuit %s %s -> %s not recorded in the database: %s", port,
                       from_state, to_state, error)


_recorder: Recorder | None = record_in_database


def install_recorder(recorder: Recorder | None) -> Recorder | None:
    """Replace where transitions are written (None: nowhere); return the previous recorder."""
    global _recorder
    previous, _recorder = _recorder, recorder
    return previous


class CircuitOpen(RetryableError):
    """The port's circuit is open after repeated failures; retry later."""

    def __init__(self, port: str, retry_in: float) -> None:
        super().__init__(f"{port}: circuit open after repeated failures; next probe in "
                         f"{retry_in:.0f}s")
        self.port, self.retry_in = port, max(retry_in, 0.0)


class CircuitBreaker:
    def __init__(self, port: str, *, threshold: int = 5, cooldown: float = 30.0,
                 clock: Callable[[], float] | None = None) -> None:
        self.port, self.threshold, self.cooldown = port, threshold, cooldown
        # the application clock, so a simulation's breakers cool down on simulated time
        self.clock = clock or _app_seconds
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False
        self._lock = threading.Lock()
        STATE.labels(port).set(0)

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return CLOSED
        return HALF_OPEN if self.probing or self._cooled() else OPEN

    def _cooled(self) -> bool:
        return self.opened_at is not None and self.clock() - self.opened_at >= self.cooldown

    def _stored(self) -> str:
        """The state as last decided (an open circuit past its cooldown is still open here)."""
        if self.opened_at is None:
            return CLOSED
        return HALF_OPEN if self.probing else OPEN

    def before_call(self) -> None:
        """Raise ``CircuitOpen`` unless a call may go through now."""
        with self._lock:
            if self.opened_at is None:
                return
            if self._cooled() and not self.probing:
                self.probing = True  # this caller is the half-open probe
                self._publish()
                probe = True
            else:
                probe, retry_in = False, self.cooldown - (self.clock() - self.opened_at)
        if probe:
            self._record(OPEN, HALF_OPEN, self.failures)
            return
        raise CircuitOpen(self.port, retry_in)

    def succeeded(self) -> None:
        with self._lock:
            before = self._stored()
            self.failures, self.opened_at, self.probing = 0, None, False
            self._publish()
        self._record(before, CLOSED, 0)

    def failed(self) -> None:
        with self._lock:
            before = self._stored()
            self.failures += 1
            if self.probing or self.failures >= self.threshold:
                self.opened_at, self.probing = self.clock(), False
            self._publish()
            after, failures = self._stored(), self.failures
        self._record(before, after, failures)

    def _publish(self) -> None:
        STATE.labels(self.port).set(_VALUES[self.state])

    def _record(self, before: str, after: str, failures: int) -> None:
        # Outside the lock: a slow database must not stall the other threads' calls.
        recorder = _recorder
        if before != after and recorder is not None:
            recorder(self.port, before, after, failures)


def _app_seconds() -> float:
    return clock.now().timestamp()
