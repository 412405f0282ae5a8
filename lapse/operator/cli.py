"""The ``lapse`` command: migrations, sweeps, audits, explain, the dead-letter archive, panels, demo.

Exit codes: 0 done, 1 an audit found problems, 2 bad input or configuration
(one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg

from lapse.platform import clock
from lapse.platform.config import ConfigError, Settings, settings

EXIT_OK, EXIT_FOUND, EXIT_BAD_INPUT = 0, 1, 2
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class BadInput(Exception):
    """A problem with what the operator asked for; printed as one line, exit 2."""


def _time(text: str) -> datetime:
    try:
        return clock.parse_time(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {text!r} (e.g. 2026-11-24T10:00:00Z)") from None


def _duration(text: str) -> timedelta:
    unit = _UNITS.get(text[-1:].lower())
    try:
        amount = float(text[:-1]) if unit else float("nan")
    except ValueError:
        amount = float("nan")
    if unit is None or not amount > 0:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 26h, 90m, 2d)")
    return timedelta(**{unit: amount})


def _since(text: str) -> datetime | timedelta:
    try:
        return clock.parse_time(text)
    except ValueError:
        pass  # not a time: a duration back from now
    try:
        return _duration(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"not a time or a duration: {text!r} (e.g. 2026-11-01T00:00:00Z or 7d)") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    from lapse.flows import sweeps

    parser = argparse.ArgumentParser(
        prog="lapse",
        description="Operate Lapse: the background work of a subscription service.",
        epilog="Configuration comes from the environment (see README). With no DATABASE_URL, "
               "lapse runs an embedded PostgreSQL under LAPSE_HOME (default ./.lapse).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db = commands.add_parser("db", help="database schema").add_subparsers(dest="db_command",
                                                                          required=True)
    db.add_parser("migrate", help="apply pending migrations (idempotent, safe concurrently)")
    db.add_parser("status", help="list pending migrations")

    sweep = commands.add_parser(
        "sweep", help="run one sweep now, in this process",
        description="Run one periodic sweep inline (no broker needed); its effects are complete "
                    "when it returns. Sweeps: " + ", ".join(sorted(sweeps.SWEEPS)))
    sweep.add_argument("name", help="sweep name without the sweep_ prefix, e.g. retention")
    sweep.add_argument("--now", type=_time, help="act as of this time "
                       "(needs LAPSE_ALLOW_CLOCK_OVERRIDE=1: it changes state)")
    sweep.add_argument("--dry-run", action="store_true", help="print what it would do, change nothing")

    audit = commands.add_parser("audit", help="check the data").add_subparsers(
        dest="audit_command", required=True)
    invariants = audit.add_parser("invariants", help="check SPEC §8's invariants; exit 1 on any")
    invariants.add_argument("--now", type=_time, help="evaluate as of this time (read-only)")
    invariants.add_argument("--json", action="store_true", help="machine-readable output")
    leaks = audit.add_parser(
        "leaks", help="recordings kept for users without retention (R8); exit 1 past --max-age",
        description="Per creation day: new recordings with audio, leaked ones, leak %%; the "
                    "leaked users by history; tagging batches not applied in S3 (counted as "
                    "leaks). Exits 1 when a leak is older than --max-age, so it can alert.")
    leaks.add_argument("--since", type=_time, help="first creation day shown (default: 30 days ago)")
    leaks.add_argument("--now", type=_time, help="evaluate as of this time (read-only)")
    leaks.add_argument("--max-age", type=_duration, help="alert age, e.g. 26h "
                       "(default LAPSE_LEAK_ALERT_HOURS: one reconciliation period + settle + slack)")
    leaks.add_argument("--format", choices=("table", "json", "csv", "prometheus"), default="table")
    s3_audit = audit.add_parser(
        "s3", help="compare recordings with their S3 objects (R9); exit 1 on drift",
        description="tagged in the database => tag present; has_audio => object present and "
                    "untagged; purged => object gone. Keys of pending batches are not drift yet.")
    s3_audit.add_argument("--sample", type=_positive, help="check N random recordings (default: all)")
    s3_audit.add_argument("--json", action="store_true")

    explain = commands.add_parser("explain", help="why a user has (or lacks) access and retention")
    explain.add_argument("user_id", type=_positive)
    explain.add_argument("--now", type=_time, help="evaluate as of this time (read-only)")
    explain.add_argument("--timeline", type=_positive, default=30, metavar="N",
                         help="show the user's newest N timeline entries (default 30), oldest first")
    explain.add_argument("--json", action="store_true")

    dlq = commands.add_parser("dlq", help="the dead-letter archive").add_subparsers(
        dest="dlq_command", required=True)
    listing = dlq.add_parser("list", help="archived dead messages (open ones by default)")
    listing.add_argument("--queue")
    listing.add_argument("--actor")
    listing.add_argument("--user", type=_positive, dest="user_id")
    listing.add_argument("--all", action="store_true", help="include requeued ones")
    listing.add_argument("--limit", type=_positive, default=100)
    listing.add_argument("--json", action="store_true")
    shown = dlq.add_parser("show", help="one dead message with its traceback")
    shown.add_argument("id", type=_positive)
    shown.add_argument("--json", action="store_true")
    for verb, text in (("requeue", "send again with retries reset (same message id)"),
                       ("purge", "delete from the archive and the broker")):
        sub = dlq.add_parser(verb, help=text)
        sub.add_argument("ids", type=_positive, nargs="+", metavar="ID")

    refund = commands.add_parser(
        "refund", help="refund a paid subscription (§3a): expired now, unused periods credited back",
        description="Ends the subscription now (event refunded), credits back once every plan "
                    "payment whose period starts after now plus the one whose period contains "
                    "now (nothing in grace), and tags the recordings when retention ends.")
    refund.add_argument("subscription_id", type=_positive)
    refund.add_argument("--reason", default="operator", help="why (logged), e.g. 'chargeback'")
    refund.add_argument("--amount", type=_positive, default=None,
                        help="credit this (minor units) instead; at most what §3a would credit")

    embedded = commands.add_parser("embedded", help="the embedded PostgreSQL").add_subparsers(
        dest="embedded_command", required=True)
    embedded.add_parser("url", help="start it if needed and print its URL")
    embedded.add_parser("stop", help="stop it")

    from lapse.operator import panels

    panels.add_arguments(commands)

    from lapse.operator import broadcasts

    broadcasts.add_arguments(commands)

    status = commands.add_parser(
        "status", help="does anything need me? one screen; exit 1 when something does",
        description="Overdue or failing sweeps, dead letters new since --since, queue depth and "
                    "oldest message age, workers with a stale heartbeat, leaks and unapplied "
                    "tagging batches, open circuit breakers, broadcasts in progress. Read-only.")
    status.add_argument("--since", type=_time, help="dead letters after this time are new "
                        "(default: 24 hours before --now)")
    status.add_argument("--now", type=_time, help="evaluate as of this time (read-only)")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    web = commands.add_parser(
        "web", help="the web console (SPEC §7): read-only unless LAPSE_WEB_TOKEN is set",
        description="Overview, sweeps, dead letters (bulk requeue or purge by filter after a "
                    "dry run), user pages, daily charts; every page has a JSON twin (.json).")
    web.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default 127.0.0.1: it shows personal data)")
    web.add_argument("--port", type=_positive, default=8080,
                     help="port to listen on (default 8080)")
    report = commands.add_parser(
        "report", help="the charts and verdicts as one HTML page",
        description="One self-contained HTML page (inline SVG charts, no external files): the "
                    "invariant and status verdicts and a point per day for renewals and "
                    "failures, expiries, activations, tags and restores, leaks and dead "
                    "letters. Read-only; exit 1 when a verdict is not ok.")
    report.add_argument("--html", required=True, metavar="FILE", help="where to write the page")
    report.add_argument("--since", type=_since, default=None,
                        help="first day: a time or a duration back from now, e.g. 7d "
                             "(default: 30 days)")
    report.add_argument("--now", type=_time, help="evaluate as of this time (read-only)")

    demo = commands.add_parser(
        "demo", help="a synthetic population through simulated days",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Run a synthetic population through simulated days with the real actors and
sweeps: sign-ups and trials, plans bought by balance, crypto invoice and
in-app payment, top-ups, auto-renewals until balances run dry, cancellations,
re-subscriptions, refunds, families, sponsorships, recordings, notices and a
broadcast — against the fake 3x-ui panel, Crypto Pay and Telegram servers
with faults injected at a low rate.

It works in its own database (<name>_demo on the configured server, recreated
each run; the embedded PostgreSQL when DATABASE_URL is unset) and its own
bucket, so it never touches your data. The screen shows a progress bar per
simulated day; worker logs go to $LAPSE_HOME/demo/demo.log; it ends with the
audits (invariants, leaks, S3 and the panel against the database), a summary
and the HTML report $LAPSE_HOME/demo/report.html. The same seed gives the same
numbers. Exit 0 when every audit passes, 1 when one fails.

Look around afterwards: DATABASE_URL=<the URL it prints> lapse web""",
        epilog="examples:\n  lapse demo                          2,000 users, 30 days\n"
               "  lapse demo --users 200 --days 7     a quick look (seconds)\n"
               "  lapse demo --seed 3 --json          another population, machine-readable")
    demo.add_argument("--users", type=_positive, default=2000,
                      help="people in the population (default 2000)")
    demo.add_argument("--days", type=_positive, default=30,
                      help="simulated days, one hour per step (default 30)")
    demo.add_argument("--seed", type=int, default=7,
                      help="script and faults come from it (default 7)")
    demo.add_argument("--json", action="store_true",
                      help="print the summary as JSON (the progress bar still goes to stderr)")
    return parser


