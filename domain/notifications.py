"""The outbox (SPEC §6 N1, N2, A4, A6): notices written with what causes them, claimed, re-checked, rendered.

A notice is a ``notifications`` row written in the transaction that causes
it (``queue``: unique idempotency key, ``send_notification`` after commit).
Sending is ``lapse.flows.notifications``: ``claim`` (a short transaction:
the fresh re-check, the template, ``sending``), the Telegram call with no
connection held, then ``finish`` / ``retry_later`` / ``delivery_unknown``.

Two delivery classes (``DELIVERY``): **at most once** (trial notices,
reminders, broadcasts, and any kind not listed as a receipt) — a claim whose
outcome is unknown is never sent again (``unknown``); **at least once** (the
receipts) — such a claim is sent again by ``sweep_outbox``.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

from psycopg import Connection
from psycopg.types.json import Jsonb

from domain import broadcasts
from domain.errors import UnknownNotification
from lapse.platform.after_commit import send_after_commit
from lapse.platform.sql import queries

SQL = queries(__file__, "notifications")
TEMPLATES = Path(__file__).parent / "templates"
FALLBACK_LANGUAGE = "en"
MAX_ATTEMPTS = 10  # temporary failures (5xx, network, 429) before a notice is `failed`

Delivery = Literal["at_most_once", "at_least_once"]
AT_LEAST_ONCE = frozenset({"renewed", "renewal_failed", "payment_credited", "payment_unmatched",
                           "activation_failed", "refunded"})
AT_MOST_ONCE = frozenset({"trial_ending", "reminder", "broadcast"})


def delivery(kind: str) -> Delivery:
    """The kind's delivery class; a kind not listed as a receipt is at most once (never twice)."""
    return "at_least_once" if kind in AT_LEAST_ONCE else "at_most_once"


def queue(conn: Connection[Any], user_id: int, kind: str, key: str, payload: Mapping[str, Any],
          *, now: datetime) -> int | None:
    """Write one notice (once per ``key``) and send ``send_notification`` after commit.

    Returns the new row's id, or None when ``key`` was written before.
    """
    row: Any = conn.execute(SQL["insert"], {"user_id": user_id, "kind": kind, "key": key,
                                            "payload": Jsonb(dict(payload)), "now": now}
                            ).fetchone()
    if row is None:
        return None
    send_after_commit(conn, "send_notification", int(row["id"]))
    return int(row["id"])


@dataclass(frozen=True)
class Peek:
    """A row as ``send_notification`` sees it before taking a rate token."""

    status: str
    kind: str
    next_attempt_at: datetime | None
    telegram_id: int | None
    unreachable: bool


def wait_in_line(conn: Connection[Any], notification_id: int, *, until: datetime) -> None:
    """A pending notice was told to wait for its rate-limit slot: it is due ``until``."""
    conn.execute(SQL["wait_in_line"], {"id": notification_id, "until": until})


def peek(conn: Connection[Any], notification_id: int) -> Peek:
    """The row and its user's chat, no lock; UnknownNotification for an id with no row."""
    row: Any = conn.execute(SQL["peek"], {"id": notification_id}).fetchone()
    if row is None:
        raise UnknownNotification(notification_id)
    return Peek(row["status"], row["kind"], row["next_attempt_at"], row["telegram_id"],
                row["unreachable_at"] is not None)


@dataclass(frozen=True)
class Claimed:
    """A claim (``sending``): what to send, and the attempt that owns the row's outcome."""

    notification_id: int
    user_id: int
    kind: str
    chat_id: int
    text: str
    attempt: int

    @property
    def delivery(self) -> Delivery:
        return delivery(self.kind)


def claim(conn: Connection[Any], notification_id: int, *, now: datetime) -> Claimed | str:
    """Claim a pending row after the fresh re-check; a string says what happened instead.

    ``skipped`` (the notice no longer applies, the user has no Telegram id or is
    unreachable) and ``failed`` (no template in any language) are recorded
    here, in the same transaction; ``busy`` (another worker is claiming it) and
    ``already <status>`` change nothing.
    """
    row: Any = conn.execute(SQL["lock_for_claim"], {"id": notification_id}).fetchone()
    if row is None:
        exists = conn.execute(SQL["exists"], {"id": notification_id}).fetchone()
        if exists is None:
            raise UnknownNotification(notification_id)
        return "busy"
    if row["status"] != "pending":
        return f"already {row['status']}"
    reason = _skip_reason(conn, row, now=now)
    if reason is not None:
        _decide(conn, notification_id, "skipped", reason, now=now)
        return "skipped"
    payload = row["payload"]
    if row["kind"] == "broadcast" and "broadcast_id" in payload:  # its text is on the broadcast
        payload = payload | broadcasts.notice_values(conn, payload, row["language"])
    try:
        text = render(_template_name(row["kind"], payload), row["language"], payload)
    except TemplateProblem as problem:
        _decide(conn, notification_id, "failed", str(problem), now=now)
        return "failed"
    claimed: Any = conn.execute(SQL["claim"], {"id": notification_id, "now": now}).fetchone()
    return Claimed(notification_id, int(row["user_id"]), row["kind"], int(row["telegram_id"]),
                   text, int(claimed["attempts"]))


