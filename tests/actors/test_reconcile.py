"""A5 reconcile against the fake panel on loopback and real PostgreSQL.

Each guard is tested alone (STYLE rule 12): where the list-first order and the
per-candidate re-check back each other up, one test switches the other off.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from domain import panels
from lapse.flows import reconcile, sweeps
from lapse.ports.fakes import xui as fake
from lapse.ports.panel import XuiPanel
from tests.actors.key_support import (  # noqa: F401
    PREFIX,
    T0,
    add_panel,
    on_panel,
    put_key,
    states,
    xui,
)
from tests.support import factories as f
from tests.support.factories import given


@pytest.fixture(autouse=True)
def panel_env(monkeypatch):
    monkeypatch.setenv(f"{PREFIX}_TOKEN", fake.TOKEN)


def current_keys(pool, n, *, status="active") -> list[str]:
    """``n`` users, each with a current paid subscription holding a fresh key (set-based)."""
    def build(conn):
        f.plan(conn)
        rows = conn.execute(
            "with u as (insert into users (created_at) select %(t)s from generate_series(1, %(n)s) "
            "returning id) "
            "insert into subscriptions (user_id, kind, status, plan_code, started_at, expires_at, "
            "access_key, reached_active) select id, 'paid', %(status)s, 'month', %(t)s, "
            "%(t)s + interval '30 days', gen_random_uuid(), %(status)s <> 'pending' from u "
            "returning access_key::text as key",
            {"t": T0 - timedelta(days=1), "n": n, "status": status}).fetchall()
        return [r["key"] for r in rows]
    return given(pool, build)


def activate_now(pool, key: str) -> None:
    """A key committed by an activation while reconcile runs."""
    given(pool, lambda conn: f.subscription(conn, f.user(conn), started_at=T0, access_key=key,
                                            expires_at=T0 + timedelta(days=30)))


def expire_now(pool, key: str) -> None:
    given(pool, lambda conn: conn.execute(
        "update subscriptions set status = 'expired', access_key = null, ended_at = %s "
        "where access_key = %s", (T0, key)))


def run(pool, panel, **options):
    return reconcile.reconcile_panel(pool, panel, now=T0, **options)


def test_ten_thousand_keys_the_whole_set_is_read_and_only_the_differences_are_acted_on(
        pool, xui, monkeypatch):  # noqa: F811
    panel = add_panel(pool, xui)
    keys = current_keys(pool, 10_000)
    missing, pending = keys[:7], current_keys(pool, 3, status="pending")
    for key in keys[7:]:
        put_key(xui, key)
    orphans = [str(uuid.uuid4()) for _ in range(5)]
    for key in orphans:
        put_key(xui, key)
    foreign = xui.put_client(str(uuid.uuid4()), comment="")["email"]
    late = str(uuid.uuid4())
    put_key(xui, late)  # an activation added it to the panel before the list ...
    real_list = XuiPanel.list_emails

    def list_then_activate(self):
        listed = real_list(self)
        activate_now(pool, late)  # ... and commits while reconcile runs, after the list
        return listed

    monkeypatch.setattr(XuiPanel, "list_emails", list_then_activate)
    counts = run(pool, panel)
    assert counts["current_keys"] == 10_000 + 3 + 1  # the whole set, over more than one page
    assert (counts["removed"], counts["added"]) == (5, 7)
    assert on_panel(xui) == set(keys) | {late} and not set(pending) & on_panel(xui)  # activation adds those
    assert foreign in xui.clients and counts["foreign_left_alone"] == 1
    assert states(pool, missing[0]) == {panel.name: "present"}
    assert states(pool, orphans[0]) == {panel.name: "removed"}


def test_list_first_alone_keeps_a_key_activated_after_the_list(pool, xui, monkeypatch):  # noqa: F811
    """The re-check is switched off: only listing before reading the database saves the key."""
    panel = add_panel(pool, xui)
    late = str(uuid.uuid4())
    put_key(xui, late)
    real_list = XuiPanel.list_emails

    def list_then_activate(self):
        listed = real_list(self)
        activate_now(pool, late)
        return listed

    monkeypatch.setattr(XuiPanel, "list_emails", list_then_activate)
    monkeypatch.setattr(reconcile, "_still_needed", lambda pool, key, kind: True)
    run(pool, panel)
    assert late in on_panel(xui)


def test_the_recheck_alone_keeps_a_key_activated_after_the_database_was_read(
        pool, xui, monkeypatch):  # noqa: F811
    """A key that became current after the set was read is not removed; one that ended is not added."""
    panel = add_panel(pool, xui)
    late, ending = str(uuid.uuid4()), current_keys(pool, 1)[0]
    put_key(xui, late)
    real_read = reconcile.read_current_keys

    def read_then_change(pool):
        current = real_read(pool)
        activate_now(pool, late)
        expire_now(pool, ending)
        return current

    monkeypatch.setattr(reconcile, "read_current_keys", read_then_change)
    counts = run(pool, panel)
    assert late in on_panel(xui) and ending not in on_panel(xui)
    assert (counts["orphan_rechecked_kept"], counts["missing_rechecked_kept"]) == (1, 1)
    assert not xui.calls("/clients/del/") and not xui.calls("/clients/add")


def test_a_pending_key_is_left_to_activation_even_without_the_recheck(pool, xui, monkeypatch):  # noqa: F811
    panel = add_panel(pool, xui)
    pending = current_keys(pool, 2, status="pending")
    monkeypatch.setattr(reconcile, "_still_needed", lambda pool, key, kind: True)
    counts = run(pool, panel)
    assert counts["added"] == 0 and not (set(pending) & on_panel(xui))


def test_a_client_without_comment_lapse_is_never_touched(pool, xui):  # noqa: F811
    panel = add_panel(pool, xui)
    foreign = [xui.put_client(str(uuid.uuid4()), comment=c)["email"] for c in ("", "ops", "Lapse")]
    run(pool, panel)
    assert set(foreign) <= set(xui.clients) and not xui.calls("/clients/del/")


@pytest.mark.parametrize("fault", ["5xx", "malformed", "login refused"])
def test_a_panel_that_cannot_be_listed_is_skipped_and_reported_never_taken_as_empty(
        pool, xui, fault, monkeypatch):  # noqa: F811
    panel = add_panel(pool, xui)
    keys = current_keys(pool, 3)
    orphan = str(uuid.uuid4())
    put_key(xui, orphan)
    if fault == "5xx":
        xui.inject(fake.status(503), on="/clients/list", times=10)
    elif fault == "malformed":
        xui.inject(fake.malformed(), on="/clients/list", times=10)
    else:
        monkeypatch.setenv(f"{PREFIX}_TOKEN", "wrong")
        xui.token = fake.TOKEN
    counts = run(pool, panel)
    assert counts["skipped_unlistable"] == 1
    assert not xui.calls("/clients/del/") and not xui.calls("/clients/add")
    assert orphan in on_panel(xui) and not (set(keys) & on_panel(xui))
    with pool.connection() as conn:
        refused = panels.panel_by_id(conn, panel.id).login_refused
    assert refused == (fault == "login refused")


def test_a_disabled_panel_is_drained_of_lapse_clients_only(pool, xui):  # noqa: F811
    panel = add_panel(pool, xui, enabled=False)
    keys = current_keys(pool, 4)
    for key in keys:
        put_key(xui, key)
    foreign = xui.put_client(str(uuid.uuid4()), comment="")["email"]
    counts = run(pool, panel)
    assert counts["removed"] == 4 and on_panel(xui) == set() and foreign in xui.clients
    assert states(pool, keys[0]) == {panel.name: "removed"}


def test_sweep_reconcile_goes_over_every_panel_and_reports_the_one_it_skipped(pool, xui):  # noqa: F811
    down = fake.FakeXui.start()
    try:
        up, broken = add_panel(pool, xui), add_panel(pool, down)
        down.inject(fake.status(500), on="/clients/list", times=10)
        keys = current_keys(pool, 2)
        counts = sweeps.run_sweep(pool, "reconcile", now=T0, budget_seconds=60)
        assert (counts["panels"], counts["skipped_unlistable"], counts["added"]) == (2, 1, 2)
        assert on_panel(xui) == set(keys) and on_panel(down) == set()
        assert up.id != broken.id
        later = current_keys(pool, 1)
        dry = sweeps.run_sweep(pool, "reconcile", now=T0, budget_seconds=60, dry_run=True)
        assert dry["missing_found"] == 1 and on_panel(xui) == set(keys)  # counted, not added
        assert later[0] not in on_panel(xui)
    finally:
        down.stop()


def test_the_compact_list_gives_email_and_comment_of_the_configured_inbound_only(pool, xui):  # noqa: F811
    from lapse.ports.panel import PanelGarbage, connect

    panel = add_panel(pool, xui)
    key = str(uuid.uuid4())
    put_key(xui, key)
    xui.put_client("someone@example", comment="ops")
    xui.put_client("elsewhere", comment="lapse", inbound_ids=(2,))
    port = connect(panel)
    assert sorted(port.list_emails()) == sorted([(key, "lapse"), ("someone@example", "ops")])
    xui.inject(fake.malformed(), on="/clients/list", times=1)
    with pytest.raises(PanelGarbage, match="clients/list"):
        port.list_emails()
