"""The SQS worker against moto with real bucket notifications: put_object -> message -> presets."""

from __future__ import annotations

import json
import threading
import time

import pytest

from resize_server.events.worker import Worker
from tests.conftest import dimensions, photo
from tests.events.conftest import BUCKET, EXPECTED, Calls, Faults


def worker(service, aws, **kwargs) -> Worker:
    kwargs.setdefault("concurrency", 2)
    kwargs.setdefault("wait_seconds", 0)
    kwargs.setdefault("visibility_timeout", 30)
    return Worker(service, aws.queue(), **kwargs)


def assert_presets(aws, key: str, expected=EXPECTED) -> None:
    stem, ext = key.rsplit(".", 1)
    for preset, (width, height) in expected.items():
        dest = f"{stem}_{preset}.{ext}"
        head = aws.s3.head_object(Bucket=BUCKET, Key=dest)
        assert head["ContentType"] == "image/jpeg"
        assert "derived-from" in head["Metadata"]
        assert dimensions(aws.body(dest)) == ("JPEG", width, height), dest


def test_one_pass_renders_every_preset(service, aws):
    aws.s3.put_object(Bucket=BUCKET, Key="photos/earth.jpg", Body=photo(), ContentType="image/jpeg")
    assert aws.counts() == (1, 0)  # the notification arrived
    stats = worker(service, aws).run(until_empty=True)
    assert_presets(aws, "photos/earth.jpg")
    assert stats.rendered == 3 and stats.left_for_retry == 0
    assert aws.counts() == (0, 0)  # every message deleted (the outputs' own events included)
    assert aws.counts(aws.dlq_url) == (0, 0)


# The real key, as a user uploads it (S3 encodes it in the event: "+" for a space, %2B for "+").
KEYS = ["my photo.jpg", "a+b.jpg", "my photo+1.jpg", "été/写真 1.jpg", "deep/er/folder/x.jpg", "100%.jpg",
        "a&b=c.jpg"]


@pytest.mark.parametrize("key", KEYS)
def test_keys_as_s3_encodes_them_in_events(service, aws, key):
    aws.s3.put_object(Bucket=BUCKET, Key=key, Body=photo())
    [message] = aws.sqs.receive_message(QueueUrl=aws.queue_url, VisibilityTimeout=0)["Messages"]
    raw = json.loads(message["Body"])["Records"][0]["s3"]["object"]["key"]
    assert " " not in raw  # it really is encoded in the event
    worker(service, aws).run(until_empty=True)
    stem, ext = key.rsplit(".", 1)
    assert sorted(aws.keys()) == sorted([key] + [f"{stem}_{p}.{ext}" for p in EXPECTED])


def test_writing_into_its_own_source_bucket_does_not_loop(service, aws):
    puts = Calls(aws.s3, "PutObject")
    aws.s3.put_object(Bucket=BUCKET, Key="loop.jpg", Body=photo())
    stats = worker(service, aws).run(until_empty=True)
    # One render per preset; then the 3 events of its own outputs arrive and render nothing.
    assert sorted(puts.keys) == ["loop.jpg", "loop_large.jpg", "loop_small.jpg", "loop_thumb.jpg"]
    assert stats.received == 4 and stats.deleted == 4 and stats.rendered == 3
    assert service.metrics.get("events_total", result="derived-key") == 3
    assert aws.counts() == (0, 0)


def test_redelivered_message_renders_nothing(service, aws):
    aws.s3.put_object(Bucket=BUCKET, Key="again.jpg", Body=photo())
    [message] = aws.sqs.receive_message(QueueUrl=aws.queue_url, VisibilityTimeout=0)["Messages"]
    worker(service, aws).run(until_empty=True)
    puts = Calls(aws.s3, "PutObject")
    gets = Calls(aws.s3, "GetObject")
    aws.sqs.send_message(QueueUrl=aws.queue_url, MessageBody=message["Body"])  # at-least-once: it comes again
    stats = worker(service, aws).run(until_empty=True)
    assert stats.deleted == 1 and stats.rendered == 0
    assert puts.keys == [] and gets.keys == []  # HEADs only: the event's ETag matches every output's
    assert_presets(aws, "again.jpg")


def test_overwritten_original_is_rendered_again(service, aws):
    aws.s3.put_object(Bucket=BUCKET, Key="new.jpg", Body=photo())
    worker(service, aws).run(until_empty=True)
    aws.s3.put_object(Bucket=BUCKET, Key="new.jpg", Body=photo("Portrait_1.jpg"))  # a new ETag
    stats = worker(service, aws).run(until_empty=True)
    assert stats.rendered == 3
    assert dimensions(aws.body("new_small.jpg"))[1:] == (133, 200)


def test_transient_fault_ends_in_the_dlq_with_nothing_half_written(service, aws):
    aws.use_queue("flaky", visibility=1, max_receives=3)
    faults = Faults(aws.s3, "PutObject", match="flaky_small.jpg")  # every store of one output fails
    aws.s3.put_object(Bucket=BUCKET, Key="flaky.jpg", Body=photo())
    loop = worker(service, aws, visibility_timeout=1)
    deadline = time.monotonic() + 20
    while aws.counts(aws.dlq_url) == (0, 0) and time.monotonic() < deadline:
        loop.run(until_empty=True)
        time.sleep(0.3)
    assert aws.counts(aws.dlq_url) == (1, 0)
    assert aws.counts() == (0, 0)
    assert faults.raised == 3  # one try per receive, then the redrive policy moved it
    assert loop.stats.left_for_retry == 3
    assert loop.stats.deleted == 1  # only the event of the one stored output (a derived key: skipped)
    # What was stored is whole: the preset before the failing one, complete, with its metadata.
    assert aws.keys() == ["flaky.jpg", "flaky_thumb.jpg"]
    assert dimensions(aws.body("flaky_thumb.jpg")) == ("JPEG", 50, 33)
    # Redriven once the fault is gone, it completes without rendering the stored preset again.
    faults.remove()
    [dead] = aws.sqs.receive_message(QueueUrl=aws.dlq_url)["Messages"]
    aws.sqs.send_message(QueueUrl=aws.queue_url, MessageBody=dead["Body"])
    stats = worker(service, aws, visibility_timeout=1).run(until_empty=True)
    assert stats.rendered == 2
    assert_presets(aws, "flaky.jpg")


