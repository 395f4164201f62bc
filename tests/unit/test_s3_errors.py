"""botocore errors translated at the one boundary (storage/s3.py): each cause named, credentials apart from permissions.

S3's answers are injected at the wire (``before-send``) as the XML S3 sends, so
botocore parses them exactly as it parses S3's; "no credentials", "unreachable"
and the Block Public Access setting are real (an empty credential chain, a
loopback port nobody listens on, moto's PutPublicAccessBlock).
"""

from __future__ import annotations

import pytest
from botocore.awsrequest import AWSResponse

from resize_server.config import Settings
from resize_server.errors import (
    BucketNotFound,
    PublicAccessBlocked,
    SourceNotFound,
    UpstreamAccessDenied,
    UpstreamCredentials,
    UpstreamError,
    UpstreamUnreachable,
)
from resize_server.storage.base import StoredObject
from resize_server.storage.s3 import S3Storage, make_client
from resize_server.website import bucket_policy, read_deploy_file, website_configuration
from tests.conftest import BUCKET
from tests.http.test_s3_faults import FakeRaw, Injector, error_response
from tests.netfaults import dead_port


def inject_all(client, operation: str, fault) -> Injector:
    """Fault every request of ``operation``, whatever its key."""
    return Injector(client, operation, fault, key=None)

