"""SPEC §3's per-user lock: two transactions racing on one user end as some serial order would.

Real threads on real PostgreSQL. The tagging decision is held between its read
(retention does not hold) and its write (tag the recordings) until the other
transaction has either finished or is seen waiting for a lock in
``pg_locks``, so the race is deterministic: without the user lock the other
transaction commits inside the decision's gap, every time.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from domain import lifecycle, retention
from lapse.platform.after_commit import transaction
from tests.conftest import eventually
from tests.support import factories as make
from tests.support.factories import given

T = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
DAY, HOUR, GRACE = timedelta(days=1), timedelta(hours=1), timedelta(hours=72)

GRANTS = {
    "sponsorship": lambda conn, user: lifecycle.grant_sponsorship(conn, user, sponsor="school",
                                                                  now=T),
    "purchase": lambda conn, user: lifecycle.apply_plan(conn, user, "month", now=T),
}


def waiting_for_a_lock(pool, pid):
    with pool.connection() as conn:
        row = conn.execute("select count(*) as n from pg_locks where pid = %s and not granted",
                           (pid,)).fetchone()
        conn.rollback()
    return row["n"] > 0


@pytest.mark.parametrize("grant", list(GRANTS))
def test_a_grant_racing_a_tagging_decision_ends_as_a_serial_order_would(pool, sent, monkeypatch,
                                                                        grant):
    def build(conn):
        make.plan(conn)
        user = make.user(conn)
        make.subscription(conn, user, kind="trial", status="expired", started_at=T - 4 * DAY,
                          expires_at=T - DAY, ended_at=T - DAY)
        make.recording(conn, user, created_at=T - 2 * DAY)
        return user
    user = given(pool, build)
    read, go = threading.Event(), threading.Event()
    original_state = retention.state
    decider: dict[str, threading.Thread] = {}

    def state_then_pause(*args, **kwargs):
        found = original_state(*args, **kwargs)
        if threading.current_thread() is decider.get("thread"):
            read.set()  # the decision has read "not entitled" and has not tagged yet
            assert go.wait(30), "the test never let the decision go on"
        return found

    monkeypatch.setattr(retention, "state", state_then_pause)
    outcomes: dict[str, object] = {}

    def decide():
        with pool.connection() as conn, transaction(conn):
            outcomes["decision"] = retention.decide_tagging(conn, user, now=T, billing_grace=GRACE,
                                                            settle=HOUR).outcome

    def grant_then_restore():
        with pool.connection() as conn:
            outcomes["pid"] = conn.info.backend_pid
            with transaction(conn):
                GRANTS[grant](conn, user)
        # what the grant's restore_recordings does once delivered after commit
        with pool.connection() as conn, transaction(conn):
            outcomes["restore"] = retention.decide_restore(conn, user, now=T,
                                                           billing_grace=GRACE).outcome

    decider["thread"] = threading.Thread(target=decide)
    decider["thread"].start()
    assert read.wait(30)
    granter = threading.Thread(target=grant_then_restore)
    granter.start()
    eventually(lambda: not granter.is_alive()
               or ("pid" in outcomes and waiting_for_a_lock(pool, outcomes["pid"])),
               timeout=20, what="the grant to finish or to wait for the user lock")
    go.set()
    decider["thread"].join(30)
    granter.join(30)
    assert not decider["thread"].is_alive() and not granter.is_alive()

    with pool.connection() as conn:
        entitled = retention.state(conn, user, now=T, billing_grace=GRACE).holds
        [recording] = conn.execute("select has_audio from recordings where user_id = %s",
                                   (user,)).fetchall()
    # serial orders: tag then grant+restore (kept), or grant then nothing to tag (kept)
    assert entitled and recording["has_audio"], outcomes
    assert (outcomes["decision"], outcomes["restore"]) == ("tagged", "restored")