def finish(conn: Connection[Any], claimed: Claimed, status: Literal["sent", "failed"], *,
           now: datetime, error: str | None = None, message_id: int | None = None,
           unreachable_reason: str | None = None) -> bool:
    """Record the claim's outcome; a permanent refusal of the user marks them unreachable.

    False when the claim is no longer the row's latest (sweep_outbox re-opened it).
    """
    row = conn.execute(SQL["finish"], {"id": claimed.notification_id, "attempt": claimed.attempt,
                                       "status": status, "now": now, "error": error,
                                       "message_id": message_id}).fetchone()
    if unreachable_reason is not None:
        conn.execute(SQL["mark_unreachable"], {"user_id": claimed.user_id, "now": now,
                                               "reason": unreachable_reason})
    return row is not None


def retry_later(conn: Connection[Any], claimed: Claimed, delay: float, problem: str, *,
                now: datetime, resend: bool = True) -> str:
    """Nothing was delivered (5xx, network, 429, open circuit): ``pending`` with the next attempt
    and (``resend``) a message sent for then, or ``failed`` once MAX_ATTEMPTS claims were made."""
    if claimed.attempt >= MAX_ATTEMPTS:
        finish(conn, claimed, "failed", now=now,
               error=f"gave up after {claimed.attempt} attempts: {problem}")
        return "failed"
    next_attempt = now + timedelta(seconds=delay)
    row = conn.execute(SQL["retry_later"], {"id": claimed.notification_id,
                                            "attempt": claimed.attempt, "error": problem,
                                            "next_attempt_at": next_attempt}).fetchone()
    if row is None:
        return "claim_lost"
    if resend:
        send_after_commit(conn, "send_notification", claimed.notification_id,
                          delay_ms=max(int(delay * 1000), 0) or None)
    return "pending"


def release(conn: Connection[Any], claimed: Claimed, delay: float, *, now: datetime) -> str:
    """Give a claim back unsent (a 429 pause began after its token was taken): ``pending``
    again, the attempt not counted, and a message sent for when the pause ends."""
    row = conn.execute(SQL["release"], {"id": claimed.notification_id, "attempt": claimed.attempt,
                                        "next_attempt_at": now + timedelta(seconds=delay)}
                       ).fetchone()
    if row is None:
        return "claim_lost"
    send_after_commit(conn, "send_notification", claimed.notification_id,
                      delay_ms=int(delay * 1000) + 1)
    return "paused"


def delivery_unknown(conn: Connection[Any], claimed: Claimed, problem: str, *,
                     now: datetime) -> str:
    """The request may have reached Telegram: at most once → ``unknown``; at least once → again."""
    if claimed.delivery == "at_least_once":
        return retry_later(conn, claimed, 0, f"delivery unknown: {problem}", now=now)
    conn.execute(SQL["finish"], {"id": claimed.notification_id, "attempt": claimed.attempt,
                                 "status": "unknown", "now": now, "message_id": None,
                                 "error": f"delivery unknown: {problem}"})
    return "unknown"


def clear_unreachable(conn: Connection[Any], user_id: int, *, now: datetime) -> bool:
    """N2: the user can be reached again (they wrote to the bot); True when a mark was cleared."""
    return conn.execute(SQL["clear_unreachable"], {"user_id": user_id}).fetchone() is not None


def _close_claim(conn: Connection[Any], notification_id: int, status: str, error: str, *,
                 now: datetime) -> None:
    conn.execute(SQL["close_claim"], {"id": notification_id, "status": status, "error": error,
                                      "now": now})


def _decide(conn: Connection[Any], notification_id: int, status: str, reason: str, *,
            now: datetime) -> None:
    conn.execute(SQL["decide_unclaimed"], {"id": notification_id, "status": status,
                                           "error": reason, "now": now})


