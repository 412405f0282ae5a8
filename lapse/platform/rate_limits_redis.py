"""The shared rate-limit store on Redis: one Lua script per decision.

Why not ``dramatiq.rate_limits`` as is: its ``WindowRateLimiter`` and
``BucketRateLimiter`` answer only yes or no (``acquire(raise_on_failure=False)``),
so a refused sender would have to poll or sleep; they read ``time.time()``,
so a simulated clock cannot drive them; they count per whole second, which
lets up to twice the limit through around a second boundary; and taking the
overall and the per-chat token would be two separate steps. The script below
keeps dramatiq's idea (counters in Redis shared by every worker, expiring
keys) but answers "wait N ms", takes both tokens atomically or none, and
takes ``now`` from the caller (the application clock).

Keys share the hash tag ``{rate}`` so the script also runs on a Redis Cluster.
A key expires an hour (real time) after its due time, so idle chats cost
nothing; a simulated clock frozen for longer than that forgets its limits.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

from lapse.platform.rate_limits import LINE_WINDOW, Bucket, line_key

KEEP_MS = 3_600_000

_ACQUIRE = """
-- KEYS[1] the pause, KEYS[2] the line of the first bucket, KEYS[3..] the buckets (the overall
-- one first); ARGV[1] now (ms), then each bucket's interval and tolerance (ms), then the line's
-- window and keep (ms). A refusal is never '0.000' (a wait under a microsecond would read as go).
-- The same decision as rate_limits.admit.
local now = tonumber(ARGV[1])
local keep = tonumber(ARGV[#ARGV])
local shared = math.max(tonumber(redis.call('GET', KEYS[1])) or now, now)
local own = now
local following = {}
for i = 3, #KEYS do
  local due = math.max(tonumber(redis.call('GET', KEYS[i])) or now, now)
  local free_at = due - tonumber(ARGV[2 * i - 3])
  if i == 3 then shared = math.max(shared, free_at) else own = math.max(own, free_at) end
  following[i] = due + tonumber(ARGV[2 * i - 4])
end
if math.max(shared, own) <= now then
  for i = 3, #KEYS do
    redis.call('SET', KEYS[i], string.format('%.3f', following[i]),
               'PX', math.ceil(following[i] - now) + keep)
  end
  return '0'
end
if own >= shared then
  return string.format('%.3f', math.max(own - now, 0.001))
end
local queued = tonumber(redis.call('GET', KEYS[2])) or now
local slot = math.max(shared, math.min(queued, shared + tonumber(ARGV[#ARGV - 1])))
local line_end = slot + tonumber(ARGV[2])
redis.call('SET', KEYS[2], string.format('%.3f', line_end), 'PX', math.ceil(line_end - now) + keep)
return string.format('%.3f', math.max(slot - now, 0.001))
"""

_EXTEND = """
-- KEYS[1] the pause; ARGV[1] until (ms), ARGV[2] now (ms), ARGV[3] keep (ms)
local until_ms = tonumber(ARGV[1])
if until_ms > (tonumber(redis.call('GET', KEYS[1])) or 0) then
  redis.call('SET', KEYS[1], string.format('%.3f', until_ms),
             'PX', math.max(math.ceil(until_ms - tonumber(ARGV[2])), 0) + tonumber(ARGV[3]))
end
return 0
"""


class RedisStore:
    """Limits and pauses in Redis under ``<prefix>:{rate}:<key>``."""

    def __init__(self, client: redis.Redis, *, prefix: str = "lapse") -> None:
        self.client, self.prefix = client, prefix
        self._acquire = client.register_script(_ACQUIRE)
        self._extend = client.register_script(_EXTEND)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "lapse") -> RedisStore:
        return cls(redis.Redis.from_url(url, socket_timeout=5), prefix=prefix)

    def _key(self, key: str) -> str:
        return f"{self.prefix}:{{rate}}:{key}"

    def acquire(self, pause_key: str, buckets: Sequence[Bucket], now: float) -> float:
        keys = [self._key(pause_key), self._key(line_key(buckets[0])),
                *(self._key(b.key) for b in buckets)]
        args: list[float] = [now * 1000]
        for bucket in buckets:
            args += [bucket.interval * 1000, bucket.tolerance * 1000]
        wait_ms = float(self._acquire(keys=keys, args=[*args, LINE_WINDOW * 1000, KEEP_MS]))
        return wait_ms / 1000

    def extend_pause(self, key: str, until: float, now: float) -> None:
        self._extend(keys=[self._key(key)], args=[until * 1000, now * 1000, KEEP_MS])

    def pause_until(self, key: str) -> float | None:
        value = self.client.get(self._key(key))
        return float(value) / 1000 if value is not None else None  # type: ignore[arg-type]
