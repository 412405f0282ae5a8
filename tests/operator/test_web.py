"""The web console through Starlette's TestClient: every page and its JSON twin, the token and
CSRF refusals, bulk actions that act only on what their dry run counted, the audit table."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from tests.operator import support
from tests.support.factories import given


def pages(world: support.World) -> list[str]:
    return ["/", "/sweeps", "/sweeps/lapses", "/dead-letters", f"/dead-letters/{world.dead_ids[0]}",
            "/dead-letters/bulk?action=requeue", f"/users/{world.user_id}", "/charts?days=7",
            "/audit"]


def twin(path: str) -> list[str]:
    base, _, query = path.partition("?")
    json_path = "/overview.json" if base == "/" else base + ".json"
    return [json_path + (f"?{query}" if query else ""),
            path + ("&" if query else "?") + "format=json"]


def test_every_page_and_its_json_twins_answer(client, world):
    for path in pages(world):
        html = client.get(path)
        assert html.status_code == 200, path
        assert html.headers["content-type"].startswith("text/html"), path
        assert 'src="/static/htmx.min.js"' in html.text
        for json_path in twin(path):
            answer = client.get(json_path)
            assert answer.status_code == 200, json_path
            assert answer.headers["content-type"] == "application/json", json_path
            assert isinstance(answer.json(), dict)


def test_htmx_and_the_console_script_are_served_from_the_package(client):
    script = client.get("/static/htmx.min.js")
    assert script.status_code == 200 and "htmx" in script.text[:200]
    assert "lapsePaused" in client.get("/static/console.js").text


def test_overview_says_what_needs_the_operator(client):
    data = client.get("/overview.json").json()
    attention = " | ".join(data["attention"])  # lapse status's findings
    assert "sweep_purge's last run failed: RuntimeError('s3 down')" in attention
    assert "2 new dead letter(s) since 2026-11-19T12:00:00+00:00" in attention  # one is older
    assert "sweep_retention is overdue (never completed" in attention
    assert data["needs_attention"] is True and data["status"]["dead_letters"]["open"] == 3
    assert data["dead_letters"]["open"] == 3
    assert [g["error"] for g in data["dead_letters"]["groups"]] == ["PanelUnavailable", "ValueError"]
    page = client.get("/").text
    assert 'hx-trigger="every 15s [!lapsePaused()]"' in page and 'id="pause"' in page


def test_sweeps_page_says_the_cron_in_words_the_next_run_and_the_last_outcome(client):
    rows = {s["name"]: s for s in client.get("/sweeps.json").json()["sweeps"]}
    assert rows["lapses"]["cron_words"] == "hourly at minute 0"
    assert rows["lapses"]["next_run"] == "2026-11-20T13:00:00+00:00"
    assert rows["retention"]["cron_words"] == "daily at 01:30 UTC"
    assert rows["retention"]["next_run"] == "2026-11-21T01:30:00+00:00"
    assert rows["fast_expiry"]["cron_words"] == "every minute"
    assert rows["lapses"]["last_status"] == "completed"
    assert rows["lapses"]["last_duration_seconds"] == 60.0 and not rows["lapses"]["overdue"]
    assert rows["purge"]["last_status"] == "failed"
    assert rows["retention"]["overdue"]  # never ran
    history = client.get("/sweeps/lapses.json").json()["history"]
    assert [(h["status"], h["counts"]) for h in history] == [("completed", {"tagged": 3})]
    assert client.get("/sweeps/nothing").status_code == 404


def test_dead_letters_are_grouped_by_error_and_filtered_by_bookmarkable_urls(client, world):
    data = client.get("/dead-letters.json").json()
    assert [(g["error"], g["count"]) for g in data["groups"]] == [("PanelUnavailable", 2),
                                                                   ("ValueError", 1)]
    by_error = client.get("/dead-letters.json?error=ValueError").json()
    assert [r["actor_name"] for r in by_error["rows"]] == ["remove_client"]
    by_user = client.get(f"/dead-letters.json?user={world.user_id}").json()
    assert sorted(r["id"] for r in by_user["rows"]) == world.dead_ids[:2]
    assert len(client.get("/dead-letters.json?actor=remove_client").json()["rows"]) == 1
    assert len(client.get("/dead-letters.json?queue=retention").json()["rows"]) == 2
    page = client.get(f"/dead-letters?user={world.user_id}&error=PanelUnavailable").text
    assert f'href="/dead-letters?user={world.user_id}&amp;error=PanelUnavailable"' in page
    assert client.get("/dead-letters?user=abc").status_code == 400


def test_a_dead_letter_shows_its_arguments_and_traceback(client, world):
    page = client.get(f"/dead-letters/{world.dead_ids[0]}").text
    assert "Traceback (most recent call last)" in page and f"[\n  {world.user_id}\n]" in page
    data = client.get(f"/dead-letters/{world.dead_ids[0]}.json").json()["dead_letter"]
    assert data["args"] == [world.user_id] and "PanelUnavailable" in data["traceback"]
    assert client.get("/dead-letters/999999").status_code == 404


def test_the_user_page_explains_and_shows_the_timeline(client, world):
    data = client.get(f"/users/{world.user_id}.json").json()
    assert data["explain"]["access"] is True
    assert any(s["holds"] for s in data["explain"]["sources"])
    assert data["explain"]["keys"][0]["panels"][0]["state"] == "present"
    kinds = {t["kind"] for t in data["timeline"]}
    assert {"subscription", "event", "payment", "ledger", "notice", "tag", "restore",
            "panel client"} <= kinds
    page = client.get(f"/users/{world.user_id}").text
    assert 'id="timeline"' in page and "renewal_failed: sent" in page
    assert client.get("/users/999999").status_code == 404
    assert client.get(f"/users?id={world.user_id}", follow_redirects=False).headers["location"] \
        == f"/users/{world.user_id}"


def test_the_charts_have_one_point_per_day(client):
    data = client.get("/charts.json?days=7").json()
    days = [(support.NOW - timedelta(days=n)).date().isoformat() for n in range(6, -1, -1)]
    charts = {c["key"]: c for c in data["charts"]}
    assert set(charts) == {"renewals", "expiries", "activations", "tags", "leaks", "dead_letters"}
    for chart in charts.values():
        assert chart["days"] == days
        assert all(len(values) == 7 for values in chart["series"].values())
    assert charts["renewals"]["series"]["renewals"] == [0, 0, 1, 1, 0, 0, 0]
    assert charts["renewals"]["series"]["renewal_failures"] == [0, 0, 0, 1, 0, 0, 0]
    assert charts["tags"]["series"] == {"tags": [0, 0, 0, 0, 1, 0, 0],
                                        "restores": [0, 0, 0, 0, 0, 1, 0]}
    assert charts["dead_letters"]["series"]["dead_letters"] == [0, 0, 0, 1, 0, 0, 2]
    page = client.get("/charts?days=7").text
    for svg in re.findall(r'<svg class="chart".*?</svg>', page, re.S):
        for group in re.findall(r'<g class="series".*?</g>', svg, re.S):
            assert len(re.findall(r'<circle class="point"', group)) == 7
    assert client.get("/charts?days=0").status_code == 400


def audit_rows(pool):
    with pool.connection() as conn:
        return conn.execute("select * from web_audit order by id").fetchall()


def open_ids(pool):
    with pool.connection() as conn:
        return [r["id"] for r in conn.execute(
            "select id from dead_letters where requeued_at is null order by id")]


def dry_run(client, query: str) -> dict:
    return client.get(f"/dead-letters/bulk.json?{query}").json()


def confirm(client, fields: dict, **overrides) -> object:
    """Post the confirmation form as the page would (its CSRF cookie set by a page first)."""
    if client.cookies.get("lapse_csrf") is None:
        client.get("/dead-letters")
    csrf = client.cookies.get("lapse_csrf")
    form = {"token": support.TOKEN, "csrf": csrf} | fields | overrides
    return client.post("/dead-letters/bulk", data={k: v for k, v in form.items() if v is not None})


def test_without_a_token_the_console_is_read_only(readonly, pool, world):
    page = readonly.get("/dead-letters").text
    assert "read-only" in page and 'id="bulk-requeue"' not in page
    answer = confirm(readonly, {"action": "requeue", "counted": "3", "max_id": str(world.dead_ids[-1])})
    assert answer.status_code == 403 and "read-only" in answer.text
    assert open_ids(pool) == world.dead_ids
    [row] = audit_rows(pool)
    assert row["outcome"] == "refused" and row["acted_ids"] == []


@pytest.mark.parametrize(("change", "status"), [
    ({"token": "wrong-token-0123456789"}, 401),
    ({"token": None}, 401),
    ({"csrf": None}, 403),
    ({"csrf": "forged"}, 403),
])
def test_a_mutation_without_the_token_or_the_csrf_value_is_refused(client, pool, world, change,
                                                                   status):
    client.get("/dead-letters")  # sets the CSRF cookie
    fields = {"action": "purge", "counted": "3", "max_id": str(world.dead_ids[-1])}
    answer = confirm(client, fields, **change)
    assert answer.status_code == status
    assert open_ids(pool) == world.dead_ids
    assert [r["outcome"] for r in audit_rows(pool)] == ["refused"]


def test_a_form_post_from_another_origin_is_refused(client, pool, world):
    client.get("/dead-letters")
    csrf = client.cookies.get("lapse_csrf")
    answer = client.post("/dead-letters/bulk", headers={"origin": "http://evil.example"},
                         data={"token": support.TOKEN, "csrf": csrf, "action": "purge",
                               "counted": "3", "max_id": str(world.dead_ids[-1])})
    assert answer.status_code == 403 and "another origin" in answer.text
    assert open_ids(pool) == world.dead_ids


def test_an_api_client_uses_the_bearer_token_without_a_cookie(client, pool, world):
    counted = dry_run(client, "action=purge&error=ValueError")
    assert counted["count"] == 1
    client.cookies.clear()
    wrong = client.post("/dead-letters/bulk.json", headers={"authorization": "Bearer nope"},
                        data={"action": "purge", "error": "ValueError", "counted": "1",
                              "max_id": str(counted["max_id"])})
    assert wrong.status_code == 401
    done = client.post("/dead-letters/bulk.json",
                       headers={"authorization": f"Bearer {support.TOKEN}"},
                       data={"action": "purge", "error": "ValueError", "counted": "1",
                             "max_id": str(counted["max_id"])})
    assert done.status_code == 200 and done.json()["acted_ids"] == [world.dead_ids[2]]
    assert open_ids(pool) == world.dead_ids[:2]


def test_bulk_requeue_acts_only_on_the_rows_its_dry_run_counted(client, pool, world, stub_broker):
    page = client.get("/dead-letters?error=PanelUnavailable").text
    assert 'id="bulk-requeue"' in page
    counted = dry_run(client, "action=requeue&error=PanelUnavailable")
    assert (counted["count"], counted["max_id"]) == (2, world.dead_ids[1])
    later = given(pool, lambda conn: support.dead_letter(conn, user_id=world.user_id))
    answer = confirm(client, {"action": "requeue", "error": "PanelUnavailable",
                              "counted": "2", "max_id": str(counted["max_id"])})
    assert answer.status_code == 200, answer.text
    assert open_ids(pool) == [world.dead_ids[2], later]  # the one that died later is untouched
    assert stub_broker.queues["retention"].qsize() == 2
    [row] = audit_rows(pool)
    assert (row["action"], row["outcome"], row["counted"], row["counted_max_id"]) == (
        "requeue", "done", 2, world.dead_ids[1])
    assert row["acted_ids"] == world.dead_ids[:2]
    assert row["filter"] == {"actor": None, "queue": None, "user_id": None,
                             "error": "PanelUnavailable"}
    assert row["client"] == "testclient"
    assert "requeued 2 of 2 counted" in client.get("/audit").text


def test_bulk_purge_by_user_deletes_only_the_counted_rows(client, pool, world):
    counted = dry_run(client, f"action=purge&user={world.user_id}")
    later = given(pool, lambda conn: support.dead_letter(conn, user_id=world.user_id))
    answer = confirm(client, {"action": "purge", "user": str(world.user_id),
                              "counted": str(counted["count"]), "max_id": str(counted["max_id"])})
    assert answer.status_code == 200
    assert open_ids(pool) == [world.dead_ids[2], later]


def test_a_confirmation_is_refused_when_more_rows_match_than_were_counted(client, pool, world):
    # A row the dry run did not count (requeued then, dead again now) under the counted id.
    answer = confirm(client, {"action": "purge", "error": "PanelUnavailable", "counted": "1",
                              "max_id": str(world.dead_ids[1])})
    assert answer.status_code == 409 and "run the dry run again" in answer.text
    assert open_ids(pool) == world.dead_ids
    assert [r["outcome"] for r in audit_rows(pool)] == ["refused"]


def test_the_confirm_page_carries_the_count_and_the_highest_id(client, world):
    page = client.get("/dead-letters/bulk?action=purge&error=PanelUnavailable").text
    assert '<strong id="counted">2</strong>' in page
    assert f'name="max_id" value="{world.dead_ids[1]}"' in page
    assert 'name="csrf" value="' in page and 'type="password" name="token"' in page
    assert client.get("/dead-letters/bulk?action=explode").status_code == 400


def test_text_from_a_dead_letter_is_escaped(client, pool, world):
    hostile = "ValueError('<script>alert(1)</script>')"
    dead = given(pool, lambda conn: support.dead_letter(conn, user_id=None, exception=hostile))
    for path in (f"/dead-letters/{dead}", "/dead-letters"):
        page = client.get(path).text
        assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page, path
    assert "<script>alert(1)" not in client.get("/").text


def test_on_loopback_only_loopback_host_names_are_answered(pool, world, stub_broker):
    from starlette.testclient import TestClient

    from lapse.operator.web.app import create_app
    from lapse.operator.web.serve import allowed_hosts

    assert allowed_hosts("0.0.0.0") is None
    app = create_app(pool, support.config(), broker=lambda: stub_broker, now=lambda: support.NOW,
                     allowed_hosts=allowed_hosts("127.0.0.1"))
    with TestClient(app, base_url="http://127.0.0.1:8080") as local:
        assert local.get("/sweeps.json").status_code == 200
    with TestClient(app, base_url="http://rebound.example:8080") as rebound:
        assert rebound.get("/sweeps.json").status_code == 400
