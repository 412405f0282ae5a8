"""The boto3 recording store: per-object actions against a real moto server; Batch Operations with botocore's Stubber."""

from __future__ import annotations

import boto3
from botocore.stub import ANY, Stubber

from domain.storage import JobState
from lapse.ports import s3


def test_tag_untag_and_delete_are_idempotent_keep_other_tags_and_report_missing_keys(store):
    keys = [f"audio/1/{n}" for n in range(5)]
    for key in keys:
        store.put(key, b"x")
    store.client.put_object_tagging(Bucket=store.bucket, Key=keys[0],
                                    Tagging={"TagSet": [{"Key": "owner", "Value": "a"}]})
    first = store.tag([*keys, "audio/1/gone"])
    assert first.done == 5 and first.missing == ["audio/1/gone"]
    assert store.tag(keys).done == 5  # again: nothing changes
    assert all(store.inspect(k).tagged for k in keys)
    untagged = store.untag(keys[:2])
    assert untagged.done == 2
    assert store.client.get_object_tagging(Bucket=store.bucket, Key=keys[0])["TagSet"] == [
        {"Key": "owner", "Value": "a"}]
    assert not store.inspect(keys[1]).tagged and store.inspect(keys[2]).tagged
    deleted = store.delete([keys[4], "audio/1/gone"])
    assert deleted.done == 1 and deleted.missing == ["audio/1/gone"]
    assert not store.inspect(keys[4]).exists


def test_the_manifest_lists_bucket_and_url_encoded_key_per_line():
    assert s3.manifest_csv("b", ["audio/1/a b.ogg", "audio/2/c,d"]) == (
        b"b,audio/1/a%20b.ogg\nb,audio/2/c%2Cd\n")


def stubbed_store():
    session = boto3.session.Session(aws_access_key_id="k", aws_secret_access_key="s")
    store = s3.S3RecordingStore(bucket="recordings", endpoint_url=None, region="us-east-1",
                                batch_threshold=2, batch_role_arn="arn:aws:iam::123456789012:role/tag",
                                account_id="123456789012", session=session)
    return store, Stubber(store.client), Stubber(store.control)


def test_a_large_set_starts_a_batch_operations_tagging_job_with_manifest_role_tags_and_report():
    store, client, control = stubbed_store()
    keys = ["audio/1/a", "audio/1/b", "audio/1/c"]
    client.add_response("put_object", {"ETag": '"etag-of-manifest"'}, {
        "Bucket": "recordings", "Key": "lapse-manifests/batch-42.csv",
        "Body": s3.manifest_csv("recordings", keys), "ContentType": "text/csv"})
    control.add_response("create_job", {"JobId": "job-1"}, {
        "AccountId": "123456789012", "ConfirmationRequired": False,
        "ClientRequestToken": "lapse-tagging-batch-42", "Description": ANY, "Priority": 10,
        "RoleArn": "arn:aws:iam::123456789012:role/tag",
        "Operation": {"S3PutObjectTagging": {"TagSet": [
            {"Key": "lapse-deletion", "Value": "tagged"}]}},
        "Manifest": {"Spec": {"Format": "S3BatchOperations_CSV_20180820",
                              "Fields": ["Bucket", "Key"]},
                     "Location": {"ObjectArn": "arn:aws:s3:::recordings/lapse-manifests/batch-42.csv",
                                  "ETag": "etag-of-manifest"}},
        "Report": {"Bucket": "arn:aws:s3:::recordings", "Prefix": "lapse-reports",
                   "Format": "Report_CSV_20180820", "Enabled": True,
                   "ReportScope": "FailedTasksOnly"}})
    for status in ("Active", "Complete"):
        control.add_response("describe_job", {"Job": {"JobId": "job-1", "Status": status}},
                             {"AccountId": "123456789012", "JobId": "job-1"})
    with client, control:
        assert store.wants_batch_job(3) and not store.wants_batch_job(2)
        assert store.start_tagging_job(42, keys) == "job-1"
        assert store.tagging_job_state("job-1") == JobState.RUNNING
        assert store.tagging_job_state("job-1") == JobState.COMPLETE
    client.assert_no_pending_responses()
    control.assert_no_pending_responses()


def test_the_flow_uses_the_job_above_the_threshold_and_marks_the_batch_applied_when_it_completes(
        pool, monkeypatch):
    from lapse.flows import recordings as flows
    from tests.support import factories as make

    store, client, control = stubbed_store()
    calls = []
    monkeypatch.setattr(store, "start_tagging_job", lambda b, k: calls.append(("start", b, k)) or "j")
    states = iter([JobState.RUNNING, JobState.COMPLETE])
    monkeypatch.setattr(store, "tagging_job_state", lambda j: next(states))
    monkeypatch.setattr(store, "tag", lambda keys: (_ for _ in ()).throw(AssertionError("per object")))
    with pool.connection() as conn:
        user = make.user(conn)
        batch = conn.execute("insert into tagging_batches (user_id, action, keys, created_at) values "
                             "(%s, 'tag', array['a','b','c'], now()) returning id", (user,)
                             ).fetchone()["id"]
        conn.commit()
    import pytest

    with pytest.raises(flows.JobRunning):
        flows.apply_user_batches(pool, store, user)
    assert flows.apply_user_batches(pool, store, user) == 1
    assert calls == [("start", batch, ["a", "b", "c"])]  # started once, then tracked
    with pool.connection() as conn:
        row = conn.execute("select state, s3_job_id from tagging_batches").fetchone()
    assert row == {"state": "applied", "s3_job_id": "j"}
