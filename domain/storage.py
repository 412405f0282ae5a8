"""The recording store port (S3): what retention needs from object storage, one method per action.

The real adapter is ``lapse.ports.s3.S3RecordingStore`` (boto3); tests run it
against a real local moto server, and test the Batch Operations path with
botocore's Stubber because moto has no ``s3control create_job``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

#: The tag that marks an object for deletion. It is merged into an object's
#: existing tags, never replacing them (``PutObjectTagging`` replaces the whole set).
DELETION_TAG_KEY = "lapse-deletion"
DELETION_TAG_VALUE = "tagged"


@dataclass(frozen=True)
class Applied:
    """The result of one action on a set of keys: how many were done, which keys no longer exist."""

    done: int
    missing: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ObjectState:
    exists: bool
    tagged: bool


class JobState:
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"


class RecordingStore(Protocol):
    def put(self, key: str, body: bytes) -> None:
        """Store audio under ``key``."""

    def tag(self, keys: Sequence[str]) -> Applied:
        """Add the deletion tag to each object, keeping its other tags; idempotent."""

    def untag(self, keys: Sequence[str]) -> Applied:
        """Remove the deletion tag from each object, keeping its other tags; idempotent."""

    def delete(self, keys: Sequence[str]) -> Applied:
        """Delete each object; idempotent."""

    def inspect(self, key: str) -> ObjectState:
        """Whether the object exists and carries the deletion tag."""

    def wants_batch_job(self, key_count: int) -> bool:
        """True when tagging this many keys goes through S3 Batch Operations (R7)."""

    def start_tagging_job(self, batch_id: int, keys: Sequence[str]) -> str:
        """Upload a manifest of ``keys`` and start a Batch Operations tagging job; return its id."""

    def tagging_job_state(self, job_id: str) -> str:
        """One of ``JobState``'s values."""
