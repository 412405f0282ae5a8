"""`lapse panel add|enable|disable|list|check`: the 3x-ui panels that hold the keys.

Credentials are named, never stored: a panel's prefix names PREFIX_TOKEN, or
PREFIX_USER and PREFIX_PASSWORD, read from the environment when it is used.
``check`` logs in and lists clients on every enabled panel, one panel at a
time and with no database connection held across a panel call; it says which
panel is unreachable, refuses the credentials (and marks it so that nothing
logs in to it again until a check succeeds), or is too old.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from domain import panels
from lapse.flows.panel_check import Checked, check_panel
from lapse.platform import clock
from lapse.platform.config import Settings
from lapse.ports.panel import Credentials, MissingCredentials

EXIT_OK, EXIT_FOUND = 0, 1


def add_arguments(commands: Any) -> None:
    panel = commands.add_parser(
        "panel", help="the 3x-ui panels that hold the keys",
        description="Keys are clients on every enabled panel. The default panel comes from "
                    "LAPSE_PANEL_*; credentials are named by an environment prefix, never stored."
    ).add_subparsers(dest="panel_command", required=True)
    add = panel.add_parser(
        "add", help="add a panel (enabled)",
        description="Credentials: PREFIX_TOKEN, or PREFIX_USER and PREFIX_PASSWORD, read from "
                    "the environment whenever the panel is used (they must be set now too).")
    add.add_argument("name", help="e.g. de-1 (a-z, 0-9, '-', '_')")
    add.add_argument("--url", required=True, help="panel base URL, e.g. https://de1.example:2053/x")
    add.add_argument("--inbound", required=True, type=int, help="id of the inbound holding clients")
    add.add_argument("--credentials-env", required=True, metavar="PREFIX",
                     help="prefix of the credential variables, e.g. LAPSE_PANEL_DE1")
    for verb, text in (("enable", "provision keys on the panel again"),
                       ("disable", "no new keys; reconcile drains its clients")):
        panel.add_parser(verb, help=text).add_argument("name")
    listing = panel.add_parser("list", help="the panels, from the database (no panel is called)")
    listing.add_argument("--json", action="store_true")
    check = panel.add_parser(
        "check", help="log in and list clients on every enabled panel; exit 1 on any problem",
        description="Reachability, version fit (3x-ui v3.1+) and client count of every enabled "
                    "panel. A success clears a panel's login-refused mark.")
    check.add_argument("--json", action="store_true")


def run(args: argparse.Namespace, config: Settings, pool: Any) -> int:
    if args.panel_command == "add":
        Credentials.from_env(args.credentials_env)  # refuse a missing variable now
        with pool.connection() as conn, conn.transaction():
            added = panels.add_panel(conn, args.name, args.url, args.inbound,
                                     args.credentials_env, now=clock.now())
        print(f"added panel {added.name} (id {added.id}): {added.url} inbound {added.inbound_id}, "
              f"credentials from {added.credentials_env}_*")
        return EXIT_OK
    if args.panel_command in ("enable", "disable"):
        with pool.connection() as conn, conn.transaction():
            _default(conn, config)
            changed = panels.set_enabled(conn, args.name, args.panel_command == "enable",
                                         now=clock.now())
        print(f"panel {changed.name} {'enabled' if changed.enabled else 'disabled'}")
        return EXIT_OK
    if args.panel_command == "list":
        return _list(args, config, pool)
    return _check(args, config, pool)


def _default(conn: Any, config: Settings) -> None:
    panels.ensure_default_panel(conn, config.panel_url, config.panel_inbound_id, now=clock.now())


def _credentials(prefix: str) -> str:
    try:
        found = Credentials.from_env(prefix)
    except MissingCredentials:
        return "missing"
    return "token" if found.token else "user+password"


def _list(args: argparse.Namespace, config: Settings, pool: Any) -> int:
    with pool.connection() as conn, conn.transaction():
        _default(conn, config)
        rows = panels.list_panels(conn)
        counts = panels.client_counts(conn)
    listed: list[dict[str, Any]] = [{"id": p.id, "name": p.name, "url": p.url, "inbound_id": p.inbound_id,
               "credentials_env": p.credentials_env, "credentials": _credentials(p.credentials_env),
               "enabled": p.enabled, "login_refused_at": p.login_refused_at,
               "last_error": p.last_error, "clients": counts.get(p.id, {})} for p in rows]
    if args.json:
        print(json.dumps(listed, default=str, indent=2))
        return EXIT_OK
    if not listed:
        print("no panels (set LAPSE_PANEL_URL, or `lapse panel add`)")
        return EXIT_OK
    print(f"{'id':>4}  {'name':16} {'enabled':8} {'inbound':>7}  {'credentials':28} url")
    for p in listed:
        credentials = f"{p['credentials_env']}_* ({p['credentials']})"
        print(f"{p['id']:>4}  {p['name']:16} {'yes' if p['enabled'] else 'no':8} "
              f"{p['inbound_id']:>7}  {credentials:28} {p['url']}")
        if p["login_refused_at"]:
            print(f"      login refused since {p['login_refused_at'].isoformat()}: "
                  f"{p['last_error']} (not logged in to until `lapse panel check` succeeds)")
        if p["clients"]:
            print("      clients: " + ", ".join(f"{k} {v}" for k, v in sorted(p["clients"].items())))
    return EXIT_OK


def _check(args: argparse.Namespace, config: Settings, pool: Any) -> int:
    with pool.connection() as conn, conn.transaction():
        _default(conn, config)
        enabled = panels.list_panels(conn, enabled_only=True)
    results = [(panel, check_panel(panel, config.panel_timeout_seconds)) for panel in enabled]
    for panel, checked in results:  # marks written after the calls, in short transactions
        with pool.connection() as conn, conn.transaction():
            if checked.login == "refused":
                panels.mark_login_refused(conn, panel.id, checked.problem or "", now=clock.now())
            elif checked.problem is None and panel.login_refused:
                panels.clear_login_refused(conn, panel.id, now=clock.now())
    checks = [checked for _, checked in results]
    if args.json:
        print(json.dumps({"ok": all(c.problem is None for c in checks),
                          "panels": [asdict(c) for c in checks]}, indent=2))
    else:
        _print_checks(checks)
    return EXIT_FOUND if any(c.problem for c in checks) else EXIT_OK


def _print_checks(checks: list[Checked]) -> None:
    if not checks:
        print("no enabled panels (set LAPSE_PANEL_URL, or `lapse panel add`)")
    for c in checks:
        verdict = "ok  " if c.problem is None else "FAIL"
        print(f"{verdict}  {c.name}  {c.url}  inbound {c.inbound_id}")
        print(f"        reachable: {_yes(c.reachable)}  login: {c.login}  "
              f"version v3.1+: {_yes(c.version_ok)}  inbound found: {_yes(c.inbound_found)}")
        if c.lapse_clients is not None:
            print(f"        clients: {c.lapse_clients} Lapse (comment=lapse), "
                  f"{c.other_clients} others")
        if c.problem:
            print(f"        problem: {c.problem}")
    bad = [c.name for c in checks if c.problem]
    print("all panels ok" if not bad else f"{len(bad)} panel(s) with a problem: {', '.join(bad)}")


def _yes(value: bool | None) -> str:
    return "?" if value is None else ("yes" if value else "no")
