"""The application clock: the only place Lapse reads the time.

freezegun controls it in tests (it patches ``datetime``); ``--now`` on the
command line overrides it. SQL ``now()`` is never used for a decision: the
value returned here is passed into every query.
"""

from __future__ import annotations

from datetime import UTC, datetime

_override: datetime | None = None


class ClockOverrideRefused(Exception):
    """--now was given to a state-changing command without LAPSE_ALLOW_CLOCK_OVERRIDE=1."""


def now() -> datetime:
    """The current time as an aware UTC datetime (or the override)."""
    if _override is not None:
        return _override
    return datetime.now(UTC)


def parse_time(text: str) -> datetime:
    """Parse an ISO 8601 time; a naive time is taken as UTC. Raises ValueError."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def override(at: datetime | None, *, changes_state: bool, allowed: bool) -> None:
    """Move the clock to ``at`` for this process (None restores real time).

    A state-changing command acting "as of another time" on a production
    database would expire or tag the wrong users, so it is refused unless the
    operator opted in with LAPSE_ALLOW_CLOCK_OVERRIDE=1.
    """
    global _override
    if at is not None and changes_state and not allowed:
        raise ClockOverrideRefused(
            "--now changes state here; set LAPSE_ALLOW_CLOCK_OVERRIDE=1 to allow it"
        )
    _override = at
