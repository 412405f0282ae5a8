"""STYLE rule 12 for key removal and reconcile: delete each guard once and watch its test fail.

``python -m tests.support.key_guards [N ...]`` (tests/support/guard_runner.py).
"""

import sys

from tests.support.guard_runner import run

R = "lapse/flows/reconcile.py"
K = "lapse/flows/key_removal.py"
TR = "tests/actors/test_reconcile.py::"
TK = "tests/actors/test_key_removal.py::"
M = [
 ("reconcile lists the panel before reading the database", R,
  "        listed = port.list_emails()  # the panel first, then the database\n",
  "        early = read_current_keys(pool)\n        listed = port.list_emails()  # the panel first, then the database\n",
  TR + "test_list_first_alone_keeps_a_key_activated_after_the_list"),
 ("(the same, the read moved) ", R,
  "    current = read_current_keys(pool)\n", "    current = early\n",
  TR + "test_list_first_alone_keeps_a_key_activated_after_the_list"),
 ("reconcile re-checks each candidate before acting", R,
  '        if kind != "drain" and not _still_needed(pool, key, kind):  # re-checked right before\n',
  '        if False:\n',
  TR + "test_the_recheck_alone_keeps_a_key_activated_after_the_database_was_read"),
 ("reconcile touches only comment = lapse", R,
  "    on_panel = {email for email, comment in listed if comment == COMMENT}  # never a foreign client\n",
  "    on_panel = {email for email, comment in listed}  # never a foreign client\n",
  TR + "test_a_client_without_comment_lapse_is_never_touched"),
 ("reconcile skips a panel it cannot list", R,
  "    except LapseError as error:\n        logger.warning(\"reconcile: panel %s skipped",
  "    except LapseError as error:\n        listed = []\n    if False:\n        logger.warning(\"reconcile: panel %s skipped",
  TR + "test_a_panel_that_cannot_be_listed_is_skipped_and_reported_never_taken_as_empty"),
 ("reconcile skips a login-refused panel", R,
  "    if panel.login_refused:\n        counts[\"skipped_login_refused\"] += 1\n        return counts\n",
  "",
  "tests/actors/test_activation.py::"
  "test_a_panel_marked_login_refused_gets_no_request_until_lapse_panel_check"),
 ("provision_client skips a login-refused panel", "domain/activation.py",
  "    if not panel.enabled or panel.login_refused:\n",
  "    if not panel.enabled:\n",
  "tests/actors/test_activation.py::"
  "test_a_panel_marked_login_refused_gets_no_request_until_lapse_panel_check"),
 ("reconcile adds no pending key", R,
  'if status != "pending" and k not in on_panel)', "if k not in on_panel)",
  TR + "test_a_pending_key_is_left_to_activation_even_without_the_recheck"),
 ("remove_client checks the key is not current before the first panel", K,
  "        if current if number == 0 else _is_current(pool, access_key):\n",
  "        if False if number == 0 else _is_current(pool, access_key):\n",
  TK + "test_remove_client_leaves_a_key_that_is_current_again"),
 ("remove_client re-checks the key before every later panel", K,
  "        if current if number == 0 else _is_current(pool, access_key):\n",
  "        if current if number == 0 else False:\n",
  TK + "test_a_key_that_is_current_again_after_the_first_panel_is_not_removed_from_the_next"),
 ("remove_client skips a login-refused panel", K,
  "    if panel.login_refused:\n        return \"skipped_login_refused\"\n", "",
  TK + "test_a_login_refused_panel_is_skipped_and_the_others_are_cleared"),
 ("remove_client retries a failed panel", K,
  "    if failed:\n        raise KeyRemovalIncomplete(access_key, failed)\n", "",
  TK + "test_a_panel_answering_malformed_json_is_a_clear_retryable_error_and_nothing_changes"),
 ("remove_client refuses a key that is no UUID", "actors/keys.py",
  "        key = str(uuid.UUID(access_key))\n    except ValueError:\n",
  "        key = access_key\n    except ValueError:\n",
  TK + "test_remove_client_refuses_a_key_that_is_no_uuid_before_any_database_or_panel_call"),
 ("every move to expired marks the key removing", "domain/lifecycle.py",
  "        keys.mark_removing(conn, access_key, now=now)\n", "",
  TK + "test_every_move_to_expired_sends_remove_client"),
 ("every move to expired sends remove_client", "domain/lifecycle.py",
  '        send_after_commit(conn, "remove_client", str(access_key))\n', "",
  TK + "test_an_expiry_nulls_the_key_marks_it_removing_and_remove_client_takes_it_off_every_panel"),
 ("no remove_client at all: one reconcile alone must still clean up (expected to PASS)",
  "domain/lifecycle.py", '        send_after_commit(conn, "remove_client", str(access_key))\n', "",
  TK + "test_fast_expiry_racing_a_purchase_never_leaves_a_current_key_off_or_an_expired_key_on"),
 ("reconcile removes orphans (the race test catches an expired key left on)", R,
  '                port.remove_client(key)\n', '                pass\n',
  TK + "test_fast_expiry_racing_a_purchase_never_leaves_a_current_key_off_or_an_expired_key_on"),
 ("reconcile adds the current keys a panel lacks (B back after its outage)", R,
  '    counts += _act(pool, port, panel, missing, "missing", now=now, dry_run=dry_run)\n', "",
  "tests/actors/test_activation.py::"
  "test_with_panel_b_down_every_row_activates_through_a_and_b_is_dead_lettered_per_key"),
 ("a late activation of a row that expired meanwhile removes what it added",
  "domain/activation.py",
  'return Finished("no_longer_pending", removed=_remove_if_not_current(\n'
  '            conn, claim.access_key, holding, now=now))',
  'return Finished("no_longer_pending")',
  "tests/domain/test_activation.py::"
  "test_a_late_activation_of_a_row_that_expired_meanwhile_leaves_no_client_behind"),
 ("activation marks active only where status = 'pending'", "domain/activation.py",
  '    if row["status"] != "pending":\n        return Finished("no_longer_pending"',
  '    if False:\n        return Finished("no_longer_pending"',
  "tests/domain/test_activation.py::"
  "test_a_late_activation_of_a_row_that_expired_meanwhile_leaves_no_client_behind"),
]


if __name__ == "__main__":
    run(M, sys.argv[1:], passes="PASSES")
