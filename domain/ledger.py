"""The balance ledger (M1): the only way a balance changes.

``post`` writes one ledger row (a reason and a reference unique per user)
and moves ``users.balance`` by the same amount, on the caller's connection
and inside the caller's transaction. A deferred constraint trigger checks
balance = sum(ledger) at COMMIT, and a CHECK keeps the balance >= 0; ``post``
refuses a debit below zero itself, with a clear error, before either fires.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import Connection

from domain.errors import PermanentError, UnknownUser
from lapse.platform.sql import queries

SQL = queries(__file__, "ledger")


class InsufficientBalance(PermanentError):
    """A debit larger than the balance; nothing was changed."""

    def __init__(self, user_id: int, balance: int, debit: int) -> None:
        super().__init__(f"user {user_id} has a balance of {balance}, cannot debit {debit}")
        self.user_id, self.balance, self.debit = user_id, balance, debit


class AlreadyPosted(PermanentError):
    """A ledger row with this (user, reason, ref) exists: the change was made before."""

    def __init__(self, user_id: int, reason: str, ref: str) -> None:
        super().__init__(f"ledger entry {reason}/{ref} of user {user_id} already exists")
        self.user_id, self.reason, self.ref = user_id, reason, ref


@dataclass(frozen=True)
class Posted:
    entry_id: int
    balance: int


def post(conn: Connection[Any], user_id: int, amount: int, *, reason: str, ref: str,
         now: datetime) -> Posted:
    """Credit (amount > 0) or debit (amount < 0) a user's balance with one ledger row."""
    if amount == 0:
        raise ValueError("a ledger entry moves money: amount must not be 0")
    params = {"user_id": user_id, "amount": amount, "reason": reason, "ref": ref, "now": now}
    row: Any = conn.execute(SQL["post"], params).fetchone()
    if row["id"] is not None:
        return Posted(int(row["id"]), int(row["balance"]))
    refusal: Any = conn.execute(SQL["refusal"], params).fetchone()
    if refusal is None:
        raise UnknownUser(user_id)
    if refusal["posted"]:
        raise AlreadyPosted(user_id, reason, ref)
    raise InsufficientBalance(user_id, int(refusal["balance"]), -amount)
