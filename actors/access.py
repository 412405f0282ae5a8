"""Access-key actors (SPEC §6 A1, §3a sign-up): ``start_trial``, ``activate_subscription``,
``provision_client``.

Thin: each runs one flow of ``lapse.flows.activation`` (or one domain
transaction) and logs one line with its outcome. Retry policy is the
decorator's, from ``LAPSE_PANEL_RETRIES`` / ``LAPSE_PANEL_MIN_BACKOFF_MS`` /
``LAPSE_PANEL_MAX_BACKOFF_MS``: ``activate_subscription`` retries while no
panel holds the key, and each panel that failed gets its own
``provision_client`` with its own retries and dead letter.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from actors.declare import lapse_actor
from domain import activation
from domain.errors import InvalidArguments
from lapse.flows import activation as flows
from lapse.platform import clock, db
from lapse.platform.after_commit import transaction
from lapse.platform.config import settings

logger = logging.getLogger(__name__)
PANEL_RETRIES: dict[str, Any] = {
    "max_retries": settings().panel_retries,
    "min_backoff": settings().panel_min_backoff_ms,
    "max_backoff": settings().panel_max_backoff_ms,
}


@lapse_actor(queue_name="activation")
def start_trial(user_id: int) -> None:
    """§3a sign-up: a trial ``pending`` row with its key, then ``activate_subscription``;
    for a user who ever had a trial or has a current subscription, nothing (said so)."""
    with db.pool().connection() as conn, transaction(conn):
        started = activation.start_trial(conn, user_id, now=clock.now(),
                                         length=timedelta(days=settings().trial_days))
    logger.info("start_trial user_id=%s outcome=%s subscription_id=%s", user_id,
                started.outcome, started.subscription_id)


@lapse_actor(queue_name="activation", **PANEL_RETRIES)
def activate_subscription(subscription_id: int) -> None:
    """A1: lease the pending row, add its key to each usable panel once, mark it ``active``."""
    finished = flows.activate(db.pool(), subscription_id)
    logger.info("activate_subscription subscription_id=%s outcome=%s provision=%s removed=%s",
                subscription_id, finished.outcome, finished.provision, finished.removed)


@lapse_actor(queue_name="activation", **PANEL_RETRIES)
def provision_client(access_key: str, panel_id: int) -> None:
    """A1: add a current key to the one panel that failed during its activation."""
    try:
        access_key = str(uuid.UUID(access_key))
    except ValueError:
        raise InvalidArguments("provision_client", f"access_key must be a UUID, got {access_key!r}"
                               ) from None
    outcome = flows.provision(db.pool(), access_key, panel_id)
    logger.info("provision_client access_key=%s panel_id=%s outcome=%s", access_key, panel_id,
                outcome)
