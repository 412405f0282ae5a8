"""The boto3 adapter of the recording store port, and the process's store.

Per-object actions run with bounded concurrency (``LAPSE_S3_CONCURRENCY``)
and botocore's standard retry mode (per-object retries with backoff). Tagging
reads the object's tags and writes them back with the deletion tag added, so
other tags survive; an object that already carries it is left alone.

Above ``LAPSE_S3_BATCH_THRESHOLD`` keys, and when a Batch Operations role is
configured, tagging uploads a CSV manifest and starts an S3 Batch Operations
``S3PutObjectTagging`` job instead (R7). That operation replaces the whole
tag set of each object with the deletion tag: Lapse's recordings carry no
other tags, and the per-object path is used for everything else.
"""

from __future__ import annotations

import csv
import io
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast
from urllib.parse import quote

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from domain.storage import (
    DELETION_TAG_KEY,
    DELETION_TAG_VALUE,
    Applied,
    JobState,
    ObjectState,
    RecordingStore,
)
from lapse.platform.config import Settings, settings

_MISSING = ("NoSuchKey", "404", "NotFound")
_JOB_STATES = {"Complete": JobState.COMPLETE, "Failed": JobState.FAILED,
               "Cancelled": JobState.FAILED}
MANIFEST_PREFIX = "lapse-manifests/"
REPORT_PREFIX = "lapse-reports"


def _missing(error: ClientError) -> bool:
    return str(error.response.get("Error", {}).get("Code")) in _MISSING


class S3RecordingStore:
    """Recording audio in one S3 bucket."""

    def __init__(self, *, bucket: str, endpoint_url: str | None, region: str,
                 concurrency: int = 16, batch_threshold: int = 10_000,
                 batch_role_arn: str | None = None, account_id: str | None = None,
                 session: Any = None) -> None:
        config = Config(connect_timeout=5, read_timeout=30, max_pool_connections=concurrency,
                        retries={"mode": "standard", "max_attempts": 4})
        session = session or boto3.session.Session()
        self.bucket = bucket
        self.concurrency = concurrency
        self.batch_threshold = batch_threshold
        self.batch_role_arn = batch_role_arn
        self.account_id = account_id
        self.client = session.client("s3", endpoint_url=endpoint_url, region_name=region,
                                     config=config)
        self.control = session.client("s3control", endpoint_url=endpoint_url,
                                      region_name=region, config=config)

    # -- per object ---------------------------------------------------------

    def put(self, key: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body)

    def put_all(self, keys: Sequence[str], body: bytes) -> None:
        """Store the same body under many keys, ``concurrency`` at a time (demo, benchmarks)."""
        def put_one(key: str) -> bool:
            self.put(key, body)
            return True
        self._each(keys, put_one)

    def tag(self, keys: Sequence[str]) -> Applied:
        return self._each(keys, self._tag_one)

    def untag(self, keys: Sequence[str]) -> Applied:
        return self._each(keys, self._untag_one)

    def delete(self, keys: Sequence[str]) -> Applied:
        return self._each(keys, self._delete_one)

    def inspect(self, key: str) -> ObjectState:
        try:
            tags = self._tags(key)
        except ClientError as error:
            if _missing(error):
                return ObjectState(exists=False, tagged=False)
            raise
        return ObjectState(exists=True, tagged=tags.get(DELETION_TAG_KEY) == DELETION_TAG_VALUE)

    def _each(self, keys: Sequence[str], action: Callable[[str], bool]) -> Applied:
        """Run ``action`` on every key, ``concurrency`` at a time; an action returns False for a missing key."""
        if not keys:
            return Applied(0)
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(keys))) as pool:
            found = list(pool.map(action, keys))
        missing = [key for key, present in zip(keys, found, strict=True) if not present]
        return Applied(len(keys) - len(missing), missing)

    def _tags(self, key: str) -> dict[str, str]:
        response = self.client.get_object_tagging(Bucket=self.bucket, Key=key)
        return {t["Key"]: t["Value"] for t in response.get("TagSet", [])}

    def _write_tags(self, key: str, tags: dict[str, str]) -> None:
        if tags:
            self.client.put_object_tagging(
                Bucket=self.bucket, Key=key,
                Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in sorted(tags.items())]})
        else:
            self.client.delete_object_tagging(Bucket=self.bucket, Key=key)

    def _tag_one(self, key: str) -> bool:
        return self._retag(key, lambda tags: tags | {DELETION_TAG_KEY: DELETION_TAG_VALUE})

    def _untag_one(self, key: str) -> bool:
        return self._retag(key, lambda tags: {k: v for k, v in tags.items()
                                              if k != DELETION_TAG_KEY})

    def _retag(self, key: str, change: Callable[[dict[str, str]], dict[str, str]]) -> bool:
        """Read the object's tags, write ``change(tags)`` back only if it differs; False if missing."""
        try:
            tags = self._tags(key)
            changed = change(tags)
            if changed != tags:
                self._write_tags(key, changed)
        except ClientError as error:
            if _missing(error):
                return False
            raise
        return True

    def _delete_one(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if _missing(error):
                return False
            raise
        self.client.delete_object(Bucket=self.bucket, Key=key)
        return True

    # -- S3 Batch Operations (R7) --------------------------------------------

    def wants_batch_job(self, key_count: int) -> bool:
        return (self.batch_role_arn is not None and self.account_id is not None
                and key_count > self.batch_threshold)

    def start_tagging_job(self, batch_id: int, keys: Sequence[str]) -> str:
        manifest_key = f"{MANIFEST_PREFIX}batch-{batch_id}.csv"
        uploaded = self.client.put_object(Bucket=self.bucket, Key=manifest_key,
                                          Body=manifest_csv(self.bucket, keys),
                                          ContentType="text/csv")
        response = self.control.create_job(
            AccountId=self.account_id,
            ConfirmationRequired=False,
            ClientRequestToken=f"lapse-tagging-batch-{batch_id}",
            Description=f"lapse tagging batch {batch_id}",
            Priority=10,
            RoleArn=self.batch_role_arn,
            Operation={"S3PutObjectTagging": {"TagSet": [
                {"Key": DELETION_TAG_KEY, "Value": DELETION_TAG_VALUE}]}},
            Manifest={
                "Spec": {"Format": "S3BatchOperations_CSV_20180820", "Fields": ["Bucket", "Key"]},
                "Location": {"ObjectArn": f"arn:aws:s3:::{self.bucket}/{manifest_key}",
                             "ETag": uploaded["ETag"].strip('"')},
            },
            Report={"Bucket": f"arn:aws:s3:::{self.bucket}", "Prefix": REPORT_PREFIX,
                    "Format": "Report_CSV_20180820", "Enabled": True,
                    "ReportScope": "FailedTasksOnly"},
        )
        return str(response["JobId"])

    def tagging_job_state(self, job_id: str) -> str:
        job = self.control.describe_job(AccountId=self.account_id, JobId=job_id)["Job"]
        return _JOB_STATES.get(job["Status"], JobState.RUNNING)

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (local servers and tests)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)


