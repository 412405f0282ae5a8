"""The demo's outside world: the fake panel, Crypto Pay and Telegram servers, and their faults.

Each fake is a real local HTTP server (``lapse/ports/fakes``); the process's
ports are pointed at them for the demo and given back afterwards. Faults are
pushed onto the fakes' one-shot queues at fixed points of each simulated
step, drawn from the demo's seed: the simulation's requests reach the fakes
one at a time in a fixed order, so the same seed meets the same faults.
The ports' own in-call backoff is skipped (``_no_sleep``): on a simulated
clock a real sleep would only cost wall time. Breakers and rate limits read
the application clock, so they run on simulated time; the demo's rate limits
and pauses live in its process (it is the only sender), fresh each run.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from domain import panels
from lapse.platform import clock
from lapse.platform.breaker import CircuitBreaker
from lapse.platform.config import reset_settings, settings
from lapse.platform.rate_limits import MemoryStore
from lapse.ports import crypto_pay, panel, telegram
from lapse.ports.fakes import crypto_pay as fake_crypto
from lapse.ports.fakes import telegram as fake_telegram
from lapse.ports.fakes import xui as fake_xui

# The demo's environment: the fakes' addresses and tokens, and a retention rate the
# simulated clock cannot wait for (the sweep would sleep real seconds to keep to 200/s).
_ENV_KEYS = ("LAPSE_PANEL_URL", "LAPSE_PANEL_TOKEN", "LAPSE_PANEL_USER", "LAPSE_PANEL_PASSWORD",
             "LAPSE_PANEL_INBOUND_ID", "LAPSE_CRYPTO_URL", "LAPSE_CRYPTO_TOKEN",
             "LAPSE_TELEGRAM_URL", "LAPSE_TELEGRAM_TOKEN", "LAPSE_RETENTION_RATE",
             "LAPSE_PANEL_TIMEOUT_SECONDS")


def _no_sleep(seconds: float) -> None:
    """A port's backoff between attempts inside one call: no wall time on a simulated clock."""


@dataclass
class FaultPlan:
    """Low-rate faults on the fakes, drawn per simulated step from the seed."""

    rate: float
    rng: random.Random
    injected: Counter[str] = field(default_factory=Counter)

    def inject(self, world: World) -> None:
        if self.rate <= 0:
            return
        if self.rng.random() < self.rate * 10:  # a 503 burst on the panel: 1 to 3 answers
            times = self.rng.randint(1, 3)
            world.xui.inject(fake_xui.status(503), on="/panel/api/clients", times=times)
            self.injected["panel_503"] += times
        if self.rng.random() < self.rate * 5:
            world.crypto.faults.append(fake_crypto.status(502))
            self.injected["crypto_pay_502"] += 1
        if self.rng.random() < self.rate * 5:
            world.telegram.faults.append(fake_telegram.server_error(502))
            self.injected["telegram_502"] += 1

    def clear(self, world: World) -> None:
        """No fault left waiting (the last quiet hour, the audits)."""
        world.xui.faults.clear()
        world.crypto.faults.clear()
        world.telegram.faults.clear()


@dataclass
class World:
    xui: fake_xui.FakeXui
    crypto: fake_crypto.FakeCryptoPay
    telegram: fake_telegram.FakeTelegram
    saved_env: dict[str, str | None]
    saved_ports: tuple[Any, ...]
    panel_port: panel.XuiPanel | None = None

    @classmethod
    def start(cls) -> World:
        xui = fake_xui.FakeXui.start()
        crypto = fake_crypto.FakeCryptoPay.start(clock=clock.now)
        tg = fake_telegram.FakeTelegram.start()
        saved_env = {k: os.environ.get(k) for k in _ENV_KEYS}
        os.environ.update({
            "LAPSE_PANEL_URL": xui.url, "LAPSE_PANEL_TOKEN": fake_xui.TOKEN,
            "LAPSE_PANEL_INBOUND_ID": "1", "LAPSE_PANEL_TIMEOUT_SECONDS": "5",
            "LAPSE_CRYPTO_URL": crypto.url, "LAPSE_CRYPTO_TOKEN": fake_crypto.TOKEN,
            "LAPSE_TELEGRAM_URL": tg.url, "LAPSE_TELEGRAM_TOKEN": fake_telegram.TOKEN,
            "LAPSE_RETENTION_RATE": "1000000000"})
        for name in ("LAPSE_PANEL_USER", "LAPSE_PANEL_PASSWORD"):
            os.environ.pop(name, None)
        reset_settings()
        config = settings()
        # the demo is one process with one sender at a time: its limits and pauses live in its
        # memory (the same GCRA as the shared stores), fresh each run, so no earlier run's state
        # (a shared Redis keeps it an hour) changes a number, and a send costs no round trip
        limiter = telegram.new_limiter(MemoryStore(), config)
        saved_ports = (crypto_pay.install_port(crypto_pay.CryptoPay(
            crypto.url, fake_crypto.TOKEN, timeout=5, sleep=_no_sleep,
            breaker=CircuitBreaker("crypto_pay"))),
            telegram.install(telegram.TelegramPort(
                tg.url, fake_telegram.TOKEN, pause=limiter.pause, timeout=5), limiter))
        return cls(xui, crypto, tg, saved_env, saved_ports)

    def register_panel(self, conn: Any) -> panels.Panel:
        """The fake panel as the deployment's ``default`` panel; its port skips in-call sleeps."""
        row = panels.ensure_default_panel(conn, self.xui.url, 1, now=clock.now())
        assert row is not None
        self.panel_port = panel.connect(row)
        self.panel_port.sleep = _no_sleep
        return row

    def pay_invoice(self, invoice_id: str) -> None:
        """The user pays a crypto invoice (at Crypto Pay: the watcher sees it on its next poll)."""
        invoice = self.crypto.invoices.get(invoice_id)
        if invoice is not None and invoice["status"] == "active":
            invoice["status"] = "paid"
            invoice["paid_at"] = fake_crypto._iso(clock.now())

    def stop(self) -> None:
        crypto_pay.install_port(self.saved_ports[0])
        telegram.install(*self.saved_ports[1])
        for name, value in self.saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        reset_settings()
        for fake in (self.xui, self.crypto, self.telegram):
            fake.stop()

