"""STYLE rule 12 for the operator console: delete each guard once and watch its test fail.

``python -m tests.support.status_guards [N ...]`` (tests/support/guard_runner.py).
"""

import sys

from tests.support.guard_runner import run

S = "lapse/operator/status.py"
SS = "lapse/operator/sql/status.sql"
B = "lapse/platform/breaker.py"
T = "tests/platform/test_status.py::"
TB = "tests/platform/test_breaker_records.py::"
M = [
 ("a stopped worker is not stale", S,
  'stale = row["stopped_at"] is None and age > stale_after', "stale = age > stale_after",
  T + "test_a_stale_heartbeat_exits_1_and_a_stopped_worker_does_not"),
 ("new dead letters are those after --since", SS,
  "    count(*) filter (where requeued_at is null and last_failed_at >= %(since)s\n"
  "                        and last_failed_at <= %(now)s) as new",
  "    count(*) filter (where requeued_at is null) as new",
  T + "test_a_new_dead_letter_exits_1_until_it_is_older_than_since"),
 ("a stopped worker's breakers are not reported", S,
  '        if row["stopped_at"] is not None:\n            continue', "",
  T + "test_breakers_of_a_stopped_worker_or_long_gone_process_are_not_reported"),
 ("an open breaker of a process without heartbeat counts for an hour only", S,
  '        if not alive and report.now - row["changed_at"] > BREAKER_FRESH:\n            continue', "",
  T + "test_breakers_of_a_stopped_worker_or_long_gone_process_are_not_reported"),
 ("only a change of state is written", B,
  "        if before != after and recorder is not None:", "        if recorder is not None:",
  TB + "test_calls_that_change_nothing_write_nothing"),
 ("a late older write does not overwrite a newer state", "lapse/platform/sql/breaker.sql",
  "where breaker_states.changed_at <= excluded.changed_at", "",
  TB + "test_a_late_write_of_an_older_transition_does_not_overwrite_a_newer_state"),
 ("a failed write never fails the guarded call", B,
  "    except (psycopg.Error, PoolTimeout) as error:\n        # Observability",
  "    except ZeroDivisionError as error:\n        # Observability",
  TB + "test_an_unreachable_database_never_fails_the_guarded_call"),
 ("a running run's metrics folder is kept", "lapse/platform/metrics_setup.py",
  "if folder == keep or not pid.isdigit() or _alive(int(pid)):",
  "if folder == keep or not pid.isdigit():",
  "tests/platform/test_metrics_setup.py"),
 ("a sweep is overdue only past its cadence plus slack", S,
  "overdue = implemented and (lag is None or lag > allowed_lag(sweep.cron))",
  "overdue = implemented and (lag is None or lag > cadence(sweep.cron))",
  T + "test_an_overdue_sweep_exits_1"),
 ("only ready queues alarm on age", S,
  'if stat.kind == "ready" and stat.depth and age > limit:', "if stat.depth and age > limit:",
  T + "test_an_old_message_waiting_in_a_queue_needs_attention"),
 ("a lapse_ family in the worker files is not served twice", "lapse/operator/metrics.py",
  'if not metric.name.startswith("lapse_") or metric.name == "lapse_circuit_state":',
  "if True:",
  "tests/platform/test_metrics_setup.py"),
]


if __name__ == "__main__":
    run(M, sys.argv[1:], timeout=None, line="{i:2} {verdict}  {name}",
        pytest=["env", "-u", "DATABASE_URL", sys.executable, "-m", "pytest"])
