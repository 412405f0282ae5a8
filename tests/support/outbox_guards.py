"""STYLE rule 12 for the outbox: delete each guard once and watch its test fail.

``python -m tests.support.outbox_guards [N ...]`` (tests/support/guard_runner.py).
Run it with the same environment as the tests (no DATABASE_URL, REDIS_URL of your own).
"""

import sys

from tests.support.guard_runner import run

D = "domain/notifications.py"
F = "lapse/flows/notifications.py"
S = "domain/sql/notifications.sql"
TD = "tests/domain/test_notifications.py::"
TA = "tests/actors/test_notifications.py::"
TP = "tests/actors/test_notification_processes.py::"
READ_FILTER = ("where status = 'pending' and coalesce(next_attempt_at, created_at) <= %(due_before)s\n"
               "  and id > %(after)s")
READ_FILTER_OFF = "where status = 'pending'\n  and id > %(after)s"
M = [
 ("the rate token before the claim", F,
  "        wait = telegram.rate_limiter().try_acquire(seen.telegram_id)\n",
  "        wait = 0\n",
  TP + "test_two_worker_processes_share_the_rate_and_the_429_pause"),
 ("the pause re-checked between the claim and the request", F,
  "    if paused > 0:  # a 429 reached another sender", "    if False:  # a 429 reached another sender",
  TA + "test_a_pause_that_began_after_the_token_was_taken_holds_the_claimed_notice_back"),
 ("the claim only from pending (the row is locked; the check is the claim's one guard)", D,
  '    if row["status"] != "pending":\n        return f"already {row[\'status\']}"\n', "",
  TD + "test_the_claim_renders_the_users_language_and_marks_the_row_sending"),
 ("the has-paid re-check at send time", S,
  "       exists (select 1 from purchases p\n               where p.user_id = s.user_id and p.kind = 'plan' and p.status = 'paid')\n       or exists (select 1 from subscriptions o\n",
  "       false and exists (select 1 from purchases p\n               where p.user_id = s.user_id and p.kind = 'plan' and p.status = 'paid')\n       or false and exists (select 1 from subscriptions o\n",
  TA + "test_a_user_who_pays_one_second_before_the_6h_notice_is_sent_gets_no_notice"),
 ("the reminder's same-period re-check", S,
  "select s.status in ('active', 'cancelled') and s.expires_at = %(expires_at)s\n",
  "select s.status in ('active', 'cancelled')\n",
  TA + "test_a_reminder_for_a_subscription_that_renewed_meanwhile_is_skipped"),
 ("the reminder's will-not-renew re-check", D,
  '    if not state["will_not_renew"]:\n', "    if False:\n",
  TA + "test_a_reminder_is_skipped_once_the_balance_covers_the_renewal"),
 ("the unreachable user is skipped", D,
  '    if row["unreachable_at"] is not None:\n', "    if False:\n",
  TA + "test_a_blocked_user_is_marked_unreachable_and_later_notices_are_skipped"),
 ("a stale claim is settled by delivery class", D,
  '    if delivery(row["kind"]) == "at_least_once":\n        conn.execute(SQL["reopen"]',
  '    if True:\n        conn.execute(SQL["reopen"]',
  TP + "test_a_sender_killed_between_claim_and_send"),
 ("a garbage answer to an at-most-once notice is never re-sent", D,
  '    if claimed.delivery == "at_least_once":\n        return retry_later(',
  '    if True:\n        return retry_later(',
  TA + "test_bad_input_gets_a_clear_outcome_and_nothing_is_sent_twice"),
 ("an outcome only for the row's latest claim", S,
  "where id = %(id)s and attempts = %(attempt)s\n  and (status = 'sending'",
  "where id = %(id)s\n  and (status = 'sending'",
  TD + "test_a_late_outcome_of_an_older_claim_changes_nothing"),
 ("the read's overdue filter alone, the update's re-check backs it up (expected to PASS)", S,
  READ_FILTER, READ_FILTER_OFF,
  TA + "test_sweep_outbox_sends_overdue_unclaimed_rows_again_once"),
 ("an overdue row is re-sent at most once per margin: the update's re-check, the read's filter off",
  S, [("where id = %(id)s and status = 'pending' and coalesce(next_attempt_at, created_at) <= %(due_before)s\nreturning id",
       "where id = %(id)s\nreturning id"),
      (READ_FILTER, READ_FILTER_OFF)], None,
  TA + "test_sweep_outbox_sends_overdue_unclaimed_rows_again_once"),
 ("the notice's idempotency key (a repeat writes nothing)", S,
  "on conflict (idempotency_key) do nothing\nreturning id",
  "on conflict (idempotency_key) do update set kind = excluded.kind\nreturning id",
  TD + "test_a_notice_is_written_once_per_key_and_its_message_goes_out_after_commit"),
 ("one trial notice per (trial, offset) across sweep runs", D,
  'f"trial_ending:{row[\'id\']}:{hours}h",', 'f"trial_ending:{row[\'id\']}:{hours}h:{now}",',
  TA + "test_a_user_who_pays_one_second_before_the_6h_notice_is_sent_gets_no_notice"),
 ("a message early for its next attempt waits", F,
  "        if early > EARLY:\n", "        if False:\n",
  TA + "test_a_server_error_leaves_the_notice_pending_with_its_next_attempt"),
]


if __name__ == "__main__":
    run(M, sys.argv[1:], timeout=900)
