"""Broadcasts (SPEC §6 A6): one message to every reachable user without a current subscription.

A broadcast is created as a ``draft`` holding its message (English text with
optional translations, or a template name), ``start`` makes it ``running``
and sends ``send_broadcast``. Each step of the walk (``queue_next_batch``)
locks the broadcast row, takes the next keyset page of the audience after the
persisted cursor, inserts one ``broadcast`` notification row per user (unique
per broadcast and user), advances the cursor and sends ``send_notification``
for each new row after commit, all in one transaction: an interrupted walk
continues after the last user it queued and queues nobody twice. The sends are
the outbox's (at most once). ``cancel`` stops the walk and skips every row not
yet claimed; claimed rows finish.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from psycopg import Connection

from domain.errors import BroadcastRefused, InvalidBroadcast, UnknownBroadcast
from lapse.platform.after_commit import send_after_commit
from lapse.platform.sql import queries

SQL = queries(__file__, "broadcasts")
TEMPLATES = Path(__file__).parent / "templates"
KIND = "broadcast"
MAX_TEXT = 4096  # Telegram's limit for one message
_LANGUAGE = re.compile(r"[a-z]{2,3}")
_TEMPLATE = re.compile(r"[a-z0-9_]{1,64}")
OUTCOMES = ("sent", "failed", "skipped", "unknown")


def create(conn: Connection[Any], *, now: datetime, texts: dict[str, str] | None = None,
           template: str | None = None) -> int:
    """A ``draft`` broadcast of ``texts`` (language → text, English required) or of ``template``."""
    if (texts is None) == (template is None):
        raise InvalidBroadcast("give the message text or a template name, not both or neither")
    if template is not None:
        _check_template(template)
    else:
        _check_texts(texts or {})
    row: Any = conn.execute(SQL["create"], {"template": template, "now": now,
                                            "texts": json.dumps(texts or {})}).fetchone()
    return int(row["id"])


def _check_template(name: str) -> None:
    if not _TEMPLATE.fullmatch(name):
        raise InvalidBroadcast(f"template name {name!r}: use a-z, 0-9 and _")
    if not (TEMPLATES / "en" / f"{name}.txt").is_file():
        raise InvalidBroadcast(f"no template {name!r}: {TEMPLATES / 'en' / (name + '.txt')} "
                               "does not exist (English is the fallback, so it is required)")


def _check_texts(texts: dict[str, str]) -> None:
    if "en" not in texts:
        raise InvalidBroadcast("an English text is required (the fallback for other languages)")
    for language, text in texts.items():
        if not _LANGUAGE.fullmatch(language):
            raise InvalidBroadcast(f"language {language!r}: use a code such as en or ru")
        if not text.strip():
            raise InvalidBroadcast(f"the {language} text is empty")
        if len(text) > MAX_TEXT:
            raise InvalidBroadcast(f"the {language} text has {len(text)} characters; "
                                   f"Telegram takes at most {MAX_TEXT}")


def _locked(conn: Connection[Any], broadcast_id: int) -> Any:
    row = conn.execute(SQL["lock"], {"id": broadcast_id}).fetchone()
    if row is None:
        raise UnknownBroadcast(broadcast_id)
    return row


def start(conn: Connection[Any], broadcast_id: int, *, now: datetime) -> str:
    """Start a draft (``started``) or re-send the walk of a running one (``resumed``: safe, the
    walk is serialised on the broadcast row); a cancelled or finished one is refused."""
    row = _locked(conn, broadcast_id)
    if row["status"] in ("cancelled", "done"):
        raise BroadcastRefused(broadcast_id, row["status"], "start")
    if row["status"] == "draft":
        conn.execute(SQL["start"], {"id": broadcast_id, "now": now})
    send_after_commit(conn, "send_broadcast", broadcast_id)
    return "started" if row["status"] == "draft" else "resumed"


def cancel(conn: Connection[Any], broadcast_id: int, *, now: datetime) -> int:
    """Stop the walk and skip every row not yet claimed; return how many were skipped."""
    row = _locked(conn, broadcast_id)
    if row["status"] in ("cancelled", "done"):
        raise BroadcastRefused(broadcast_id, row["status"], "cancel")
    conn.execute(SQL["cancel"], {"id": broadcast_id, "now": now})
    return conn.execute(SQL["skip_unclaimed"], {"id": broadcast_id, "now": now}).rowcount


@dataclass(frozen=True)
class Step:
    """One step of the walk: ``queued`` rows, or why none (backlog, walked, done, cancelled)."""

    outcome: str
    queued: int = 0
    outstanding: int = 0


def queue_next_batch(conn: Connection[Any], broadcast_id: int, *, now: datetime, batch_size: int,
                     backlog: int) -> Step:
    """Queue the next page of the audience, unless ``backlog`` rows still wait for an outcome."""
    row = _locked(conn, broadcast_id)
    if row["status"] != "running":
        return Step(row["status"])
    outstanding = _count(conn, "outstanding", {"id": broadcast_id})
    if row["walked_at"] is not None:
        if outstanding:
            return Step("walked", outstanding=outstanding)
        conn.execute(SQL["finish"], {"id": broadcast_id, "now": now})
        return Step("done")
    if outstanding >= backlog:
        return Step("backlog", outstanding=outstanding)
    limit = max(1, min(batch_size, backlog - outstanding))
    page: Any = conn.execute(SQL["queue_batch"], {
        "id": broadcast_id, "after": row["cursor_user_id"], "limit": limit, "now": now,
        "template": row["template"]}).fetchone()
    ids: list[int] = list(page["notification_ids"])
    conn.execute(SQL["advance"], {"id": broadcast_id, "queued": len(ids), "now": now,
                                  "cursor": page["last_user_id"] or row["cursor_user_id"],
                                  "walked": page["walked"] < limit})
    for notification_id in ids:
        send_after_commit(conn, "send_notification", notification_id)
    return Step("queued", queued=len(ids), outstanding=outstanding + len(ids))


def _count(conn: Connection[Any], query: str, params: dict[str, Any]) -> int:
    row: Any = conn.execute(SQL[query], params).fetchone()
    return int(row["n"])


@dataclass(frozen=True)
class Progress:
    """What ``lapse broadcast status`` shows: outcomes so far and what remains."""

    id: int
    status: str
    template: str | None
    languages: list[str]
    created_at: datetime
    started_at: datetime | None
    cancelled_at: datetime | None
    finished_at: datetime | None
    walked: bool
    queued: int
    counts: dict[str, int] = field(default_factory=dict)
    not_yet_queued: int = 0

    @property
    def remaining(self) -> int:
        """Rows without an outcome plus audience users not queued yet (none once cancelled)."""
        waiting = self.queued - sum(self.counts.get(k, 0) for k in OUTCOMES)
        return waiting + (0 if self.status == "cancelled" else self.not_yet_queued)

    @property
    def done_fraction(self) -> float:
        if self.status == "draft":
            return 0.0
        total = self.queued + (0 if self.status == "cancelled" else self.not_yet_queued)
        return 1.0 if total == 0 else 1 - self.remaining / total


def progress(conn: Connection[Any], broadcast_id: int) -> Progress:
    """Counts by outcome (sent, failed, skipped, unknown) and remaining, read while it runs."""
    row: Any = conn.execute(SQL["get"], {"id": broadcast_id}).fetchone()
    if row is None:
        raise UnknownBroadcast(broadcast_id)
    counts = {r["status"]: int(r["n"]) for r in conn.execute(SQL["counts"], {"id": broadcast_id})}
    left = 0
    if row["walked_at"] is None and row["status"] in ("draft", "running"):
        left = _count(conn, "audience_after", {"after": row["cursor_user_id"]})
    return Progress(row["id"], row["status"], row["template"], sorted(row["texts"]),
                    row["created_at"], row["started_at"], row["cancelled_at"], row["finished_at"],
                    row["walked_at"] is not None, int(row["queued"]), counts, left)


def message_text(conn: Connection[Any], broadcast_id: int, language: str) -> tuple[str | None, str]:
    """What to render for one user: (template name, or None, and the text in ``language``, English
    as fallback; the text is empty for a template broadcast)."""
    row: Any = conn.execute(SQL["get"], {"id": broadcast_id}).fetchone()
    if row is None:
        raise UnknownBroadcast(broadcast_id)
    if row["template"] is not None:
        return row["template"], ""
    return None, row["texts"].get(language) or row["texts"]["en"]


def notice_values(conn: Connection[Any], payload: dict[str, Any], language: str) -> dict[str, str]:
    """What a broadcast notice renders with (``{text}`` of the ``broadcast`` template): the
    text in the user's language, English as fallback; nothing for a template broadcast."""
    template, text = message_text(conn, int(payload["broadcast_id"]), language)
    return {} if template is not None else {"text": text}


def stale_reason(conn: Connection[Any], user_id: int, payload: dict[str, Any]) -> str | None:
    """The send-time re-check: why this broadcast notice no longer applies (None: send it)."""
    row: Any = conn.execute(SQL["still_applies"], {"id": int(payload["broadcast_id"]),
                                                   "user_id": user_id}).fetchone()
    if row is None or row["status"] == "cancelled":
        return "the broadcast was cancelled"
    if row["has_current"]:
        return "the user has a current subscription now (not in the audience any more)"
    return None