def manifest_csv(bucket: str, keys: Sequence[str]) -> bytes:
    """An S3 Batch Operations CSV manifest: one ``bucket,key`` line per key, keys URL-encoded."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for key in keys:
        writer.writerow([bucket, quote(key, safe="/")])
    return out.getvalue().encode()


def from_settings(config: Settings, endpoint_url: str | None = None,
                  session: Any = None) -> S3RecordingStore:
    return S3RecordingStore(
        bucket=config.s3_bucket, endpoint_url=endpoint_url or config.s3_endpoint_url,
        region=config.aws_region, concurrency=config.s3_concurrency,
        batch_threshold=config.s3_batch_threshold, batch_role_arn=config.s3_batch_role_arn,
        account_id=config.s3_account_id, session=session)


_store: RecordingStore | None = None
_lock = threading.Lock()


def store() -> RecordingStore:
    """The process's recording store: LAPSE_S3_ENDPOINT_URL, or the local S3 server of the embedded default."""
    global _store
    with _lock:
        if _store is None:
            config = settings()
            if config.s3_endpoint_url is None and config.embedded:
                from lapse.platform import local_s3

                adapter = from_settings(config, local_s3.ensure_running(config.home),
                                        session=local_s3.session())
                adapter.ensure_bucket()
            else:
                adapter = from_settings(config)
            _store = adapter
        return _store


class _OnFirstUse:
    """``store()``, made when a method is first called: a tagging or restore decision with no
    batch to apply never calls S3, and building the client costs a third of a second of CPU."""

    def __getattr__(self, name: str) -> Any:
        return getattr(store(), name)


def lazy_store() -> RecordingStore:
    """The process's store, made on first use (see ``store``)."""
    return cast(RecordingStore, _OnFirstUse())


def install_store(new_store: RecordingStore | None) -> RecordingStore | None:
    """Use ``new_store`` as the process's store (tests); return the previous one."""
    global _store
    with _lock:
        old, _store = _store, new_store
    return old
