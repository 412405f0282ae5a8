"""Real worker and scheduler processes against each broker.

For each broker: one ``dramatiq actors`` worker and two ``periodiq actors
schedules`` schedulers. The tests check that undecodable messages are
archived without blocking the ones behind them, that a failing message ends
in the archive and the broker's dead copy is cleared by ``lapse dlq purge``,
and that two schedulers across at least two minute ticks run each sweep
exactly once per minute, end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
import redis
from dramatiq.message import Message
from psycopg.rows import dict_row

from tests.conftest import (
    REDIS_NAMESPACE,
    ROOT,
    create_database,
    database_name,
    delete_namespace,
    drop_database,
    eventually,
    service_unavailable,
)
from tests.support.cli import lapse
from tests.support.processes import spawn, stop_process_groups

pytestmark = pytest.mark.slow

BROKERS = ["postgres", "redis"]
REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/14"


@dataclass
class Stack:
    broker: str
    database: str
    url: str
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def query(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        with psycopg.connect(self.url, row_factory=dict_row, autocommit=True) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def enqueue(self, actor_name: str, *args: Any, queue: str = "probe") -> Message:
        from lapse.platform.brokers import LapsePostgresBroker, LapseRedisBroker

        broker = (LapseRedisBroker(url=REDIS_URL, namespace=REDIS_NAMESPACE) if self.broker == "redis"
                  else LapsePostgresBroker(url=self.url, results=False))
        try:
            broker.declare_queue(queue)
            return broker.enqueue(Message(queue_name=queue, actor_name=actor_name, args=args,
                                          kwargs={}, options={}))
        finally:
            if self.broker == "postgres":
                broker.close()

    def probe_runs(self) -> list[dict[str, Any]]:
        return self.query("select * from probe_runs")


PROCESS_BUCKET = "lapse-process-tests"


def _start(broker: str, tmp: str, s3_url: str) -> Stack:
    name = database_name(f"proc_{broker}")
    url = create_database(name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create table probe_runs (token text, retries int)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update({"DATABASE_URL": url, "LAPSE_BROKER": broker, "TZ": "UTC", "PYTHONPATH": str(ROOT),
                "LAPSE_LOG_LEVEL": "INFO", "LAPSE_S3_ENDPOINT_URL": s3_url,
                "LAPSE_S3_BUCKET": PROCESS_BUCKET})
    if broker == "redis":
        env["REDIS_URL"] = REDIS_URL
    stack = Stack(broker, name, url, env)
    bin_dir = os.path.dirname(sys.executable)
    stack.processes.append(spawn(
        [f"{bin_dir}/dramatiq", "actors", "tests.support.probe_actors", "--processes", "1",
         "--threads", "4"], env, f"{tmp}/{broker}-worker.log"))
    for n in (1, 2):
        stack.processes.append(spawn([f"{bin_dir}/periodiq", "actors", "schedules"], env,
                                     f"{tmp}/{broker}-scheduler{n}.log"))
    return stack


def _stop(stack: Stack) -> None:
    stop_process_groups(stack.processes, grace=15)
    drop_database(stack.database)


@pytest.fixture(scope="module")
def stacks(tmp_path_factory, s3_server) -> Iterator[dict[str, Stack]]:
    from lapse.ports.s3 import S3RecordingStore

    S3RecordingStore(bucket=PROCESS_BUCKET, endpoint_url=s3_server.url,
                     region="us-east-1").ensure_bucket()
    try:
        delete_namespace(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2), REDIS_NAMESPACE)
        brokers = BROKERS
    except redis.RedisError:
        brokers = ["postgres"]
    tmp = str(tmp_path_factory.mktemp("processes"))
    started = {broker: _start(broker, tmp, s3_server.url) for broker in brokers}
    yield started
    for stack in started.values():
        _stop(stack)


@pytest.fixture(params=BROKERS)
def stack(request, stacks) -> Stack:
    if request.param not in stacks:
        service_unavailable(f"Redis at {REDIS_URL} is unreachable; Redis worker tests skipped")
    return stacks[request.param]


def _push_garbage(stack: Stack) -> None:
    if stack.broker == "redis":
        client = redis.Redis.from_url(REDIS_URL)
        client.hset(f"{REDIS_NAMESPACE}:probe.msgs", "garbage-1", b"\x00this is not a message")
        client.rpush(f"{REDIS_NAMESPACE}:probe", "garbage-1")
    else:
        stack.query("insert into dramatiq.queue (message_id, queue_name, state, message) "
                    "values (gen_random_uuid(), 'probe', 'queued', %s::jsonb)",
                    json.dumps({"garbage": True}))


def test_undecodable_messages_are_archived_and_do_not_block_the_next_ten(stack):
    _push_garbage(stack)
    tokens = [f"good-{n}" for n in range(10)]
    for token in tokens:
        stack.enqueue("probe_record", token)
    eventually(lambda: len(stack.probe_runs()) >= 10, timeout=60, what="ten good messages")
    assert sorted(r["token"] for r in stack.probe_runs()) == sorted(tokens)
    [dead] = eventually(lambda: stack.query(
        "select * from dead_letters where reason = 'undecodable'"), timeout=30,
        what="the undecodable message in the archive")
    assert dead["queue_name"] == "probe"
    assert ("not a message" in dead["raw_body"]) if stack.broker == "redis" else (
        "garbage" in dead["raw_body"])


def _broker_copies(stack: Stack) -> int:
    if stack.broker == "redis":
        return int(redis.Redis.from_url(REDIS_URL).zcard(f"{REDIS_NAMESPACE}:probe.XQ"))
    return int(stack.query("select count(*) as n from dramatiq.queue where state = 'rejected' "
                           "and message->>'actor_name' = 'probe_fail'")[0]["n"])


def test_a_failing_message_is_archived_and_purge_clears_the_broker_copy(stack):
    token = f"fail-{uuid.uuid4().hex[:6]}"
    stack.enqueue("probe_fail", token)
    [dead] = eventually(lambda: stack.query(
        "select * from dead_letters where actor_name = 'probe_fail' and args->>0 = %s", token),
        timeout=60, what="the failing message in the archive")
    assert dead["reason"] == "retries_exhausted" and dead["broker"] == stack.broker
    assert f"probe_fail {token}" in dead["traceback"]
    eventually(lambda: _broker_copies(stack) >= 1, timeout=10, what="the broker's dead copy")
    before = _broker_copies(stack)

    requeued = lapse("dlq", "requeue", str(dead["id"]), env=stack.env)
    assert requeued.returncode == 0, requeued.stderr
    eventually(lambda: stack.query("select failures from dead_letters where id = %s",
                                   dead["id"])[0]["failures"] == 2, timeout=60,
               what="the requeued message to die again")
    assert _broker_copies(stack) == before

    listed = json.loads(lapse("dlq", "list", "--actor", "probe_fail", "--json",
                              env=stack.env).stdout)
    assert [row["id"] for row in listed] == [dead["id"]]
    purged = lapse("dlq", "purge", str(dead["id"]), env=stack.env)
    assert purged.returncode == 0, purged.stderr
    assert stack.query("select * from dead_letters where id = %s", dead["id"]) == []
    assert _broker_copies(stack) == before - 1


def test_two_schedulers_run_each_sweep_once_per_minute_across_two_ticks(stack):
    def minutes_done() -> list[dict[str, Any]]:
        return stack.query("select tick_minute from sweep_runs where sweep = 'fast_expiry' "
                           "and status = 'completed' order by tick_minute")

    eventually(lambda: len(minutes_done()) >= 2, timeout=150, interval=1,
               what="fast_expiry completed for two distinct minute ticks")
    runs = stack.query("select sweep, tick_minute, count(*) as n from sweep_runs "
                       "where tick_minute is not null group by 1, 2")
    assert runs and all(r["n"] == 1 for r in runs)
    ticks = stack.query("select sweep, minute, duplicates from sweep_ticks "
                        "where sweep = 'fast_expiry'")
    assert len(ticks) >= 2
    assert sum(t["duplicates"] for t in ticks) >= 1, "the second scheduler's ticks never arrived"
    every_minute = {r["tick_minute"] for r in minutes_done()}
    assert every_minute == {t["minute"] for t in ticks}


def test_a_real_worker_tags_a_lapsed_users_recordings_in_s3(stack, s3_server):
    from lapse.ports.s3 import S3RecordingStore

    store = S3RecordingStore(bucket=PROCESS_BUCKET, endpoint_url=s3_server.url, region="us-east-1")
    key = f"audio/{uuid.uuid4()}"
    store.put(key, b"audio")
    [user] = stack.query("insert into users (created_at) values (now() - interval '9 days') "
                         "returning id")
    stack.query("insert into subscriptions (user_id, kind, status, started_at, expires_at, ended_at) "
                "values (%s, 'trial', 'expired', now() - interval '5 days', "
                "now() - interval '2 days', now() - interval '2 days')", user["id"])
    stack.query("insert into recordings (user_id, has_audio, audio_key, created_at) "
                "values (%s, true, %s, now() - interval '4 days')", user["id"], key)
    stack.enqueue("tag_recordings", user["id"], queue="retention")
    eventually(lambda: stack.query("select 1 from tagging_batches where user_id = %s and "
                                   "state = 'applied'", user["id"]),
               timeout=30, what=f"the tagging batch applied by the {stack.broker} worker")
    assert store.inspect(key).tagged
    [row] = stack.query("select has_audio from recordings where audio_key = %s", key)
    assert row["has_audio"] is False
