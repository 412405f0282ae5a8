"""``lapse web``: serve the console with uvicorn, on 127.0.0.1 unless told otherwise (it shows personal data)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import dramatiq
import uvicorn
from psycopg_pool import ConnectionPool

from lapse.operator.web.app import create_app
from lapse.platform import clock
from lapse.platform.config import Settings

logger = logging.getLogger(__name__)


def serve(pool: ConnectionPool, config: Settings, *, host: str, port: int,
          broker: Callable[[], dramatiq.Broker]) -> None:
    """Run the console until interrupted."""
    app = create_app(pool, config, broker=broker, now=clock.now, allowed_hosts=allowed_hosts(host))
    mode = "bulk actions need the token" if config.web_token else "read-only (LAPSE_WEB_TOKEN unset)"
    logger.info("lapse web on http://%s:%s/ — %s", host, port, mode)
    uvicorn.run(app, host=host, port=port, log_level=config.log_level.lower(),
                access_log=False, server_header=False)


LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def allowed_hosts(host: str) -> list[str] | None:
    """On loopback, answer only loopback Host headers: a web page whose name was rebound to
    127.0.0.1 cannot read the console through the operator's browser. Elsewhere, any (a proxy)."""
    return list(LOOPBACK) if host in LOOPBACK else None


def lazy(factory: Callable[[], Any]) -> Callable[[], Any]:
    """``factory()`` called once, on first use (the broker is needed only by a requeue or purge)."""
    made: list[Any] = []

    def get() -> Any:
        if not made:
            made.append(factory())
        return made[0]

    return get
