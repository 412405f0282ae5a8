"""STYLE rule 12 for broadcasts: delete each guard once and watch its test fail.

``python -m tests.support.broadcast_guards [N ...]`` (tests/support/guard_runner.py).
Run it with the environment of the tests (no DATABASE_URL, your REDIS_URL).
"""

import sys

from tests.support.guard_runner import run

SQL = "domain/sql/broadcasts.sql"
MIGRATION = "domain/sql/migrations/0011_broadcasts.sql"
DOMAIN = "domain/broadcasts.py"
T = "tests/domain/test_broadcasts.py::"
FLOW = "lapse/flows/broadcasts.py"
TA = "tests/actors/test_broadcasts.py::"
M = [
    ("the walk locks the broadcast row", [
        (SQL, "select * from broadcasts where id = %(id)s for update",
         "select * from broadcasts where id = %(id)s")],
     T + "test_two_walkers_at_once_queue_nobody_twice[lock-alone]"),
    ("one row per (broadcast, user): the unique index and the idempotency key", [
        (MIGRATION, "create unique index notifications_one_per_broadcast_user",
         "create index notifications_one_per_broadcast_user"),
        (SQL, "'broadcast:' || %(id)s::bigint || ':user:' || a.id,",
         "'broadcast:' || %(id)s::bigint || ':user:' || a.id || gen_random_uuid(),")],
     T + "test_a_walk_restarted_from_an_old_cursor_queues_nobody_twice"),
    ("the audience leaves out users with a current subscription", [
        (SQL, "      and not exists (\n          select 1 from subscriptions s\n"
              "          where s.user_id = u.id and s.status in ('pending', 'active', 'grace', "
              "'cancelled'))\n    order by u.id",
         "    order by u.id")],
     T + "test_the_walk_queues_each_audience_user_once_page_by_page"),
    ("the audience leaves out users marked unreachable", [
        (SQL, "      and u.telegram_id is not null\n      and u.unreachable_at is null\n"
              "      and not exists", "      and u.telegram_id is not null\n      and not exists")],
     T + "test_the_walk_queues_each_audience_user_once_page_by_page"),
    ("the send-time re-check skips a user who subscribed meanwhile", [
        (DOMAIN, '    if row["has_current"]:\n', '    if False:\n')],
     T + "test_the_send_time_recheck_skips_a_user_who_subscribed_or_a_cancelled_broadcast"),
    ("the send-time re-check skips a cancelled broadcast (backs up cancel's skip)", [
        (DOMAIN, 'if row is None or row["status"] == "cancelled":', 'if row is None:')],
     T + "test_the_send_time_recheck_skips_a_user_who_subscribed_or_a_cancelled_broadcast"),
    ("the audience leaves out users without a Telegram chat", [
        (SQL, "    where u.id > %(after)s\n      and u.telegram_id is not null\n      and u.unreachable_at is null\n      and not exists"
              " (\n          select 1 from subscriptions s\n          where s.user_id = u.id and "
              "s.status in ('pending', 'active', 'grace', 'cancelled'))\n    order by u.id",
         "    where u.id > %(after)s\n      and u.unreachable_at is null\n      and not exists"
         " (\n          select 1 from subscriptions s\n          where s.user_id = u.id and "
         "s.status in ('pending', 'active', 'grace', 'cancelled'))\n    order by u.id")],
     T + "test_the_walk_queues_each_audience_user_once_page_by_page"),
    ("cancel skips only unclaimed rows", [
        (SQL, "where broadcast_id = %(id)s and status = 'pending'",
         "where broadcast_id = %(id)s and status in ('pending', 'claimed', 'sending')")],
     T + "test_cancel_skips_unclaimed_rows_leaves_claimed_ones_and_stops_the_walk"),
    ("a cancelled broadcast queues no more", [
        (DOMAIN, '    if row["status"] != "running":\n        return Step(row["status"])\n', "")],
     T + "test_cancel_skips_unclaimed_rows_leaves_claimed_ones_and_stops_the_walk"),
    ("the backlog holds the walk", [
        (DOMAIN, "    if outstanding >= backlog:\n", "    if False:\n")],
     T + "test_the_backlog_holds_the_walk_until_outcomes_arrive"),
    ("the walk stops at its time budget", [
        (FLOW, 'if step.outcome == "queued" and time.monotonic() < deadline:',
         'if step.outcome == "queued":')],
     TA + "test_a_spent_budget_sends_the_next_step_at_once"),
]


if __name__ == "__main__":
    run(M, sys.argv[1:], timeout=900)
