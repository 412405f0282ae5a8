"""The log line of an actor whose domain logic belongs to a later issue."""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("actors")


def not_implemented(actor_name: str, issue: str, **arguments: Any) -> None:
    """Say, in the run's log line, that this actor does no work yet and where it comes."""
    fields = " ".join(f"{k}={v}" for k, v in arguments.items())
    logger.warning("actor=%s outcome=not_implemented %s note=%s; message consumed without work",
                   actor_name, fields, issue)
