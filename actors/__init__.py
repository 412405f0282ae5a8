"""Lapse's Dramatiq actors. Importing this package configures the broker.

``dramatiq actors`` starts a worker; ``TZ=UTC periodiq actors schedules`` the
scheduler. ``broker`` is what both CLIs look up in this module. The tick
triggers (``actors/ticks.py``) are registered here too, so the worker can run
them; ``schedules.py`` imports this package, never the other way round.
"""

# isort: off
# First: prometheus_client must see this worker's metrics folder before anything imports it.
from lapse.platform import metrics_setup  # noqa: F401
# isort: on
from actors import access, keys, money, notifications, retention, sweeps, ticks
from actors.boot import PanelCheckAtStart
from lapse.platform.brokers import broker

broker.add_middleware(PanelCheckAtStart())

__all__ = ["access", "broker", "keys", "money", "notifications", "retention", "sweeps", "ticks"]
