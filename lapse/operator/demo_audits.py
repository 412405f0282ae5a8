"""The demo's end: every audit (invariants, leaks, S3, panel against database) and the summary table.

Everything in the summary comes from the database, the bucket or the fake
panel as they are at the end, plus the run's own counts (actions, faults,
retries): no wall-clock time, so two runs with one seed print the same JSON.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, TextIO

from domain import audits, invariants
from lapse.flows.reconcile import read_current_keys
from lapse.operator.demo_world import World
from lapse.platform.config import settings
from lapse.platform.sql import queries
from lapse.ports.s3 import S3RecordingStore

SQL = queries(__file__, "demo")


def panel_against_database(pool: Any, world: World) -> dict[str, int]:
    """Lapse's clients on the panel against the current keys: none missing, no orphan."""
    assert world.panel_port is not None
    on_panel = {c.email for c in world.panel_port.list_clients(only_lapse=True)}
    current = read_current_keys(pool)
    must_hold = {key for key, status in current.items() if status != "pending"}
    return {"panel_clients": len(on_panel), "current_keys": len(must_hold),
            "missing_from_panel": len(must_hold - on_panel),
            "orphans_on_panel": len(on_panel - set(current))}


def run_audits(pool: Any, store: S3RecordingStore, world: World, *, now: datetime
               ) -> dict[str, Any]:
    config = settings()
    with pool.connection() as conn:
        checks = invariants.check_invariants(conn, now=now, billing_grace=config.billing_grace,
                                             alert_age=config.leak_alert_age)
        leaks = audits.leak_report(conn, now=now, since=now - timedelta(days=90),
                                   max_age=config.leak_alert_age,
                                   billing_grace=config.billing_grace)
        recordings = list(audits.recordings_to_check(conn, sample=None))
        pending = audits.pending_keys(conn)
    drift = audits.s3_drift(recordings, store, pending=pending)
    panel = panel_against_database(pool, world)
    failed = [c.name for c in checks if not c.ok]
    ok = (not failed and not leaks.too_old and drift.ok and not panel["missing_from_panel"]
          and not panel["orphans_on_panel"])
    return {
        "ok": ok,
        "invariants": {c.name: "ok" if c.ok else "FAIL" for c in checks},
        "invariant_violations": len(failed),
        "leaked_users": len(leaks.leaked_users),
        "leaks_past_alert_age": int(leaks.too_old),
        "oldest_leak_hours": (None if leaks.oldest_leak_age is None
                              else round(leaks.oldest_leak_age.total_seconds() / 3600, 1)),
        "unapplied_batches": len(leaks.unapplied_batches),
        "s3_checked": drift.checked, "s3_drift": dict(drift.drift),
        "panel": panel,
    }


def summary(pool: Any, result: dict[str, Any], checks: dict[str, Any]) -> dict[str, Any]:
    with pool.connection() as conn:
        numbers = dict(conn.execute(SQL["summary"]).fetchone() or {})
        panel_states = {r["state"]: r["n"] for r in conn.execute(SQL["panel_clients_by_state"])}
        notices: dict[str, dict[str, int]] = {}
        for row in conn.execute(SQL["notifications_by_kind"]):
            notices.setdefault(row["kind"], {})[row["status"]] = row["n"]
    done = result["done"]
    return {
        "numbers": {k: int(v) for k, v in numbers.items()},
        "resubscribed_in_grace": done.get("resubscribe_in_grace", 0),
        "resubscribed_after_expiry": done.get("resubscribe_after_expiry", 0),
        "panel_clients_by_state": panel_states,
        "notifications": notices,
        "actions": dict(sorted(done.items())),
        "faults_injected": result["faults"],
        "messages": result["outcomes"],
        "retries_still_waiting": result["retries_waiting"],
        "sweep_runs": result["sweep_runs"],
        "audits": checks,
    }


_ROWS: list[tuple[str, str]] = [
    ("users signed up", "users"), ("trials started", "trials"),
    ("trials converted to a plan", "trials_converted"), ("trials ended unpaid", "trials_expired"),
    ("plans bought", "plans_bought"), ("  from the balance", "plans_by_balance"),
    ("  by crypto invoice", "plans_by_crypto"), ("  by in-app payment", "plans_in_app"),
    ("balance top-ups", "topups"), ("crypto invoices expired unpaid", "crypto_invoices_expired"),
    ("purchases failed", "purchases_failed"),
    ("auto-renewals charged", "renewals"), ("renewals failed (balance dry)", "renewals_failed"),
    ("cancellations", "cancellations"), ("refunds", "refunds"),
    ("referral rewards", "referral_rewards"),
    ("subscriptions active now", "active_now"), ("  in billing grace now", "in_grace_now"),
    ("  cancelled, running out", "cancelled_now"), ("  pending activation", "pending_now"),
    ("subscriptions expired", "expired"),
    ("family members added / removed", "family"), ("sponsorships granted / revoked", "sponsor"),
    ("sessions recorded", "sessions"), ("  refused by the gate (no audio)", "sessions_refused_by_gate"),
    ("recordings kept", "recordings_kept"), ("recordings tagged for deletion", "recordings_tagged"),
    ("recordings purged", "recordings_purged"), ("dead letters", "dead_letters"),
]


def print_summary(s: dict[str, Any], out: TextIO) -> None:
    n = s["numbers"]
    pairs = {"family": f"{n['family_members_added']} / {n['family_members_removed']}",
             "sponsor": f"{n['sponsorships_granted']} / {n['sponsorships_revoked']}"}
    a = s["audits"]
    print("\naudits", file=out)
    for name, verdict in a["invariants"].items():
        print(f"  {'ok  ' if verdict == 'ok' else 'FAIL'}  invariant {name}", file=out)
    print(f"  {'ok  ' if not a['leaks_past_alert_age'] else 'FAIL'}  leaks: {a['leaked_users']} "
          f"leaked users, oldest {a['oldest_leak_hours'] or 0} h, "
          f"{a['unapplied_batches']} unapplied batches", file=out)
    print(f"  {'ok  ' if not a['s3_drift'] else 'FAIL'}  S3: {a['s3_checked']} recordings "
          f"checked, {'S3 agrees with the database' if not a['s3_drift'] else a['s3_drift']}",
          file=out)
    p = a["panel"]
    print(f"  {'ok  ' if not p['missing_from_panel'] and not p['orphans_on_panel'] else 'FAIL'}"
          f"  panel: {p['panel_clients']} clients, {p['current_keys']} current keys, "
          f"{p['missing_from_panel']} missing, {p['orphans_on_panel']} orphans", file=out)
    print("\nsummary", file=out)
    for label, key in _ROWS:
        print(f"  {label:<36} {pairs.get(key, n.get(key, ''))!s:>8}", file=out)
    print(f"  {'re-subscribed inside / after grace':<36} "
          f"{s['resubscribed_in_grace']!s:>3} / {s['resubscribed_after_expiry']}", file=out)
    notices = ", ".join(f"{kind} {sum(by.values())}" for kind, by in s["notifications"].items())
    print(f"  notices: {notices or 'none'}", file=out)
    faults = ", ".join(f"{k} {v}" for k, v in sorted(s["faults_injected"].items()))
    print(f"  faults injected: {faults or 'none'}; messages: "
          + ", ".join(f"{k} {v}" for k, v in sorted(s["messages"].items())), file=out)
    print("\n" + ("all audits pass: invariants hold, no leaks past the alert age, S3 and the "
                  "panel agree with the database" if a["ok"] else "PROBLEMS FOUND"), file=out)
