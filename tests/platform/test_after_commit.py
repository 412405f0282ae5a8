"""Follow-up messages leave only after the outermost COMMIT, for both brokers."""

from __future__ import annotations

import psycopg
import pytest

from lapse.platform import after_commit
from lapse.platform.after_commit import (
    NoTransaction,
    SendAfterCommitFailed,
    send_after_commit,
    transaction,
)
from tests.conftest import eventually


def test_sent_after_commit(pool, sent):
    with pool.connection() as conn:
        with transaction(conn):
            send_after_commit(conn, "tag_recordings", 7)
            assert sent == []
        assert [(m.actor_name, m.args) for m in sent] == [("tag_recordings", (7,))]


def test_nothing_sent_on_rollback(pool, sent):
    with pool.connection() as conn:
        with pytest.raises(RuntimeError), transaction(conn):
            send_after_commit(conn, "tag_recordings", 7)
            raise RuntimeError("the work failed")
    assert sent == []


def test_a_dry_run_rolls_back_and_sends_nothing(pool, sent):
    with pool.connection() as conn:
        with transaction(conn, dry_run=True):
            conn.execute("insert into users (telegram_id) values (4242)")
            send_after_commit(conn, "tag_recordings", 7)
        assert conn.execute("select count(*) as n from users").fetchone()["n"] == 0
        conn.rollback()
        with transaction(conn):
            send_after_commit(conn, "tag_recordings", 8)
    assert [(m.actor_name, m.args) for m in sent] == [("tag_recordings", (8,))]


def test_nothing_sent_when_commit_itself_fails(pool, sent):
    with pool.connection() as conn:
        with pytest.raises(psycopg.errors.CheckViolation), transaction(conn):
            # balance changed without its ledger row: the deferred check fails at COMMIT
            conn.execute("insert into users (balance) values (100)")
            send_after_commit(conn, "tag_recordings", 7)
    assert sent == []


def test_nested_unit_rolled_back_drops_only_its_messages(pool, sent):
    with pool.connection() as conn:
        with transaction(conn):
            send_after_commit(conn, "tag_recordings", 1)
            with pytest.raises(ValueError), transaction(conn):
                send_after_commit(conn, "tag_recordings", 2)
                raise ValueError
            with transaction(conn):
                send_after_commit(conn, "restore_recordings", 3)
            assert sent == []
    assert [m.args for m in sent] == [(1,), (3,)]


def test_refused_outside_a_transaction(pool, sent):
    with pool.connection() as conn, pytest.raises(NoTransaction):
        send_after_commit(conn, "tag_recordings", 1)


def test_refused_inside_a_transaction_it_does_not_own(pool, sent):
    with pool.connection() as conn, conn.transaction(), pytest.raises(NoTransaction):
        with transaction(conn):
            pass


def test_a_failed_send_after_commit_is_reported_not_swallowed(pool):
    def broken(message):
        raise ConnectionError("broker down")

    after_commit.install_sender(broken)
    try:
        with pool.connection() as conn:
            with pytest.raises(SendAfterCommitFailed), transaction(conn):
                conn.execute("insert into users (telegram_id) values (1)")
                send_after_commit(conn, "tag_recordings", 1)
            assert conn.execute("select count(*) as n from users").fetchone()["n"] == 1
    finally:
        after_commit.install_sender(None)


def _real_broker_round_trip(pool, broker, queued_count):
    """The real broker has the message only after COMMIT, and nothing after a rollback."""
    import dramatiq

    actor = dramatiq.actor(lambda user_id: None, actor_name="after_commit_probe",
                           queue_name="after_commit_probe", broker=broker)

    def sender(message):
        actor.send_with_options(args=message.args)

    after_commit.install_sender(sender)
    try:
        with pool.connection() as conn:
            with pytest.raises(RuntimeError), transaction(conn):
                send_after_commit(conn, "after_commit_probe", 1)
                raise RuntimeError
            assert queued_count() == 0
            with transaction(conn):
                send_after_commit(conn, "after_commit_probe", 2)
                assert queued_count() == 0
            assert queued_count() == 1
    finally:
        after_commit.install_sender(None)