def _pool() -> Any:
    from lapse.platform import db

    url = db.database_url()
    # Fail in seconds with the server's own words, not after the pool's timeout.
    psycopg.connect(url, connect_timeout=5).close()
    return db.pool()


def _require_broker(config: Settings) -> Any:
    if config.broker == "redis":
        import redis

        try:
            redis.Redis.from_url(config.redis_url or "", socket_connect_timeout=3).ping()
        except redis.RedisError as error:
            raise BadInput(f"Redis at REDIS_URL is unreachable: {error}") from None
    import actors  # noqa: F401  (registers every actor a command may send to)
    from lapse.platform.brokers import broker

    return broker


def cmd_db(args: argparse.Namespace, config: Settings) -> int:
    from lapse.platform import migrate

    with _pool().connection() as conn:
        if args.db_command == "status":
            pending = migrate.pending(conn)
            print("up to date" if not pending else "pending: " + ", ".join(pending))
            return EXIT_OK
        applied = migrate.migrate(conn)
    print("applied: " + ", ".join(applied) if applied else "up to date")
    return EXIT_OK


def cmd_sweep(args: argparse.Namespace, config: Settings) -> int:
    from lapse.flows import sweeps
    from lapse.flows.inline import inline

    sweep = sweeps.get(args.name)
    clock.override(args.now, changes_state=not args.dry_run, allowed=config.allow_clock_override)
    broker = _require_broker(config)
    pool = _pool()
    with inline(broker) as work:
        # no time budget: the inline run's effects are complete when it returns
        counts = sweeps.run_sweep(pool, sweep.name, now=clock.now(), dry_run=args.dry_run,
                                  budget_seconds=float("inf"))
        follow_up = work.drain()
    note = f" (not implemented yet: {sweep.pending}; no work done)" if sweep.body is None else ""
    print(f"{sweep.actor_name}: {'dry run ' if args.dry_run else ''}done{note}")
    for key, value in sorted(counts.items()):
        print(f"  {key}: {value}")
    for key, value in sorted(follow_up.items()):
        print(f"  follow-up {key}: {value}")
    return EXIT_OK