def _skip_reason(conn: Connection[Any], row: Any, *, now: datetime) -> str | None:
    """Why the notice no longer applies, from fresh data (None: send it)."""
    if row["telegram_id"] is None:
        return "the user has no Telegram id"
    if row["unreachable_at"] is not None:
        return f"the user is unreachable ({row['unreachable_reason']})"
    payload = row["payload"]
    if row["kind"] == "trial_ending":
        return _trial_notice_stale(conn, payload, now=now)
    if row["kind"] == "reminder":
        return _reminder_stale(conn, payload, now=now)
    if row["kind"] == "broadcast" and "broadcast_id" in payload:
        return broadcasts.stale_reason(conn, int(row["user_id"]), payload)
    return None


def _trial_notice_stale(conn: Connection[Any], payload: Any, *, now: datetime) -> str | None:
    state: Any = conn.execute(SQL["trial_has_ended_or_user_paid"], {
        "subscription_id": payload["subscription_id"], "now": now,
        "expires_at": datetime.fromisoformat(payload["expires_at"])}).fetchone()
    if state is not None and state["has_paid"]:
        return "the user has paid"
    if state is None or state["trial_over"]:
        return "the trial is no longer current or ends at another time"
    return None


def _reminder_stale(conn: Connection[Any], payload: Any, *, now: datetime) -> str | None:
    state: Any = conn.execute(SQL["reminder_still_applies"], {
        "subscription_id": payload["subscription_id"], "now": now,
        "expires_at": datetime.fromisoformat(payload["expires_at"])}).fetchone()
    if state is None or not state["same_period"]:
        return "the subscription renewed, was extended or ended"
    if not state["will_not_renew"]:
        return "the subscription will renew by itself"
    return None


class TemplateProblem(Exception):
    """No template for a notice in any language, or one that needs a value the payload lacks."""


def _template_name(kind: str, payload: Any) -> str:
    """A broadcast may name its template in the payload; every other notice uses its kind."""
    name = payload.get("template") if isinstance(payload, dict) else None
    return name if isinstance(name, str) and name else kind


def template_path(name: str, language: str) -> Path | None:
    """The template file for ``name`` in ``language``, else in English, else None."""
    if not name.replace("_", "").isalnum():
        return None
    for candidate in (language, FALLBACK_LANGUAGE):
        if candidate and candidate.isalpha():
            path = TEMPLATES / candidate / f"{name}.txt"
            if path.is_file():
                return path
    return None


def render(name: str, language: str, payload: Mapping[str, Any]) -> str:
    """The text of template ``name`` in ``language`` (English when that language lacks it)."""
    path = template_path(name, language)
    if path is None:
        raise TemplateProblem(f"no template {name!r} in {language!r} or {FALLBACK_LANGUAGE!r}")
    values = dict(payload) | _derived(payload)
    try:
        return string.Formatter().vformat(path.read_text().strip(), (), values)
    except (KeyError, IndexError, ValueError) as error:
        raise TemplateProblem(f"template {path.parent.name}/{path.name}: {error!r} "
                              "is not in the notice's payload") from None


def _derived(payload: Mapping[str, Any]) -> dict[str, str]:
    """``<amount>_text`` for each amount in minor units (``5.00 USD``); ``expires_on``."""
    currency = str(payload.get("currency", ""))
    values = {f"{key}_text": f"{payload[key] / 100:.2f} {currency}".strip()
              for key in ("price", "amount", "credited") if isinstance(payload.get(key), int)}
    if isinstance(payload.get("expires_at"), str):
        ends = datetime.fromisoformat(payload["expires_at"]).astimezone(UTC)
        values["expires_on"] = ends.strftime("%Y-%m-%d %H:%M UTC")
    return values


# Sweeps -----------------------------------------------------------------------


def stale_claims(conn: Connection[Any], *, claimed_before: datetime, after: int,
                 limit: int) -> list[int]:
    rows = conn.execute(SQL["stale_claims"], {"claimed_before": claimed_before, "after": after,
                                              "limit": limit}).fetchall()
    return [int(r["id"]) for r in rows]  # type: ignore[call-overload]


