"""`lapse broadcast create|start|status|cancel` end to end: the real command on a fresh database."""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.support.cli import lapse


def one_error_line(result):
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def env(database):
    return {"DATABASE_URL": database}


def table(database, sql="select id, status, cursor_user_id, queued from broadcasts order by id"):
    with psycopg.connect(database) as conn:
        return conn.execute(sql).fetchall()


def status(env, broadcast_id):
    result = lapse("broadcast", "status", str(broadcast_id), "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_create_start_status_cancel(env, database, tmp_path):
    with psycopg.connect(database) as conn:
        conn.execute("insert into users (telegram_id) select 7000 + n from generate_series(1, 5) n")
    (tmp_path / "en.txt").write_text("Our prices went down.")
    (tmp_path / "ru.txt").write_text("Цены снизились.")
    created = lapse("broadcast", "create", "--text-file", str(tmp_path / "en.txt"),
                    "--text-file", f"ru={tmp_path / 'ru.txt'}", env=env)
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("created broadcast 1 (draft, texts en, ru)")
    shown = status(env, 1)
    assert (shown["status"], shown["languages"], shown["remaining"], shown["sent"]) == (
        "draft", ["en", "ru"], 5, 0)
    started = lapse("broadcast", "start", "1", env=env)
    assert started.returncode == 0 and "broadcast 1 started" in started.stdout, started.stderr
    assert status(env, 1)["status"] == "running"
    text = lapse("broadcast", "status", "1", env=env).stdout
    assert "broadcast 1: running (texts en, ru)" in text and "remaining 5" in text
    cancelled = lapse("broadcast", "cancel", "1", env=env)
    assert cancelled.returncode == 0 and "broadcast 1 cancelled" in cancelled.stdout
    assert (status(env, 1)["status"], status(env, 1)["remaining"]) == ("cancelled", 0)


def test_a_template_broadcast(env):
    result = lapse("broadcast", "create", "--template", "broadcast_winback", env=env)
    assert result.returncode == 0, result.stderr
    assert status(env, 1)["template"] == "broadcast_winback"


@pytest.mark.parametrize(("args", "says"), [
    (["create"], "give the message, --text-file FILE (English) or --template NAME"),
    (["create", "--text-file", "/nonexistent/news.txt"], "cannot read it"),
    (["create", "--text-file", "{empty}"], "the en text is empty"),
    (["create", "--text-file", "ru={ru}"], "an English text is required"),
    (["create", "--text-file", "{ru}", "--text-file", "en={ru}"], "two texts for language 'en'"),
    (["create", "--template", "nope"], "no template 'nope'"),
    (["start", "99"], "no broadcast with id 99"),
    (["status", "99"], "no broadcast with id 99"),
    (["cancel", "99"], "no broadcast with id 99"),
])
def test_bad_input_is_one_line_and_changes_nothing(env, database, tmp_path, args, says):
    (tmp_path / "empty.txt").write_text(" \n")
    (tmp_path / "ru.txt").write_text("Привет")
    args = [a.format(empty=tmp_path / "empty.txt", ru=tmp_path / "ru.txt") for a in args]
    line = one_error_line(lapse("broadcast", *args, env=env))
    assert says in line, line
    assert table(database) == []


def test_a_cancelled_broadcast_cannot_be_started_or_cancelled_again(env, database, tmp_path):
    (tmp_path / "en.txt").write_text("Hello")
    assert lapse("broadcast", "create", "--text-file", str(tmp_path / "en.txt"),
                 env=env).returncode == 0
    assert lapse("broadcast", "cancel", "1", env=env).returncode == 0
    before = table(database, "select * from broadcasts")
    assert "broadcast 1 is cancelled: cannot start it" in one_error_line(
        lapse("broadcast", "start", "1", env=env))
    assert "broadcast 1 is cancelled: cannot cancel it" in one_error_line(
        lapse("broadcast", "cancel", "1", env=env))
    assert table(database, "select * from broadcasts") == before
    assert table(database, "select * from notifications") == []