def cmd_audit(args: argparse.Namespace, config: Settings) -> int:
    from lapse.operator import audit_output

    if args.audit_command == "leaks":
        return audit_output.leaks(args, config, _pool())
    if args.audit_command == "s3":
        return audit_output.s3(args, config, _pool())
    return _invariants(args, config)


def _invariants(args: argparse.Namespace, config: Settings) -> int:
    from domain import invariants

    clock.override(args.now, changes_state=False, allowed=True)
    with _pool().connection() as conn:
        results = invariants.check_invariants(conn, now=clock.now(), alert_age=config.leak_alert_age,
                                              billing_grace=config.billing_grace)
    failed = [r for r in results if not r.ok]
    if args.json:
        print(json.dumps({"now": clock.now().isoformat(), "ok": not failed,
                          "checks": [vars(r) for r in results]}, default=str, indent=2))
    else:
        print(f"invariants as of {clock.now().isoformat()}")
        for r in results:
            print(f"  {'ok  ' if r.ok else 'FAIL'}  {r.name:32} {r.meaning}"
                  + ("" if r.ok else f"  ({r.violations} violations)"))
            for row in r.sample:
                print("          " + ", ".join(f"{k}={v}" for k, v in row.items()))
        print("all invariants hold" if not failed else f"{len(failed)} invariant(s) violated")
    return EXIT_FOUND if failed else EXIT_OK


