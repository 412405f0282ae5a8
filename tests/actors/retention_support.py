"""Shared set-up of the retention tests: a simulation on the test's database and moto bucket."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


def recordings(pool: Any, user_id: int) -> list[dict[str, Any]]:
    with pool.connection() as conn:
        return conn.execute("select id, audio_key, has_audio, deletion_tagged_at, audio_purged_at "
                            "from recordings where user_id = %s order by id", (user_id,)).fetchall()


def batches(pool: Any, user_id: int) -> list[dict[str, Any]]:
    with pool.connection() as conn:
        return conn.execute("select id, action, state, keys, missing_keys, attempts from "
                            "tagging_batches where user_id = %s order by id", (user_id,)).fetchall()
