"""Why a user has (or lacks) access and retention: the facts behind ``lapse explain``.

``explain`` gathers them once (entitlement sources with their windows, which
one holds, the next transition with what Lapse does then, the recordings, the
next retention step, each panel's state of the user's keys, read from
``panel_clients``: no panel is called); ``lines`` prints them for the terminal,
and the web console's user page shows the same ``Explanation``. ``timeline`` is
the user's history (subscriptions, events, payments, ledger, notices, tag and
restore batches, panel clients, family, sponsorships), read by both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from psycopg import Connection

from domain import entitlement, keys, panels
from domain.entitlement import Window
from domain.lifecycle import ACTIVATION_DEADLINE
from domain.retention import recording_counts
from domain.retention import state as retention_state
from lapse.platform.config import Settings
from lapse.platform.sql import queries

SQL = queries(__file__, "explain")
RETENTION_GRACE = timedelta(days=7)  # SPEC §3: retention after a paid end


class UnknownUser(Exception):
    """No user with that id."""


@dataclass
class KeyState:
    access_key: str
    what: str
    panels: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Explanation:
    user_id: int
    now: datetime
    access: bool
    retention: bool
    windows: list[Window]
    next_change: datetime | None
    recordings: dict[str, int]
    next_step: str
    keys: list[KeyState]
    next_transition: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "now": self.now, "access": self.access,
                "retention": self.retention,
                "sources": [vars(w) | {"holds": w.holds(self.now)} for w in self.windows],
                "next_change": self.next_change, "next_transition": self.next_transition,
                "recordings": self.recordings,
                "next_step": self.next_step, "keys": [vars(k) for k in self.keys]}


def explain(conn: Connection[Any], user_id: int, *, now: datetime, config: Settings) -> Explanation:
    """Everything ``lapse explain`` says about one user as of ``now`` (reads only)."""
    if conn.execute("select 1 from users where id = %s", (user_id,)).fetchone() is None:
        raise UnknownUser(f"no user with id {user_id}")
    grace = config.billing_grace
    found = entitlement.windows(conn, user_id, billing_grace=grace)
    kept = recording_counts(conn, user_id)
    state = retention_state(conn, user_id, now=now, billing_grace=grace)
    upcoming = sorted({t for w in found for t in (w.valid_from, w.valid_until)
                       if t is not None and t > now})
    access = entitlement.has_access(conn, user_id, now=now, billing_grace=grace)
    retention = entitlement.has_retention(conn, user_id, now=now, billing_grace=grace)
    change = upcoming[0] if upcoming else None
    return Explanation(
        user_id, now, access=access, retention=retention,
        windows=found, next_change=change, recordings=kept,
        next_step=_next_retention_step(state, kept, now, config),
        keys=_key_states(conn, user_id),
        next_transition=None if change is None else _transition(
            conn, user_id, found, change, (access, retention), grace))


def timeline(conn: Connection[Any], user_id: int, *, limit: int = 500) -> list[dict[str, Any]]:
    """The user's newest ``limit`` timeline entries, newest first (``at``, ``kind``, ``ref``, ``detail``)."""
    return conn.execute(SQL["timeline"], {"user_id": user_id, "limit": limit}).fetchall()