def test_postgres_broker_gets_the_message_only_after_commit(pool, database):
    from lapse.platform.brokers import LapsePostgresBroker

    broker = LapsePostgresBroker(url=database, results=False)
    try:
        def queued():
            with pool.connection() as c:
                return c.execute("select count(*) as n from dramatiq.queue "
                                 "where queue_name = 'after_commit_probe'").fetchone()["n"]
        _real_broker_round_trip(pool, broker, queued)
    finally:
        broker.close()


@pytest.mark.redis
def test_redis_broker_gets_the_message_only_after_commit(pool, clean_redis):
    from lapse.platform.brokers import LapseRedisBroker
    from tests.conftest import REDIS_NAMESPACE

    broker = LapseRedisBroker(url=clean_redis, namespace=REDIS_NAMESPACE)
    _real_broker_round_trip(pool, broker,
                            lambda: broker.client.llen(f"{REDIS_NAMESPACE}:after_commit_probe"))


def _probe_together(broker, pool, monkeypatch):
    """Three messages of one commit through the default sender: two now, one delayed a minute."""
    import dramatiq

    from lapse.platform import brokers

    dramatiq.actor(lambda n: None, actor_name="after_commit_probe",
                   queue_name="after_commit_probe", broker=broker)
    monkeypatch.setattr(brokers, "broker", broker)
    with pool.connection() as conn, transaction(conn):
        send_after_commit(conn, "after_commit_probe", 1)
        send_after_commit(conn, "after_commit_probe", 2)
        send_after_commit(conn, "after_commit_probe", 3, delay_ms=60_000)


def test_the_messages_of_one_commit_are_one_postgres_transaction(pool, database, monkeypatch):
    from lapse.platform.brokers import LapsePostgresBroker

    broker = LapsePostgresBroker(url=database, results=False)
    try:
        _probe_together(broker, pool, monkeypatch)
        with pool.connection() as conn:
            rows = conn.execute(
                "select queue_name, message->'args' as args, available_at > now() as later, "
                "xmin::text as xmin from dramatiq.queue order by queue_name, message->'args'"
            ).fetchall()
    finally:
        broker.close()
    assert [(r["queue_name"], r["args"], r["later"]) for r in rows] == [
        ("after_commit_probe", [1], False), ("after_commit_probe", [2], False),
        ("after_commit_probe.DQ", [3], True)]
    assert len({r["xmin"] for r in rows}) == 1  # one transaction: one commit, not three


@pytest.mark.redis
def test_the_messages_of_one_commit_are_one_redis_round_trip(pool, clean_redis, monkeypatch):
    from dramatiq.message import Message

    from lapse.platform.brokers import LapseRedisBroker
    from tests.conftest import REDIS_NAMESPACE

    broker = LapseRedisBroker(url=clean_redis, namespace=REDIS_NAMESPACE)
    direct: list[tuple[object, ...]] = []
    execute_command = broker.client.execute_command

    def counted(*args, **options):
        direct.append(args)
        return execute_command(*args, **options)

    broker.client.script_load(broker.scripts["dispatch"].script)  # loaded, as after a first send
    monkeypatch.setattr(broker.client, "execute_command", counted)
    _probe_together(broker, pool, monkeypatch)
    assert direct == []  # all three in one pipeline, none on its own

    def queued(queue):
        ids = broker.client.lrange(f"{REDIS_NAMESPACE}:{queue}", 0, -1)
        return [Message.decode(broker.client.hget(f"{REDIS_NAMESPACE}:{queue}.msgs", i))
                for i in ids]

    now, later = queued("after_commit_probe"), queued("after_commit_probe.DQ")
    assert [m.args for m in now] == [(1,), (2,)] and [m.args for m in later] == [(3,)]
    assert later[0].options["eta"] > now[0].message_timestamp + 50_000
    assert len({m.options["redis_message_id"] for m in now + later}) == 3


