"""Recording retention actors (SPEC §4). Their logic comes with issue 3."""

from __future__ import annotations

from actors.declare import lapse_actor
from actors.pending import not_implemented

ISSUE = "issue 3 (recording retention) not implemented yet"


@lapse_actor(queue_name="retention", max_retries=14)
def tag_recordings(user_id: int) -> None:
    """Tag a lapsed user's recordings for deletion (R3). Not implemented yet: logs and does nothing."""
    not_implemented("tag_recordings", ISSUE, user_id=user_id)


@lapse_actor(queue_name="retention")
def restore_recordings(user_id: int) -> None:
    """Restore an entitled user's tagged recordings (R5). Not implemented yet: logs and does nothing."""
    not_implemented("restore_recordings", ISSUE, user_id=user_id)
