"""Two confirmations of one dry run at the same time act on each row once (threads, real database)."""

from __future__ import annotations

import threading
from typing import Any

import psycopg

from lapse.operator.web import bulk
from tests.conftest import eventually
from tests.operator import support


class MeetingBroker:
    """The stub broker, but each send waits until the other confirmation has caught up: it is
    sending too, waits on a row lock, or has finished. Without the row lock both send the
    same message; with it the second waits and then skips the row."""

    def __init__(self, broker: Any, url: str) -> None:
        self.broker, self.url = broker, url
        self.present, self.finished = 0, 0
        self.guard = threading.Lock()

    def lock_waiters(self) -> int:
        with psycopg.connect(self.url) as conn:
            row = conn.execute("select count(*) from pg_stat_activity where datname = "
                               "current_database() and wait_event_type = 'Lock'").fetchone()
        return int(row[0]) if row else 0

    def enqueue(self, message: Any, *, delay: int | None = None) -> Any:
        with self.guard:
            self.present += 1
        try:
            eventually(lambda: self.present >= 2 or self.finished or self.lock_waiters(),
                       timeout=30, interval=0.05, what="the other confirmation")
            return self.broker.enqueue(message, delay=delay)
        finally:
            with self.guard:
                self.present -= 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.broker, name)


def test_two_confirmations_of_one_dry_run_requeue_each_row_once(pool, database, world, stub_broker):
    flt = bulk.DeadFilter(error="PanelUnavailable")
    with pool.connection() as conn:
        counted = bulk.dry_run(conn, "requeue", flt)
    broker = MeetingBroker(stub_broker, database)
    results: list[bulk.BulkResult] = []
    errors: list[BaseException] = []

    def confirm() -> None:
        try:
            results.append(bulk.confirm(pool, broker, "requeue", flt, counted=counted.count,
                                        counted_max_id=counted.max_id or 0,
                                        counted_digest=counted.digest, client="race",
                                        now=support.NOW))
        except BaseException as error:  # reported by the main thread
            errors.append(error)
        finally:
            with broker.guard:
                broker.finished += 1

    threads = [threading.Thread(target=confirm) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert not errors and len(results) == 2
    acted = sorted(i for r in results for i in r.acted_ids)
    assert acted == world.dead_ids[:2]  # each row once, by one of the two
    assert stub_broker.queues["retention"].qsize() == 2
    assert [r.outcome for r in results] == ["done", "done"]