@pytest.mark.redis
def test_a_redis_that_lost_the_enqueue_script_still_gets_every_message(pool, clean_redis,
                                                                        monkeypatch):
    from lapse.platform.brokers import LapseRedisBroker
    from tests.conftest import REDIS_NAMESPACE

    broker = LapseRedisBroker(url=clean_redis, namespace=REDIS_NAMESPACE)
    broker.client.script_flush()  # a restarted Redis: no script loaded
    _probe_together(broker, pool, monkeypatch)
    assert broker.client.llen(f"{REDIS_NAMESPACE}:after_commit_probe") == 2
    assert broker.client.llen(f"{REDIS_NAMESPACE}:after_commit_probe.DQ") == 1


def test_a_failed_send_of_one_commits_messages_names_them_all(pool, monkeypatch):
    from dramatiq.brokers.stub import StubBroker

    broker = StubBroker()

    def down(items):
        raise ConnectionError("broker down")

    broker.enqueue_all = down  # type: ignore[attr-defined]
    with pytest.raises(SendAfterCommitFailed, match="after_commit_probe, after_commit_probe"):
        _probe_together(broker, pool, monkeypatch)


def test_a_postgres_enqueue_notifies_only_a_queue_with_nothing_claimable(pool, database):
    """The first message of a backlog wakes the idle consumers (NOTIFY); the ones behind it do
    not, and once the queue is empty again the next message notifies again."""
    import dramatiq

    from lapse.platform.brokers import LapsePostgresBroker

    broker = LapsePostgresBroker(url=database, results=False)
    actor = dramatiq.actor(lambda n: None, actor_name="after_commit_probe",
                           queue_name="after_commit_probe", broker=broker)
    listener = psycopg.connect(database, autocommit=True)
    listener.execute('listen "dramatiq.after_commit_probe.enqueue"')

    def notified():
        return len(list(listener.notifies(timeout=0.5, stop_after=3)))

    try:
        actor.send(1)
        assert notified() == 1
        actor.send(2)
        broker.enqueue_all([(actor.message(3), None), (actor.message(4), None)])
        assert notified() == 0  # behind a claimable message: nobody to wake
        with pool.connection() as conn:
            conn.execute("delete from dramatiq.queue")
        actor.send(5)
        assert notified() == 1
    finally:
        listener.close()
        broker.close()


def test_a_postgres_broker_connection_the_server_closed_is_replaced_at_checkout(pool, database):
    """The broker's pool checks a connection at checkout only when its socket holds something:
    one the server terminated while it sat in the pool is not handed out."""
    from lapse.platform.brokers import LapsePostgresBroker

    broker = LapsePostgresBroker(url=database, results=False)
    try:
        with broker.pool.connection() as conn:
            pid = conn.info.backend_pid
        with pool.connection() as conn:
            assert conn.execute("select pg_terminate_backend(%s) as done", (pid,)).fetchone()["done"]

        def gone():
            with pool.connection() as conn:
                return conn.execute("select 1 from pg_stat_activity where pid = %s",
                                    (pid,)).fetchone() is None

        eventually(gone, what=f"backend {pid} gone")
        with broker.pool.connection() as conn:
            assert conn.execute("select 1").fetchone() == (1,)
            assert conn.info.backend_pid != pid
    finally:
        broker.close()


def test_a_delayed_postgres_enqueue_returns_the_message_it_queued(database):
    import dramatiq

    from lapse.platform.brokers import LapsePostgresBroker

    broker = LapsePostgresBroker(url=database, results=False)
    try:
        actor = dramatiq.actor(lambda n: None, actor_name="after_commit_probe",
                               queue_name="after_commit_probe", broker=broker)
        sent = actor.send_with_options(args=(1,), delay=60_000)
    finally:
        broker.close()
    assert sent.queue_name == "after_commit_probe.DQ" and sent.options["eta"] > 0
