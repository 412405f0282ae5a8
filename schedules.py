"""The scheduler's entry point: ``TZ=UTC periodiq actors schedules``.

The periodic trigger actors are ``actors/ticks.py`` (the worker must know
them too, so they live with the other actors); their cadences are the sweep
table in ``lapse/flows/sweeps.py``. Importing this module after ``actors``
gives periodiq every ``tick_<sweep>`` and ``check_daily_sweeps``; nothing in
``actors`` imports it, so the two never import each other.
"""

from __future__ import annotations

from actors import broker, ticks

TRIGGERS = {name.removeprefix("tick_"): actor for name, actor in broker.actors.items()
            if name.startswith("tick_")}

__all__ = ["TRIGGERS", "broker", "ticks"]
