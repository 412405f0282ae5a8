"""Every setting Lapse reads from the environment, validated once at start.

The README's configuration table is generated from ``VARIABLES`` below; a test
keeps the two in step, and another checks that compose/ only sets variables
listed here.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


@dataclass(frozen=True)
class Variable:
    name: str
    default: str | None
    meaning: str
    secret: bool = False


VARIABLES: tuple[Variable, ...] = (
    Variable("DATABASE_URL", None, "PostgreSQL URL. Unset: an embedded PostgreSQL under LAPSE_HOME."),
    Variable("LAPSE_BROKER", "postgres", "Message broker: `redis`, `postgres` (dramatiq-postgres) or `stub` (tests)."),
    Variable("REDIS_URL", None, "Redis URL; required when LAPSE_BROKER=redis (never defaulted)."),
    Variable("LAPSE_REDIS_NAMESPACE", "dramatiq", "Prefix of every Redis key the broker uses (letters, digits, `_.:-`), so deployments or test runs can share one Redis database."),
    Variable("LAPSE_HOME", ".lapse", "Folder of the embedded PostgreSQL and local S3 data."),
    Variable("LAPSE_S3_ENDPOINT_URL", None, "S3 endpoint. Unset with the embedded default: a local moto server."),
    Variable("LAPSE_S3_BUCKET", "lapse-recordings", "Bucket holding recording audio."),
    Variable("AWS_ACCESS_KEY_ID", None, "Standard AWS credentials for S3.", secret=True),
    Variable("AWS_SECRET_ACCESS_KEY", None, "Standard AWS credentials for S3.", secret=True),
    Variable("AWS_DEFAULT_REGION", "us-east-1", "S3 region."),
    Variable("LAPSE_PANEL_URL", None, "3x-ui panel base URL."),
    Variable("LAPSE_PANEL_USER", None, "3x-ui panel user."),
    Variable("LAPSE_PANEL_PASSWORD", None, "3x-ui panel password.", secret=True),
    Variable("LAPSE_PANEL_TOKEN", None, "3x-ui API token (`Authorization: Bearer`); preferred over user and password, skips the CSRF login.", secret=True),
    Variable("LAPSE_PANEL_INBOUND_ID", "1", "3x-ui inbound that holds the clients (positive integer)."),
    Variable("LAPSE_PANEL_TIMEOUT_SECONDS", "10", "Timeout of one HTTP request to a panel (connect and read)."),
    Variable("LAPSE_PANEL_CHECK_AT_START", "1", "`1`: each worker logs in to every enabled panel when it starts and logs what `lapse panel check` would say (a panel marked as refusing the login is left alone)."),
    Variable("LAPSE_PANEL_RETRIES", "10", "Retries of `activate_subscription` and of each panel's `provision_client` before the dead-letter archive."),
    Variable("LAPSE_PANEL_MIN_BACKOFF_MS", "10000", "First retry delay of `activate_subscription` and `provision_client` (doubles each retry)."),
    Variable("LAPSE_PANEL_MAX_BACKOFF_MS", "3600000", "Longest retry delay of `activate_subscription` and `provision_client`."),
    Variable("LAPSE_TRIAL_DAYS", "3", "Length of the free trial `start_trial` grants."),
    Variable("LAPSE_CRYPTO_URL", "https://pay.crypt.bot/api", "Crypto Pay API base URL."),
    Variable("LAPSE_CRYPTO_TOKEN", None, "Crypto Pay API token.", secret=True),
    Variable("LAPSE_TELEGRAM_URL", "https://api.telegram.org", "Telegram Bot API base URL."),
    Variable("LAPSE_TELEGRAM_TOKEN", None, "Telegram bot token (`<digits>:<letters, digits, - or _>`); never logged.", secret=True),
    Variable("LAPSE_TELEGRAM_TIMEOUT_SECONDS", "10", "Connect and read timeout of one `sendMessage`; a read timeout leaves delivery unknown."),
    Variable("LAPSE_TELEGRAM_RATE_PER_SECOND", "30", "Messages per second to Telegram in all, shared by every worker thread and process (a decimal number)."),
    Variable("LAPSE_TELEGRAM_CHAT_RATE_PER_SECOND", "1", "Messages per second to one chat, shared likewise (a decimal number; `0.5` is one every 2 s)."),
    Variable("LAPSE_TELEGRAM_BURST", "2", "Sends above the overall rate a sender may make to use slots it came back late for; any 1-second window holds at most rate + burst − 1."),
    Variable("LAPSE_TRIAL_NOTICE_HOURS", "6,1", "Hours before a trial ends at which `sweep_trial_notifications` writes a trial-ending notice (comma-separated, A4)."),
    Variable("LAPSE_REMINDER_DAYS", "3,1", "Days before a paid subscription that will not renew by itself ends at which `sweep_reminders` writes a reminder (comma-separated, A6)."),
    Variable("LAPSE_ALLOW_CLOCK_OVERRIDE", "0", "`1` lets state-changing commands take `--now` (tests, demos)."),
    Variable("LAPSE_BILLING_GRACE_HOURS", "72", "Billing grace after a failed renewal, in hours."),
    Variable("LAPSE_DB_POOL_SIZE", "12", "Connections per process: worker threads (8) plus a margin."),
    Variable("LAPSE_STATEMENT_TIMEOUT_MS", "30000", "statement_timeout on worker connections."),
    Variable("LAPSE_LOCK_TIMEOUT_MS", "5000", "lock_timeout on worker connections."),
    Variable("LAPSE_IDLE_TX_TIMEOUT_MS", "60000", "idle_in_transaction_session_timeout on worker connections."),
    Variable("LAPSE_SWEEP_BUDGET_SECONDS", "50", "Time budget of one sweep run before it re-enqueues itself."),
    Variable("LAPSE_LOG_LEVEL", "INFO", "Python log level."),
    Variable("LAPSE_SETTLE_MINUTES", "60", "Settle window after an entitlement ends before its recordings are tagged (R3, R4)."),
    Variable("LAPSE_PURGE_DAYS", "30", "Days a recording stays tagged before `sweep_purge` deletes its object (R6)."),
    Variable("LAPSE_LEAK_ALERT_HOURS", "26", "Age of a leak (or an unapplied tagging batch) that fails the audits (R8)."),
    Variable("LAPSE_FAST_EXPIRY_SHARDS", "2", "Disjoint subscription-id ranges `sweep_fast_expiry` splits a backlog of more than one page into, each run as its own `sweep_fast_expiry` message so several workers expire at once (1: one sweep walks everything). A shard is CPU-bound (a transaction per row) and holds a worker thread until its range is done, while the removals it sends wait on the panel: 2 kept two cores busy and left the other threads removing keys in BENCHMARKS.md's runs; raise it with the cores."),
    Variable("LAPSE_RETENTION_RATE", "200", "Users per second `sweep_retention` acts on at most, so a large first backlog does not starve other work."),
    Variable("LAPSE_BROADCAST_BATCH_SIZE", "500", "Audience users a broadcast queues per transaction (one keyset page; bounds the walker's memory)."),
    Variable("LAPSE_BROADCAST_BACKLOG_SECONDS", "2", "A broadcast queues no more while its unsent rows exceed this many seconds at LAPSE_TELEGRAM_RATE_PER_SECOND (at least one batch), so the queue stays short."),
    Variable("LAPSE_S3_CONCURRENCY", "16", "Concurrent S3 calls when tagging, restoring or deleting one batch per object."),
    Variable("LAPSE_S3_BATCH_THRESHOLD", "10000", "Keys above which tagging uses an S3 Batch Operations job (R7) when LAPSE_S3_BATCH_ROLE_ARN is set."),
    Variable("LAPSE_S3_BATCH_ROLE_ARN", None, "IAM role S3 Batch Operations runs as. Unset: always tag per object (moto, MinIO)."),
    Variable("LAPSE_CRYPTO_INVOICE_TTL_MINUTES", "60", "A crypto invoice's expires_in at Crypto Pay; an invoice still active 5 minutes past its expiry is deleted there, then its purchase expires (a payment seen within 3 days after is still credited)."),
    Variable("LAPSE_RENEWAL_WINDOW_HOURS", "12", "Auto-renewal charges a subscription this many hours before it ends."),
    Variable("LAPSE_REFERRAL_REWARD", "100", "Credit (minor units) to a referrer on the referred user's first paid plan."),
    Variable("LAPSE_HEARTBEAT_SECONDS", "15", "How often each worker process writes its row in `worker_heartbeats`."),
    Variable("LAPSE_HEARTBEAT_STALE_SECONDS", "60", "`lapse status` reports a running worker whose last heartbeat is older than this."),
    Variable("LAPSE_QUEUE_AGE_ALERT_SECONDS", "600", "`lapse status` reports a queue whose oldest ready message waited longer than this."),
    Variable("LAPSE_METRICS_PORT", "9191", "Port of the Prometheus exposition server the `dramatiq` command forks (`0`: no metrics)."),
    Variable("LAPSE_METRICS_HOST", "127.0.0.1", "Address the exposition server listens on (`0.0.0.0` in compose)."),
    Variable("LAPSE_METRICS_DIR", None, "Multiprocess folder of the worker metrics (cleared when the `dramatiq` command starts). Unset: `<tmp>/lapse-prometheus`."),
    Variable("LAPSE_S3_ACCOUNT_ID", None, "AWS account id that owns S3 Batch Operations jobs (required with the role)."),
    Variable("LAPSE_WEB_TOKEN", None, "Token (16+ characters) the web console asks for before a bulk requeue or purge (form field or `Authorization: Bearer`). Unset: the console is read-only.", secret=True),
)

_BROKERS = ("redis", "postgres", "stub")
_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    broker: str
    redis_url: str | None
    home: Path
    s3_endpoint_url: str | None
    s3_bucket: str
    aws_region: str
    panel_url: str | None
    panel_user: str | None
    panel_password: str | None = field(repr=False)
    panel_inbound_id: int
    panel_token: str | None = field(repr=False)
    panel_timeout_seconds: float
    panel_check_at_start: bool
    crypto_url: str
    crypto_token: str | None = field(repr=False)
    telegram_url: str
    telegram_token: str | None = field(repr=False)
    allow_clock_override: bool
    billing_grace: timedelta
    pool_size: int
    statement_timeout_ms: int
    lock_timeout_ms: int
    idle_in_transaction_timeout_ms: int
    sweep_budget_seconds: float
    log_level: str
    settle: timedelta = timedelta(hours=1)
    purge_after: timedelta = timedelta(days=30)
    leak_alert_age: timedelta = timedelta(hours=26)
    retention_rate: int = 200
    fast_expiry_shards: int = 2
    broadcast_batch_size: int = 500
    broadcast_backlog_seconds: float = 2.0
    s3_concurrency: int = 16
    s3_batch_threshold: int = 10_000
    s3_batch_role_arn: str | None = None
    s3_account_id: str | None = None
    referral_reward: int = 100
    renewal_window_hours: int = 12
    crypto_invoice_ttl_minutes: int = 60
    redis_namespace: str = "dramatiq"
    panel_retries: int = 10
    panel_min_backoff_ms: int = 10_000
    panel_max_backoff_ms: int = 3_600_000
    trial_days: int = 3
    telegram_timeout: float = 10.0
    telegram_rate: float = 30.0
    telegram_chat_rate: float = 1.0
    telegram_burst: int = 2
    trial_notice_offsets: tuple[timedelta, ...] = (timedelta(hours=6), timedelta(hours=1))
    reminder_offsets: tuple[timedelta, ...] = (timedelta(days=3), timedelta(days=1))
    heartbeat_seconds: int = 15
    heartbeat_stale_seconds: int = 60
    queue_age_alert_seconds: int = 600
    metrics_port: int = 9191
    metrics_host: str = "127.0.0.1"
    metrics_dir: Path | None = None
    web_token: str | None = field(default=None, repr=False)

    @property
    def embedded(self) -> bool:
        return self.database_url is None


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the environment; raise ConfigError naming the first bad variable."""
    env = os.environ if environ is None else environ

    def raw(name: str) -> str | None:
        value = env.get(name)
        if value is None or value.strip() == "":
            return next(v.default for v in VARIABLES if v.name == name)
        return value.strip()

    _panel_credentials(raw)
    broker = (raw("LAPSE_BROKER") or "").lower()
    if broker not in _BROKERS:
        raise ConfigError("LAPSE_BROKER", f"must be one of {', '.join(_BROKERS)}, got {broker!r}")
    redis_url = _url(raw("REDIS_URL"), "REDIS_URL", ("redis", "rediss", "unix"))
    if broker == "redis" and redis_url is None:
        raise ConfigError("REDIS_URL", "required when LAPSE_BROKER=redis")
    return Settings(
        database_url=_url(raw("DATABASE_URL"), "DATABASE_URL", ("postgres", "postgresql")),
        broker=broker,
        redis_url=redis_url,
        home=Path(raw("LAPSE_HOME") or ".lapse").resolve(),
        s3_endpoint_url=_url(raw("LAPSE_S3_ENDPOINT_URL"), "LAPSE_S3_ENDPOINT_URL", ("http", "https")),
        s3_bucket=raw("LAPSE_S3_BUCKET") or "",
        aws_region=raw("AWS_DEFAULT_REGION") or "us-east-1",
        panel_url=_url(raw("LAPSE_PANEL_URL"), "LAPSE_PANEL_URL", ("http", "https")),
        panel_user=raw("LAPSE_PANEL_USER"),
        panel_password=raw("LAPSE_PANEL_PASSWORD"),
        panel_inbound_id=_positive_int(raw("LAPSE_PANEL_INBOUND_ID"), "LAPSE_PANEL_INBOUND_ID"),
        panel_token=raw("LAPSE_PANEL_TOKEN"),
        panel_timeout_seconds=float(_positive_int(raw("LAPSE_PANEL_TIMEOUT_SECONDS"),
                                                  "LAPSE_PANEL_TIMEOUT_SECONDS")),
        crypto_url=_url(raw("LAPSE_CRYPTO_URL"), "LAPSE_CRYPTO_URL", ("http", "https")) or "",
        crypto_token=raw("LAPSE_CRYPTO_TOKEN"),
        telegram_url=_url(raw("LAPSE_TELEGRAM_URL"), "LAPSE_TELEGRAM_URL", ("http", "https")) or "",
        telegram_token=_bot_token(raw("LAPSE_TELEGRAM_TOKEN")),
        telegram_timeout=_positive_number(raw("LAPSE_TELEGRAM_TIMEOUT_SECONDS"),
                                          "LAPSE_TELEGRAM_TIMEOUT_SECONDS"),
        telegram_rate=_positive_number(raw("LAPSE_TELEGRAM_RATE_PER_SECOND"),
                                       "LAPSE_TELEGRAM_RATE_PER_SECOND"),
        telegram_chat_rate=_positive_number(raw("LAPSE_TELEGRAM_CHAT_RATE_PER_SECOND"),
                                            "LAPSE_TELEGRAM_CHAT_RATE_PER_SECOND"),
        telegram_burst=_positive_int(raw("LAPSE_TELEGRAM_BURST"), "LAPSE_TELEGRAM_BURST"),
        web_token=_web_token(raw("LAPSE_WEB_TOKEN")),
        allow_clock_override=_flag(raw("LAPSE_ALLOW_CLOCK_OVERRIDE"), "LAPSE_ALLOW_CLOCK_OVERRIDE"),
        panel_check_at_start=_flag(raw("LAPSE_PANEL_CHECK_AT_START"), "LAPSE_PANEL_CHECK_AT_START"),
        billing_grace=timedelta(
            hours=_positive_int(raw("LAPSE_BILLING_GRACE_HOURS"), "LAPSE_BILLING_GRACE_HOURS")
        ),
        pool_size=_positive_int(raw("LAPSE_DB_POOL_SIZE"), "LAPSE_DB_POOL_SIZE"),
        statement_timeout_ms=_positive_int(raw("LAPSE_STATEMENT_TIMEOUT_MS"), "LAPSE_STATEMENT_TIMEOUT_MS"),
        lock_timeout_ms=_positive_int(raw("LAPSE_LOCK_TIMEOUT_MS"), "LAPSE_LOCK_TIMEOUT_MS"),
        idle_in_transaction_timeout_ms=_positive_int(
            raw("LAPSE_IDLE_TX_TIMEOUT_MS"), "LAPSE_IDLE_TX_TIMEOUT_MS"
        ),
        sweep_budget_seconds=float(
            _positive_int(raw("LAPSE_SWEEP_BUDGET_SECONDS"), "LAPSE_SWEEP_BUDGET_SECONDS")
        ),
        log_level=_log_level(raw("LAPSE_LOG_LEVEL") or "INFO"),
        settle=timedelta(minutes=_positive_int(raw("LAPSE_SETTLE_MINUTES"), "LAPSE_SETTLE_MINUTES")),
        purge_after=timedelta(days=_positive_int(raw("LAPSE_PURGE_DAYS"), "LAPSE_PURGE_DAYS")),
        leak_alert_age=timedelta(
            hours=_positive_int(raw("LAPSE_LEAK_ALERT_HOURS"), "LAPSE_LEAK_ALERT_HOURS")),
        retention_rate=_positive_int(raw("LAPSE_RETENTION_RATE"), "LAPSE_RETENTION_RATE"),
        fast_expiry_shards=_positive_int(raw("LAPSE_FAST_EXPIRY_SHARDS"), "LAPSE_FAST_EXPIRY_SHARDS"),
        broadcast_batch_size=_positive_int(raw("LAPSE_BROADCAST_BATCH_SIZE"),
                                           "LAPSE_BROADCAST_BATCH_SIZE"),
        broadcast_backlog_seconds=_positive_number(raw("LAPSE_BROADCAST_BACKLOG_SECONDS"),
                                                   "LAPSE_BROADCAST_BACKLOG_SECONDS"),
        s3_concurrency=_positive_int(raw("LAPSE_S3_CONCURRENCY"), "LAPSE_S3_CONCURRENCY"),
        s3_batch_threshold=_positive_int(raw("LAPSE_S3_BATCH_THRESHOLD"), "LAPSE_S3_BATCH_THRESHOLD"),
        s3_batch_role_arn=raw("LAPSE_S3_BATCH_ROLE_ARN"),
        crypto_invoice_ttl_minutes=_positive_int(raw("LAPSE_CRYPTO_INVOICE_TTL_MINUTES"),
                                                 "LAPSE_CRYPTO_INVOICE_TTL_MINUTES"),
        renewal_window_hours=_positive_int(raw("LAPSE_RENEWAL_WINDOW_HOURS"),
                                           "LAPSE_RENEWAL_WINDOW_HOURS"),
        referral_reward=_positive_int(raw("LAPSE_REFERRAL_REWARD"), "LAPSE_REFERRAL_REWARD"),
        s3_account_id=_batch_account(raw("LAPSE_S3_ACCOUNT_ID"), raw("LAPSE_S3_BATCH_ROLE_ARN")),
        redis_namespace=_redis_namespace(raw("LAPSE_REDIS_NAMESPACE") or ""),
        panel_retries=_positive_int(raw("LAPSE_PANEL_RETRIES"), "LAPSE_PANEL_RETRIES"),
        panel_min_backoff_ms=_positive_int(raw("LAPSE_PANEL_MIN_BACKOFF_MS"),
                                           "LAPSE_PANEL_MIN_BACKOFF_MS"),
        panel_max_backoff_ms=_positive_int(raw("LAPSE_PANEL_MAX_BACKOFF_MS"),
                                           "LAPSE_PANEL_MAX_BACKOFF_MS"),
        trial_days=_positive_int(raw("LAPSE_TRIAL_DAYS"), "LAPSE_TRIAL_DAYS"),
        trial_notice_offsets=_offsets(raw("LAPSE_TRIAL_NOTICE_HOURS"), "LAPSE_TRIAL_NOTICE_HOURS",
                                      timedelta(hours=1)),
        reminder_offsets=_offsets(raw("LAPSE_REMINDER_DAYS"), "LAPSE_REMINDER_DAYS",
                                  timedelta(days=1)),
        heartbeat_seconds=_positive_int(raw("LAPSE_HEARTBEAT_SECONDS"), "LAPSE_HEARTBEAT_SECONDS"),
        heartbeat_stale_seconds=_positive_int(raw("LAPSE_HEARTBEAT_STALE_SECONDS"),
                                              "LAPSE_HEARTBEAT_STALE_SECONDS"),
        queue_age_alert_seconds=_positive_int(raw("LAPSE_QUEUE_AGE_ALERT_SECONDS"),
                                              "LAPSE_QUEUE_AGE_ALERT_SECONDS"),
        metrics_port=_port(raw("LAPSE_METRICS_PORT"), "LAPSE_METRICS_PORT"),
        metrics_host=raw("LAPSE_METRICS_HOST") or "127.0.0.1",
        metrics_dir=Path(d).resolve() if (d := raw("LAPSE_METRICS_DIR")) else None,
    )


