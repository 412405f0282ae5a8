from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest

from tests.support.outbox import bot  # noqa: F401  (a fixture: the fake Bot API as Telegram)


@pytest.fixture
def stub_worker(pool) -> Iterator[tuple[Any, Any]]:
    """The stub broker Lapse configured (LAPSE_BROKER=stub) with a running worker."""
    import actors

    broker = actors.broker
    broker.flush_all()
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=2)
    worker.start()
    yield broker, worker
    worker.stop()
    broker.flush_all()


def dead_letters(pool) -> list[dict[str, Any]]:
    with pool.connection() as conn:
        return conn.execute("select * from dead_letters order by id").fetchall()


@pytest.fixture
def sim(pool, store) -> Iterator[Any]:
    """A simulated clock at T0 driving the real sweeps and actors on this test's database and bucket."""
    import actors
    from lapse.operator.simulation import Simulation
    from tests.actors.retention_support import T0

    simulation = Simulation(pool, store, actors.broker, T0)
    yield simulation
    simulation.close()
