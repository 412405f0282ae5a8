"""periodiq schedules: one small trigger actor per sweep, on the ``schedules`` queue.

Run the scheduler with ``TZ=UTC periodiq actors schedules``. A trigger claims
its (sweep, UTC minute) tick in Postgres and, when it won, sends the sweep
after commit; a duplicate scheduler's tick finds the claim taken. The hourly
``check_daily_sweeps`` trigger re-runs a daily sweep whose tick was dropped.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage
from periodiq import cron

import actors  # noqa: F401  (configures the broker before the triggers are declared)
from actors.declare import lapse_actor
from lapse import clock, db
from lapse import sweeps as registry
from lapse.after_commit import transaction


def _tick_time() -> Any:
    message = CurrentMessage.get_current_message()
    scheduled = message.options.get("scheduled_at") if message is not None else None
    return clock.parse_time(scheduled) if scheduled else clock.now()


def _trigger(sweep: registry.Sweep) -> dramatiq.Actor[Any, Any]:
    def trigger() -> None:
        at = _tick_time()
        with db.pool().connection() as conn, transaction(conn):
            registry.claim_tick(conn, sweep, minute=at, now=clock.now())

    trigger.__name__ = trigger.__qualname__ = f"tick_{sweep.name}"
    trigger.__doc__ = f"periodiq trigger of {sweep.actor_name}: claim the tick, send the sweep."
    return lapse_actor(queue_name="schedules", max_retries=0, periodic=cron(sweep.cron))(trigger)


TRIGGERS = {sweep.name: _trigger(sweep) for sweep in registry.SWEEPS.values()}


@lapse_actor(queue_name="schedules", max_retries=0, periodic=cron(registry.DAILY_CHECK_CRON))
def check_daily_sweeps() -> None:
    """Hourly: run any daily sweep whose last slot passed with no completed run."""
    at = _tick_time()
    with db.pool().connection() as conn, transaction(conn):
        for sweep in registry.missed_daily_sweeps(conn, now=at):
            registry.claim_tick(conn, sweep, minute=at, now=clock.now())
