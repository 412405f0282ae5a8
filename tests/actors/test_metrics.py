"""Prometheus metrics scraped over HTTP from a real ``dramatiq`` worker, on each broker.

The worker runs ``dramatiq actors … -f lapse.operator.metrics:serve_metrics``
with its own exposition port and multiprocess folder (so two test runs never
collide). While it tags a lapsed user's recordings, the domain counter and
Dramatiq's message counter move; messages waiting on a queue the worker does
not consume show in the queue-depth gauge exactly as the broker counts them.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
import redis
from dramatiq.message import Message
from psycopg.rows import dict_row

from lapse.platform.embedded import _free_port
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
from tests.support.processes import spawn, stop_process_groups

pytestmark = pytest.mark.slow

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/14"
BUCKET = "lapse-metrics-tests"
WAITING = 3


class Worker:
    def __init__(self, broker: str, url: str, port: int, folder: str, log: str) -> None:
        self.broker, self.url, self.port, self.folder = broker, url, port, folder
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        env.update({"DATABASE_URL": url, "LAPSE_BROKER": broker, "TZ": "UTC",
                    "PYTHONPATH": str(ROOT), "LAPSE_S3_BUCKET": BUCKET,
                    "LAPSE_METRICS_PORT": str(port), "LAPSE_METRICS_DIR": folder,
                    "LAPSE_HEARTBEAT_SECONDS": "1"})
        if broker == "redis":
            env["REDIS_URL"] = REDIS_URL
        bin_dir = os.path.dirname(sys.executable)
        self.process = spawn(
            [f"{bin_dir}/dramatiq", "actors", "tests.support.probe_actors", "--processes", "2",
             "--threads", "2", "--queues", "retention", "probe",
             "-f", "lapse.operator.metrics:serve_metrics"], env, log)

    def scrape(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=30).text

    def query(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        with psycopg.connect(self.url, row_factory=dict_row, autocommit=True) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def enqueue(self, queue: str, actor_name: str, *args: Any) -> None:
        from lapse.platform.brokers import LapsePostgresBroker, LapseRedisBroker

        broker = (LapseRedisBroker(url=REDIS_URL, namespace=REDIS_NAMESPACE)
                  if self.broker == "redis" else LapsePostgresBroker(url=self.url, results=False))
        try:
            broker.declare_queue(queue)
            broker.enqueue(Message(queue_name=queue, actor_name=actor_name, args=args, kwargs={},
                                   options={}))
        finally:
            if self.broker == "postgres":
                broker.close()

    def broker_count(self, queue: str) -> int:
        if self.broker == "redis":
            return int(redis.Redis.from_url(REDIS_URL).hlen(f"{REDIS_NAMESPACE}:{queue}.msgs"))
        return int(self.query("select count(*) as n from dramatiq.queue where queue_name = %s "
                              "and state <> 'rejected'", queue)[0]["n"])


def value(text: str, name: str, **labels: str) -> float | None:
    """The sample ``name{labels}`` of an exposition (labels in any order), or None."""
    for line in text.splitlines():
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return None


def total(text: str, name: str, **labels: str) -> float:
    """The sum of every sample of ``name`` matching ``labels`` (Dramatiq's are per pid)."""
    sum_ = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            sum_ += float(line.rsplit(" ", 1)[1])
    return sum_


@pytest.fixture(params=["postgres", "redis"])
def worker(request, tmp_path, s3_server) -> Iterator[Worker]:
    from lapse.ports.s3 import S3RecordingStore

    if request.param == "redis":
        try:
            delete_namespace(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2),
                             REDIS_NAMESPACE)
        except redis.RedisError:
            service_unavailable(f"Redis at {REDIS_URL} is unreachable; Redis metrics test skipped")
    S3RecordingStore(bucket=BUCKET, endpoint_url=s3_server.url, region="us-east-1").ensure_bucket()
    name = database_name(f"metrics_{request.param}")
    url = create_database(name)
    started = Worker(request.param, url, _free_port(), str(tmp_path / "prometheus"),
                     str(tmp_path / "worker.log"))
    try:
        yield started
    finally:
        stop_process_groups([started.process], grace=15)
        drop_database(name)
        if request.param == "redis":
            delete_namespace(redis.Redis.from_url(REDIS_URL), REDIS_NAMESPACE)