KEY = "photos/earth.jpg"
ARN = f"arn:aws:s3:::{BUCKET}"
# What S3 says, verbatim in shape: (status, code, message).
INVALID_KEY = (403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.")
BAD_SECRET = (403, "SignatureDoesNotMatch",
              "The request signature we calculated does not match the signature you provided. Check your key and signing method.")
EXPIRED = (400, "ExpiredToken", "The provided token has expired.")
SKEWED = (403, "RequestTimeTooSkewed", "The difference between the request time and the current time is too large.")
DENIED = (403, "AccessDenied", "Access Denied")
DENIED_IAM = (403, "AccessDenied", "User: arn:aws:iam::123456789012:user/bob is not authorized to perform: "
              f"s3:GetObject on resource: \"{ARN}/{KEY}\" because no identity-based policy allows the s3:GetObject action")
NO_BUCKET = (404, "NoSuchBucket", "The specified bucket does not exist")


def answer(status: int, code: str, message: str):
    return lambda request, attempt: error_response(request.url, status, code, message)


def put(storage: S3Storage) -> None:
    storage.put(StoredObject(KEY.replace(".jpg", "_200x200.jpg"), b"x", "image/jpeg", "no-cache", "STANDARD"))


def get(storage: S3Storage) -> None:
    storage.get(KEY, 1 << 20)


@pytest.mark.parametrize("operation, call, s3_answer, error, says, never", [
    ("GetObject", get, INVALID_KEY, UpstreamCredentials, "access key id is not known", "lack s3:"),
    ("GetObject", get, BAD_SECRET, UpstreamCredentials, "secret access key does not match", "lack s3:"),
    ("GetObject", get, EXPIRED, UpstreamCredentials, "session token has expired", "lack s3:"),
    ("GetObject", get, SKEWED, UpstreamCredentials, "clock", "lack s3:"),
    ("PutObject", put, INVALID_KEY, UpstreamCredentials, "access key id is not known", "lack s3:"),
    ("GetObject", get, DENIED, UpstreamAccessDenied, f"lack s3:GetObject on {ARN}/{KEY}", "credentials are wrong"),
    ("GetObject", get, DENIED_IAM, UpstreamAccessDenied, "user/bob is not authorized", "credentials are wrong"),
    ("PutObject", put, DENIED, UpstreamAccessDenied, f"lack s3:PutObject on {ARN}/photos/earth_200x200.jpg", "GetObject"),
    ("GetObject", get, NO_BUCKET, BucketNotFound, f"bucket '{BUCKET}' does not exist", "lack s3:"),
    ("GetObject", get, (404, "NoSuchKey", "The specified key does not exist."), SourceNotFound, "NoSuchKey", "bucket"),
    ("GetObject", get, (503, "SlowDown", "Please reduce your request rate."), UpstreamError, "SlowDown", "lack s3:"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_each_s3_answer_is_its_cause(s3, storage, operation, call, s3_answer, error, says, never):
    inject_all(s3, operation, answer(*s3_answer))
    with pytest.raises(error) as info:
        call(storage)
    assert type(info.value) is error
    assert says in info.value.detail
    assert never not in info.value.detail
    if error is UpstreamCredentials:
        assert not isinstance(info.value, UpstreamAccessDenied)  # a credentials problem is not a permission problem


def test_the_access_key_id_is_named_not_the_secret(s3, storage):
    inject_all(s3, "GetObject", lambda request, attempt: AWSResponse(request.url, 403, {"Content-Type": "application/xml"}, FakeRaw(
        b"<Error><Code>InvalidAccessKeyId</Code><Message>The AWS Access Key Id you provided does not exist in our "
        b"records.</Message><AWSAccessKeyId>AKIAEXAMPLE</AWSAccessKeyId></Error>")))
    with pytest.raises(UpstreamCredentials) as info:
        get(storage)
    assert "AKIAEXAMPLE" in info.value.detail
    assert "testing" not in info.value.detail  # the secret (conftest's) is never printed


def test_no_credentials_at_all(no_credentials):
    """A real empty chain: botocore refuses to sign, nothing is sent."""
    storage = S3Storage(make_client(Settings(bucket=BUCKET, s3_endpoint_url=f"http://127.0.0.1:{dead_port()}")), BUCKET)
    with pytest.raises(UpstreamCredentials) as info:
        get(storage)
    assert "no AWS credentials found" in info.value.detail
    assert "AWS_ACCESS_KEY_ID" in info.value.detail


def test_a_profile_that_does_not_exist(monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    with pytest.raises(UpstreamCredentials) as info:
        make_client(Settings(bucket=BUCKET))
    assert "no-such-profile" in info.value.detail


def test_an_unreachable_endpoint_is_named():
    url = f"http://127.0.0.1:{dead_port()}"
    storage = S3Storage(make_client(Settings(bucket=BUCKET, s3_endpoint_url=url, s3_max_attempts=1)), BUCKET)
    with pytest.raises(UpstreamUnreachable) as info:
        get(storage)
    assert f"cannot reach the S3 endpoint {url}/" in info.value.detail
    assert info.value.public == "storage backend error"


# ---- the bucket check (HeadBucket: no body, so a bare 403 is diagnosed) --------------------------


def bare(status: int):
    return lambda request, attempt: AWSResponse(request.url, status, {}, FakeRaw(b""))


@pytest.mark.parametrize("head, listing, error, says", [
    (bare(403), answer(*INVALID_KEY), UpstreamCredentials, "access key id is not known"),
    (bare(403), answer(*BAD_SECRET), UpstreamCredentials, "secret access key"),
    (bare(400), answer(*EXPIRED), UpstreamCredentials, "session token has expired"),
    (bare(403), answer(*DENIED), UpstreamAccessDenied, f"lack s3:ListBucket on {ARN}"),
    (bare(404), None, BucketNotFound, f"bucket '{BUCKET}' does not exist"),
])
def test_check_names_the_cause_of_a_failed_head_bucket(s3, storage, head, listing, error, says):
    heads = inject_all(s3, "HeadBucket", head)
    listings = inject_all(s3, "ListObjectsV2", listing or (lambda request, attempt: None))
    with pytest.raises(error) as info:
        storage.check()
    assert type(info.value) is error and says in info.value.detail
    assert len(heads.calls) == 1
    assert len(listings.calls) == (1 if listing else 0)  # only a bare 400/403 needs the diagnosis


def test_check_passes_on_a_reachable_bucket(s3, storage):
    listings = inject_all(s3, "ListObjectsV2", lambda request, attempt: None)
    storage.check()
    assert listings.calls == []


# ---- setup-bucket's calls: Block Public Access named as such -------------------------------------


def configure(storage: S3Storage) -> list[str]:
    return storage.configure_website(website_configuration(read_deploy_file("routing_rules.xml"), "resize.example.com"),
                                     bucket_policy(read_deploy_file("bucket_policy.json"), BUCKET))


BLOCKED_MESSAGE = (f"User: arn:aws:iam::123456789012:user/admin is not authorized to perform: s3:PutBucketPolicy on "
                   f"resource: \"{ARN}\" because public policies are blocked by the BlockPublicPolicy block public "
                   f"access setting.")


def test_block_public_access_reported_by_s3_is_named(s3, storage):
    inject_all(s3, "PutBucketPolicy", answer(403, "AccessDenied", BLOCKED_MESSAGE))
    with pytest.raises(PublicAccessBlocked) as info:
        configure(storage)
    assert "Block Public Access" in info.value.detail and "BlockPublicPolicy" in info.value.detail
    assert "put-public-access-block" in info.value.detail


def test_a_plain_access_denied_with_block_public_policy_on_is_named_block_public_access(s3, storage):
    """Older endpoints say only "Access Denied": the bucket's own setting (read with GetPublicAccessBlock) tells."""
    s3.put_public_access_block(Bucket=BUCKET, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
    inject_all(s3, "PutBucketPolicy", answer(*DENIED))
    with pytest.raises(PublicAccessBlocked) as info:
        configure(storage)
    assert "the bucket's BlockPublicPolicy setting is on" in info.value.detail


def test_a_plain_access_denied_without_block_public_access_names_the_permission(s3, storage):
    inject_all(s3, "PutBucketPolicy", answer(*DENIED))
    with pytest.raises(UpstreamAccessDenied) as info:
        configure(storage)
    assert type(info.value) is UpstreamAccessDenied
    assert f"lack s3:PutBucketPolicy on {ARN}" in info.value.detail


@pytest.mark.parametrize("operation", ["PutBucketWebsite", "PutBucketPolicy"])
def test_bad_credentials_in_setup_are_credentials_not_permissions(s3, storage, operation):
    inject_all(s3, operation, answer(*INVALID_KEY))
    with pytest.raises(UpstreamCredentials) as info:
        configure(storage)
    assert info.value.detail.startswith(f"{operation} s3://{BUCKET}: InvalidAccessKeyId")
    assert "PutBucketWebsite/PutBucketPolicy" not in info.value.detail


def test_setup_on_moto_succeeds(s3, storage):
    assert configure(storage) == []
    assert s3.get_bucket_website(Bucket=BUCKET)["RoutingRules"]
    assert '"s3:GetObject"' in s3.get_bucket_policy(Bucket=BUCKET)["Policy"]