def cmd_explain(args: argparse.Namespace, config: Settings) -> int:
    from lapse.operator import explain

    clock.override(args.now, changes_state=False, allowed=True)
    with _pool().connection() as conn:
        try:
            found = explain.explain(conn, args.user_id, now=clock.now(), config=config)
        except explain.UnknownUser as error:
            raise BadInput(str(error)) from None
        history = explain.timeline(conn, args.user_id, limit=args.timeline + 1)
    more, history = len(history) > args.timeline, history[:args.timeline]
    if args.json:
        print(json.dumps(found.as_json() | {"timeline": history[::-1], "timeline_truncated": more},
                         default=_json_value, indent=2))
    else:
        print("\n".join(explain.lines(found, history, more)))
    return EXIT_OK


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _print_rows(rows: Sequence[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(list(rows), default=str, indent=2))
        return
    if not rows:
        print("no dead letters")
        return
    print(f"{'id':>5}  {'queue':14} {'actor':24} {'reason':18} {'user':>6} {'fails':>5}  last failure")
    for r in rows:
        print(f"{r['id']:>5}  {str(r['queue_name'] or '-'):14} {str(r['actor_name'] or '-'):24} "
              f"{r['reason']:18} {str(r['user_id'] or '-'):>6} {r['failures']:>5}  "
              f"{r['last_failed_at'].isoformat()}  {r['exception'] or ''}")


def cmd_dlq(args: argparse.Namespace, config: Settings) -> int:
    from lapse.operator import dlq

    with _pool().connection() as conn:
        if args.dlq_command == "list":
            _print_rows(dlq.list_dead(conn, queue=args.queue, actor=args.actor,
                                      user_id=args.user_id, include_requeued=args.all,
                                      limit=args.limit), args.json)
            return EXIT_OK
        if args.dlq_command == "show":
            row = dlq.show(conn, args.id)
            if args.json:
                print(json.dumps(row, default=str, indent=2))
            else:
                for key, value in row.items():
                    if key != "traceback":
                        print(f"{key:16} {value}")
                print("traceback:\n" + (row["traceback"] or "(none)"))
            return EXIT_OK
        broker = _require_broker(config)
        for dead_id in args.ids:
            with conn.transaction():  # each id alone: one that fails leaves the others done
                if args.dlq_command == "requeue":
                    sent = dlq.requeue(conn, broker, dead_id, now=clock.now())
                    done = f"requeued {dead_id}: {sent.actor_name} message {sent.message_id}"
                else:
                    dlq.purge(conn, broker, dead_id)
                    done = f"purged {dead_id}"
            print(done)
    return EXIT_OK


def cmd_refund(args: argparse.Namespace, config: Settings) -> int:
    from domain import lifecycle
    from lapse.platform.after_commit import transaction

    _require_broker(config)
    with _pool().connection() as conn, transaction(conn):
        credited = lifecycle.refund(conn, args.subscription_id, now=clock.now(),
                                    amount=args.amount)
    logging.getLogger("lapse.refund").info("refunded subscription %s (%s): credited %s",
                                           args.subscription_id, args.reason, credited)
    print(f"refunded subscription {args.subscription_id} ({args.reason}): {credited} credited "
          "to the balance")
    return EXIT_OK


def cmd_embedded(args: argparse.Namespace, config: Settings) -> int:
    from lapse.platform import embedded

    if args.embedded_command == "stop":
        from lapse.platform import local_s3

        s3_stopped = local_s3.stop(config.home)
        print("stopped" if embedded.stop(config.home) else "not running")
        if s3_stopped:
            print("local S3 server stopped")
    else:
        print(embedded.ensure_running(config.home))
    return EXIT_OK


def cmd_panel(args: argparse.Namespace, config: Settings) -> int:
    from lapse.operator import panels

    return panels.run(args, config, _pool())


def cmd_broadcast(args: argparse.Namespace, config: Settings) -> int:
    from lapse.operator import broadcasts

    if args.broadcast_command == "start":
        _require_broker(config)
    return broadcasts.run(args, config, _pool())


def cmd_status(args: argparse.Namespace, config: Settings) -> int:
    from lapse.operator import status

    clock.override(args.now, changes_state=False, allowed=True)
    now = clock.now()
    since = args.since or now - timedelta(hours=24)
    report = status.collect_status(_pool(), now=now, since=since, broker=_require_broker(config),
                                   config=config)
    print(report.to_json() if args.json else status.render(report))
    return EXIT_FOUND if report.needs_attention else EXIT_OK

def cmd_web(args: argparse.Namespace, config: Settings) -> int:
    from lapse.operator.web import serve

    pool = _pool()
    serve.serve(pool, config, host=args.host, port=args.port,
                broker=serve.lazy(lambda: _require_broker(config)))
    return EXIT_OK


def cmd_report(args: argparse.Namespace, config: Settings) -> int:
    from lapse.operator import report

    clock.override(args.now, changes_state=False, allowed=True)
    now = clock.now()
    since = args.since if isinstance(args.since, datetime) else now - (args.since or timedelta(days=30))
    found = report.write_html_report(_pool(), args.html, since=since, now=now, config=config)
    failed = [v for v in found if not v.ok]
    print(f"wrote {args.html}: {len(found) - len(failed)} of {len(found)} checks pass")
    for v in failed:
        print(f"  FAIL {v.name}: {v.detail}")
    return EXIT_FOUND if failed else EXIT_OK


def cmd_demo(args: argparse.Namespace, config: Settings) -> int:
    from lapse.operator import demo

    return demo.run(config, users=args.users, days=args.days, seed=args.seed, as_json=args.json)


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "db": cmd_db, "sweep": cmd_sweep, "audit": cmd_audit, "explain": cmd_explain,
    "dlq": cmd_dlq, "embedded": cmd_embedded, "demo": cmd_demo, "refund": cmd_refund,
    "panel": cmd_panel, "broadcast": cmd_broadcast, "status": cmd_status, "web": cmd_web,
    "report": cmd_report,
}


def main(argv: Sequence[str] | None = None) -> int:
    from domain.errors import PermanentError
    from lapse.operator.broadcasts import BadBroadcastInput
    from lapse.operator.dlq import DeadLetterNotFound
    from lapse.platform.embedded import EmbeddedError

    args = _parser().parse_args(argv)
    try:
        config = settings()
        logging.basicConfig(level=config.log_level, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s %(message)s")
        return COMMANDS[args.command](args, config)
    except (ConfigError, BadInput, clock.ClockOverrideRefused, PermanentError,
            DeadLetterNotFound, EmbeddedError, BadBroadcastInput) as error:
        print(f"lapse: error: {error}", file=sys.stderr)
    except psycopg.OperationalError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        print(f"lapse: error: cannot use the database (DATABASE_URL): {first}", file=sys.stderr)
    except psycopg.errors.UndefinedTable as error:
        print(f"lapse: error: the schema is missing ({error.diag.message_primary}); "
              "run `lapse db migrate`", file=sys.stderr)
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