def _panel_credentials(raw: Callable[[str], str | None]) -> None:
    """The default panel (LAPSE_PANEL_URL) needs a token, or a user and a password."""
    if raw("LAPSE_PANEL_URL") is None or raw("LAPSE_PANEL_TOKEN") is not None:
        return
    for name in ("LAPSE_PANEL_USER", "LAPSE_PANEL_PASSWORD"):
        if raw(name) is None:
            raise ConfigError(name, "required with LAPSE_PANEL_URL unless LAPSE_PANEL_TOKEN is set")


def _redis_namespace(value: str) -> str:
    if not _NAMESPACE.fullmatch(value):
        raise ConfigError("LAPSE_REDIS_NAMESPACE",
                          f"must be 1-64 letters, digits or _.:- starting with a letter or digit, got {value!r}")
    return value


def _batch_account(account: str | None, role: str | None) -> str | None:
    if role is not None and account is None:
        raise ConfigError("LAPSE_S3_ACCOUNT_ID", "required when LAPSE_S3_BATCH_ROLE_ARN is set")
    if account is not None and not (account.isdigit() and len(account) == 12):
        raise ConfigError("LAPSE_S3_ACCOUNT_ID", f"must be a 12-digit AWS account id, got {account!r}")
    return account


def _url(value: str | None, name: str, schemes: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    parsed = urlparse(value)
    if parsed.scheme not in schemes:
        raise ConfigError(name, f"must be a {'/'.join(schemes)}:// URL")
    if parsed.scheme != "unix" and not parsed.hostname and "host=" not in parsed.query:
        raise ConfigError(name, "has no host")
    return value


def _positive_int(value: str | None, name: str) -> int:
    try:
        number = int(value or "")
    except ValueError:
        raise ConfigError(name, f"must be a positive integer, got {value!r}") from None
    if number <= 0:
        raise ConfigError(name, f"must be a positive integer, got {value!r}")
    return number


_BOT_TOKEN = re.compile(r"^[0-9]+:[A-Za-z0-9_-]+$")


def _port(value: str | None, name: str) -> int:
    try:
        number = int(value or "")
    except ValueError:
        raise ConfigError(name, f"must be a port number (0 to disable), got {value!r}") from None
    if not 0 <= number <= 65535:
        raise ConfigError(name, f"must be a port number (0 to disable), got {value!r}")
    return number


def _bot_token(value: str | None) -> str | None:
    # The message never repeats the value: it is a secret.
    if value is not None and not _BOT_TOKEN.match(value):
        raise ConfigError("LAPSE_TELEGRAM_TOKEN",
                          "is not a bot token (digits, a colon, then letters, digits, - or _)")
    return value


def _web_token(value: str | None) -> str | None:
    # The message never repeats the value: it is a secret.
    if value is not None and len(value) < 16:
        raise ConfigError("LAPSE_WEB_TOKEN", "is too short (16 characters at least)")
    return value


def _positive_number(value: str | None, name: str) -> float:
    try:
        number = float(value or "")
    except ValueError:
        raise ConfigError(name, f"must be a positive number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(name, f"must be a positive number, got {value!r}")
    return number


def _offsets(value: str | None, name: str, unit: timedelta) -> tuple[timedelta, ...]:
    """A comma-separated list of positive numbers of ``unit``, largest first."""
    try:
        numbers = [float(part) for part in (value or "").split(",")]
    except ValueError:
        raise ConfigError(name, f"must be positive numbers separated by commas, got {value!r}"
                          ) from None
    if not numbers or any(not math.isfinite(n) or n <= 0 for n in numbers):
        raise ConfigError(name, f"must be positive numbers separated by commas, got {value!r}")
    return tuple(sorted((unit * n for n in set(numbers)), reverse=True))


def _flag(value: str | None, name: str) -> bool:
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no", None):
        return False
    raise ConfigError(name, f"must be 0 or 1, got {value!r}")


def _log_level(value: str) -> str:
    level = value.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("LAPSE_LOG_LEVEL", f"must be DEBUG, INFO, WARNING or ERROR, got {value!r}")
    return level


_settings: Settings | None = None


def settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    global _settings
    if _settings is None:
        _settings = load_settings()
    return _settings


def reset_settings() -> None:
    """Forget the cached settings (tests change the environment)."""
    global _settings
    _settings = None


def retry_span(retries: int, min_backoff_ms: int, max_backoff_ms: int) -> timedelta:
    """The longest a message can still be retrying after its first send: every backoff at
    its longest (Dramatiq doubles from ``min_backoff``, and its jitter up to doubles that)."""
    total = sum(min(2 * min_backoff_ms * 2 ** attempt, max_backoff_ms) for attempt in range(retries))
    return timedelta(milliseconds=total)

