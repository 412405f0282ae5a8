"""`lapse panel add|enable|disable|list|check` end to end: the real command against the fake panel."""

from __future__ import annotations

import json

import psycopg
import pytest

from lapse.ports.fakes import xui as fake
from tests.conftest import create_database, database_name, drop_database
from tests.support.cli import lapse


@pytest.fixture
def xui(httpserver):
    return fake.FakeXui.serve(httpserver, language="ru")


@pytest.fixture
def env(database, xui):
    return {"DATABASE_URL": database, "LAPSE_PANEL_URL": xui.url, "LAPSE_PANEL_USER": fake.USER,
            "LAPSE_PANEL_PASSWORD": fake.PASSWORD, "LAPSE_PANEL_INBOUND_ID": "1",
            "LAPSE_PANEL_TOKEN": "", "LAPSE_PANEL_TIMEOUT_SECONDS": "2"}


def one_error_line(result):
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    return lines[0]


def listed(env):
    result = lapse("panel", "list", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return {p["name"]: p for p in json.loads(result.stdout)}


def test_add_list_enable_disable(env, xui):
    env = env | {"LAPSE_PANEL_DE1_TOKEN": fake.TOKEN}
    added = lapse("panel", "add", "de-1", "--url", xui.url, "--inbound", "1",
                  "--credentials-env", "LAPSE_PANEL_DE1", env=env)
    assert added.returncode == 0 and "added panel de-1" in added.stdout, added.stderr
    panels = listed(env)
    assert set(panels) == {"default", "de-1"}
    assert (panels["de-1"]["credentials"], panels["default"]["credentials"]) == (
        "token", "user+password")
    assert lapse("panel", "disable", "de-1", env=env).stdout.strip() == "panel de-1 disabled"
    assert not listed(env)["de-1"]["enabled"]
    assert lapse("panel", "enable", "de-1", env=env).returncode == 0
    assert listed(env)["de-1"]["enabled"]
    text = lapse("panel", "list", env=env).stdout
    assert "LAPSE_PANEL_DE1_* (token)" in text and fake.TOKEN not in text
    assert xui.received == []  # list, add, enable and disable never call a panel


def test_add_refuses_a_missing_credential_variable(env, xui):
    line = one_error_line(lapse("panel", "add", "de-1", "--url", xui.url, "--inbound", "1",
                                "--credentials-env", "LAPSE_PANEL_DE1",
                                env=env | {"LAPSE_PANEL_DE1_USER": "admin"}))
    assert "LAPSE_PANEL_DE1_TOKEN, or LAPSE_PANEL_DE1_USER and LAPSE_PANEL_DE1_PASSWORD" in line
    assert set(listed(env)) == {"default"}


@pytest.mark.parametrize(("args", "says"), [
    (("add", "de-1", "--url", "ftp://x", "--inbound", "1", "--credentials-env", "LAPSE_PANEL"),
     "the URL must be"),
    (("add", "default", "--url", "http://x", "--inbound", "1", "--credentials-env", "LAPSE_PANEL"),
     "LAPSE_PANEL_*"),
    (("enable", "nope"), "no panel 'nope'"),
])
def test_bad_input_is_one_line(env, args, says):
    assert says in one_error_line(lapse("panel", *args, env=env))


def test_a_second_panel_with_the_same_name_is_refused(env, xui):
    args = ("panel", "add", "de-1", "--url", xui.url, "--inbound", "1",
            "--credentials-env", "LAPSE_PANEL")
    assert lapse(*args, env=env).returncode == 0
    assert "the name is taken" in one_error_line(lapse(*args, env=env))


def test_check_logs_in_and_counts_clients_on_every_enabled_panel(env, xui):
    xui.put_client("c1", uuid_="c1", sub_id="c1", comment="lapse")
    xui.put_client("someone", comment="vip")
    env = env | {"LAPSE_PANEL_B_TOKEN": fake.TOKEN}
    lapse("panel", "add", "b", "--url", xui.url, "--inbound", "1", "--credentials-env",
          "LAPSE_PANEL_B", env=env)
    result = lapse("panel", "check", "--json", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and {p["name"] for p in report["panels"]} == {"default", "b"}
    for checked in report["panels"]:
        assert (checked["reachable"], checked["login"], checked["version_ok"],
                checked["inbound_found"], checked["lapse_clients"], checked["other_clients"]) == (
            True, "ok", True, True, 1, 1)
    assert xui.login_attempts == 1  # the token panel never logs in
    assert lapse("panel", "disable", "b", env=env).returncode == 0
    assert "b " not in lapse("panel", "check", env=env).stdout


def test_check_says_which_panel_refuses_marks_it_and_a_later_success_clears_it(env, xui):
    refused = lapse("panel", "check", env=env | {"LAPSE_PANEL_PASSWORD": "wrong"})
    assert refused.returncode == 1
    assert "FAIL  default" in refused.stdout and "refuses the credentials" in refused.stdout
    assert xui.login_attempts == 1
    marked = listed(env)["default"]
    assert marked["login_refused_at"] and "login refused" in marked["last_error"]
    assert "login refused since" in lapse("panel", "list", env=env).stdout
    fixed = lapse("panel", "check", env=env)
    assert fixed.returncode == 0 and "all panels ok" in fixed.stdout, fixed.stdout
    assert listed(env)["default"]["login_refused_at"] is None


def test_check_says_which_panel_is_too_old_or_unreachable_or_lacks_the_inbound(env, xui):
    xui.version = (2, 6, 0)
    env = env | {"LAPSE_PANEL_DOWN_TOKEN": "t", "LAPSE_PANEL_NOINBOUND_TOKEN": fake.TOKEN}
    lapse("panel", "add", "down", "--url", "http://127.0.0.1:9", "--inbound", "1",
          "--credentials-env", "LAPSE_PANEL_DOWN", env=env)
    result = lapse("panel", "check", "--json", env=env)
    assert result.returncode == 1
    checked = {p["name"]: p for p in json.loads(result.stdout)["panels"]}
    assert checked["default"]["problem"].startswith("too old")
    assert checked["default"]["version_ok"] is False
    assert checked["down"]["problem"].startswith("unreachable") and not checked["down"]["reachable"]
    xui.version = (3, 6, 0)
    lapse("panel", "add", "noinbound", "--url", xui.url, "--inbound", "7",
          "--credentials-env", "LAPSE_PANEL_NOINBOUND", env=env)
    lapse("panel", "disable", "down", env=env)
    text = lapse("panel", "check", env=env).stdout
    assert "inbound 7 not found" in text and "1 panel(s) with a problem: noinbound" in text


def test_check_with_no_panels_is_fine_and_says_so(database):
    result = lapse("panel", "check", env={"DATABASE_URL": database, "LAPSE_PANEL_URL": ""})
    assert result.returncode == 0 and "no enabled panels" in result.stdout


def test_check_marks_nothing_when_credentials_are_missing(env, database):
    result = lapse("panel", "check", env=env | {"LAPSE_PANEL_PASSWORD": "", "LAPSE_PANEL_TOKEN": "",
                                                "LAPSE_PANEL_URL": ""})
    assert result.returncode == 0
    with psycopg.connect(database) as conn:
        assert conn.execute("select count(*) from panels").fetchone() == (0,)


def test_the_first_run_on_a_brand_new_database(xui, env):
    name = database_name("fresh")
    url = create_database(name, template=None)
    try:
        env = env | {"DATABASE_URL": url}
        assert lapse("db", "migrate", env=env).returncode == 0
        result = lapse("panel", "check", env=env)
        assert result.returncode == 0 and "all panels ok" in result.stdout, result.stdout
        assert "default" in listed(env)
    finally:
        drop_database(name)