@pytest.mark.parametrize("body, status", [
    (b"this is not an image at all", 415),
    (photo()[: len(photo()) // 2], 422),  # a truncated upload
])
def test_poison_original_is_deleted_not_retried(service, aws, body, status):
    aws.s3.put_object(Bucket=BUCKET, Key="poison.jpg", Body=body)
    stats = worker(service, aws).run(until_empty=True)
    assert stats.deleted == 1 and stats.dropped == 1 and stats.left_for_retry == 0
    assert service.metrics.get("events_dropped_total", status=str(status)) == 1
    assert aws.counts() == (0, 0) and aws.counts(aws.dlq_url) == (0, 0)
    assert aws.keys() == ["poison.jpg"]


def test_source_deleted_before_processing_is_dropped(service, aws):
    aws.s3.put_object(Bucket=BUCKET, Key="gone.jpg", Body=photo())
    aws.s3.delete_object(Bucket=BUCKET, Key="gone.jpg")
    stats = worker(service, aws).run(until_empty=True)
    assert stats.deleted == 1 and stats.dropped == 1
    assert service.metrics.get("events_dropped_total", status="404") == 1
    assert aws.counts() == (0, 0) and aws.keys() == []


def test_test_event_and_removals_are_skipped(service, aws):
    aws.sqs.send_message(QueueUrl=aws.queue_url, MessageBody=json.dumps(
        {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-12-02T12:00:00.000Z", "Bucket": BUCKET}))
    aws.sqs.send_message(QueueUrl=aws.queue_url, MessageBody="garbage, not JSON")
    stats = worker(service, aws).run(until_empty=True)
    assert stats.deleted == 2 and stats.rendered == 0
    assert service.metrics.get("events_total", result="test-event") == 1
    assert service.metrics.get("events_total", result="malformed") == 1


def test_work_is_bounded_by_the_concurrency(service, aws):
    for i in range(6):
        aws.s3.put_object(Bucket=BUCKET, Key=f"many/{i}.jpg", Body=photo())
    active = []
    peak = [0]
    lock = threading.Lock()
    original = service.pregenerate

    def counting(*args, **kwargs):
        with lock:
            active.append(1)
            peak[0] = max(peak[0], len(active))
        try:
            return original(*args, **kwargs)
        finally:
            with lock:
                active.pop()

    service.pregenerate = counting
    loop = worker(service, aws, concurrency=2)
    sizes = []
    aws.sqs.meta.events.register("before-parameter-build.sqs.ReceiveMessage",
                                 lambda params, **_: sizes.append(params["MaxNumberOfMessages"]))
    loop.run(until_empty=True)
    assert peak[0] == 2
    assert sizes and max(sizes) <= 2  # never asks for more messages than it has free slots
    assert all(aws.s3.head_object(Bucket=BUCKET, Key=f"many/{i}_small.jpg") for i in range(6))


@pytest.mark.slow
def test_visibility_is_extended_while_a_message_is_worked_on(service, aws):
    aws.use_queue("slow", visibility=2, max_receives=5)
    aws.s3.put_object(Bucket=BUCKET, Key="slow.jpg", Body=photo())
    Faults(aws.s3, "GetObject", match="slow.jpg", delay=5.0)  # the read takes 5 s, the visibility is 2 s
    loop = worker(service, aws, concurrency=1, visibility_timeout=2)
    thread = threading.Thread(target=loop.run, kwargs={"until_empty": True})
    thread.start()
    try:
        time.sleep(3.5)  # past the first visibility timeout
        assert loop.in_flight == 1
        stolen = aws.sqs.receive_message(QueueUrl=aws.queue_url, MaxNumberOfMessages=10).get("Messages", [])
        assert stolen == []  # nobody else got it: its visibility was extended
    finally:
        thread.join(30)
    assert loop.stats.deleted >= 1 and loop.stats.rendered == 3
    assert service.metrics.get("worker_visibility_extended_total") >= 1
    assert aws.counts() == (0, 0)


def test_stop_finishes_in_flight_work_and_loses_nothing(service, aws):
    originals = [f"stop/{i}.jpg" for i in range(4)]
    for key in originals:
        aws.s3.put_object(Bucket=BUCKET, Key=key, Body=photo())
    loop = worker(service, aws, concurrency=2)
    original = service.pregenerate
    started = threading.Event()

    def slow(*args, **kwargs):
        started.set()
        time.sleep(0.3)
        return original(*args, **kwargs)

    service.pregenerate = slow
    thread = threading.Thread(target=loop.run)
    thread.start()
    assert started.wait(10)
    loop.stop()  # what SIGTERM does (tests/events/test_sigterm.py sends a real one to a real process)
    thread.join(30)
    assert not thread.is_alive()
    complete = {key for key in originals if all(
        f"{key[:-4]}_{p}.jpg" in aws.keys() for p in EXPECTED)}
    assert loop.stats.received == loop.stats.deleted == len(complete) == 2  # what it took, it finished
    # Everything else is still on the queue.
    assert set(aws.pending_created_keys()) & set(originals) == set(originals) - complete
    service.pregenerate = original
    worker(service, aws).run(until_empty=True)
    for key in originals:
        assert_presets(aws, key)
