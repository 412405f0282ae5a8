"""What a worker does once when it starts (SPEC §6 panel facts): check every enabled panel.

A background thread, so a slow or unreachable panel never delays the worker;
one log line per panel (``lapse.flows.panel_check``). Off with
LAPSE_PANEL_CHECK_AT_START=0.
"""

from __future__ import annotations

import logging
import threading

import dramatiq
from dramatiq import Middleware

from lapse.flows.panel_check import check_at_start
from lapse.platform import db
from lapse.platform.config import settings

logger = logging.getLogger(__name__)


class PanelCheckAtStart(Middleware):
    """After the worker boots, log in to and list every enabled panel once."""

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if not settings().panel_check_at_start:
            return
        self.thread = threading.Thread(target=self._check, name="lapse-panel-check", daemon=True)
        self.thread.start()

    def _check(self) -> None:
        try:
            check_at_start(db.pool(), settings().panel_timeout_seconds)
        except Exception:  # noqa: BLE001  a start-up report must never take the worker down
            logger.exception("the start-up panel check failed; `lapse panel check` tells more")
