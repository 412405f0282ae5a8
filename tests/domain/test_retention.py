"""Retention decisions on a real database: the gate (R1), one open request per user (R2), retention_until."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain import retention
from domain.errors import UnknownUser
from lapse.platform.after_commit import transaction
from tests.support import factories as make

T = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
DAY, HOUR, GRACE = timedelta(days=1), timedelta(hours=1), timedelta(hours=72)


def test_at_most_one_open_tagging_request_per_user(pool, sent):
    with pool.connection() as conn:
        user = make.user(conn)
        conn.commit()
        for _ in range(3):
            with transaction(conn):
                retention.request_tagging(conn, user, now=T, reason="test")
        assert [(m.actor_name, m.args) for m in sent] == [("tag_recordings", (user,))]
        with transaction(conn):
            assert retention.decide_tagging(conn, user, now=T, billing_grace=GRACE,
                                            settle=HOUR).outcome == "nothing_to_tag"
        with transaction(conn):
            assert retention.request_tagging(conn, user, now=T, reason="again")
    assert len(sent) == 2


def test_a_grant_sends_restore_after_commit_and_nothing_on_rollback(pool, sent):
    from domain import lifecycle

    with pool.connection() as conn:
        user = make.user(conn)
        conn.commit()
        with pytest.raises(RuntimeError), transaction(conn):
            lifecycle.grant_sponsorship(conn, user, sponsor="school", now=T)
            raise RuntimeError("rolled back")
        assert sent == []
        with transaction(conn):
            lifecycle.grant_sponsorship(conn, user, sponsor="school", now=T)
    assert [(m.actor_name, m.args) for m in sent] == [("restore_recordings", (user,))]


def test_the_gate_says_why_and_keeps_no_key_when_refused(conn):
    user = make.user(conn)
    make.subscription(conn, user, kind="trial", started_at=T - 3 * DAY, expires_at=T)
    before = retention.record_session(conn, user, audio_key="a", now=T - make.SECOND,
                                      billing_grace=GRACE)
    at_end = retention.record_session(conn, user, audio_key="b", now=T, billing_grace=GRACE)
    assert before.store_audio and before.reason == "retention holds"
    assert not at_end.store_audio and at_end.reason == f"no retention: it ended at {T.isoformat()}"
    rows = conn.execute("select has_audio, audio_key from recordings where user_id = %s order by id",
                        (user,)).fetchall()
    assert rows == [{"has_audio": True, "audio_key": "a"}, {"has_audio": False, "audio_key": None}]
    with pytest.raises(UnknownUser):
        retention.record_session(conn, 987_654, audio_key="c", now=T, billing_grace=GRACE)


def test_retention_until_follows_a_chain_of_overlapping_sources(conn):
    user = make.user(conn)
    make.subscription(conn, user, kind="trial", started_at=T - DAY, expires_at=T + DAY)
    make.sponsorship(conn, user, granted_at=T + 12 * HOUR, revoked_at=T + 3 * DAY)
    state = retention.state(conn, user, now=T, billing_grace=GRACE)
    assert state.holds and state.holds_until == T + 3 * DAY
    make.sponsorship(conn, user, granted_at=T + 2 * DAY)
    assert retention.state(conn, user, now=T, billing_grace=GRACE).holds_until is None
    after = retention.state(conn, make.user(conn), now=T, billing_grace=GRACE)
    assert not after.holds and after.holds_until == T
