"""Probe actors for the subprocess tests: ``dramatiq actors tests.support.probe_actors``."""

from __future__ import annotations

from dramatiq.middleware import CurrentMessage

import actors  # noqa: F401  (the configured broker)
from actors.declare import lapse_actor
from lapse.platform import db


@lapse_actor(queue_name="probe", max_retries=0)
def probe_record(token: str) -> None:
    """Record that this message ran (and with how many retries)."""
    message = CurrentMessage.get_current_message()
    with db.pool().connection() as conn:
        conn.execute("insert into probe_runs values (%s, %s)",
                     (token, message.options.get("retries", 0)))


@lapse_actor(queue_name="probe", max_retries=1, min_backoff=100, max_backoff=200)
def probe_fail(token: str) -> None:
    """Always fails, to reach the dead-letter archive."""
    raise RuntimeError(f"probe_fail {token}")
