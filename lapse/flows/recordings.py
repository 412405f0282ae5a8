"""Retention flows: a decision in one short transaction, then its tagging batches applied to S3.

No transaction or connection is held across an S3 call. A batch is applied
after the decision committed and then marked ``applied``; when S3 fails the
batch stays ``pending`` (``lapse audit leaks`` counts it), the attempt is
recorded, and the caller's retry or ``sweep_retention`` applies it later.

Batches of one user are applied oldest first. When a batch turns out to have
been superseded while it was being applied (a restore overtook a tagging, or
the reverse), the user's latest batch is applied again after it, so S3 ends
in the state of the latest decision.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from psycopg_pool import ConnectionPool

from domain import retention
from domain.errors import RetryableError
from domain.storage import JobState, RecordingStore
from lapse.platform import clock
from lapse.platform.after_commit import transaction
from lapse.platform.config import Settings

logger = logging.getLogger(__name__)
SQL = retention.SQL
MAX_REAPPLY = 5


class StorageUnavailable(RetryableError):
    """S3 failed while applying a tagging batch; the batch stays pending and is retried."""

    def __init__(self, batch_id: int, error: Exception) -> None:
        super().__init__(f"tagging batch {batch_id} not applied: {error}")
        self.batch_id = batch_id


class JobRunning(RetryableError):
    """An S3 Batch Operations job of a tagging batch has not finished yet."""

    def __init__(self, batch_id: int, job_id: str) -> None:
        super().__init__(f"tagging batch {batch_id}: S3 batch job {job_id} still running")
        self.batch_id = batch_id


def tag_user(pool: ConnectionPool, store: RecordingStore, user_id: int, *, now: datetime,
             config: Settings) -> retention.Decision:
    """R3: decide, then apply the user's pending batches. A ``retry`` decision is the caller's to schedule."""
    return _decide_then_apply(pool, store, user_id, lambda conn: retention.decide_tagging(
        conn, user_id, now=now, settle=config.settle, billing_grace=config.billing_grace))


def restore_user(pool: ConnectionPool, store: RecordingStore, user_id: int, *, now: datetime,
                 config: Settings) -> retention.Decision:
    """R5: restore an entitled user's tagged recordings, then apply the user's pending batches."""
    return _decide_then_apply(pool, store, user_id, lambda conn: retention.decide_restore(
        conn, user_id, now=now, billing_grace=config.billing_grace))


def purge_user(pool: ConnectionPool, store: RecordingStore, user_id: int, *, now: datetime,
               config: Settings) -> retention.Decision:
    """R6: purge recordings tagged longer than the purge window, unless the user is entitled again."""
    return _decide_then_apply(pool, store, user_id, lambda conn: retention.decide_purge(
        conn, user_id, now=now, purge_after=config.purge_after,
        billing_grace=config.billing_grace))


def _decide_then_apply(pool: ConnectionPool, store: RecordingStore, user_id: int,
                       decide: Callable[[Any], retention.Decision]) -> retention.Decision:
    """One decision in its own transaction, committed; then the user's batches applied to S3."""
    with pool.connection() as conn, transaction(conn):
        decision = decide(conn)
    apply_user_batches(pool, store, user_id)
    return decision


def apply_user_batches(pool: ConnectionPool, store: RecordingStore, user_id: int) -> int:
    """Apply every pending batch of the user to S3, oldest first; return how many were applied."""
    applied = 0
    while (batch := _fetch(pool, "next_pending_batch", user_id)) is not None:
        if _apply(pool, store, batch):
            applied += 1
            continue
        if _fetch_state(pool, batch["id"]) == "superseded":
            _reapply_latest(pool, store, user_id)
    return applied


def _reapply_latest(pool: ConnectionPool, store: RecordingStore, user_id: int) -> None:
    for _ in range(MAX_REAPPLY):
        latest = _fetch(pool, "latest_batch", user_id)
        if latest is None:
            return
        _run(pool, store, latest)
        if _fetch(pool, "latest_batch", user_id) == latest:
            _mark(pool, latest["id"], [])
            return


def _apply(pool: ConnectionPool, store: RecordingStore, batch: dict[str, Any]) -> bool:
    """Apply one batch and mark it applied; False when someone else marked it first."""
    missing = _run(pool, store, batch)
    return _mark(pool, batch["id"], missing)


def _run(pool: ConnectionPool, store: RecordingStore, batch: dict[str, Any]) -> list[str]:
    keys: list[str] = list(batch["keys"])
    try:
        if batch["action"] == "tag" and (batch["s3_job_id"] or store.wants_batch_job(len(keys))):
            _run_job(pool, store, batch)
            return []
        action = {"tag": store.tag, "untag": store.untag, "purge": store.delete}[batch["action"]]
        result = action(keys)
    except (BotoCoreError, ClientError) as error:
        with pool.connection() as conn, transaction(conn):
            conn.execute(SQL["record_failure"], {"id": batch["id"], "error": str(error)[:500]})
        raise StorageUnavailable(batch["id"], error) from error
    if result.missing:
        logger.warning("tagging batch %s (%s): %d of %d keys no longer exist in S3",
                       batch["id"], batch["action"], len(result.missing), len(keys))
    return result.missing


def _run_job(pool: ConnectionPool, store: RecordingStore, batch: dict[str, Any]) -> None:
    job_id = batch["s3_job_id"]
    if job_id is None:
        job_id = store.start_tagging_job(batch["id"], batch["keys"])
        with pool.connection() as conn, transaction(conn):
            conn.execute(SQL["record_job"], {"id": batch["id"], "job_id": job_id})
        logger.info("tagging batch %s: started S3 batch job %s for %d keys", batch["id"], job_id,
                    len(batch["keys"]))
    job_state = store.tagging_job_state(job_id)
    if job_state == JobState.RUNNING:
        raise JobRunning(batch["id"], job_id)
    if job_state == JobState.FAILED:
        with pool.connection() as conn, transaction(conn):
            conn.execute(SQL["clear_job"], {"id": batch["id"]})
        raise StorageUnavailable(batch["id"], RuntimeError(f"S3 batch job {job_id} failed"))


def _mark(pool: ConnectionPool, batch_id: int, missing: list[str]) -> bool:
    with pool.connection() as conn, transaction(conn):
        row = conn.execute(SQL["mark_applied"], {"id": batch_id, "missing": missing,
                                                 "now": clock.now()}).fetchone()
    return row is not None


def _fetch(pool: ConnectionPool, query: str, user_id: int) -> dict[str, Any] | None:
    with pool.connection() as conn:
        row: Any = conn.execute(SQL[query], {"user_id": user_id}).fetchone()
    return None if row is None else dict(row)


def _fetch_state(pool: ConnectionPool, batch_id: int) -> str | None:
    with pool.connection() as conn:
        row: Any = conn.execute(SQL["batch_state"], {"id": batch_id}).fetchone()
    return None if row is None else str(row["state"])
