"""`lapse broadcast create|start|status|cancel`: one message to every reachable user without a
current subscription (SPEC §6 A6).

``create`` stores a draft (texts from files, English required as the
fallback, or a template name) and changes nothing else; ``start`` sends the
walk to the workers (on a running broadcast it sends it again: safe, the walk
is serialised); ``status`` reads progress while it runs; ``cancel`` stops the
walk and skips every send not yet claimed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from domain import broadcasts
from lapse.platform import clock
from lapse.platform.after_commit import transaction
from lapse.platform.config import Settings

EXIT_OK = 0


class BadBroadcastInput(Exception):
    """The operator's input cannot make a broadcast (a file missing, a LANG=FILE malformed)."""


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a broadcast id: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"not a broadcast id: {text!r}")
    return value


def add_arguments(commands: Any) -> None:
    broadcast = commands.add_parser(
        "broadcast", help="a message to every reachable user without a current subscription",
        description="The audience is walked by keyset in batches; each user gets one "
                    "notification row, sent at most once at the shared Telegram rate."
    ).add_subparsers(dest="broadcast_command", required=True)
    create = broadcast.add_parser(
        "create", help="store a draft broadcast (nothing is sent until `start`)",
        description="The message: --text-file FILE (English, the fallback) plus --text-file "
                    "LANG=FILE per translation, or --template NAME "
                    "(domain/templates/<lang>/NAME.txt).")
    message = create.add_mutually_exclusive_group()
    message.add_argument("--text-file", action="append", metavar="[LANG=]FILE",
                         help="a UTF-8 text file; without LANG= it is the English text")
    message.add_argument("--template", metavar="NAME", help="a template kept as files")
    for verb, text in (("start", "start sending a draft (or resume a running one)"),
                       ("cancel", "stop: no more rows, unclaimed sends skipped")):
        broadcast.add_parser(verb, help=text).add_argument("id", type=_positive)
    status = broadcast.add_parser("status", help="sent, failed, skipped, remaining, progress")
    status.add_argument("id", type=_positive)
    status.add_argument("--json", action="store_true")


def run(args: argparse.Namespace, config: Settings, pool: Any) -> int:
    command = args.broadcast_command
    if command == "create":
        if not args.text_file and not args.template:
            raise BadBroadcastInput("broadcast create: give the message, --text-file FILE "
                                    "(English) or --template NAME")
        texts = read_texts(args.text_file) if args.text_file else None
        with pool.connection() as conn, transaction(conn):
            created = broadcasts.create(conn, now=clock.now(), texts=texts, template=args.template)
        what = (f"template {args.template}" if args.template
                else "texts " + ", ".join(sorted(texts or {})))
        print(f"created broadcast {created} (draft, {what}); send it with "
              f"`lapse broadcast start {created}`")
        return EXIT_OK
    if command == "start":
        with pool.connection() as conn, transaction(conn):
            outcome = broadcasts.start(conn, args.id, now=clock.now())
        print(f"broadcast {args.id} {outcome}: the workers walk its audience")
        return EXIT_OK
    if command == "cancel":
        with pool.connection() as conn, transaction(conn):
            skipped = broadcasts.cancel(conn, args.id, now=clock.now())
        print(f"broadcast {args.id} cancelled: {skipped} unsent notices skipped "
              "(sends already claimed finish)")
        return EXIT_OK
    with pool.connection() as conn:
        found = broadcasts.progress(conn, args.id)
    print(json.dumps(as_dict(found), default=str, indent=2) if args.json else describe(found))
    return EXIT_OK


def read_texts(specs: list[str]) -> dict[str, str]:
    """``FILE`` (English) and ``LANG=FILE`` arguments → language → text."""
    texts: dict[str, str] = {}
    for spec in specs:
        language, _, name = spec.rpartition("=") if "=" in spec else ("en", "", spec)
        if language in texts:
            raise BadBroadcastInput(f"--text-file: two texts for language {language!r}")
        try:
            texts[language] = Path(name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise BadBroadcastInput(f"--text-file {spec}: cannot read it ({error})") from None
    return texts


def as_dict(found: broadcasts.Progress) -> dict[str, Any]:
    return {"id": found.id, "status": found.status, "template": found.template,
            "languages": found.languages, "created_at": found.created_at,
            "started_at": found.started_at, "cancelled_at": found.cancelled_at,
            "finished_at": found.finished_at, "walked": found.walked, "queued": found.queued,
            **{k: found.counts.get(k, 0) for k in broadcasts.OUTCOMES},
            "remaining": found.remaining, "progress": round(found.done_fraction, 4)}


def describe(found: broadcasts.Progress) -> str:
    shown = as_dict(found)
    message = (f"template {found.template}" if found.template
               else "texts " + ", ".join(found.languages))
    lines = [f"broadcast {found.id}: {found.status} ({message})",
             f"  created {found.created_at.isoformat()}"
             + (f", started {found.started_at.isoformat()}" if found.started_at else "")
             + (f", cancelled {found.cancelled_at.isoformat()}" if found.cancelled_at else "")
             + (f", finished {found.finished_at.isoformat()}" if found.finished_at else ""),
             f"  sent {shown['sent']}  failed {shown['failed']}  skipped {shown['skipped']}  "
             f"unknown {shown['unknown']}  remaining {shown['remaining']}",
             f"  progress {found.done_fraction:.1%} ({found.queued} queued, "
             + _walk_state(found) + ")"]
    return "\n".join(lines)


def _walk_state(found: broadcasts.Progress) -> str:
    if found.walked:
        return "audience fully walked"
    if found.status == "draft":
        return f"not started; {found.not_yet_queued} users in the audience now"
    if found.status == "cancelled":
        return "walk stopped by the cancel"
    return f"audience still being walked, {found.not_yet_queued} users to go"