def _transition(conn: Connection[Any], user_id: int, found: list[Window], at: datetime,
                before: tuple[bool, bool], grace: Any) -> str:
    """What changes at ``at`` (the next window edge): which sources, the verdicts then, what Lapse does."""
    edges = [f"{w.source} #{w.ref_id} {'starts' if w.valid_from == at else 'ends'}"
             for w in found if at in (w.valid_from, w.valid_until)]
    # a paid plan whose access ends is expired then, and its 7-day retention grace starts
    paid_end = any(w.source == "paid_subscription" and w.valid_until == at for w in found)
    after = (entitlement.has_access(conn, user_id, now=at, billing_grace=grace),
             paid_end or entitlement.has_retention(conn, user_id, now=at, billing_grace=grace))
    verdicts = ", ".join(f"{name} {_yes(b)} -> {_yes(a)}" if a != b else f"{name} stays {_yes(a)}"
                         for name, b, a in zip(("access", "retention"), before, after, strict=True))
    acts = []
    if before[0] and not after[0]:
        acts.append("access ends: sweep_fast_expiry expires the subscription and remove_client "
                    "takes its key off the panels")
    if paid_end:
        acts.append(f"the retention grace (paid_ended) holds until {(at + RETENTION_GRACE).isoformat()}")
    if after[0] and not before[0]:
        acts.append("access begins")
    if before[1] and not after[1]:
        acts.append("retention ends: tag_recordings tags the recordings with audio "
                    "(sweep_lapses within the hour)")
    if after[1] and not before[1]:
        acts.append("retention begins: restore_recordings restores tagged recordings")
    # a paid row awaiting activation is expired at its activation deadline unless activated first
    acts += [f"before that, at {(w.valid_from + ACTIVATION_DEADLINE).isoformat()}, sweep_activations "
             f"expires pending #{w.ref_id} (activation_failed) unless activate_subscription "
             "activates it first" for w in found
             if w.source == "pending_paid" and w.valid_from is not None and w.valid_until == at]
    return (f"at {at.isoformat()} {', '.join(edges)}; then {verdicts}; "
            + ("; ".join(acts) if acts else "Lapse does nothing (another source still holds)"))


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _key_states(conn: Connection[Any], user_id: int) -> list[KeyState]:
    """Each panel's state of the user's current key and of the keys that ended (SPEC §6, §7 explain)."""
    current = keys.current_key(conn, user_id)
    found = [] if current is None else [
        KeyState(str(current["access_key"]),
                 f"current, subscription #{current['id']} {current['status']}")]
    found += [KeyState(str(r["access_key"]), f"ended, subscription #{r['subscription_id']} "
                       f"{r['type']} {r['created_at'].isoformat()}")
              for r in keys.ended_keys(conn, user_id)]
    enabled = {p.id: p.name for p in panels.list_panels(conn, enabled_only=True)}
    for key in found:
        rows = panels.client_states(conn, key.access_key)
        key.panels = [{"panel": r["panel"], "state": r["state"], "since": r["updated_at"],
                       "attempts": r["attempts"], "last_error": r["last_error"]} for r in rows]
        seen = {r["panel_id"] for r in rows}
        key.panels += [{"panel": name, "state": None, "since": None, "attempts": 0,
                        "last_error": None} for panel_id, name in enabled.items()
                       if panel_id not in seen]
    return found


def _next_retention_step(state: Any, kept: Any, at: datetime, config: Settings) -> str:
    if state.holds and state.holds_until is None:
        return "retention never ends on its current sources; nothing to do" + (
            "; tagged recordings are restored by restore_recordings" if kept["tagged"] else "")
    if state.holds:
        return (f"retention ends at {state.holds_until.isoformat()}; then tag_recordings "
                "(sweep_lapses within the hour, or a retry waiting for that end)")
    if kept["audio"]:
        settled = state.ended_at + config.settle if state.ended_at else at
        return (f"retention ended at {_when(state.ended_at, 'never held')}; the recordings with "
                f"audio are tagged by tag_recordings, at the latest by sweep_retention after "
                f"{max(settled, at).isoformat()}")
    return "no retention and no audio kept; tagged objects are purged by sweep_purge " \
        f"{config.purge_after.days} days after tagging"


def _when(at: datetime | None, open_end: str) -> str:
    return open_end if at is None else at.isoformat()


def lines(found: Explanation, history: list[dict[str, Any]] | None = None,
          more: bool = False) -> list[str]:
    """The terminal text of ``lapse explain``; ``history`` (newest first, as ``timeline``
    returns it) is printed last, oldest first; ``more`` says older entries were left out."""
    at = found.now
    out = [f"user {found.user_id} as of {at.isoformat()}",
           f"  access:    {'yes' if found.access else 'no'}",
           f"  retention: {'yes' if found.retention else 'no'}",
           "  sources (window [from, until)):"]
    for w in found.windows:
        mark = "holds" if w.holds(at) else "     "
        out.append(f"    {mark} {w.policy:9} {w.source:26} #{w.ref_id:<8} "
                   f"{_when(w.valid_from, 'always')} .. {_when(w.valid_until, 'forever')}")
    if not found.windows:
        out.append("    (none)")
    if found.next_change is not None:
        out.append(f"  next change of a source: {found.next_change.isoformat()}")
        out.append(f"  next transition: {found.next_transition}")
    else:
        out.append("  next transition: none (no source starts or ends later)")
    out.append(f"  recordings: {found.recordings['audio']} with audio, "
               f"{found.recordings['tagged']} tagged for deletion")
    out.append("  next: " + found.next_step)
    out.append("  access keys on the panels (from panel_clients; no panel is called):")
    for key in found.keys:
        out.append(f"    key {key.access_key} ({key.what})")
        for p in key.panels:
            if p["state"] is None:
                out.append(f"      {p['panel']:16} {'-':9} nothing recorded for this key on this panel")
                continue
            error = f", {p['attempts']} failed attempt(s), last: {p['last_error']}" \
                if p["last_error"] else ""
            out.append(f"      {p['panel']:16} {p['state']:9} since {p['since'].isoformat()}{error}")
    if not found.keys:
        out.append("    (no key)")
    if history is not None:
        out.append(f"  timeline (oldest first{', older entries left out' if more else ''}):")
        out += [f"    {t['at'].isoformat()}  {t['kind']:13} {t['ref']:20} {t['detail']}"
                for t in reversed(history)]
        if not history:
            out.append("    (nothing recorded)")
    return out
