"""One ``sweep_<name>`` actor per periodic sweep (SPEC §9), plus the tick triggers' claim.

The scheduler's trigger actors (``schedules.py``) claim a tick and send these
after commit; ``lapse sweep NAME`` runs the same code inline.
"""

from __future__ import annotations

from typing import Any

import dramatiq

from actors.declare import lapse_actor
from lapse import clock, db
from lapse import sweeps as registry
from lapse.config import settings


def _sweep_actor(sweep: registry.Sweep) -> dramatiq.Actor[Any, Any]:
    def run(tick_minute: str | None = None, cursor: dict | None = None) -> None:  # type: ignore[type-arg]
        tick = clock.parse_time(tick_minute) if tick_minute else None
        registry.run_sweep(db.pool(), sweep.name, now=clock.now(), tick_minute=tick,
                           cursor=cursor, budget_seconds=settings().sweep_budget_seconds)

    run.__name__ = run.__qualname__ = sweep.actor_name
    run.__doc__ = f"Run the {sweep.name} sweep once (cron {sweep.cron!r} UTC)." + (
        f" Not implemented yet ({sweep.pending}): records the run and does no work."
        if sweep.body is None else "")
    return lapse_actor(queue_name="sweeps", max_retries=3, time_limit=600_000)(run)


SWEEP_ACTORS = {sweep.name: _sweep_actor(sweep) for sweep in registry.SWEEPS.values()}
globals().update({sweep.actor_name: SWEEP_ACTORS[sweep.name]
                  for sweep in registry.SWEEPS.values()})
