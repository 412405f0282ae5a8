"""The dead-letter archive with the stub broker: every dead path ends in ``dead_letters``."""

from __future__ import annotations

import dramatiq
import pytest
from dramatiq.message import Message
from dramatiq.middleware import CurrentMessage

import actors
from actors.declare import lapse_actor
from lapse.operator import dlq
from lapse.platform import clock
from tests.actors.conftest import dead_letters
from tests.conftest import eventually

RUNS: list[dict] = []
SHOULD_FAIL = {"on": True}


@lapse_actor(queue_name="probe", max_retries=2, min_backoff=10, max_backoff=20)
def probe_sometimes_fails(user_id: int) -> None:
    message = CurrentMessage.get_current_message()
    RUNS.append({"user_id": user_id, "retries": message.options.get("retries", 0)})
    if SHOULD_FAIL["on"]:
        raise RuntimeError(f"probe failure for user {user_id}")


def archived(pool, count=1):
    """The archive rows, once ``count`` of them are there (after_nack runs after join returns)."""
    return eventually(lambda: (rows := dead_letters(pool)) and len(rows) >= count and rows,
                      timeout=10, what=f"{count} dead letter(s)")


@pytest.fixture(autouse=True)
def reset_probe():
    RUNS.clear()
    SHOULD_FAIL["on"] = True


def test_an_always_failing_actor_is_archived_after_its_retries(stub_worker, pool):
    broker, _ = stub_worker
    probe_sometimes_fails.send(42)
    broker.join("probe", fail_fast=False)
    assert [r["retries"] for r in RUNS] == [0, 1, 2]
    [row] = archived(pool)
    assert row["actor_name"] == "probe_sometimes_fails" and row["reason"] == "retries_exhausted"
    assert row["user_id"] == 42 and row["args"] == [42]
    assert "probe failure for user 42" in row["traceback"]
    assert row["first_failed_at"] <= row["last_failed_at"]


def test_requeue_runs_it_again_with_retries_reset_and_the_same_message_id(stub_worker, pool):
    broker, _ = stub_worker
    sent = probe_sometimes_fails.send(7)
    broker.join("probe", fail_fast=False)
    [row] = archived(pool)
    SHOULD_FAIL["on"] = False
    RUNS.clear()
    with pool.connection() as conn:
        again = dlq.requeue(conn, broker, row["id"], now=clock.now())
    broker.join("probe", fail_fast=False)
    assert again.message_id == sent.message_id
    assert RUNS == [{"user_id": 7, "retries": 0}]
    [after] = dead_letters(pool)
    assert after["requeued_at"] is not None
    with pool.connection() as conn:
        assert dlq.list_dead(conn) == []
        assert len(dlq.list_dead(conn, include_requeued=True)) == 1


def test_purge_removes_the_archived_message(stub_worker, pool):
    broker, _ = stub_worker
    probe_sometimes_fails.send(8)
    broker.join("probe", fail_fast=False)
    [row] = archived(pool)
    with pool.connection() as conn:
        dlq.purge(conn, broker, row["id"])
    assert dead_letters(pool) == []


@pytest.mark.parametrize(("args", "kwargs", "problem"), [
    (("42",), {}, "user_id must be an integer"),
    ((0,), {}, "user_id must be positive"),
    ((True,), {}, "user_id must be an integer"),
    ((1, 2), {}, "too many positional arguments"),
    ((), {}, "missing a required argument"),
    ((1,), {"user": 1}, "unexpected keyword argument"),
])
def test_wrong_arguments_go_to_the_archive_at_once(stub_worker, pool, args, kwargs, problem):
    broker, _ = stub_worker
    actors.retention.tag_recordings.send_with_options(args=args, kwargs=kwargs)
    broker.join("retention", fail_fast=False)
    [row] = archived(pool)
    assert row["reason"] == "invalid_arguments"
    assert problem in row["exception"]
    assert "retries" not in (row["options"] or {})


def test_enum_and_amount_validation_of_finalize_purchase(stub_worker, pool):
    broker, _ = stub_worker
    finalize = actors.money.finalize_purchase
    finalize.send(1, "paypal", "p-1", 100, "USD")
    finalize.send(1, "crypto", "p-2", -5, "USD")
    finalize.send(1, "crypto", "p-3", 100, "dollars")
    broker.join("payments", fail_fast=False)
    problems = sorted(r["exception"] for r in archived(pool, 3))
    assert len(problems) == 3
    assert any("provider must be one of" in p for p in problems)
    assert any("amount must be positive" in p for p in problems)
    assert any("currency must be a currency code" in p for p in problems)


def test_a_message_for_an_unknown_actor_is_archived(stub_worker, pool):
    broker, _ = stub_worker
    broker.declare_queue("probe")
    broker.enqueue(Message(queue_name="probe", actor_name="no_such_actor", args=(1,),
                           kwargs={}, options={}))
    broker.join("probe", fail_fast=False)
    [row] = archived(pool)
    assert row["reason"] == "unknown_actor" and row["actor_name"] == "no_such_actor"


def test_a_message_past_its_age_limit_is_archived(stub_worker, pool):
    broker, _ = stub_worker
    message = probe_sometimes_fails.message_with_options(args=(3,), max_age=1)
    broker.enqueue(message.copy(message_timestamp=message.message_timestamp - 60_000))
    broker.join("probe", fail_fast=False)
    [row] = archived(pool)
    assert row["reason"] == "age_limit" and RUNS == []


def test_every_spec_actor_is_registered():
    names = set(actors.broker.actors)
    expected = {"tag_recordings", "restore_recordings", "activate_subscription",
                "finalize_purchase", "send_notification", "send_broadcast"} | {
        f"sweep_{n}" for n in ("lapses", "retention", "purge", "auto_renewals", "fast_expiry",
                               "activations", "trial_notifications", "reconcile",
                               "crypto_payments", "reminders", "outbox")}
    assert expected <= names
    assert all(isinstance(actors.broker.get_actor(n), dramatiq.Actor) for n in expected)
