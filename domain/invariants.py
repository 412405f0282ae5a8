"""The invariants an operator checks with ``lapse audit invariants`` (SPEC §8).

Most are also constraints of the schema; the audit proves they hold in the
data as it is (a constraint can be dropped, a legacy writer can bypass a
trigger). Each check is one query in ``sql/invariants.sql`` returning the
offending rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from psycopg import Connection

from lapse.platform.sql import queries

SQL = queries(__file__, "invariants")
SAMPLE = 20

CHECKS: dict[str, str] = {
    "expired_has_no_key": "status = 'expired' implies access_key is null",
    "current_has_key": "a current subscription other than pending has a key",
    "one_current_subscription": "no user has two current subscriptions",
    "balance_matches_ledger": "balance = sum(ledger) for every user",
    "balance_not_negative": "balance >= 0 for every user",
    "paid_purchase_has_one_payment": "every paid purchase has exactly one payment",
    "payment_recorded_once": "no payment recorded twice for (provider, provider_payment_id)",
    "renewal_within_period": "last_auto_renewal_at <= expires_at",
    "no_old_leaks": "no has_audio recording of a user without retention older than the alert age",
    "unapplied_tagging_batches": "no tagging batch left unapplied in S3 longer than the alert age",
}
NOT_YET: dict[str, str] = {}


@dataclass
class CheckResult:
    name: str
    meaning: str
    violations: int
    sample: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.violations == 0


def check_invariants(conn: Connection[Any], *, now: datetime, billing_grace: timedelta,
                     alert_age: timedelta) -> list[CheckResult]:
    """Run every check; each result carries the count and a sample of offending rows."""
    params = {"now": now, "grace": billing_grace, "alert_age": alert_age, "sample": SAMPLE}
    results = []
    for name, meaning in CHECKS.items():
        count = conn.execute(f"select count(*) as n from ({SQL[name]}) v", params).fetchone()
        sample = conn.execute(f"{SQL[name]} limit %(sample)s", params).fetchall()
        results.append(CheckResult(name, meaning, int(count["n"] if count else 0), sample))
    return results
