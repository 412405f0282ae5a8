"""A2 at scale: ``sweep_fast_expiry`` fans a backlog out over disjoint id ranges (shards).

Real PostgreSQL, the fake 3x-ui panel on loopback; the overlapping shards run in real
threads. The page is shrunk to 10 rows so a few dozen subscriptions make a full first page.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

import actors
from domain import lifecycle, panels
from lapse.flows import retention_sweeps, sweeps
from lapse.platform import clock
from lapse.platform.config import reset_settings
from lapse.platform.sweeps import SweepContext
from tests.actors.key_support import T0, add_panel, on_panel, put_key, xui  # noqa: F401
from tests.support import factories as f
from tests.support.factories import given

GRACE = timedelta(days=3)
NOW = T0 + timedelta(seconds=1)
PAGE = 10
SHARDS = 4


@pytest.fixture(autouse=True)
def small_pages(monkeypatch: pytest.MonkeyPatch) -> Any:
    from lapse.ports.fakes import xui as fake
    from tests.actors.key_support import PREFIX

    monkeypatch.setenv(f"{PREFIX}_TOKEN", fake.TOKEN)
    monkeypatch.setattr(retention_sweeps, "PAGE", PAGE)
    monkeypatch.setenv("LAPSE_FAST_EXPIRY_SHARDS", str(SHARDS))
    monkeypatch.setenv("LAPSE_BILLING_GRACE_HOURS", str(int(GRACE.total_seconds() // 3600)))
    reset_settings()
    yield
    monkeypatch.undo()
    reset_settings()


def lapsed(pool: Any, server: Any, panel: Any, count: int, *, current_between: bool = True,
           expires_at: Any = T0) -> list[tuple[int, int, str]]:
    """``count`` lapsed paid subscriptions with their keys on the panel; a current one between each."""
    def build(conn: Any) -> list[tuple[int, int, str]]:
        made = []
        for _ in range(count):
            user = f.user(conn)
            sub = f.subscription(conn, user, started_at=T0 - timedelta(days=40), expires_at=expires_at,
                                 auto_renew=False)
            key = str(conn.execute("select access_key from subscriptions where id = %s",
                                   (sub,)).fetchone()["access_key"])
            panels.record_client_state(conn, key, panel.id, "present", now=T0)
            made.append((sub, user, key))
            if current_between:  # not due: ids in the ranges that are never touched
                f.subscription(conn, f.user(conn), started_at=T0 - timedelta(days=1),
                               expires_at=T0 + timedelta(days=29))
        return made
    rows = given(pool, build)
    for _, _, key in rows:
        put_key(server, key)
    return rows


def due_ids(pool: Any, *, after: int = 0, until: int | None = None) -> list[int]:
    with pool.connection() as conn:
        return [s for s, _ in lifecycle.due_expiries(conn, now=NOW, billing_grace=GRACE,
                                                     after=after, until=until, limit=100_000)]


def shard_cursors(sent: list[Any]) -> list[dict[str, Any]]:
    return [m.kwargs["cursor"] for m in sent if m.actor_name == "sweep_fast_expiry"]


def expired_events(pool: Any) -> Counter[int]:
    with pool.connection() as conn:
        rows = conn.execute("select subscription_id from subscription_events "
                            "where type = 'expired'").fetchall()
    return Counter(int(r["subscription_id"]) for r in rows)


def statuses(pool: Any, subs: list[int]) -> dict[int, str]:
    with pool.connection() as conn:
        rows = conn.execute("select id, status from subscriptions where id = any(%s)", (subs,))
        return {int(r["id"]): r["status"] for r in rows.fetchall()}


def remove_all(sent: list[Any]) -> Counter[str]:
    keys = Counter(str(m.args[0]) for m in sent if m.actor_name == "remove_client")
    for key in keys:
        actors.keys.remove_client(key)
    return keys


def test_the_ranges_partition_the_due_set_with_each_boundary_row_in_exactly_one_range(pool, xui):  # noqa: F811
    add = add_panel(pool, xui)
    lapsed(pool, xui, add, 42)
    every = due_ids(pool)
    with pool.connection() as conn:
        bounds = lifecycle.due_expiry_bounds(conn, SHARDS, now=NOW, billing_grace=GRACE)
    assert len(bounds) == SHARDS - 1 and bounds == sorted(bounds) and set(bounds) <= set(every)
    edges: list[int | None] = [0, *bounds, None]
    ranges = [due_ids(pool, after=a, until=b) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    assert [i for r in ranges for i in r] == every  # every due row once, in order, no gap
    assert all(10 <= len(r) <= 11 for r in ranges)  # near-equal tiles of 42
    for bound, lower, upper in zip(bounds, ranges, ranges[1:], strict=False):
        assert lower[-1] == bound and upper[0] > bound  # the boundary row is the lower range's last


def test_a_full_first_page_fans_out_and_the_shards_expire_every_due_row_exactly_once(pool, sent, xui):  # noqa: F811
    panel = add_panel(pool, xui)
    rows = lapsed(pool, xui, panel, 45)
    subs = [s for s, _, _ in rows]
    counts = sweeps.run_sweep(pool, "fast_expiry", now=NOW, budget_seconds=60,
                              tick_minute=clock.parse_time(NOW.isoformat()))
    cursors = shard_cursors(sent)
    assert counts["shards_sent"] == SHARDS - 1 == len(cursors)
    assert [c["after"] for c in cursors[1:]] == [c["until"] for c in cursors[:-1]]  # contiguous
    assert cursors[-1]["until"] is None  # the last range is open: nothing above it is missed
    total = counts.get("paid_ended", 0)
    assert 0 < total < len(subs)  # the first range only
    for cursor in cursors:
        shard = sweeps.run_sweep(pool, "fast_expiry", now=NOW, budget_seconds=60, cursor=cursor)
        assert "shards_sent" not in shard  # a shard never splits again
        total += shard.get("paid_ended", 0)
    assert total == len(subs)
    assert set(statuses(pool, subs).values()) == {"expired"}
    assert expired_events(pool) == Counter(subs)
    assert shard_cursors(sent) == cursors  # no continuation: every shard finished in budget
    assert remove_all(sent) == Counter(k for _, _, k in rows)
    assert not on_panel(xui)
    with pool.connection() as conn:
        runs = conn.execute("select status, tick_minute from sweep_runs where sweep = 'fast_expiry' "
                            "order by id").fetchall()
    assert [r["status"] for r in runs] == ["completed"] * SHARDS
    assert [r["tick_minute"] is not None for r in runs] == [True] + [False] * (SHARDS - 1)


def test_overlapping_shards_racing_in_threads_expire_each_row_once(pool, sent, xui):  # noqa: F811
    panel = add_panel(pool, xui)
    # past the billing grace too: a row ended twice would also match the grace rule the second time
    rows = lapsed(pool, xui, panel, 40, current_between=False,
                  expires_at=T0 - GRACE - timedelta(hours=1))
    subs = [s for s, _, _ in rows]
    middle = subs[len(subs) // 2]
    # (0, middle + 5] and (middle - 5, ∞) overlap on ten rows; a duplicate of the first as well
    cursors = [{"after": 0, "until": middle + 5}, {"after": middle - 5, "until": None},
               {"after": 0, "until": middle + 5}]
    start = threading.Barrier(len(cursors))
    errors: list[BaseException] = []
    results: list[dict[str, int]] = []

    def shard(cursor: dict[str, Any]) -> None:
        try:
            start.wait()
            context = SweepContext(NOW, False, time.monotonic() + 60, cursor)
            results.append(retention_sweeps.sweep_fast_expiry(pool, context))
        except BaseException as error:  # noqa: BLE001  reported below
            errors.append(error)

    threads = [threading.Thread(target=shard, args=(c,)) for c in cursors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors and len(results) == len(cursors)
    ended = sum(r.get("paid_ended", 0) + r.get("grace_ended", 0) for r in results)
    assert ended == len(subs)  # each row ended by one shard
    assert set(statuses(pool, subs).values()) == {"expired"}
    assert expired_events(pool) == Counter(subs)
    removals = remove_all(sent)
    assert removals == Counter(k for _, _, k in rows)  # one remove_client per key
    deletes = Counter(r.path.rsplit("/", 1)[-1] for r in xui.calls("/clients/del/"))
    assert deletes == Counter(k for _, _, k in rows) and not on_panel(xui)


def test_a_shard_out_of_time_continues_from_its_cursor_within_its_range(pool, sent, xui):  # noqa: F811
    panel = add_panel(pool, xui)
    rows = lapsed(pool, xui, panel, 30, current_between=False)
    subs = [s for s, _, _ in rows]
    lower, upper = subs[3], subs[26]  # the range (lower, upper]: 23 rows, three pages
    inside = [s for s in subs if lower < s <= upper]
    cursor: dict[str, Any] | None = {"after": lower, "until": upper}
    runs = 0
    while cursor is not None:
        counts = sweeps.run_sweep(pool, "fast_expiry", now=NOW, budget_seconds=0, cursor=cursor)
        assert counts["due"] <= PAGE and "shards_sent" not in counts  # one page, then out of time
        runs += 1
        continuation = shard_cursors(sent)[runs - 1:]
        cursor = continuation[0] if continuation else None
        if cursor is not None:
            assert cursor["until"] == upper and lower < cursor["after"] <= upper
        assert runs < 10
    assert runs == 4  # three pages, each out of time, then an empty read that completes
    done = statuses(pool, subs)
    assert [s for s in subs if done[s] == "expired"] == inside  # nothing outside its range
    assert expired_events(pool) == Counter(inside)
    with pool.connection() as conn:
        runs_recorded = [r["status"] for r in conn.execute(
            "select status from sweep_runs where sweep = 'fast_expiry' order by id")]
    assert runs_recorded == ["continued"] * 3 + ["completed"]


def test_inline_sweep_runs_the_shards_in_process_one_after_another(pool, xui):  # noqa: F811
    import dramatiq

    from lapse.flows.inline import inline

    panel = add_panel(pool, xui)
    rows = lapsed(pool, xui, panel, 25, current_between=False)
    with inline(dramatiq.get_broker()) as work:
        counts = sweeps.run_sweep(pool, "fast_expiry", now=NOW, budget_seconds=float("inf"))
        follow_up = work.drain()
    assert counts["shards_sent"] == SHARDS - 1
    assert follow_up["ran"] >= SHARDS - 1 and not follow_up["failed_handed_to_broker"]
    assert set(statuses(pool, [s for s, _, _ in rows]).values()) == {"expired"}
    assert not on_panel(xui)


def test_status_counts_sharded_runs_as_successes(pool, database, sent, xui):  # noqa: F811
    from tests.platform.test_status import attention, findings_now

    panel = add_panel(pool, xui)
    lapsed(pool, xui, panel, 25, current_between=False)
    now = clock.now()
    with pool.connection() as conn:
        conn.execute("insert into worker_heartbeats (worker, hostname, pid, broker, started_at, "
                     "beat_at) values ('host:1', 'host', 1, 'postgres', %s, %s)",
                     (now - timedelta(days=1), now))
        conn.commit()
    sweeps.run_sweep(pool, "fast_expiry", now=now, budget_seconds=60)
    for index, cursor in enumerate(shard_cursors(sent)):  # one shard continued, the rest completed
        sweeps.run_sweep(pool, "fast_expiry", now=now, budget_seconds=0 if index == 0 else 60,
                         cursor=cursor)
    _, found = findings_now(database)
    assert not [a for a in attention(found) if a[1] == "fast_expiry"]
