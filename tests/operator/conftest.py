from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.operator import support
from tests.support.factories import given


@pytest.fixture
def world(pool) -> support.World:
    return given(pool, support.build)


@pytest.fixture
def stub_broker() -> Iterator[Any]:
    import actors

    actors.broker.flush_all()
    yield actors.broker
    actors.broker.flush_all()


def console_client(pool, broker, token: str | None) -> Any:
    from starlette.testclient import TestClient

    from lapse.operator.web.app import create_app

    app = create_app(pool, support.config(token), broker=lambda: broker, now=lambda: support.NOW)
    return TestClient(app)


@pytest.fixture
def client(pool, world, stub_broker) -> Iterator[Any]:
    """The console with LAPSE_WEB_TOKEN set."""
    with console_client(pool, stub_broker, support.TOKEN) as test_client:
        yield test_client


@pytest.fixture
def readonly(pool, world, stub_broker) -> Iterator[Any]:
    """The console without a token."""
    with console_client(pool, stub_broker, None) as test_client:
        yield test_client
