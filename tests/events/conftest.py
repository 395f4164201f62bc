"""moto (in-process ``mock_aws``) S3 + SQS with real bucket notifications, and the service over them."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

import pytest
from botocore.exceptions import EndpointConnectionError
from moto import mock_aws

from resize_server.config import Settings
from resize_server.events.sqs import SqsQueue, make_sqs_client
from resize_server.service import build_service
from resize_server.storage.s3 import S3Storage, make_client

BUCKET = "images"
PRESETS = "thumb=50x50,small=200x200,large=1024x1024"
# Landscape_1.jpg is 1800x1200: what each preset gives (fit inside the box).
EXPECTED = {"thumb": (50, 33), "small": (200, 133), "large": (1024, 683)}


def event_settings(**overrides) -> Settings:
    values = {"bucket": BUCKET, "presets": PRESETS, "s3_max_attempts": "1"}
    values.update(overrides)
    return Settings.from_mapping(values).validate()


@dataclass
class Aws:
    s3: object
    sqs: object
    queue_url: str
    dlq_url: str

    def use_queue(self, name: str, *, visibility: int = 30, max_receives: int = 3) -> None:
        """Create a queue (and its DLQ) and point the bucket's notification at it."""
        self.queue_url, self.dlq_url = create_queues(self.sqs, name, visibility=visibility, max_receives=max_receives)
        notify(self.s3, self.sqs, BUCKET, self.queue_url)
        self.drain_test_event()

    def queue(self) -> SqsQueue:
        return SqsQueue(self.sqs, self.queue_url)

    def counts(self, url: str | None = None) -> tuple[int, int]:
        """(visible, in flight) messages of the queue (moto's counts are exact)."""
        attrs = self.sqs.get_queue_attributes(QueueUrl=url or self.queue_url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def drain_test_event(self) -> None:
        """Receive and delete the s3:TestEvent S3 sends when the notification is configured."""
        messages = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
        assert [json.loads(m["Body"]).get("Event") for m in messages] == ["s3:TestEvent"]
        for m in messages:
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])

    def pending_created_keys(self) -> list[str]:
        """Keys of the ObjectCreated events on the queue, left visible again afterwards."""
        from resize_server.events.s3events import parse_body

        keys, taken = [], []
        while True:
            messages = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                                VisibilityTimeout=30).get("Messages", [])
            if not messages:
                break
            taken += messages
            for m in messages:
                keys += [c.key for c in parse_body(m["Body"]).created]
        for m in taken:
            self.sqs.change_message_visibility(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"],
                                               VisibilityTimeout=0)
        return keys

    def keys(self, bucket: str = BUCKET) -> list[str]:
        return sorted(o["Key"] for o in self.s3.list_objects_v2(Bucket=bucket).get("Contents", []))

    def body(self, key: str, bucket: str = BUCKET) -> bytes:
        return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def create_queues(sqs, name: str = "events", *, visibility: int = 30, max_receives: int = 3) -> tuple[str, str]:
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(QueueName=name, Attributes={
        "VisibilityTimeout": str(visibility),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receives)}),
    })["QueueUrl"]
    return url, dlq_url


def notify(s3, sqs, bucket: str, queue_url: str) -> None:
    """The notification the deploy files configure: ObjectCreated of images -> the queue."""
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [
        {"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]})


@pytest.fixture
def settings() -> Settings:
    return event_settings()


@pytest.fixture
def aws(settings):
    """moto S3 + SQS: the bucket notifies the queue (with a DLQ, maxReceiveCount 3) of every creation."""
    with mock_aws():
        s3 = make_client(settings)
        sqs = make_sqs_client(settings)
        s3.create_bucket(Bucket=BUCKET)
        aws = Aws(s3, sqs, "", "")
        aws.use_queue("events")
        yield aws


@pytest.fixture
def service(settings, aws):
    return build_service(settings, storage=S3Storage(aws.s3, BUCKET))


class Faults:
    """A botocore ``before-send`` handler on the moto client that RAISES for matching requests.

    Registered first, so it runs before moto answers: to the code above it is
    exactly a connection failure (botocore's EndpointConnectionError).
    """

    def __init__(self, client, operation: str, match: str = "", times: int | None = None, delay: float = 0.0):
        self.match = match
        self.times = times
        self.delay = delay
        self.raised = 0
        self.seen = 0
        self._lock = threading.Lock()
        self.client = client
        self.event = f"before-send.{client.meta.service_model.endpoint_prefix}.{operation}"
        client.meta.events.register_first(self.event, self)

    def __call__(self, request, **_kwargs):
        if self.match and self.match not in request.url:
            return None
        with self._lock:
            self.seen += 1
            fire = self.times is None or self.raised < self.times
            if fire and not self.delay:
                self.raised += 1
        if self.delay:
            time.sleep(self.delay)
            return None
        if fire:
            raise EndpointConnectionError(endpoint_url=request.url)
        return None

    def remove(self) -> None:
        self.client.meta.events.unregister(self.event, self)


class Calls:
    """Records the keys of every call of one S3 operation (a ``before-parameter-build`` hook: nothing changes)."""

    def __init__(self, client, operation: str):
        self.keys: list[str] = []
        self._lock = threading.Lock()
        client.meta.events.register(f"before-parameter-build.s3.{operation}", self)

    def __call__(self, params, **_kwargs):
        with self._lock:
            self.keys.append(params.get("Key", ""))
