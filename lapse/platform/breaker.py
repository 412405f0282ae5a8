"""A circuit breaker around an HTTP port: a down service is not hammered by every worker thread.

Closed: calls go through; ``threshold`` consecutive failures open it. Open:
calls fail at once with ``CircuitOpen`` until ``cooldown`` has passed. Then
one probe call is let through (half-open): success closes the circuit,
failure opens it again. The state is a Prometheus gauge per port
(0 closed, 1 half-open, 2 open).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from prometheus_client import Gauge

from lapse.platform import clock as app_clock
from lapse.platform.errors import RetryableError

STATE = Gauge("lapse_circuit_state", "0 closed, 1 half-open, 2 open", ["port"])
CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


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

    def before_call(self) -> None:
        """Raise ``CircuitOpen`` unless a call may go through now."""
        with self._lock:
            if self.opened_at is None:
                return
            if self._cooled() and not self.probing:
                self.probing = True  # this caller is the half-open probe
                self._publish()
                return
            raise CircuitOpen(self.port, self.cooldown - (self.clock() - self.opened_at))

    def succeeded(self) -> None:
        with self._lock:
            self.failures, self.opened_at, self.probing = 0, None, False
            self._publish()

    def failed(self) -> None:
        with self._lock:
            self.failures += 1
            if self.probing or self.failures >= self.threshold:
                self.opened_at, self.probing = self.clock(), False
            self._publish()

    def _publish(self) -> None:
        STATE.labels(self.port).set(_VALUES[self.state])


def _app_seconds() -> float:
    return app_clock.now().timestamp()
