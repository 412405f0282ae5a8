"""STYLE rule 12 for the web console: delete each guard once and watch its test fail.

``python -m tests.support.web_guards [N ...]`` (tests/support/guard_runner.py) prints
FAILS or PASSES, and whether that is what it should do: the bulk confirmation has
three guards that back each other up (the counted highest id, the count, the digest
of the ids), so each is also shown to hold alone.
"""

import sys

from tests.support.guard_runner import run

SQL = "lapse/operator/web/sql/web.sql"
BULK = "lapse/operator/web/bulk.py"
APP = "lapse/operator/web/app.py"
T = "tests/operator/test_web.py::"
R = "tests/operator/test_bulk_race.py::"
COUNT = "        if len(ids) > counted:\n"
DIGEST = "        elif digest(ids) != counted_digest:\n"
M = [
 ("a confirmation acts only up to the counted highest id", SQL,
  "  and id <= %(max_id)s\n", "  and %(max_id)s::bigint is not null\n",
  T + "test_bulk_requeue_acts_only_on_the_rows_its_dry_run_counted"),
 ("the counted highest id alone (count and digest checks off) keeps the later row "
  "(expected to PASS)", BULK,
  [(COUNT, "        if False:\n"), (DIGEST, "        elif False:\n")], None,
  T + "test_bulk_requeue_acts_only_on_the_rows_its_dry_run_counted"),
 ("the digest check alone refuses other rows of the same count", BULK,
  DIGEST, "        elif False:\n",
  T + "test_a_confirmation_is_refused_when_the_rows_are_not_the_ones_counted"),
 ("each row of a bulk action is locked and re-checked (the whole check removed)", BULK,
  "                if conn.execute(SQL[\"lock_open_dead_letter\"], {\"id\": dead_id}).fetchone() is None:\n"
  "                    gone += 1  # requeued or purged by another confirmation meanwhile\n"
  "                    continue\n", "",
  R + "test_two_confirmations_of_one_dry_run_requeue_each_row_once"),
 ("the re-check without the lock", SQL,
  "select id from dead_letters where id = %(id)s and requeued_at is null for update",
  "select id from dead_letters where id = %(id)s and requeued_at is null",
  R + "test_two_confirmations_of_one_dry_run_requeue_each_row_once"),
 ("the lock without the re-check", SQL,
  "select id from dead_letters where id = %(id)s and requeued_at is null for update",
  "select id from dead_letters where id = %(id)s for update",
  R + "test_two_confirmations_of_one_dry_run_requeue_each_row_once"),
 ("a confirmation keeps the filter", SQL,
  "  and (%(error)s::text is null or error = %(error)s)\n  and id <= %(max_id)s\n",
  "  and id <= %(max_id)s\n",
  T + "test_an_api_client_uses_the_bearer_token_without_a_cookie"),
 ("the count check alone refuses more rows than counted (the digest given matches them)", BULK,
  COUNT, "        if False:\n",
  T + "test_a_confirmation_is_refused_when_more_rows_match_than_were_counted"),
 ("without LAPSE_WEB_TOKEN every mutation is refused", APP,
  '        if token is None:\n            return 403, "the console is read-only: LAPSE_WEB_TOKEN is not set"\n',
  '        if token is None:\n            return None\n',
  T + "test_without_a_token_the_console_is_read_only"),
 ("the form must carry the token", APP,
  '        if not _same(fields.get("token", ""), token):\n', "        if False:\n",
  T + "test_a_mutation_without_the_token_or_the_csrf_value_is_refused"),
 ("the form must carry the CSRF value of the cookie", APP,
  '        if not cookie or not _same(fields.get("csrf", ""), cookie):\n', "        if False:\n",
  T + "test_a_mutation_without_the_token_or_the_csrf_value_is_refused"),
 ("a form from another origin is refused", APP,
  '        if origin and origin != "null" and urlparse(origin).netloc != request.url.netloc:\n',
  "        if False:\n",
  T + "test_a_form_post_from_another_origin_is_refused"),
 ("a wrong Bearer token is refused", APP,
  "            return None if _same(given, token) else (401, \"wrong token\")\n",
  "            return None\n",
  T + "test_an_api_client_uses_the_bearer_token_without_a_cookie"),
 ("a refused mutation is audited", APP,
  "                bulk.record(conn, bulk.BulkResult(action, \"refused\", detail=reason), flt,\n"
  "                            counted=counted, counted_max_id=max_id, client=client, now=self.now())\n",
  "                pass\n",
  T + "test_without_a_token_the_console_is_read_only"),
 ("the bulk buttons are hidden without a token", "lapse/operator/web/templates/dead_letters.html",
  "{% if writable %}\n{% set f = data.filter %}\n<h2>", "{% if true %}\n{% set f = data.filter %}\n<h2>",
  T + "test_without_a_token_the_console_is_read_only"),
]


if __name__ == "__main__":
    run(M, sys.argv[1:], passes="PASSES")
