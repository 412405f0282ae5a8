"""The panels table: definitions, the default panel from LAPSE_PANEL_*, the login-refused mark,
and where each key is (panel_clients)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from domain import panels
from domain.errors import InvalidPanel, UnknownPanel

NOW = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)


def test_a_panel_is_added_enabled_and_listed(conn):
    added = panels.add_panel(conn, "de-1", "https://de1.example:2053/x/", 3, "LAPSE_PANEL_DE1",
                             now=NOW)
    assert (added.url, added.inbound_id, added.enabled, added.login_refused) == (
        "https://de1.example:2053/x", 3, True, False)
    assert panels.list_panels(conn) == [added] == panels.list_panels(conn, enabled_only=True)


@pytest.mark.parametrize(("name", "url", "inbound", "prefix", "problem"), [
    ("De 1", "https://x", 1, "P", "a name is"),
    ("de-1", "ftp://x", 1, "P", "the URL"),
    ("de-1", "https://x", 0, "P", "positive"),
    ("de-1", "https://x", 1, "lapse_panel", "capitals"),
    ("default", "https://x", 1, "P", "LAPSE_PANEL_"),
])
def test_a_bad_definition_is_refused_with_the_reason(conn, name, url, inbound, prefix, problem):
    with pytest.raises(InvalidPanel, match=problem):
        panels.add_panel(conn, name, url, inbound, prefix, now=NOW)


def test_a_name_is_taken_once(conn):
    panels.add_panel(conn, "de-1", "https://x", 1, "P", now=NOW)
    with pytest.raises(InvalidPanel, match="taken"):
        panels.add_panel(conn, "de-1", "https://y", 1, "Q", now=NOW)


def test_the_default_panel_follows_the_environment_and_keeps_the_operators_choices(conn):
    assert panels.ensure_default_panel(conn, None, 1, now=NOW) is None
    first = panels.ensure_default_panel(conn, "http://panel:2053", 1, now=NOW)
    assert first is not None and (first.name, first.credentials_env) == ("default", "LAPSE_PANEL")
    panels.set_enabled(conn, "default", False, now=NOW)
    again = panels.ensure_default_panel(conn, "http://panel:2053", 1, now=NOW)
    moved = panels.ensure_default_panel(conn, "http://other:2053", 2, now=NOW)
    assert again is not None and moved is not None
    assert again.id == first.id == moved.id and not again.enabled and not moved.enabled
    assert (moved.url, moved.inbound_id) == ("http://other:2053", 2)


def test_enable_and_disable_by_name(conn):
    panels.add_panel(conn, "de-1", "https://x", 1, "P", now=NOW)
    assert not panels.set_enabled(conn, "de-1", False, now=NOW).enabled
    assert panels.list_panels(conn, enabled_only=True) == []
    assert panels.set_enabled(conn, "de-1", True, now=NOW).enabled
    with pytest.raises(UnknownPanel, match="lapse panel list"):
        panels.set_enabled(conn, "nope", True, now=NOW)


def test_the_login_refused_mark_keeps_its_first_time_until_cleared(conn):
    panel = panels.add_panel(conn, "de-1", "https://x", 1, "P", now=NOW)
    panels.mark_login_refused(conn, panel.id, "refused", now=NOW)
    assert panels.usable_panels(conn) == []
    marked = panels.mark_login_refused(conn, panel.id, "refused again", now=NOW + timedelta(hours=1))
    assert (marked.login_refused_at, marked.last_error) == (NOW, "refused again")
    cleared = panels.clear_login_refused(conn, panel.id, now=NOW + timedelta(hours=2))
    assert not cleared.login_refused and cleared.last_error is None
    assert panels.usable_panels(conn) == [cleared]
    panels.set_enabled(conn, "de-1", False, now=NOW)
    assert panels.usable_panels(conn) == []


def test_a_keys_state_per_panel_counts_failed_attempts(conn):
    panel = panels.add_panel(conn, "de-1", "https://x", 1, "P", now=NOW)
    key = uuid.uuid4()
    panels.record_client_state(conn, key, panel.id, "adding", now=NOW)
    panels.record_client_state(conn, key, panel.id, "adding", now=NOW, error="HTTP 502")
    row = panels.record_client_state(conn, key, panel.id, "adding", now=NOW, error="HTTP 502")
    assert (row["state"], row["attempts"], row["last_error"]) == ("adding", 2, "HTTP 502")
    row = panels.record_client_state(conn, key, panel.id, "present", now=NOW)
    assert (row["attempts"], row["last_error"]) == (0, None)
    [state] = panels.client_states(conn, key)
    assert (state["panel"], state["state"]) == ("de-1", "present")
    assert panels.client_counts(conn) == {panel.id: {"present": 1}}
    with pytest.raises(ValueError, match="unknown panel client state"):
        panels.record_client_state(conn, key, panel.id, "gone", now=NOW)
