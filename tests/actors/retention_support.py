"""Shared set-up of the retention tests: a simulation on the test's database and moto bucket."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from domain import lifecycle
from tests.support import factories as make

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


def recordings(pool: Any, user_id: int) -> list[dict[str, Any]]:
    with pool.connection() as conn:
        return conn.execute("select id, audio_key, has_audio, deletion_tagged_at, audio_purged_at "
                            "from recordings where user_id = %s order by id", (user_id,)).fetchall()


def batches(pool: Any, user_id: int) -> list[dict[str, Any]]:
    with pool.connection() as conn:
        return conn.execute("select id, action, state, keys, missing_keys, attempts from "
                            "tagging_batches where user_id = %s order by id", (user_id,)).fetchall()


def buy(conn: Any, user_id: int, *, now: datetime, days: int = 30) -> int:
    """A plan purchase through the real path, ``lifecycle.apply_plan``: §3a's conversion of a trial,
    extension of a paid row, purchase out of grace, or a new paid row; returns the paid row's id.

    A brand-new paid row is ``pending`` until ``activate_subscription`` activates it, and that
    actor does not exist yet (it logs ``not_implemented``): only for that case this helper
    activates the row by hand, in the purchase's transaction, as the activation would.
    """
    code = make.plan(conn, f"days{days}", days)
    granted = lifecycle.apply_plan(conn, user_id, code, now=now)
    if granted.transition == "new_pending":  # the activation by hand (see above)
        conn.execute("update subscriptions set status = 'active' where id = %s and status = 'pending'",
                     (granted.subscription_id,))
    return granted.subscription_id