def settle_stale_claim(conn: Connection[Any], notification_id: int, *, now: datetime,
                       claimed_before: datetime) -> str | None:
    """N1: a claim with no outcome — a receipt is sent again, any other notice is ``unknown``."""
    row: Any = conn.execute(SQL["lock_stale_claim"], {"id": notification_id,
                                                      "claimed_before": claimed_before}).fetchone()
    if row is None:
        return None
    if delivery(row["kind"]) == "at_least_once" and row["attempts"] >= MAX_ATTEMPTS:
        _close_claim(conn, notification_id, "failed", f"gave up after {row['attempts']} claims "
                     "ended with no outcome", now=now)
        return "failed"
    if delivery(row["kind"]) == "at_least_once":
        conn.execute(SQL["reopen"], {"id": notification_id, "now": now})
        send_after_commit(conn, "send_notification", notification_id)
        return "resent"
    conn.execute(SQL["give_up_unknown"], {"id": notification_id, "now": now})
    return "unknown"


def overdue(conn: Connection[Any], *, due_before: datetime, after: int, limit: int) -> list[int]:
    rows = conn.execute(SQL["overdue"], {"due_before": due_before, "after": after,
                                         "limit": limit}).fetchall()
    return [int(r["id"]) for r in rows]  # type: ignore[call-overload]


def resend_overdue(conn: Connection[Any], notification_id: int, *, now: datetime,
                   due_before: datetime) -> bool:
    """Send an unclaimed row's message again (its message was lost); False when it moved on."""
    if conn.execute(SQL["touch_overdue"], {"id": notification_id, "now": now,
                                           "due_before": due_before}).fetchone() is None:
        return False
    send_after_commit(conn, "send_notification", notification_id)
    return True


class PageWriter(Protocol):
    def __call__(self, conn: Connection[Any], *, now: datetime, offsets: list[timedelta],
                 after: int, limit: int) -> tuple[int, int, int]: ...


def _offset_for(remaining: timedelta, offsets: list[timedelta]) -> timedelta | None:
    """The smallest offset at least ``remaining``: one notice for the nearest threshold crossed."""
    fitting = [o for o in offsets if remaining <= o]
    return min(fitting) if fitting else None


def write_trial_notices(conn: Connection[Any], *, now: datetime, offsets: list[timedelta],
                        after: int, limit: int) -> tuple[int, int, int]:
    """A4: one ``trial_ending`` row per (trial, offset) for trials ending within an offset.

    Returns (subscriptions read, notices written, last id read: the keyset cursor).
    """
    rows: list[Any] = conn.execute(SQL["ending_trials"], {
        "now": now, "within": max(offsets), "after": after, "limit": limit}).fetchall()
    written = 0
    for row in rows:
        offset = _offset_for(row["expires_at"] - now, offsets)
        if offset is None:
            continue
        hours = _hours(offset)
        written += queue(conn, row["user_id"], "trial_ending",
                         f"trial_ending:{row['id']}:{hours}h",
                         {"subscription_id": row["id"], "hours": hours,
                          "expires_at": row["expires_at"].isoformat()}, now=now) is not None
    return len(rows), written, int(rows[-1]["id"]) if rows else after


def write_reminders(conn: Connection[Any], *, now: datetime, offsets: list[timedelta],
                    after: int, limit: int) -> tuple[int, int, int]:
    """A6: one ``reminder`` per (subscription, period, offset) for paid subscriptions that
    end within an offset and will not renew by themselves. Same return as write_trial_notices."""
    rows: list[Any] = conn.execute(SQL["ending_without_renewal"], {
        "now": now, "within": max(offsets), "after": after, "limit": limit}).fetchall()
    written = 0
    for row in rows:
        offset = _offset_for(row["expires_at"] - now, offsets)
        if offset is None:
            continue
        days = max(round(offset / timedelta(days=1)), 1) if offset >= timedelta(days=1) else 0
        ends = row["expires_at"].isoformat()
        written += queue(conn, row["user_id"], "reminder",
                         f"reminder:{row['id']}:{ends}:{_hours(offset)}h",
                         {"subscription_id": row["id"], "days": days, "hours": _hours(offset),
                          "expires_at": ends, "plan_code": row["plan_code"],
                          "price": row["price"], "currency": row["currency"]},
                         now=now) is not None
    return len(rows), written, int(rows[-1]["id"]) if rows else after


def _hours(offset: timedelta) -> int:
    return int(offset.total_seconds() // 3600)


def progress(conn: Connection[Any]) -> list[dict[str, Any]]:
    """Notices by kind and status (the operator's view)."""
    return conn.execute(SQL["progress"]).fetchall()  # type: ignore[return-value]
