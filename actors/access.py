"""Access-key actors (SPEC §6). Their logic is not yet filed as an issue."""

from __future__ import annotations

from actors.declare import lapse_actor
from actors.pending import not_implemented

ISSUE = "SPEC §6 access keys (not yet filed as an issue)"


@lapse_actor(queue_name="activation", max_retries=10, min_backoff=10_000, max_backoff=3_600_000)
def activate_subscription(subscription_id: int) -> None:
    """Provision a subscription's key on the panel (A1). Not implemented yet: logs and does nothing."""
    not_implemented("activate_subscription", ISSUE, subscription_id=subscription_id)
