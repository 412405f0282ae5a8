"""``lapse explain`` on handcrafted users, one per entitlement source (SPEC §3, §7 Explain).

Each case builds one user's rows, runs the real command as of ``NOW`` (text
and ``--json``) and checks the verdict, exactly which sources hold, the next
transition (when, which source, the verdicts then, what Lapse does) and the
timeline lines of the rows it made.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.lifecycle import ACTIVATION_DEADLINE
from tests.support import factories as f
from tests.support.cli import lapse
from tests.support.factories import given

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
BILLING_GRACE = timedelta(hours=72)  # LAPSE_BILLING_GRACE_HOURS' default


@dataclass
class Case:
    user_id: int
    access: bool
    retention: bool
    holds: set[tuple[str, int]]          # (source, ref id) of every source that holds at NOW
    change: datetime | None = None       # the next window edge
    transition: list[str] = field(default_factory=list)  # fragments of the transition line
    timeline: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, ref, detail part)


def _paid(conn: Any, user_id: int, status: str, started: datetime, expires: datetime,
          **extra: Any) -> int:
    return f.subscription(conn, user_id, status=status, started_at=started, expires_at=expires,
                          created_at=started, **extra)


def active_paid_plan(conn: Any) -> Case:
    u = f.user(conn)
    s = _paid(conn, u, "active", NOW - 10 * DAY, NOW + 20 * DAY)
    f.event(conn, s, u, "activated", NOW - 10 * DAY)
    end = NOW + 20 * DAY
    return Case(u, True, True, {("paid_subscription", s)}, end,
                [f"paid_subscription #{s} ends", "access yes -> no, retention stays yes",
                 "sweep_fast_expiry expires the subscription",
                 f"retention grace (paid_ended) holds until {(end + 7 * DAY).isoformat()}"],
                [("subscription", f"subscription #{s}", "paid month created: active"),
                 ("event", f"subscription #{s}", "activated")])


def cancelled_before_its_end(conn: Any) -> Case:
    u = f.user(conn)
    s = _paid(conn, u, "cancelled", NOW - 25 * DAY, NOW + 5 * DAY)
    return Case(u, True, True, {("paid_subscription", s)}, NOW + 5 * DAY,
                [f"paid_subscription #{s} ends", "access yes -> no, retention stays yes", "sweep_fast_expiry"],
                [("subscription", f"subscription #{s}", "paid month created: cancelled")])


def auto_renewing_past_its_end(conn: Any) -> Case:
    u = f.user(conn)
    s = _paid(conn, u, "active", NOW - 31 * DAY, NOW - DAY, auto_renew=True)
    return Case(u, True, True, {("paid_subscription", s)}, NOW - DAY + BILLING_GRACE,
                [f"paid_subscription #{s} ends", "access yes -> no, retention stays yes", "sweep_fast_expiry"],
                [("subscription", f"subscription #{s}", "active")])


def grace_row(conn: Any) -> Case:
    u = f.user(conn)
    s = _paid(conn, u, "grace", NOW - 32 * DAY, NOW - 2 * DAY)
    f.event(conn, s, u, "grace", NOW - 2 * DAY)
    return Case(u, True, True, {("paid_subscription", s)}, NOW - 2 * DAY + BILLING_GRACE,
                [f"paid_subscription #{s} ends", "access yes -> no, retention stays yes", "sweep_fast_expiry"],
                [("subscription", f"subscription #{s}", "grace"),
                 ("event", f"subscription #{s}", "grace")])


def trial(conn: Any) -> Case:
    u = f.user(conn)
    s = f.subscription(conn, u, kind="trial", status="active", started_at=NOW - DAY,
                       expires_at=NOW + 2 * DAY, created_at=NOW - DAY)
    return Case(u, True, True, {("trial_subscription", s)}, NOW + 2 * DAY,
                [f"trial_subscription #{s} ends", "access yes -> no, retention yes -> no",
                 "retention ends: tag_recordings"],
                [("subscription", f"subscription #{s}", "trial  created: active")])


def pending_paid(conn: Any) -> Case:
    u = f.user(conn)
    s = _paid(conn, u, "pending", NOW - timedelta(hours=1), NOW + 30 * DAY)
    return Case(u, False, True, {("pending_paid", s)}, NOW + 30 * DAY,
                [f"pending_paid #{s} ends", "access stays no, retention yes -> no", "tag_recordings",
                 f"before that, at {(NOW - timedelta(hours=1) + ACTIVATION_DEADLINE).isoformat()}, "
                 f"sweep_activations expires pending #{s}"],
                [("subscription", f"subscription #{s}", "paid month created: pending")])


def retention_grace_after_a_paid_end(conn: Any) -> Case:
    u = f.user(conn)
    s = _paid(conn, u, "expired", NOW - 33 * DAY, NOW - 3 * DAY, ended_at=NOW - 3 * DAY)
    return Case(u, False, True, {("paid_ended", s)}, NOW + 4 * DAY,
                [f"paid_ended #{s} ends", "retention yes -> no", "tag_recordings"],
                [("subscription", f"subscription #{s}", "created: expired")])


def _event_case(type_: str) -> Callable[[Any], Case]:
    def build(conn: Any) -> Case:
        u = f.user(conn)
        # the row ended long ago (its own grace is over); the event is 2 days old
        s = _paid(conn, u, "expired", NOW - 40 * DAY, NOW - 10 * DAY, ended_at=NOW - 10 * DAY)
        e = f.event(conn, s, u, type_, NOW - 2 * DAY)
        return Case(u, False, True, {(f"paid_{type_}_event", e)}, NOW + 5 * DAY,
                    [f"paid_{type_}_event #{e} ends", "retention yes -> no"],
                    [("event", f"subscription #{s}", type_)])
    build.__name__ = f"{type_}_event_within_7_days"
    return build


def family_member(conn: Any) -> Case:
    owner, member = f.user(conn), f.user(conn)
    _paid(conn, owner, "active", NOW - 10 * DAY, NOW + 20 * DAY)
    f.family(conn, owner, member, added_at=NOW - 5 * DAY)
    m = conn.execute("select id from family_members where member_id = %s", (member,)).fetchone()["id"]
    return Case(member, False, True, {("family", m)}, NOW + 20 * DAY,
                [f"family #{m} ends", "access stays no, retention yes -> no", "tag_recordings"],
                [("family", f"family #{m}", f"member {member} of owner {owner}")])


def sponsorship(conn: Any) -> Case:
    u = f.user(conn)
    f.sponsorship(conn, u, granted_at=NOW - 5 * DAY, revoked_at=NOW + 10 * DAY)
    g = conn.execute("select id from sponsorships where user_id = %s", (u,)).fetchone()["id"]
    return Case(u, False, True, {("sponsorship", g)}, NOW + 10 * DAY,
                [f"sponsorship #{g} ends", "retention yes -> no", "tag_recordings"],
                [("sponsorship", f"sponsorship #{g}", "by school, revoked 2026-03-20")])


def loyalty(conn: Any) -> Case:
    u = f.user(conn)
    started = NOW - 2 * 365 * DAY - 40 * DAY
    s = _paid(conn, u, "expired", started, started + 30 * DAY, ended_at=started + 30 * DAY)
    return Case(u, False, True, {("loyalty", s)}, None, [],
                [("subscription", f"subscription #{s}", "created: expired")])


def nothing(conn: Any) -> Case:
    return Case(f.user(conn), False, False, set())


CASES = [active_paid_plan, cancelled_before_its_end, auto_renewing_past_its_end, grace_row, trial,
         pending_paid, retention_grace_after_a_paid_end, _event_case("expired"),
         _event_case("cancelled"), family_member, sponsorship, loyalty, nothing]


def _explain(database: str, user_id: int, *extra: str) -> Any:
    result = lapse("explain", str(user_id), "--now", NOW.isoformat(), *extra,
                   env={"DATABASE_URL": database})
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("build", CASES, ids=lambda b: b.__name__)
def test_explain_names_the_source_that_holds_the_next_transition_and_the_timeline(
        build, pool, database):
    case = given(pool, build)
    text = _explain(database, case.user_id)
    shown = json.loads(_explain(database, case.user_id, "--json"))

    yes = {True: "yes", False: "no"}
    assert f"  access:    {yes[case.access]}\n" in text
    assert f"  retention: {yes[case.retention]}\n" in text
    assert (shown["access"], shown["retention"]) == (case.access, case.retention)
    holding = {(s["source"], s["ref_id"]) for s in shown["sources"] if s["holds"]}
    assert holding == case.holds
    for source, ref in case.holds:  # the text marks the same source as the one that holds
        listed = text.split("  sources (window [from, until)):\n", 1)[1].splitlines()
        listed = listed[:next(i for i, line in enumerate(listed) if not line.startswith("    "))]
        marked = [line for line in listed if line.split()[-5:-3] == [source, f"#{ref}"]]
        assert marked and all(line.strip().startswith("holds") for line in marked), text

    if case.change is None:
        assert shown["next_change"] is None and shown["next_transition"] is None
        assert "next transition: none" in text
    else:
        assert shown["next_change"] == case.change.isoformat()
        assert f"next change of a source: {case.change.isoformat()}\n" in text
        transition = next(line for line in text.splitlines() if "next transition:" in line)
        assert transition.startswith(f"  next transition: at {case.change.isoformat()} "), text
        for part in case.transition:
            assert part in transition, (part, transition)
        assert shown["next_transition"] == transition.removeprefix("  next transition: ")

    # the timeline comes after the verdict and the keys, and shows every row made here
    assert "  timeline (oldest first):" in text
    after = text.split("  timeline (oldest first):\n", 1)[1].splitlines()
    assert text.index("  timeline") > text.index("  retention:")
    for kind, ref, detail in case.timeline:
        assert any(kind in line and f"{ref} " in line and detail in line for line in after), \
            (kind, ref, detail, after)
        assert any(t["kind"] == kind and t["ref"] == ref and detail in t["detail"]
                   for t in shown["timeline"]), (kind, ref, detail, shown["timeline"])
    if not case.timeline:
        assert after == ["    (nothing recorded)"] and shown["timeline"] == []
    assert len(after) == len(shown["timeline"]) or not shown["timeline"]


def test_the_timeline_is_oldest_first_and_bounded(pool, database):
    def build(conn: Any) -> int:
        u = f.user(conn)
        s = _paid(conn, u, "grace", NOW - 32 * DAY, NOW - 2 * DAY)
        for i, type_ in enumerate(["activated", "renewal_failed", "grace"]):
            f.event(conn, s, u, type_, NOW - (3 - i) * DAY)
        return u

    u = given(pool, build)
    full = _explain(database, u).split("  timeline (oldest first):\n", 1)[1].splitlines()
    assert [line.split()[1] for line in full] == ["subscription", "event", "event", "event"]
    assert [line.split()[-1] for line in full[1:]] == ["activated", "renewal_failed", "grace"]
    assert full == sorted(full)  # each line starts with its ISO time: oldest first
    cut = _explain(database, u, "--timeline", "2")
    shown = cut.split("  timeline (oldest first, older entries left out):\n", 1)[1].splitlines()
    assert shown == full[-2:]
    as_json = json.loads(_explain(database, u, "--json", "--timeline", "2"))
    assert as_json["timeline_truncated"] is True
    assert [t["detail"] for t in as_json["timeline"]] == ["renewal_failed", "grace"]
