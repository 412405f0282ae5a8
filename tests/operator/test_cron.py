"""The sweeps' cron expressions in words and their next run (UTC)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lapse.flows.sweeps import SWEEPS
from lapse.operator.web import cron

AT = datetime(2026, 11, 20, 12, 34, 56, tzinfo=UTC)


@pytest.mark.parametrize(("expression", "words", "after"), [
    ("* * * * *", "every minute", "2026-11-20T12:35:00+00:00"),
    ("*/10 * * * *", "every 10 minutes", "2026-11-20T12:40:00+00:00"),
    ("*/5 * * * *", "every 5 minutes", "2026-11-20T12:35:00+00:00"),
    ("0 * * * *", "hourly at minute 0", "2026-11-20T13:00:00+00:00"),
    ("15 * * * *", "hourly at minute 15", "2026-11-20T13:15:00+00:00"),
    ("30 1 * * *", "daily at 01:30 UTC", "2026-11-21T01:30:00+00:00"),
    ("0 10 * * 7", "cron 0 10 * * 7 (UTC)", "2026-11-22T10:00:00+00:00"),  # Sunday is 7
    ("0 10 1 1 *", "cron 0 10 1 1 * (UTC)", "2027-01-01T10:00:00+00:00"),
])
def test_cron_in_words_and_next_run(expression, words, after):
    assert cron.in_words(expression) == words
    assert cron.next_run(expression, AT).isoformat() == after


def test_the_next_run_is_strictly_after_the_given_minute():
    on_the_hour = datetime(2026, 11, 20, 13, 0, tzinfo=UTC)
    assert cron.next_run("0 * * * *", on_the_hour) == datetime(2026, 11, 20, 14, 0, tzinfo=UTC)


def test_every_sweep_cron_is_readable():
    for sweep in SWEEPS.values():
        assert not cron.in_words(sweep.cron).startswith("cron "), sweep.cron
        assert cron.next_run(sweep.cron, AT) > AT


@pytest.mark.parametrize("expression", ["* * * *", "61 * * * *", "x * * * *", "0 0 31 2 *"])
def test_unreadable_or_impossible_expressions_are_refused(expression):
    with pytest.raises(cron.CronError):
        cron.next_run(expression, AT)
