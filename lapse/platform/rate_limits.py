"""Rate limits and pauses shared by every worker thread and process, on the application clock.

A limiter never sleeps: ``try_acquire(key)`` answers the seconds to wait (0:
a token was taken), so an actor can ``raise dramatiq.Retry(delay=...)``
instead of holding a worker thread. Each limit is a GCRA bucket (a token
bucket kept as one "theoretical arrival time"): O(1) state per key, and at
the default burst of 1 the sends are evenly spaced, so no 1-second window
holds more than the rate. A pause (Telegram's 429 ``retry_after``) makes
every limiter of its name answer "wait" until it ends.

A refused sender is given a place in a line: the first free slot of the
overall limit after the pause and after every slot already handed out, so n
senders refused at one instant come back one slot apart and each is admitted
on its return (n + n attempts, not the n²/2 of everyone waiting for the same
next token). The line only spreads the waits; admission is the GCRA alone,
so the line can never let more through than the limit. A sender held back by
its own chat's limit waits for that and takes no place in the line. No place
is handed out more than LINE_WINDOW past the bucket's next free slot, so
places nobody comes back for delay the others at most that long.

Time is ``lapse.platform.clock.now()``, passed into the store as a number,
so the demo and the simulation drive limits and pauses on their simulated
clock. The store is shared: Redis (a Lua script, one round trip) with
LAPSE_BROKER=redis, a Postgres table with LAPSE_BROKER=postgres, process
memory with the stub broker (unit tests).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from lapse.platform import clock
from lapse.platform.config import Settings


@dataclass(frozen=True)
class Bucket:
    """One limit: ``interval`` seconds between sends, senders may be ``tolerance`` s early."""

    key: str
    interval: float
    tolerance: float = 0.0


class Store(Protocol):
    def acquire(self, pause_key: str, buckets: Sequence[Bucket], now: float) -> float:
        """Atomically: seconds to wait for the pause and every bucket; 0 takes one token of each.
        A refusal may hand out a place in the line of ``buckets[0]`` (see ``admit``)."""
        ...

    def extend_pause(self, key: str, until: float, now: float) -> None:
        """Make the pause last at least until ``until`` (never shortens it)."""
        ...

    def pause_until(self, key: str) -> float | None: ...


LINE_WINDOW = 60.0  # a place is handed out at most this far past the bucket's next free slot


def line_key(bucket: Bucket) -> str:
    """Where the end of ``bucket``'s line is kept (the time after the last slot handed out)."""
    return f"{bucket.key}:line"


def admit(arrivals: Sequence[float | None], buckets: Sequence[Bucket], now: float,
          pause_until: float | None, line_end: float | None = None,
          ) -> tuple[float, list[float], float | None]:
    """GCRA over several buckets, the first being the overall one with the line.

    Returns (seconds to wait, each bucket's next arrival time if admitted, the line's new end
    when a place in it was handed out, else None).
    """
    dues, following = [], []
    for arrival, bucket in zip(arrivals, buckets, strict=True):
        due = max(arrival if arrival is not None else now, now)
        dues.append(due - bucket.tolerance)
        following.append(due + bucket.interval)
    shared = max(pause_until or now, dues[0])  # the pause and the overall limit
    own = max(dues[1:], default=now)  # this key's own limits
    if max(shared, own) <= now:
        return 0.0, following, None
    if own >= shared:  # held back by its own chat: no place in the line
        return own - now, following, None
    # places whose sender never comes back (a row sent meanwhile, a cancelled broadcast) would
    # hold the line back for ever: no place is handed out past LINE_WINDOW from the free slot
    slot = max(shared, min(line_end if line_end is not None else now, shared + LINE_WINDOW))
    return slot - now, following, slot + buckets[0].interval


@dataclass(frozen=True)
class Pause:
    """A pause shared by every sender of one limiter (Telegram's 429)."""

    store: Store
    key: str

    def set(self, seconds: float) -> None:
        now = _now()
        self.store.extend_pause(self.key, now + seconds, now)

    def remaining(self) -> float:
        until = self.store.pause_until(self.key)
        return max(0.0, until - _now()) if until is not None else 0.0


class RateLimiter:
    """``rate`` sends per second in all and ``per_key_rate`` per key (a chat), plus a pause."""

    def __init__(self, store: Store, name: str, *, rate: float, per_key_rate: float,
                 burst: int = 1) -> None:
        self.store, self.name = store, name
        # GCRA admits at most T/interval + burst in any span T: spacing the sends for
        # rate - (burst - 1)/60 takes the burst's extra sends out of each minute, so a minute
        # holds no more than at burst 1, rate × 60 + 1 (30/s, burst 2: spaced for 29.98/s).
        spaced = max(rate - (burst - 1) / 60, rate / 2)
        self.overall = Bucket(f"{name}:all", 1 / spaced, (burst - 1) / spaced)
        self.per_key_interval = 1 / per_key_rate
        self.pause = Pause(store, f"{name}:pause")

    def try_acquire(self, key: int | str) -> float:
        """Seconds to wait before sending to ``key``; 0 means go (a token was taken)."""
        buckets = (self.overall, Bucket(f"{self.name}:key:{key}", self.per_key_interval))
        return self.store.acquire(self.pause.key, buckets, _now())


class MemoryStore:
    """One process's limits (the stub broker, unit tests): not shared between processes."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self._lock = threading.Lock()

    def acquire(self, pause_key: str, buckets: Sequence[Bucket], now: float) -> float:
        with self._lock:
            arrivals = [self.arrivals.get(b.key) for b in buckets]
            line = line_key(buckets[0])
            wait, following, line_end = admit(arrivals, buckets, now,
                                              self.arrivals.get(pause_key),
                                              self.arrivals.get(line))
            if wait == 0:
                self.arrivals.update((b.key, t) for b, t in zip(buckets, following, strict=True))
            elif line_end is not None:
                self.arrivals[line] = line_end
            return wait

    def extend_pause(self, key: str, until: float, now: float) -> None:
        with self._lock:
            self.arrivals[key] = max(self.arrivals.get(key, until), until)

    def pause_until(self, key: str) -> float | None:
        return self.arrivals.get(key)


def _now() -> float:
    return clock.now().timestamp()


def store_for(config: Settings) -> Store:
    """The shared store of the configured broker: Redis, Postgres, or memory for the stub."""
    if config.broker == "redis":
        from lapse.platform.rate_limits_redis import RedisStore

        # under the broker's namespace: deployments (and test runs) sharing a Redis database
        # keep their limits and pauses apart
        return RedisStore.from_url(config.redis_url or "", prefix=f"{config.redis_namespace}:lapse")
    if config.broker == "postgres":
        from lapse.platform import db
        from lapse.platform.rate_limits_postgres import PostgresStore

        return PostgresStore(db.pool())
    return MemoryStore()