def _lapsed_user_with_audio(worker: Worker, s3_url: str) -> int:
    from lapse.ports.s3 import S3RecordingStore

    key = f"audio/{uuid.uuid4()}"
    S3RecordingStore(bucket=BUCKET, endpoint_url=s3_url, region="us-east-1").put(key, b"audio")
    [user] = worker.query("insert into users (created_at) values (now() - interval '9 days') "
                          "returning id")
    worker.query("insert into subscriptions (user_id, kind, status, started_at, expires_at, ended_at) "
                 "values (%s, 'trial', 'expired', now() - interval '5 days', "
                 "now() - interval '2 days', now() - interval '2 days')", user["id"])
    worker.query("insert into recordings (user_id, has_audio, audio_key, created_at) "
                 "values (%s, true, %s, now() - interval '4 days')", user["id"], key)
    return int(user["id"])


def test_metrics_move_during_an_actor_run_and_the_queue_gauge_matches_the_queue(worker, s3_server):
    before = eventually(lambda: _scrape_or_none(worker), timeout=60, what="the exposition server")
    assert value(before, "lapse_tagged_recordings_total") == 0.0
    assert value(before, "lapse_leaked_users") == 0.0

    user = _lapsed_user_with_audio(worker, s3_server.url)
    worker.enqueue("retention", "tag_recordings", user)
    for n in range(WAITING):  # nobody consumes "notifications" here
        worker.enqueue("notifications", "send_notification", n + 1)

    # The tag commits inside the actor; Dramatiq counts the message only after the actor
    # returns (after_process_message) and acks it after that (the Postgres queue holds the row,
    # consumed, until the ack deletes it): the scrape is taken once the queue is empty.
    def moved(text: str) -> bool:
        return (value(text, "lapse_tagged_recordings_total") == 1.0
                and total(text, "dramatiq_messages_total", actor_name="tag_recordings") >= 1.0)

    after = eventually(lambda: worker.broker_count("retention") == 0 and _when(worker, moved),
                       timeout=60,
                       what="the message acked, and the tagged-recordings counter and Dramatiq's count moved")
    assert value(after, "lapse_tagged_recordings_total") == 1.0
    assert worker.broker_count("notifications") == WAITING
    assert value(after, "lapse_queue_messages", queue="notifications", kind="ready") == WAITING
    assert value(after, "lapse_queue_oldest_message_age_seconds", queue="notifications",
                 kind="ready") > 0
    assert value(after, "lapse_queue_messages", queue="retention", kind="ready") == 0
    assert worker.query("select 1 from worker_heartbeats where stopped_at is null")
    assert value(after, "lapse_workers_stale") == 0.0
    assert value(after, "lapse_sweep_overdue", sweep="fast_expiry") == 1.0  # no scheduler here


def test_a_worker_killed_with_sigkill_shows_as_stale_in_lapse_status(worker):
    import json
    import signal

    from tests.support.cli import lapse

    eventually(lambda: len(worker.query("select 1 from worker_heartbeats where stopped_at is null"))
               == 2, timeout=60, what="both worker processes beating")
    os.killpg(worker.process.pid, signal.SIGKILL)
    worker.process.wait(10)
    env = {"DATABASE_URL": worker.url, "LAPSE_BROKER": worker.broker,
           "LAPSE_HEARTBEAT_STALE_SECONDS": "2"}
    if worker.broker == "redis":
        env["REDIS_URL"] = REDIS_URL

    def stale() -> list[str]:
        result = lapse("status", "--json", env=env)
        assert result.returncode in (0, 1), result.stderr
        return [f["subject"] for f in json.loads(result.stdout)["findings"]
                if f["kind"] == "worker_stale"]
    assert len(eventually(lambda: len(stale()) == 2 and stale(), timeout=60,
                          what="two stale workers")) == 2


def _scrape_or_none(worker: Worker) -> str | None:
    assert worker.process.poll() is None, "the dramatiq command exited; see worker.log"
    try:
        return worker.scrape()
    except httpx.HTTPError:
        return None


def _when(worker: Worker, ready: Any) -> str | None:
    text = _scrape_or_none(worker)
    return text if text is not None and ready(text) else None
