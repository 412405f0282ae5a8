"""Lapse's Dramatiq actors. Importing this package configures the broker.

``dramatiq actors`` starts a worker; ``periodiq actors schedules`` the
scheduler. ``broker`` is what both CLIs look up in this module.
"""

from actors import access, money, notifications, retention, sweeps
from lapse.brokers import broker

__all__ = ["access", "broker", "money", "notifications", "retention", "sweeps"]

# The trigger actors live in schedules.py (periodiq's side); the worker must
# know them too, so importing the actors imports the schedules.
import schedules  # noqa: E402, F401
