"""The sweeps' cron expressions (UTC) in words, and their next run.

Only what the sweep table uses is needed, but the five fields are read in
full: ``*``, ``*/n``, numbers, ranges ``a-b`` and lists ``a,b``; Sunday is 7
(periodiq never fires 0) and 0 is accepted too.
"""

from __future__ import annotations

from datetime import datetime, timedelta

_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


class CronError(ValueError):
    """A cron expression this reader does not understand."""


def _field(text: str, low: int, high: int) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            step = int(step_text)
        if part == "*":
            first, last = low, high
        elif "-" in part:
            first, last = (int(x) for x in part.split("-", 1))
        else:
            first = last = int(part)
        if not (low <= first <= last <= high) or step <= 0:
            raise CronError(f"field {text!r} is outside {low}-{high}")
        values.update(range(first, last + 1, step))
    return values


def parse(expression: str) -> tuple[set[int], ...]:
    """The allowed minutes, hours, days of month, months and weekdays (Monday 1 .. Sunday 7)."""
    fields = expression.split()
    if len(fields) != 5:
        raise CronError(f"not five fields: {expression!r}")
    try:
        minutes, hours, days, months, weekdays = (
            _field(text, low, high) for text, (low, high) in zip(fields, _BOUNDS, strict=True))
    except ValueError as error:
        raise CronError(f"{expression!r}: {error}") from None
    return minutes, hours, days, months, {7 if d == 0 else d for d in weekdays}


def next_run(expression: str, after: datetime) -> datetime:
    """The first minute strictly after ``after`` that the expression fires at."""
    minutes, hours, days, months, weekdays = parse(expression)
    start = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    day = start.replace(hour=0, minute=0)
    for _ in range(366 * 5):
        if day.day in days and day.month in months and day.isoweekday() in weekdays:
            for hour in sorted(hours):
                for minute in sorted(minutes):
                    at = day.replace(hour=hour, minute=minute)
                    if at >= start:
                        return at
        day += timedelta(days=1)
    raise CronError(f"{expression!r} never fires")


def in_words(expression: str) -> str:
    """``*/10 * * * *`` → ``every 10 minutes``; ``30 1 * * *`` → ``daily at 01:30 UTC``."""
    minute, hour, day, month, weekday = expression.split()
    daily = (day, month, weekday) == ("*", "*", "*")
    if daily and hour == "*":
        if minute == "*":
            return "every minute"
        if minute.startswith("*/"):
            return f"every {minute[2:]} minutes"
        if minute.isdigit():
            return f"hourly at minute {int(minute)}"
    if daily and hour.isdigit() and minute.isdigit():
        return f"daily at {int(hour):02d}:{int(minute):02d} UTC"
    return f"cron {expression} (UTC)"
