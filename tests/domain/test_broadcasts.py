"""Broadcasts (SPEC §6 A6) in the domain: the message, the audience, the keyset walk, cancel."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain import broadcasts
from domain.errors import BroadcastRefused, InvalidBroadcast, UnknownBroadcast
from lapse.platform.after_commit import transaction
from tests.support import factories

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def in_tx(pool: Any, fn: Any) -> Any:
    with pool.connection() as conn, transaction(conn):
        return fn(conn)


def created(pool: Any, **message: Any) -> int:
    return in_tx(pool, lambda c: broadcasts.create(c, now=NOW, **(message or {"texts": {"en": "Hi"}})))


def started(pool: Any, **message: Any) -> int:
    broadcast_id = created(pool, **message)
    in_tx(pool, lambda c: broadcasts.start(c, broadcast_id, now=NOW))
    return broadcast_id


def step(pool: Any, broadcast_id: int, *, batch_size: int = 3, backlog: int = 100) -> broadcasts.Step:
    return in_tx(pool, lambda c: broadcasts.queue_next_batch(
        c, broadcast_id, now=NOW, batch_size=batch_size, backlog=backlog))


def rows(pool: Any, broadcast_id: int) -> list[dict[str, Any]]:
    with pool.connection() as conn:
        return conn.execute("select * from notifications where broadcast_id = %s order by user_id",
                            (broadcast_id,)).fetchall()


def population(pool: Any) -> dict[str, list[int]]:
    """Audience: no subscription, or one that ended; not: a current one, no Telegram chat."""
    def build(conn: Any) -> dict[str, list[int]]:
        free = [factories.user(conn, telegram_id=1000 + n) for n in range(7)]
        ended = factories.user(conn, telegram_id=2000)
        factories.subscription(conn, ended, status="expired", started_at=NOW - timedelta(days=60),
                               expires_at=NOW - timedelta(days=30), ended_at=NOW - timedelta(days=30))
        paying = []
        for n, status in enumerate(("active", "grace", "cancelled", "pending")):
            paying.append(factories.user(conn, telegram_id=3000 + n))
            factories.subscription(conn, paying[-1], status=status, started_at=NOW - timedelta(days=1),
                                   expires_at=NOW + timedelta(days=29))
        no_chat = factories.user(conn)
        blocked = factories.user(conn, telegram_id=4000)
        conn.execute("update users set unreachable_at = %s, unreachable_reason = 'blocked' "
                     "where id = %s", (NOW - timedelta(days=2), blocked))
        return {"audience": sorted([*free, ended]), "outside": [*paying, no_chat, blocked]}
    return factories.given(pool, build)


@pytest.mark.parametrize(("message", "problem"), [
    ({"texts": {"ru": "Привет"}}, "English text is required"),
    ({"texts": {"en": "  \n"}}, "en text is empty"),
    ({"texts": {"en": "x" * 4097}}, "at most 4096"),
    ({"texts": {"en": "Hi", "EN-gb": "Hi"}}, "language 'EN-gb'"),
    ({"template": "no_such_template"}, "no template 'no_such_template'"),
    ({"template": "../etc/passwd"}, "use a-z, 0-9 and _"),
    ({"texts": {"en": "Hi"}, "template": "broadcast"}, "not both or neither"),
    ({}, "not both or neither"),
])
def test_a_message_lapse_cannot_send_is_refused_and_nothing_is_stored(pool, message, problem):
    with pytest.raises(InvalidBroadcast, match=problem), pool.connection() as conn, \
            transaction(conn):
        broadcasts.create(conn, now=NOW, **message)
    with pool.connection() as conn:
        assert conn.execute("select count(*) as n from broadcasts").fetchone()["n"] == 0


def test_the_walk_queues_each_audience_user_once_page_by_page(pool, sent):
    people = population(pool)
    broadcast_id = started(pool)
    assert [m.actor_name for m in sent] == ["send_broadcast"]
    outcomes = [step(pool, broadcast_id, batch_size=3) for _ in range(4)]
    assert [(s.outcome, s.queued) for s in outcomes] == [
        ("queued", 3), ("queued", 3), ("queued", 2), ("walked", 0)]
    queued = rows(pool, broadcast_id)
    assert [r["user_id"] for r in queued] == people["audience"]
    assert {r["kind"] for r in queued} == {"broadcast"}
    assert {r["payload"]["broadcast_id"] for r in queued} == {broadcast_id}
    notices = [m.args[0] for m in sent if m.actor_name == "send_notification"]
    assert sorted(notices) == sorted(r["id"] for r in queued)  # one send per row, none twice
    with pool.connection() as conn:
        row = conn.execute("select * from broadcasts where id = %s", (broadcast_id,)).fetchone()
    assert row["cursor_user_id"] == people["audience"][-1] and row["walked_at"] == NOW
    assert row["queued"] == len(people["audience"])


def test_a_user_who_subscribes_before_the_walk_reaches_them_is_not_queued(pool, sent):
    people = population(pool)
    broadcast_id = started(pool)
    step(pool, broadcast_id, batch_size=3)
    late = people["audience"][-1]
    factories.given(pool, lambda c: factories.subscription(
        c, late, started_at=NOW, expires_at=NOW + timedelta(days=30)))
    while step(pool, broadcast_id).outcome == "queued":
        pass
    assert late not in [r["user_id"] for r in rows(pool, broadcast_id)]


def test_the_backlog_holds_the_walk_until_outcomes_arrive(pool, sent):
    population(pool)
    broadcast_id = started(pool)
    assert step(pool, broadcast_id, batch_size=10, backlog=4).queued == 4
    held = step(pool, broadcast_id, batch_size=10, backlog=4)
    assert (held.outcome, held.queued, held.outstanding) == ("backlog", 0, 4)
    with pool.connection() as conn:
        conn.execute("update notifications set status = 'sent' where broadcast_id = %s "
                     "and id in (select id from notifications where broadcast_id = %s "
                     "order by id limit 3)", (broadcast_id, broadcast_id))
        conn.commit()
    assert step(pool, broadcast_id, batch_size=10, backlog=4).queued == 3


def test_it_is_done_once_walked_and_every_row_has_an_outcome(pool, sent):
    population(pool)
    broadcast_id = started(pool)
    while step(pool, broadcast_id, batch_size=100).outcome == "queued":
        pass
    assert step(pool, broadcast_id).outcome == "walked"
    with pool.connection() as conn:
        conn.execute("update notifications set status = 'sent' where broadcast_id = %s",
                     (broadcast_id,))
        conn.commit()
    assert step(pool, broadcast_id).outcome == "done"
    with pool.connection() as conn:
        found = broadcasts.progress(conn, broadcast_id)
    assert (found.status, found.remaining, found.counts["sent"], found.done_fraction) == (
        "done", 0, 8, 1.0)


@pytest.mark.parametrize("unique_rows", [True, False], ids=["with-unique-rows", "lock-alone"])
def test_two_walkers_at_once_queue_nobody_twice(pool, sent, unique_rows):
    """The walk is serialised on the broadcast row; each step sees the cursor the last one wrote.
    Without the unique rows (the other guard) the lock alone must still hold."""
    factories.given(pool, lambda c: [factories.user(c, telegram_id=5000 + n) for n in range(60)])
    if not unique_rows:
        with pool.connection() as conn:
            conn.execute("drop index notifications_one_per_broadcast_user")
            conn.execute("alter table notifications drop constraint notifications_once")
            conn.commit()
    broadcast_id = started(pool)
    barrier = threading.Barrier(4)

    def walker() -> None:
        barrier.wait()
        while step(pool, broadcast_id, batch_size=2, backlog=1000).outcome == "queued":
            pass

    threads = [threading.Thread(target=walker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    users = [r["user_id"] for r in rows(pool, broadcast_id)]
    assert len(users) == len(set(users)) == 60
    notices = [m.args[0] for m in sent if m.actor_name == "send_notification"]
    assert len(notices) == len(set(notices)) == 60


def test_a_walk_restarted_from_an_old_cursor_queues_nobody_twice(pool, sent):
    """The unique (broadcast, user) rows alone: a cursor that went back re-reads users, queues none."""
    people = population(pool)
    broadcast_id = started(pool)
    while step(pool, broadcast_id, batch_size=3).outcome == "queued":
        pass
    with pool.connection() as conn:
        conn.execute("update broadcasts set cursor_user_id = 0, walked_at = null where id = %s",
                     (broadcast_id,))
        conn.commit()
    before = len(sent)
    again = [step(pool, broadcast_id, batch_size=3) for _ in range(3)]
    assert [s.queued for s in again] == [0, 0, 0]
    assert len(sent) == before
    assert [r["user_id"] for r in rows(pool, broadcast_id)] == people["audience"]


def test_cancel_skips_unclaimed_rows_leaves_claimed_ones_and_stops_the_walk(pool, sent):
    population(pool)
    broadcast_id = started(pool)
    step(pool, broadcast_id, batch_size=4)
    with pool.connection() as conn:
        claimed = conn.execute("update notifications set status = 'sending', claimed_at = %s "
                               "where id = (select min(id) from notifications where "
                               "broadcast_id = %s) returning id", (NOW, broadcast_id)).fetchone()
        conn.commit()
    assert in_tx(pool, lambda c: broadcasts.cancel(c, broadcast_id, now=NOW)) == 3
    statuses = {r["id"]: r["status"] for r in rows(pool, broadcast_id)}
    assert statuses.pop(claimed["id"]) == "sending"
    assert set(statuses.values()) == {"skipped"}
    assert step(pool, broadcast_id).outcome == "cancelled"
    assert len(rows(pool, broadcast_id)) == 4
    with pool.connection() as conn:
        found = broadcasts.progress(conn, broadcast_id)
    assert (found.status, found.counts["skipped"], found.remaining) == ("cancelled", 3, 1)


def test_start_and_cancel_refuse_what_their_state_does_not_allow(pool, sent):
    broadcast_id = started(pool)
    assert in_tx(pool, lambda c: broadcasts.start(c, broadcast_id, now=NOW)) == "resumed"
    in_tx(pool, lambda c: broadcasts.cancel(c, broadcast_id, now=NOW))
    for action in (broadcasts.start, broadcasts.cancel):
        with pytest.raises(BroadcastRefused, match=f"broadcast {broadcast_id} is cancelled"):
            in_tx(pool, lambda c, act=action: act(c, broadcast_id, now=NOW))
    with pytest.raises(UnknownBroadcast):
        in_tx(pool, lambda c: broadcasts.start(c, 999, now=NOW))


def test_progress_counts_the_audience_not_yet_walked(pool, sent):
    population(pool)
    broadcast_id = started(pool)
    with pool.connection() as conn:
        before = broadcasts.progress(conn, broadcast_id)
    step(pool, broadcast_id, batch_size=3)
    with pool.connection() as conn:
        during = broadcasts.progress(conn, broadcast_id)
    assert (before.remaining, before.done_fraction) == (8, 0.0)
    assert (during.queued, during.not_yet_queued, during.remaining) == (3, 5, 8)


def test_the_text_follows_the_language_with_english_as_fallback(pool):
    broadcast_id = created(pool, texts={"en": "Hello", "ru": "Привет"})
    payload = {"broadcast_id": broadcast_id}
    with pool.connection() as conn:
        assert broadcasts.notice_values(conn, payload, "ru") == {"text": "Привет"}
        assert broadcasts.notice_values(conn, payload, "de") == {"text": "Hello"}


def test_a_template_broadcast_names_its_template_in_each_payload(pool, sent):
    population(pool)
    broadcast_id = started(pool, template="broadcast_winback")
    step(pool, broadcast_id)
    payloads = [r["payload"] for r in rows(pool, broadcast_id)]
    assert payloads == [{"broadcast_id": broadcast_id, "template": "broadcast_winback"}] * 3
    with pool.connection() as conn:
        assert broadcasts.notice_values(conn, payloads[0], "ru") == {}


def test_the_send_time_recheck_skips_a_user_who_subscribed_or_a_cancelled_broadcast(pool, sent):
    people = population(pool)
    broadcast_id = started(pool)
    payload = {"broadcast_id": broadcast_id}
    free, paying = people["audience"][0], people["outside"][0]
    with pool.connection() as conn:
        assert broadcasts.stale_reason(conn, free, payload) is None
        assert "current subscription now" in broadcasts.stale_reason(conn, paying, payload)
    in_tx(pool, lambda c: broadcasts.cancel(c, broadcast_id, now=NOW))
    with pool.connection() as conn:
        assert broadcasts.stale_reason(conn, free, payload) == "the broadcast was cancelled"
