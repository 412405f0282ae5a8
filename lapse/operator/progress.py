"""A progress bar per simulated day with an ETA: redrawn in place on a terminal, plain lines otherwise."""

from __future__ import annotations

import time
from datetime import datetime
from typing import TextIO

WIDTH = 30


class Progress:
    def __init__(self, days: int, stream: TextIO) -> None:
        self.days, self.stream = days, stream
        self.tty = stream.isatty()
        self.started = time.monotonic()

    def day_done(self, day: int, *, sim_now: datetime) -> None:
        elapsed = time.monotonic() - self.started
        eta = elapsed / day * (self.days - day) if day else 0.0
        filled = WIDTH * day // self.days
        bar = "#" * filled + "." * (WIDTH - filled)
        line = (f"day {day:>3}/{self.days} [{bar}] {100 * day // self.days:>3}%  "
                f"simulated {sim_now:%Y-%m-%d}  elapsed {_clock(elapsed)}  ETA {_clock(eta)}")
        if self.tty:
            self.stream.write("\r" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}m{seconds:02d}s"
