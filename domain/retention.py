"""Recording retention decisions (SPEC §4, R1–R6), each under the user lock, on the caller's transaction.

A decision changes the database and writes a tagging batch: the keys whose
S3 state must change. Applying batches to S3 happens after commit
(``lapse.flows.recordings``), never inside the transaction. Every decision
evaluates the SQL policy ``retention(u, now)`` at the moment of acting.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import Connection

from domain.errors import UnknownUser
from lapse.platform.after_commit import send_after_commit
from lapse.platform.sql import queries

SQL = queries(__file__, "retention")

#: An entitled user whose retention ends within this horizon is retried at
#: that end (plus the settle window); further away, the tagging request is
#: superseded, because that end is itself a lapse that enqueues (R2).
RETRY_HORIZON = timedelta(days=6)


@dataclass(frozen=True)
class Gate:
    """R1: whether a new recording's audio may be stored, and why."""

    recording_id: int
    store_audio: bool
    reason: str


@dataclass(frozen=True)
class Decision:
    """What a retention decision did: ``outcome``, the batch it wrote, when to look again."""

    outcome: str
    batch_id: int | None = None
    keys: int = 0
    retry_at: datetime | None = None


@dataclass(frozen=True)
class RetentionState:
    holds: bool
    holds_until: datetime | None  # None while a source never ends
    ended_at: datetime | None


def _one(conn: Connection[Any], query: str, params: dict[str, Any]) -> Any:
    row = conn.execute(SQL[query], params).fetchone()
    assert row is not None, f"{query} returned no row"
    return row


def lock_user(conn: Connection[Any], user_id: int) -> None:
    """Take the per-user lock of SPEC §3 (the ``users`` row, FOR UPDATE)."""
    if conn.execute(SQL["lock_user"], {"user_id": user_id}).fetchone() is None:
        raise UnknownUser(user_id)


def state(conn: Connection[Any], user_id: int, *, now: datetime,
          billing_grace: timedelta) -> RetentionState:
    row = _one(conn, "retention_state", {"user_id": user_id, "now": now, "grace": billing_grace})
    return RetentionState(bool(row["holds"]), row["holds_until"], row["ended_at"])


def recording_counts(conn: Connection[Any], user_id: int) -> dict[str, int]:
    """How many of the user's recordings keep audio, and how many are tagged for deletion."""
    return dict(_one(conn, "recording_counts", {"user_id": user_id}))


def record_session(conn: Connection[Any], user_id: int, *, audio_key: str, now: datetime,
                   billing_grace: timedelta, kind: str = "recite") -> Gate:
    """R1: create a recording; keep its audio only when retention holds now.

    The caller uploads the audio only when ``store_audio`` is true. The user
    lock orders this after any tagging decision, so a recording stored here
    is either seen by a later tagging run or made while the user was entitled.
    """
    lock_user(conn, user_id)
    current = state(conn, user_id, now=now, billing_grace=billing_grace)
    reason = ("retention holds" if current.holds else
              f"no retention: it ended at {current.ended_at.isoformat()}" if current.ended_at
              else "no retention: the user was never entitled")
    row = _one(conn, "insert_recording", {
        "user_id": user_id, "kind": kind, "has_audio": current.holds,
        "audio_key": audio_key if current.holds else None, "now": now})
    return Gate(int(row["id"]), current.holds, reason)


def request_tagging(conn: Connection[Any], user_id: int, *, now: datetime, reason: str) -> bool:
    """R2: open a tagging request and send ``tag_recordings`` after commit, unless one is open."""
    opened = conn.execute(SQL["open_request"], {"user_id": user_id, "reason": reason,
                                                "now": now}).fetchone()
    if opened is not None:
        send_after_commit(conn, "tag_recordings", user_id)
    return opened is not None


def close_request(conn: Connection[Any], user_id: int) -> None:
    """R2: the user's tagging message ended for good (dead-lettered): the next lapse enqueues again."""
    conn.execute(SQL["close_request"], {"user_id": user_id})


def request_restore(conn: Connection[Any], user_id: int) -> None:
    """R5: every grant sends ``restore_recordings`` after commit."""
    send_after_commit(conn, "restore_recordings", user_id)


def decide_tagging(conn: Connection[Any], user_id: int, *, now: datetime,
                   billing_grace: timedelta, settle: timedelta) -> Decision:
    """R3: tag a user's audio if retention does not hold now; otherwise say when to look again."""
    lock_user(conn, user_id)
    current = state(conn, user_id, now=now, billing_grace=billing_grace)
    if current.holds:
        end = current.holds_until
        if end is not None and end - now <= RETRY_HORIZON:
            return Decision("retry", retry_at=end + settle)
        conn.execute(SQL["close_request"], {"user_id": user_id})
        return Decision("superseded")
    conn.execute(SQL["close_request"], {"user_id": user_id})
    keys = [r["audio_key"] for r in conn.execute(SQL["tag_recordings"], {"user_id": user_id,
                                                                          "now": now})]
    if not keys:
        return Decision("nothing_to_tag")
    return Decision("tagged", _write_batch(conn, user_id, "tag", keys, now), len(keys))


def decide_restore(conn: Connection[Any], user_id: int, *, now: datetime,
                   billing_grace: timedelta) -> Decision:
    """R5: give an entitled user's tagged, unpurged recordings their audio back."""
    lock_user(conn, user_id)
    if not state(conn, user_id, now=now, billing_grace=billing_grace).holds:
        return Decision("not_entitled")
    keys = [r["audio_key"] for r in conn.execute(SQL["restore_recordings"], {"user_id": user_id})]
    if not keys:
        return Decision("nothing_to_restore")
    return Decision("restored", _write_batch(conn, user_id, "untag", keys, now), len(keys))


def decide_purge(conn: Connection[Any], user_id: int, *, now: datetime, billing_grace: timedelta,
                 purge_after: timedelta) -> Decision:
    """R6: mark recordings tagged longer than the purge window as purged, re-checking retention first."""
    lock_user(conn, user_id)
    if state(conn, user_id, now=now, billing_grace=billing_grace).holds:
        request_restore(conn, user_id)
        return Decision("entitled")
    keys = [r["audio_key"] for r in conn.execute(SQL["purge_recordings"], {
        "user_id": user_id, "now": now, "cutoff": now - purge_after})]
    if not keys:
        return Decision("nothing_to_purge")
    batch = _one(conn, "insert_batch", {"user_id": user_id, "action": "purge", "keys": keys,
                                        "now": now})
    return Decision("purged", int(batch["id"]), len(keys))


def _write_batch(conn: Connection[Any], user_id: int, action: str, keys: list[str],
                 now: datetime) -> int:
    # The new batch's keys cover every key a pending tag/untag batch of this
    # user still had to change, so those need not be applied any more.
    conn.execute(SQL["supersede_pending"], {"user_id": user_id})
    row = _one(conn, "insert_batch", {"user_id": user_id, "action": action, "keys": keys,
                                      "now": now})
    return int(row["id"])
