"""SQS through boto3: the only module besides ``storage/s3.py`` that imports boto3/botocore.

Every botocore error is translated here into a ``ResizeError`` (all of them
transient: the worker backs off and polls again).
"""

from __future__ import annotations

from dataclasses import dataclass

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, ReadTimeoutError

from ..errors import UpstreamError, UpstreamTimeout

MAX_BATCH = 10  # SQS's limit for ReceiveMessage and the *Batch calls


@dataclass(frozen=True)
class Message:
    id: str
    receipt: str
    body: str
    receive_count: int = 1


def make_sqs_client(settings, endpoint_url: str = "", wait_seconds: int = 20):
    """One SQS client per process; the read timeout outlasts a long poll."""
    config = Config(
        region_name=settings.region,
        connect_timeout=settings.s3_connect_timeout,
        read_timeout=wait_seconds + 10,
        retries={"total_max_attempts": settings.s3_max_attempts, "mode": "standard"},
    )
    return boto3.session.Session().client("sqs", endpoint_url=endpoint_url or None, config=config)


class SqsQueue:
    def __init__(self, client, url: str) -> None:
        self.client = client
        self.url = url

    def receive(self, max_messages: int, wait_seconds: int, visibility_timeout: int) -> list[Message]:
        try:
            response = self.client.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=max(1, min(MAX_BATCH, max_messages)),
                WaitTimeSeconds=wait_seconds,
                VisibilityTimeout=visibility_timeout,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, "ReceiveMessage", self.url) from None
        return [
            Message(m["MessageId"], m["ReceiptHandle"], m.get("Body", ""),
                    int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1)))
            for m in response.get("Messages", [])
        ]

    def delete(self, message: Message) -> None:
        try:
            self.client.delete_message(QueueUrl=self.url, ReceiptHandle=message.receipt)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, "DeleteMessage", self.url) from None

    def extend(self, messages: list[Message], visibility_timeout: int) -> list[str]:
        """ChangeMessageVisibility for messages still being worked on; returns the ids that failed."""
        failed: list[str] = []
        for start in range(0, len(messages), MAX_BATCH):
            chunk = messages[start:start + MAX_BATCH]
            try:
                response = self.client.change_message_visibility_batch(QueueUrl=self.url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m.receipt, "VisibilityTimeout": visibility_timeout}
                    for i, m in enumerate(chunk)])
            except (ClientError, BotoCoreError) as exc:
                raise _translate(exc, "ChangeMessageVisibilityBatch", self.url) from None
            failed += [chunk[int(f["Id"])].id for f in response.get("Failed", [])]
        return failed


def _translate(exc: Exception, operation: str, url: str):
    if isinstance(exc, (ReadTimeoutError, ConnectTimeoutError)):
        return UpstreamTimeout("queue timed out", detail=f"{operation} {url}: {exc}")
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        return UpstreamError("queue error", detail=f"{operation} {url}: {code}: {exc}")
    return UpstreamError("queue error", detail=f"{operation} {url}: {type(exc).__name__}: {exc}")
